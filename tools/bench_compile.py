"""Benchmark: how fast a spec compiles, in process and as a whole `netspec check`.

    python tools/bench_compile.py [--repeat 20]

Prints one table measured in one run: in-process compile time (parse + validate + shapes +
counts, warm, median) per spec with microseconds per layer (to show the growth is linear from
resnet18 to resnet1202), then whole-process wall times of `netspec check specs/resnet50.ns`
beside `python -c "import torch"` for scale, then `netspec check` with its full per-layer table
beside `--brief` (totals only), for resnet1202_cifar and a generated 50,000-layer spec.
Targets (from the issues): resnet152 <= 10 ms, resnet1202_cifar <= 100 ms,
`netspec check specs/resnet50.ns` <= 0.5 s, the full table within 2x of `--brief`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SPECS = [
    "mnist_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "googlenet",
    "resnet1202_cifar",
]
TARGETS_MS = {"resnet152": 10.0, "resnet1202_cifar": 100.0}
TABLE_TARGET = 2.0  # the full table's wall time over --brief's
# 1 input + 2 x 24,997 (conv, relu) + fc + softmax = 49,997 layers, plus the implicit flatten.
BIG_SPEC = """network big "a long chain: about 50,000 layers"
input [8, 4, 4]
classes 10
budget params <= 100M
INPUT -> [CONV(8) -> RELU]*24998 -> FC(10) -> SOFTMAX
"""


def compile_times(path: Path, repeat: int) -> tuple[int, float, float]:
    from netspec.frontend.parser import parse_text, read_spec_file
    from netspec.ir.build import Spec

    text = read_spec_file(path)
    Spec(parse_text(text, str(path))).instantiate()  # warm: grammar tables, imports
    parse, build = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        spec = Spec(parse_text(text, str(path)))
        t1 = time.perf_counter()
        graph = spec.instantiate()
        t2 = time.perf_counter()
        parse.append(t1 - t0)
        build.append(t2 - t1)
    return len(graph.nodes), statistics.median(parse) * 1e3, statistics.median(build) * 1e3


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--wall-repeat", type=int, default=5)
    ap.add_argument("--table-repeat", type=int, default=3)
    args = ap.parse_args()
    console = Console(width=120)

    table = Table(title="in-process compile (parse + validate + shapes + counts), warm, median")
    for col in ("spec", "layers", "parse ms", "build ms", "total ms", "us / layer", "target", "ok"):
        table.add_column(col, justify="right" if col != "spec" else "left")
    for name in SPECS:
        path = ROOT / "specs" / f"{name}.ns"
        if not path.exists():
            continue
        layers, p_ms, b_ms = compile_times(path, args.repeat)
        total = p_ms + b_ms
        target = TARGETS_MS.get(name)
        ok = "" if target is None else ("yes" if total <= target else "NO")
        table.add_row(
            name,
            f"{layers:,}",
            f"{p_ms:.2f}",
            f"{b_ms:.2f}",
            f"{total:.2f}",
            f"{1e3 * total / layers:.1f}",
            f"<= {target:g} ms" if target else "",
            ok,
        )
    console.print(table)

    check = wall([sys.executable, "-m", "netspec", "check", "specs/resnet50.ns"], args.wall_repeat)
    torch_import = wall([sys.executable, "-c", "import torch"], args.wall_repeat)
    bare = wall([sys.executable, "-c", "pass"], args.wall_repeat)
    t2 = Table(title="whole process, wall time, median")
    for col in ("command", "seconds", "vs import torch"):
        t2.add_column(col)
    t2.add_row("python -c pass", f"{bare:.3f}", f"{bare / torch_import:.2f}x")
    t2.add_row("netspec check specs/resnet50.ns", f"{check:.3f}", f"{check / torch_import:.2f}x")
    t2.add_row('python -c "import torch"', f"{torch_import:.3f}", "1.00x")
    console.print(t2)
    console.print(f"target: netspec check <= 0.5 s: {'yes' if check <= 0.5 else 'NO'}")
    table_vs_brief(console, args.table_repeat)


def table_vs_brief(console: Console, repeat: int) -> None:
    """Whole-process `netspec check` with the per-layer table vs `--brief`, output to a file
    (the table at its natural width, every number whole)."""
    t3 = Table(title="netspec check: full table vs --brief, whole process, wall, median")
    for col in ("spec", "lines out", "--brief s", "table s", "table / brief", "target", "ok"):
        t3.add_column(col, justify="left" if col == "spec" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.ns"
        big.write_text(BIG_SPEC)
        out = Path(tmp) / "out.txt"
        for name, path in (("resnet1202_cifar", ROOT / "specs/resnet1202_cifar.ns"), ("big", big)):
            cmd = [sys.executable, "-m", "netspec", "check", str(path)]
            brief = wall_to(cmd + ["--brief"], out, repeat)
            table = wall_to(cmd, out, repeat)
            lines = sum(1 for _ in out.open())  # of the last run: the full table
            ratio = table / brief
            t3.add_row(
                name,
                f"{lines:,}",
                f"{brief:.2f}",
                f"{table:.2f}",
                f"{ratio:.2f}x",
                f"<= {TABLE_TARGET:g}x",
                "yes" if ratio <= TABLE_TARGET else "NO",
            )
    console.print(t3)


def wall_to(cmd: list[str], out: Path, repeat: int) -> float:
    """Median wall time of a command whose stdout goes to a file (not a terminal)."""
    times = []
    for _ in range(repeat):
        with out.open("w") as f:
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
