"""Benchmark: how many family members per second `netspec explore` evaluates, through the IR.

    python tools/bench_explore.py [--repeat 5]

Prints, measured in one run:
  1. the card's family (specs/cs231n_family.ns, 32x32x3, 324 members): members/s evaluated with
     cold caches (a freshly parsed Spec) and warm ones (the same Spec again), the whole
     `explore()` (front, full checks of the front, reasons located), and full instantiation
     (light=False) side by side for the ratio. Target: >= 10,000 members/s.
  2. scaling with depth: the same pattern with M up to 3, 5, 8 and N up to 3, 5.
  3. whole-process wall time of `netspec explore specs/cs231n_family.ns` beside bare start-ups.
     Target: well under a second.
  With --baseline, rows and columns for the path before the fast one (a light build per
  member, `_evaluate_all(fast=False)`) are measured in the same rounds, and every member's
  verdict is compared between both.
  4. with --profile: where a cold evaluation of the card family spends its time (cProfile),
     by module and by function: what a faster exploration has to share between members.
     The issue's goal (issue 26) is 50,000 members/s cold.
Each figure is the median of --repeat runs. Rates are judged on CPU time (time.process_time):
on a shared machine wall time mostly measures the neighbours; wall rates are shown beside, and
the machine's load average is the last line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
FAMILY = ROOT / "specs" / "cs231n_family.ns"
TARGET = 10_000  # members per second
GOAL = 50_000  # members per second cold: issue 26's goal, by sharing work between members

PATTERN = """\
input [3, 32, 32]
classes 10
budget params <= 2M, macs <= 200M, memory <= 4MB
N in 1..{n}
M in 1..{m}
K in 0..2
width in {{16, 32, 64}}
INPUT -> [[CONV(width * 2**i) -> RELU]*N -> POOL?]*M for i -> [FC(256) -> RELU]*K -> SOFTMAX
"""


class Clock:
    """Wall and CPU seconds of a block: on a shared machine CPU time is the fair figure."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def evaluate_rate(make_spec, repeat: int, baseline: bool = False) -> dict[str, float]:
    """Seconds (wall, cpu) to evaluate every member: cold (a new Spec), warm (the same Spec
    again), the whole explore() on a new Spec, and full instantiation for scale. With
    `baseline`, cold and warm again through plain light builds (`base_cold`, `base_warm`: the
    path before the fast one), in the same rounds, and every member's verdict compared."""
    from netspec import explore as ex

    runs: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": [], "explore": [], "full": []}
    if baseline:
        runs.update(base_cold=[], base_warm=[])
    members: list = []
    for _ in range(repeat):
        timed = []
        for fast, prefix in ((True, ""), (False, "base_"))[: 2 if baseline else 1]:
            spec = make_spec()
            space = ex.Space.of(spec)
            with Clock() as cold:
                got = ex._evaluate_all(spec, space, None, 0, fast=fast)
            with Clock() as warm:
                ex._evaluate_all(spec, space, None, 0, fast=fast)
            timed += [(prefix + "cold", cold), (prefix + "warm", warm)]
            if fast:
                members = got
            elif [_verdict(m) for m in got] != [_verdict(m) for m in members]:
                raise SystemExit("the fast path and plain light builds disagree on a member")
        spec = make_spec()
        with Clock() as whole:
            ex.explore(spec)
        for key, c in (*timed, ("explore", whole)):
            runs[key].append((c.wall, c.cpu))
    n = len(members)
    valid = [m for m in members if m.valid]
    sample = valid[:: max(1, len(valid) // 100)]
    spec = make_spec()
    layers = 0
    with Clock() as full:
        for m in sample:
            graph, _ = spec.instantiate(m.bindings, collect=True)
            layers += len(graph.nodes)
    runs["full"].append((full.wall / len(sample) * n, full.cpu / len(sample) * n))
    out: dict[str, float] = {"members": n, "valid": len(valid), "layers": layers / len(sample)}
    for key, pairs in runs.items():
        out[key] = statistics.median(w for w, _ in pairs)
        out[key + "_cpu"] = statistics.median(c for _, c in pairs)
    return out


def _verdict(m) -> tuple:
    e = m.error
    where = None if e is None else (e.message, e.span)
    return (m.number, m.valid, m.over, m.params, m.macs, m.memory, where)


def wall(cmd: list[str], repeat: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of a whole process."""
    import resource

    times, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


def profile(console: Console, rows: int) -> None:
    """cProfile of one cold evaluation of the card family: own time by module, then the
    functions with the most own time (profiling slows every call alike, so read shares)."""
    import cProfile
    import pstats

    from netspec import explore as ex
    from netspec.ir.build import load_spec

    spec = load_spec(FAMILY)
    space = ex.Space.of(spec)
    prof = cProfile.Profile()
    prof.enable()
    ex._evaluate_all(spec, space, None, 0)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(own for _, _, own, _, _ in stats.values())
    by_module: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in stats.items():
        key = path[path.find("netspec/") :] if "netspec/" in path else "python and libraries"
        by_module[key] = by_module.get(key, 0.0) + own
    m = Table(
        title=f"cold evaluation of the card family, profiled: own time by module ({total * 1e3:.0f} ms under cProfile)"
    )
    m.add_column("module")
    m.add_column("share", justify="right")
    for key, own in sorted(by_module.items(), key=lambda kv: -kv[1])[:rows]:
        m.add_row(key, f"{own / total:.0%}")
    console.print(m)
    f = Table(title="functions with the most own time")
    for col in ("function", "calls", "own share", "with callees"):
        f.add_column(col, justify="left" if col == "function" else "right")
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:rows]
    for (path, line, name), (_, calls, own, cum, _) in top:
        short = path[path.find("netspec/") :] if "netspec/" in path else Path(path).name
        f.add_row(
            f"{short}:{line} {name}", f"{calls:,}", f"{own / total:.0%}", f"{cum / total:.0%}"
        )
    console.print(f)


def rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "inf"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--wall-repeat", type=int, default=5)
    ap.add_argument(
        "--profile", type=int, default=0, metavar="ROWS", help="print a cold run's profile"
    )
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also time plain light builds per member (the path before the fast one), side by side",
    )
    args = ap.parse_args()
    console = Console(width=120)
    from netspec.ir.build import load_spec, load_spec_text

    r = evaluate_rate(lambda: load_spec(FAMILY), args.repeat, args.baseline)
    n = r["members"]
    t = Table(
        title=f"card family {FAMILY.relative_to(ROOT)}: {n} members ({r['valid']} valid), 32x32x3, median of {args.repeat}"
    )
    for col in (
        "measure",
        "CPU ms",
        "members/s (CPU)",
        "members/s (wall)",
        "vs warm light",
        "target >= 10k/s (CPU)",
        "goal >= 50k/s (CPU)",
    ):
        t.add_column(col, justify="left" if col == "measure" else "right")
    rows = [
        ("light, cold caches (fresh Spec), fast path", "cold"),
        ("light, warm caches (same Spec), fast path", "warm"),
        *(
            [
                ("baseline: light, cold, a build per member", "base_cold"),
                ("baseline: light, warm, a build per member", "base_warm"),
            ]
            if args.baseline
            else []
        ),
        ("explore(): cold + front + full checks + reasons", "explore"),
        ("full instantiation (light=False), for scale", "full"),
    ]
    for label, key in rows:
        cpu = r[key + "_cpu"]
        ok = "" if key == "full" else ("yes" if n / cpu >= TARGET else "NO")
        goal = "" if key == "full" else ("yes" if n / cpu >= GOAL else "NO")
        t.add_row(
            label,
            f"{cpu * 1e3:.1f}",
            rate(n, cpu),
            rate(n, r[key]),
            f"{cpu / r['warm_cpu']:.2f}x",
            ok,
            goal,
        )
    console.print(t)

    s = Table(
        title=f"scaling with depth: [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K (K 0..2, width x3, pool x2), CPU time, median of {args.repeat}"
    )
    for col in (
        "N",
        "M",
        "members",
        "valid",
        "avg layers",
        "cold members/s",
        "warm members/s",
        *(("baseline cold /s", "baseline warm /s") if args.baseline else ()),
        "us/member warm",
        "us/layer warm",
        "explore() ms",
    ):
        s.add_column(col, justify="right")
    for nmax, mmax in ((3, 3), (3, 5), (3, 8), (5, 3), (5, 5), (5, 8)):
        text = PATTERN.format(n=nmax, m=mmax)
        q = evaluate_rate(
            lambda text=text: load_spec_text(text, "<bench>"), args.repeat, args.baseline
        )
        us = q["warm_cpu"] / q["members"] * 1e6
        s.add_row(
            f"1..{nmax}",
            f"1..{mmax}",
            f"{q['members']:,}",
            f"{q['valid']:,}",
            f"{q['layers']:.0f}",
            rate(q["members"], q["cold_cpu"]),
            rate(q["members"], q["warm_cpu"]),
            *(
                (rate(q["members"], q["base_cold_cpu"]), rate(q["members"], q["base_warm_cpu"]))
                if args.baseline
                else ()
            ),
            f"{us:.0f}",
            f"{us / max(q['layers'], 1):.2f}",
            f"{q['explore_cpu'] * 1e3:.0f}",
        )
    console.print(s)

    explore_wall, explore_cpu = wall(
        [sys.executable, "-m", "netspec", "explore", str(FAMILY)], args.wall_repeat
    )
    import_wall, import_cpu = wall(
        [sys.executable, "-c", "import netspec.cli, netspec.ir.build, rich.table"], args.wall_repeat
    )
    bare, bare_cpu = wall([sys.executable, "-c", "pass"], args.wall_repeat)
    w = Table(title=f"whole process, median of {args.wall_repeat}")
    for col in ("command", "wall s", "CPU s", "wall vs explore"):
        w.add_column(col, justify="left" if col == "command" else "right")
    w.add_row("python -c pass", f"{bare:.3f}", f"{bare_cpu:.3f}", f"{bare / explore_wall:.2f}x")
    w.add_row(
        "python -c 'import netspec.cli, netspec.ir.build, rich.table'",
        f"{import_wall:.3f}",
        f"{import_cpu:.3f}",
        f"{import_wall / explore_wall:.2f}x",
    )
    w.add_row(
        "netspec explore specs/cs231n_family.ns",
        f"{explore_wall:.3f}",
        f"{explore_cpu:.3f}",
        "1.00x",
    )
    console.print(w)
    console.print(
        f"target: explore end to end well under 1 s: {'yes' if explore_wall < 1.0 else 'NO'}"
    )
    if args.profile:
        profile(console, args.profile)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.2f} (timings scale with contention)"
    )


if __name__ == "__main__":
    main()
