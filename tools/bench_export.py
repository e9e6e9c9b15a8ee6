"""Benchmark: netspec's direct IR -> ONNX lowering beside torch.onnx.export, and ONNX Runtime
beside torch eager, all measured side by side in one run on this machine's CPU.

    python tools/bench_export.py [--quick] [--threads N] [--no-dynamo]

Three tables:

1. Export time of resnet50 (random init, fp32): `netspec`'s lowering (lower, stream, fsync;
   the weights already drawn, as for torch) against `torch.onnx.export` of the same built module,
   dynamo and the legacy TorchScript exporter (`dynamo=False`). Target: >= 20x faster.
2. ONNX Runtime latency of our resnet50 graph against the graphs torch.onnx.export wrote, at
   batch 1 and 8, with their node counts.
3. ONNX Runtime against torch eager: resnet18 and resnet50 at batch 1 and 8, mnist_cnn at 256,
   with the achieved multiply-adds per second (IR MACs x batch / median latency) against a
   large float32 matmul (onnxruntime's MatMul) timed in turn with them, the practical ceiling.

Latencies are medians after warm-up runs (p90 beside); what is compared takes turns, one run
each per round, so that the load of a shared machine weighs on all alike. `--quick` shortens
every timing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

import netspec
from netspec import deploy as L
from netspec.deploy.runtime import example_input, open_session
from netspec.timing import Timing, busy_note, cpu_threads, measure_side_by_side

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 20.0


def spec(name: str) -> Path:
    return ROOT / "specs" / f"{name}.ns"


def timed(fn, repeat: int) -> float:
    """Median wall time of `repeat` calls (the first one included: exports are one-shot)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_export(module: torch.nn.Module, path: Path, dynamo: bool) -> None:
    """torch.onnx.export with a dynamic batch and named input/output, its chatter silenced."""
    x = torch.randn(1, *module.graph.input.shape)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" x4
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(
                module,
                (x,),
                str(path),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                opset_version=L.DEFAULT_OPSET,
            )
        else:
            torch.onnx.export(
                module,
                (x,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=18,
            )


MATMUL_N = 2048


def matmul(threads: int) -> tuple[object, float]:
    """A large float32 MatMul in onnxruntime (its MLAS sgemm) and its multiply-adds in G: the
    practical ceiling, timed in turn with each model so that both see the same load. (torch.mm
    would do as well on an idle machine, but its OpenMP threads stall on a busy one.)"""
    from onnx import TensorProto, helper

    n = MATMUL_N
    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    g = helper.make_graph(
        [node],
        "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "ab"}
    return (lambda: session.run(None, feeds)), n**3 / 1e9


def file_mb(path: Path) -> str:
    """The model's size with its external data file, if the exporter wrote one (dynamo does)."""
    sidecar = path.with_name(path.name + ".data")
    size = path.stat().st_size + (sidecar.stat().st_size if sidecar.exists() else 0)
    return f"{size / 1e6:.1f}" + (" (2 files)" if sidecar.exists() else "")


def ms(t: Timing | float) -> str:
    seconds = t.median if isinstance(t, Timing) else t
    return f"{seconds * 1e3:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="shorter timings (0.5 s per cell, one export each)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=cpu_threads(),
        help="intra-op threads for torch and onnxruntime",
    )
    ap.add_argument("--no-dynamo", action="store_true", help="skip torch.onnx.export(dynamo=True)")
    args = ap.parse_args()
    seconds, repeat = (0.5, 1) if args.quick else (2.0, 3)
    threads = args.threads
    torch.set_num_threads(threads)
    console = Console(width=120)
    console.print(
        f"threads: {threads} (torch intra-op and onnxruntime intra-op); "
        f"torch {torch.__version__}, onnx {onnx.__version__}; {'quick' if args.quick else 'full'} timings"
    )
    note = busy_note(threads)
    if note:
        console.print(note)
    with tempfile.TemporaryDirectory(prefix="bench_export.") as tmp:
        run(args, Path(tmp), console, seconds, repeat, threads)


def run(
    args: argparse.Namespace, tmp: Path, console: Console, seconds: float, repeat: int, threads: int
) -> None:

    # --- 1. export time -----------------------------------------------------------------------
    graph = netspec.compile_spec(spec("resnet50"))
    module = netspec.build(graph, seed=0).eval()
    paths = {
        "netspec": tmp / "netspec.onnx",
        "netspec fold-bn": tmp / "netspec_fold.onnx",
        "torch dynamo": tmp / "dynamo.onnx",
        "torch legacy": tmp / "legacy.onnx",
    }

    def ours(path: Path, fold: bool, check: bool = False):
        weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        return L.export(graph, path, weights, fold_bn=fold, note="seed=0", check=check)

    def ours_plain(path: Path) -> None:
        """Lower and write with a plain open(): no temp file, no fsync, as torch.onnx.export writes."""
        weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        with open(path, "wb") as f:
            L.lower(graph, weights, L.LowerOptions()).write(f)

    results: dict[str, float | str] = {}
    ours(paths["netspec"], False)  # warm: imports, page cache
    results["netspec"] = timed(lambda: ours(paths["netspec"], False), max(repeat, 3))
    paths["netspec, plain write"] = tmp / "plain.onnx"
    results["netspec, plain write"] = timed(
        lambda: ours_plain(paths["netspec, plain write"]), max(repeat, 3)
    )
    results["netspec fold-bn"] = timed(lambda: ours(paths["netspec fold-bn"], True), max(repeat, 3))
    results["netspec + all checks"] = timed(
        lambda: ours(tmp / "checked.onnx", False, check=True), 1
    )
    for name, dynamo in (("torch dynamo", True), ("torch legacy", False)):
        if dynamo and args.no_dynamo:
            results[name] = "skipped (--no-dynamo)"
            continue
        try:
            results[name] = timed(
                lambda d=dynamo, n=name: torch_export(module, paths[n], d), repeat
            )
        except Exception as err:  # report, do not stop: the exporters change between releases
            results[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:60]}"

    base = results["netspec"]
    table = Table(title="1. export time, resnet50 (25.6M params, random init, fp32, dynamic batch)")
    for col in ("exporter", "seconds", "netspec is faster by", "ONNX nodes", "file MB"):
        table.add_column(col, justify="left" if col == "exporter" else "right")
    for name, value in results.items():
        path = paths.get(name)
        if isinstance(value, str):
            table.add_row(name, value, "", "", "")
            continue
        nodes = (
            len(onnx.load(str(path), load_external_data=False).graph.node)
            if path and path.exists()
            else ""
        )
        size = file_mb(path) if path and path.exists() else ""
        ratio = "" if name.startswith("netspec") else f"{value / base:.1f}x"
        table.add_row(name, f"{value:.3f}", ratio, str(nodes), size)
    slowest_torch = [
        v for k, v in results.items() if k.startswith("torch") and not isinstance(v, str)
    ]
    verdict = " / ".join(f"{v / base:.0f}x" for v in slowest_torch)
    plain = results["netspec, plain write"]
    fair = " / ".join(f"{v / plain:.0f}x" for v in slowest_torch)
    table.caption = (
        f"netspec = lower + stream + fsync + rename (median of {max(repeat, 3)}); plain write = lower + "
        f"write, no fsync, as torch writes; torch = median of {repeat}; target >= {TARGET_SPEEDUP:g}x: "
        f"{verdict} (dynamo / legacy), {fair} against the plain write"
    )
    console.print(table)

    # --- 2. onnxruntime on our graph vs torch's graphs ------------------------------------------
    table = Table(
        title="2. onnxruntime latency (ms, median / p90), resnet50: our graph vs torch.onnx.export's"
    )
    for col in ("graph", "nodes", "batch 1", "batch 8", "vs netspec (b1 / b8)"):
        table.add_column(col, justify="left" if col == "graph" else "right")
    graphs = [
        n
        for n in ("netspec", "netspec fold-bn", "torch dynamo", "torch legacy")
        if not isinstance(results.get(n), str) and paths[n].exists()
    ]
    sessions = {n: open_session(paths[n], "cpu", threads) for n in graphs}
    lat: dict[int, dict[str, Timing]] = {}
    for b in (1, 8):
        x = example_input(graph.input.shape, None, b)
        lat[b] = measure_side_by_side(
            {n: lambda s=s, x=x: s.run(x) for n, s in sessions.items()}, seconds
        )
    for n in graphs:
        nodes = len(onnx.load(str(paths[n]), load_external_data=False).graph.node)
        ratio = " / ".join(f"{lat[b][n].median / lat[b]['netspec'].median:.2f}x" for b in (1, 8))
        table.add_row(
            n, str(nodes), *(f"{ms(lat[b][n])} / {ms(lat[b][n].p90)}" for b in (1, 8)), ratio
        )
    table.caption = (
        "the graphs take turns, one run each per round; ratio = that graph's median / netspec's "
        "(above 1: ours runs faster); ORT_ENABLE_ALL, CPU provider"
    )
    console.print(table)

    # --- 3. onnxruntime vs torch eager --------------------------------------------------------
    table = Table(title="3. onnxruntime vs torch eager on the CPU (ms, median / p90)")
    for col in (
        "spec",
        "batch",
        "torch eager",
        "onnxruntime",
        "speed-up",
        "torch GMAC/s",
        "ort GMAC/s",
        "matmul GMAC/s",
        "ort / matmul",
    ):
        table.add_column(col, justify="left" if col == "spec" else "right")
    mm, mm_gmacs = matmul(threads)
    for name, batches in (("resnet18", (1, 8)), ("resnet50", (1, 8)), ("mnist_cnn", (256,))):
        g = netspec.compile_spec(spec(name))
        m = module if name == "resnet50" else netspec.build(g, seed=0).eval()
        weights = {k: v.detach().numpy() for k, v in m.state_dict().items()}
        session = open_session(L.lower(g, weights).to_bytes(), "cpu", threads)
        for b in batches:
            x = example_input(g.input.shape, None, b)
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                err = np.abs(session.run(x) - m(xt).numpy()).max()
                t = measure_side_by_side(
                    {
                        "torch": lambda xt=xt, m=m: m(xt),
                        "ort": lambda x=x, s=session: s.run(x),
                        "matmul": mm,
                    },
                    seconds,
                )
            assert err <= 1e-4, f"{name} batch {b}: onnxruntime and torch differ by {err}"
            gmacs = g.totals.macs * b / 1e9
            ceiling = mm_gmacs / t["matmul"].median
            table.add_row(
                name,
                str(b),
                f"{ms(t['torch'])} / {ms(t['torch'].p90)}",
                f"{ms(t['ort'])} / {ms(t['ort'].p90)}",
                f"{t['torch'].median / t['ort'].median:.2f}x",
                f"{gmacs / t['torch'].median:.1f}",
                f"{gmacs / t['ort'].median:.1f}",
                f"{ceiling:.1f}",
                f"{100 * gmacs / t['ort'].median / ceiling:.0f}%",
            )
    table.caption = (
        f"GMAC/s = IR MACs x batch / median latency; the ceiling is a {MATMUL_N}^3 float32 onnxruntime MatMul "
        "timed in turn with each row's models (above 100%: onnxruntime's blocked NCHWc convolutions "
        "beat a plain sgemm); speed-up = torch median / ort median"
    )
    console.print(table)


if __name__ == "__main__":
    main()
