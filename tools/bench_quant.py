"""Benchmark: int8 against fp32 ONNX models (speed, size, accuracy), measured side by side in one
run on this machine's CPU.

    python tools/bench_quant.py [--quick] [--threads N] [--runs DIR] [--method minmax]

Two tables:

1. Speed and size: resnet18 and resnet50 (seeded init weights), exported fp32, and the same
   model quantized (`netspec export --int8`'s recipe: QDQ, per-channel int8 weights, uint8
   activations) and fp16. Median and p90 latency and throughput at batch 8, the three
   precisions of a model taking turns, one run each per round. Goal: int8 >= 2x fp32
   throughput; int8 file ~4x smaller. Speed does not depend on the calibration data, so these
   are calibrated on 32 random inputs in [0, 1).
2. Accuracy: mnist_cnn and cifar_vgg_bn (at its 3x32x32 input: digits are resized, padded and
   their channel repeated, as `netspec train --data digits` does), trained briefly on digits,
   then quantized on 256 training examples; fp32 and int8 top-1 on the 359 validation examples.
   Goal: <= 1 point lost. `--runs DIR` reuses run folders DIR/mnist_cnn and DIR/cifar_vgg_bn
   when present (and trains into them when not).

The thread count is stated in the captions (default 1: the steadiest on a shared machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netspec import deploy
from netspec.cli import main as netspec_main
from netspec.deploy import files
from netspec.deploy import quantize as q
from netspec.deploy.runtime import example_input, open_session
from netspec.io import fmt_bytes
from netspec.ir.build import load_spec
from netspec.timing import busy_note, measure_side_by_side

ROOT = Path(__file__).resolve().parents[1]
SPEED_GOAL, SIZE_GOAL, ACCURACY_GOAL = 2.0, 4.0, 1.0  # x throughput, x smaller, points lost
CALIB_SIZE = 256  # calibration examples asked for; the table shows those used
EPOCHS = {"mnist_cnn": 15, "cifar_vgg_bn": 3}


def spec(name: str) -> Path:
    return ROOT / "specs" / f"{name}.ns"


def speed(names: list[str], batch: int, threads: int, seconds: float, folder: Path) -> Table:
    table = Table(title=f"int8 vs fp32 (and fp16): onnxruntime CPU, batch {batch}")
    for col in ("model", "type", "size", "median", "p90", "/s", "vs fp32", "goal"):
        table.add_column(col, justify="right")
    for name in names:
        graph = load_spec(spec(name)).instantiate({})
        weights = deploy.initial_weights(graph, seed=0)
        paths = {
            "fp32": folder / f"{name}.onnx",
            "int8": folder / f"{name}.int8.onnx",
            "fp16": folder / f"{name}.fp16.onnx",
        }
        deploy.export(graph, paths["fp32"], weights, run=False)
        deploy.export(graph, paths["fp16"], weights, fp16=True, run=False)
        calib = example_input(graph.input.shape, None, q.CALIB_BATCH, seed=1)
        with files.staging(paths["int8"]) as stage:
            q.quantize(paths["fp32"], stage / paths["int8"].name, calib)
            files.publish(stage / paths["int8"].name, paths["int8"])
        sessions = {k: open_session(p, "cpu", threads) for k, p in paths.items()}
        x = example_input(graph.input.shape, None, batch)
        timings = measure_side_by_side(
            {k: (lambda s=s, x=x: s.run(x)) for k, s in sessions.items()}, seconds, min_runs=5
        )
        base = timings["fp32"]
        for kind in ("fp32", "int8", "fp16"):
            t = timings[kind]
            ratio = base.median / t.median
            size_ratio = files.file_bytes(paths["fp32"]) / files.file_bytes(paths[kind])
            goal = ""
            if kind == "int8":
                ok = ratio >= SPEED_GOAL
                goal = (
                    f"{'met' if ok else 'MISSED'} (>= {SPEED_GOAL:g}x); "
                    f"{size_ratio:.2f}x smaller ({'met' if size_ratio >= 0.9 * SIZE_GOAL else 'MISSED'} ~{SIZE_GOAL:g}x)"
                )
            table.add_row(
                name if kind == "fp32" else "",
                kind,
                fmt_bytes(files.file_bytes(paths[kind])),
                f"{t.median * 1e3:.1f} ms",
                f"{t.p90 * 1e3:.1f} ms",
                f"{t.throughput(batch):.1f}",
                f"{ratio:.2f}x",
                goal,
            )
        table.add_section()
    table.caption = (
        f"intra-op threads: {threads} (inter-op 1); 2 warm-up runs each, then fp32, int8 and fp16 "
        f"take turns, >= 5 runs each or {seconds:g} s each; vs fp32 = fp32 median / this median; "
        "seeded init weights; int8 calibrated on 32 random inputs (speed does not depend on them)"
    )
    return table


def accuracy(
    names: list[str], runs: Path, method: str, threads: int, quick: bool, folder: Path
) -> Table:
    table = Table(title=f"accuracy on digits (validation part), fp32 vs int8 ({method})")
    for col in ("model", "input", "epochs", "calib", "fp32", "int8", "delta", "parity", "goal"):
        table.add_column(col, justify="right")
    for name in names:
        run = runs / name
        epochs = max(1, EPOCHS[name] // (3 if quick else 1))
        if not (run / "best.safetensors").is_file():
            code = netspec_main(
                [
                    "train",
                    str(spec(name)),
                    "--data",
                    "digits",
                    "--epochs",
                    str(epochs),
                    "--threads",
                    str(threads),
                    "--out",
                    str(run),
                    "--quiet",
                ]
            )
            if code != 0:
                raise SystemExit(f"training {name} failed (exit {code})")
        graph = load_spec(spec(name)).instantiate({})
        report = deploy.export(
            graph,
            folder / f"{name}.int8.onnx",
            run,  # the run's folder: its best weights, and accuracy on its own held-out part
            int8=deploy.Calibration("digits", size=CALIB_SIZE, method=method),
        )
        result = report.int8
        assert result is not None and result.accuracy is not None
        a32, a8 = result.accuracy
        delta = (a8 - a32) * 100
        ok = delta >= -ACCURACY_GOAL
        table.add_row(
            name,
            "x".join(map(str, graph.input.shape)),
            str(_epochs(run)),
            f"{result.quantized.calibration} examples",  # what calibration really used
            f"{a32:.2%}",
            f"{a8:.2%}",
            f"{delta:+.2f} pt",
            f"top-1 same {result.parity.top1_agreement:.1%}",
            f"{'met' if ok else 'MISSED'} (>= -{ACCURACY_GOAL:g} pt)",
        )
    table.caption = (
        f"{result.val_examples} validation examples (1 example = {100 / result.val_examples:.2f} pt); "
        f"calibration ({method}): the training examples it used, as reported by the export; "
        "parity: same top-1 class on the calibration examples"
    )
    return table


def _epochs(run: Path) -> int | str:
    import json

    try:
        return int(json.loads((run / "result.json").read_text())["epochs_run"])
    except (OSError, KeyError, ValueError, TypeError):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings and training")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=Path, help="run folders to reuse (or train into)")
    parser.add_argument("--method", default="minmax", choices=sorted(q.METHODS))
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    console = Console(width=130)
    note = busy_note(args.threads)
    if note:
        console.print(note)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_quant.") as tmp:
        folder = Path(tmp)
        if not args.skip_speed:
            seconds = 1.0 if args.quick else 3.0
            console.print(
                speed(["resnet18", "resnet50"], args.batch, args.threads, seconds, folder)
            )
        if not args.skip_accuracy:
            runs = args.runs or folder / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            console.print(
                accuracy(
                    ["mnist_cnn", "cifar_vgg_bn"],
                    runs,
                    args.method,
                    args.threads,
                    args.quick,
                    folder,
                )
            )
    console.print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
