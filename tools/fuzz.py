"""Fuzz the compiler for a while: generated specs and mutated zoo specs, each held to the judge
of tests/helpers/fuzz_specs.py (located errors or a graph equal to its torch build; never another
exception; never over 2 s). Prints the counts by outcome and each failure class found, with
the shortest spec of each class.

    python tools/fuzz.py --seconds 300            # nice it on a shared machine: nice -n 19
    python tools/fuzz.py --examples 2000 --seed 7 --no-torch
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.fuzz_specs import FuzzFailure, generated_spec, judge, mutated_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    ap.add_argument("--examples", type=int, default=None, help="stop after this many specs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch build check")
    ap.add_argument("--show", type=int, default=1, help="specs shown per failure class")
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    failures: dict[str, list[FuzzFailure]] = {}
    slowest = 0.0
    slow_once = 0
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < args.seconds and (
        args.examples is None or n < args.examples
    ):
        source = "generated" if rnd.random() < 0.5 else "mutated"
        text = generated_spec(rnd) if source == "generated" else mutated_spec(rnd)
        n += 1
        try:
            try:
                verdict = judge(text, torch_check=not args.no_torch)
            except FuzzFailure as f:
                if f.kind != "slow":
                    raise
                slow_once += 1  # a shared machine pauses a process now and then: time it again
                verdict = judge(text, torch_check=not args.no_torch)
        except FuzzFailure as f:
            failures.setdefault(f.kind, []).append(f)
            outcomes["FAILED"] += 1
            continue
        outcomes[f"{source} {verdict.outcome}"] += 1
        slowest = max(slowest, verdict.seconds)
    elapsed = time.perf_counter() - start
    print(f"{n:,} specs in {elapsed:.0f} s (seed {args.seed}); slowest compile {slowest:.2f} s")
    if slow_once:
        print(f"  ({slow_once} slow once, in time when run again: counted as passing)")
    for key, count in sorted(outcomes.items()):
        print(f"  {key:<20} {count:>8,}")
    for kind, group in sorted(failures.items()):
        print(f"\nfailure class `{kind}`: {len(group)} spec(s)")
        for f in sorted(group, key=lambda f: len(f.text))[: args.show]:
            print(
                f"  {f.detail}\n  --- spec ---\n"
                + "\n".join("  " + ln for ln in f.text.splitlines())
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
