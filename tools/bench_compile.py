"""Benchmark: how fast a spec compiles, in process and as a whole `netspec check`.

    python tools/bench_compile.py [--repeat 20]

Prints one table measured in one run: in-process compile time (parse + validate + shapes +
counts, warm, median) per spec with microseconds per layer (to show the growth is linear from
resnet18 to resnet1202), then whole-process wall times of `netspec check specs/resnet50.ns`
beside `python -c "import torch"` for scale, then `netspec check` with its full per-layer table
beside `--brief` (totals only), for resnet1202_cifar and a generated 50,000-layer spec, then
the CPU time and peak memory of `netspec check` on the largest specs (a 100,000-layer MLP, and
each of the costliest shapes at the cap on work). Targets (from the issues): resnet152 <= 10 ms, resnet1202_cifar <= 100 ms,
`netspec check specs/resnet50.ns` <= 0.5 s, the full table within 2x of `--brief`, the
largest specs within 2 s CPU and 500 MiB.
"""

from __future__ import annotations

import argparse
import os
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
    return wall_rss(cmd, repeat)[0]


# Runs argv[1:] as a grandchild and prints its peak memory in KiB. A child's peak counts the
# memory it had before exec, which for a child of this benchmark is this whole process; this
# small go-between (python -S, ~8 MiB) keeps that floor below anything it measures.
_PEAK = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    fd = os.open(os.devnull, os.O_WRONLY); os.dup2(fd, 1); os.dup2(fd, 2)\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "u = os.wait4(pid, 0)[2]\n"
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
)


# As an installed netspec runs: with its bytecode cached. PYTHONDONTWRITEBYTECODE (set on some
# development machines) would make every run recompile every module it imports (~70 ms).
_USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall_rss(cmd: list[str], repeat: int) -> tuple[float, float, float]:
    """Median wall seconds, the largest peak resident memory (MiB) and the median CPU seconds
    of `repeat` runs. CPU time moves less than wall time when the machine is busy."""
    times, peaks, cpus = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-S", "-c", _PEAK, *cmd],
            capture_output=True,
            text=True,
            check=True,
            env=_USER_ENV,
        )
        times.append(time.perf_counter() - t0)
        rss, cpu = out.stdout.split()
        peaks.append(int(rss) / 1024)  # Linux reports KiB
        cpus.append(float(cpu))
    return statistics.median(times), max(peaks), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--wall-repeat", type=int, default=5)
    ap.add_argument("--table-repeat", type=int, default=3)
    ap.add_argument(
        "--large-only", action="store_true", help="only the largest specs' CPU and memory"
    )
    args = ap.parse_args()
    os.chdir(ROOT)  # the whole-process commands name specs relative to the repository
    console = Console(width=120)
    if args.large_only:
        large_specs(console, args.table_repeat)
        return

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

    # Interleaved rounds, so that load on the machine falls on every command alike.
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "netspec check specs/resnet50.ns": [
            sys.executable,
            "-m",
            "netspec",
            "check",
            "specs/resnet50.ns",
        ],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cmds}
    for cmd in cmds.values():
        wall_rss(cmd, 1)  # warm-up: writes the bytecode caches, fills the page cache
    for _ in range(args.wall_repeat):
        for k, cmd in cmds.items():
            runs[k].append(wall_rss(cmd, 1))
    med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    rss = {k: max(r[1] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
    torch_import = med['python -c "import torch"']
    t2 = Table(title="whole process (cold start), wall time median, peak memory")
    for col in ("command", "wall s", "vs import torch", "CPU s", "peak MiB"):
        t2.add_column(col)
    for k in cmds:
        t2.add_row(
            k, f"{med[k]:.3f}", f"{med[k] / torch_import:.2f}x", f"{cpu[k]:.3f}", f"{rss[k]:.0f}"
        )
    console.print(t2)
    check, check_rss = (
        med["netspec check specs/resnet50.ns"],
        rss["netspec check specs/resnet50.ns"],
    )
    console.print(
        f"target: netspec check <= 0.3 s and <= 60 MiB: "
        f"{'yes' if check <= 0.3 and check_rss <= 60 else 'NO'} ({check:.3f} s, {check_rss:.0f} MiB)"
    )
    table_vs_brief(console, args.table_repeat)
    large_specs(console, args.table_repeat)


# The largest specs `check` takes (issues "Hostile input", "Never silently different"): the
# 100,000-layer MLP (200,003 nodes) and, at the cap on work (netspec.ir.limits), each shape of
# network that costs `check` the most per unit of work: a plain chain, a map chain, a block call
# per layer, blocks nested 30 deep, a block calling itself 50 deep, branches, an indexed loop, a
# distinct layer per node. Each is written with the largest count the cap takes (found by
# trying), so the rows show the time and memory of the most work `check` will ever do for any
# spec of that shape.
_MLP = "input [64]\nclasses 10\n"
_MAP = "input [8, 4, 4]\nclasses 10\n"
_NEST = "".join(f"block n{i}(w) = n{i - 1}(w)\n" for i in range(1, 31))
LARGE_SPECS: dict[str, tuple[int, str]] = {  # name: (units of work a time round, text with {n})
    "chain FC -> RELU": (2, _MLP + "INPUT -> [FC(64) -> RELU]*{n} -> FC(10) -> SOFTMAX\n"),
    "chain CONV -> RELU": (
        2,
        _MAP + "INPUT -> [CONV(8, 3, padding=1) -> RELU]*{n} -> GAP -> FC(10) -> SOFTMAX\n",
    ),
    "block call per layer": (
        4,
        _MAP + "block cbr(c) = CONV(c, 3, padding=1) -> BN -> RELU\n"
        "INPUT -> [cbr(8)]*{n} -> GAP -> FC(10) -> SOFTMAX\n",
    ),
    "blocks nested 30 deep": (
        33,
        _MLP + "block n0(w) = FC(w) -> RELU\n" + _NEST + "INPUT -> [n30(64)]*{n} -> FC(10)\n",
    ),
    "recursive block 50 deep": (
        150,
        _MAP + "block t(d) = CONV(8, 3, padding=1) -> RELU -> t(d - 1)?(d > 0)\n"
        "INPUT -> [t(49)]*{n} -> GAP -> FC(10) -> SOFTMAX\n",
    ),
    "concat of 2 branches": (
        5,
        _MAP + "INPUT -> [concat(CONV(4, 1), CONV(4, 1))]*{n} -> GAP -> FC(10) -> SOFTMAX\n",
    ),
    "indexed loop": (3, _MLP + "INPUT -> [FC(64 + 0 * i) -> RELU]*{n} for i -> FC(10)\n"),
    "distinct layers": (7, _MLP + "INPUT -> [FC(1 + i) -> RELU]*{n} for i -> FC(10)\n"),
}
MLP_100K = _MLP + "INPUT -> [FC(64) -> RELU]*100000 -> FC(10) -> SOFTMAX\n"
LARGE_CPU_S, LARGE_MIB = 2.0, 500.0  # any input: answered within 2 s and 500 MB


def _at_the_cap(text: str, per: int, path: Path) -> str:
    """The text with the largest count `check` accepts (from the cap, stepping down)."""
    from netspec.ir.limits import MAX_WORK

    n = MAX_WORK // per
    while n > 0:
        path.write_text(text.replace("{n}", str(n)))
        cmd = [sys.executable, "-m", "netspec", "check", "--brief", str(path)]
        if subprocess.run(cmd, capture_output=True, env=_USER_ENV).returncode == 0:
            return path.read_text()
        n -= max(1, n // 500)
    raise SystemExit(f"no count of this shape passes check:\n{text}")


def large_specs(console: Console, repeat: int) -> None:
    """Whole-process `netspec check` (--brief, table, --json) of the largest specs: CPU seconds
    (median) and peak resident memory (largest), as the cold-start rows measure them."""
    t4 = Table(title="netspec check of the largest specs, whole process, CPU median, peak memory")
    for col in ("spec", "mode", "CPU s", "peak MiB", "target", "ok"):
        t4.add_column(col, justify="left" if col in ("spec", "mode") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.ns"
        specs = {"mlp 100,000 layers": MLP_100K}
        for name, (per, text) in LARGE_SPECS.items():
            specs[f"{name}, at the cap"] = _at_the_cap(text, per, path)
        for name, text in specs.items():
            path.write_text(text)
            for mode in ("--brief", "table", "--json"):
                cmd = [sys.executable, "-m", "netspec", "check", str(path)]
                _, peak, cpu = wall_rss(cmd + ([] if mode == "table" else [mode]), repeat)
                ok = cpu <= LARGE_CPU_S and peak <= LARGE_MIB
                t4.add_row(
                    name,
                    mode,
                    f"{cpu:.2f}",
                    f"{peak:.0f}",
                    f"<= {LARGE_CPU_S:g} s, {LARGE_MIB:g} MiB",
                    "yes" if ok else "NO",
                )
    console.print(t4)


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
