"""Benchmark: `--precision bf16` (CPU autocast) against fp32, side by side in one run.

    python tools/bench_bf16.py [--threads N] [--rounds R] [--epochs E] [--force]

1. Step time: one training step (forward to the logits under autocast, cross-entropy in fp32,
   backward, SGD) of resnet18 at a 64x64 input, batch 32, fp32 and bf16 taking turns round by
   round (alternating which goes first); the ratio is the median of the per-round ratios, so
   a shared machine's drifting load weighs on both alike.
2. Accuracy: specs/mnist_cnn.ns trained on digits for a few epochs (seed 0) in fp32 and in
   bf16, through `netspec.train.trainer` as `netspec train --precision bf16` would; the best
   validation accuracies side by side.

`netspec train` grants bf16 on CPU only where the CPU has bf16 instructions (`avx512_bf16` or
`amx_bf16` among its flags); elsewhere it trains in fp32 with a notice, and this benchmark
says so and stops, unless `--force`: then it measures torch's emulated bf16 anyway (the
figure that explains the refusal). Goal: fp32 / bf16 >= 1.5 with bf16 instructions.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import netspec
from netspec.backends.lower_torch import build
from netspec.ir.build import load_spec_text
from netspec.train import device as device_module
from netspec.train.data import load_data
from netspec.train.device import cpu_bf16
from netspec.train.launch import train
from netspec.train.settings import resolve_settings
from netspec.train.trainer import Job

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1.5


def resnet18_graph(size: int):
    """specs/resnet18.ns with a `size` x `size` input (its 224-based assertions dropped)."""
    text = (ROOT / "specs" / "resnet18.ns").read_text()
    text = text.replace("input [3, 224, 224]", f"input [3, {size}, {size}]")
    text = re.sub(r"\s*:\s*\[[^\]]*\]", "", text)
    return load_spec_text(text, f"<resnet18 at {size}x{size}>").instantiate({})


def step_ratio(rounds: int, batch: int = 32, size: int = 64) -> tuple[float, float, float]:
    """Median seconds per step in fp32 and bf16, and the median per-round ratio fp32 / bf16."""
    graph = resnet18_graph(size)
    models = {p: build(graph, seed=0) for p in ("fp32", "bf16")}
    optimizers = {
        p: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for p, m in models.items()
    }
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.randint(
        0, graph.output_shape[0], (batch,), generator=torch.Generator().manual_seed(1)
    )

    def step(precision: str) -> float:
        model, optimizer = models[precision], optimizers[precision]
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model.logits(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - began

    for precision in models:  # warm-up: first-call allocations and kernel selection
        step(precision)
        step(precision)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    ratios = []
    for i in range(rounds):
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        got = {p: step(p) for p in order}
        for p, t in got.items():
            times[p].append(t)
        ratios.append(got["fp32"] / got["bf16"])
    return (
        statistics.median(times["fp32"]),
        statistics.median(times["bf16"]),
        statistics.median(ratios),
    )


def digits_accuracy(precision: str, epochs: int, threads: int) -> float:
    """Best validation accuracy of mnist_cnn on digits after `epochs` epochs in `precision`."""
    graph = netspec.compile_spec(ROOT / "specs" / "mnist_cnn.ns")
    settings = resolve_settings(graph.train, {"epochs": epochs, "precision": precision})
    data = load_data("digits", graph.input.shape, 10, seed=settings.seed)
    with tempfile.TemporaryDirectory() as out:
        result = train(
            Job(graph, settings, data, Path(out), device="cpu", quiet=True, threads=threads)
        )
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    return best.val_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: all]")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps of each precision")
    parser.add_argument("--epochs", type=int, default=5, help="digits epochs of each precision")
    parser.add_argument("--force", action="store_true", help="measure emulated bf16 too")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    flag = cpu_bf16()
    print(
        f"CPU bf16 instructions: {flag or 'none (no avx512_bf16, no amx_bf16)'}; torch {torch.__version__}, {threads} thread(s)"
    )
    if flag is None and not args.force:
        print(
            "netspec train --precision bf16 trains in fp32 here (with a notice); --force measures emulated bf16"
        )
        return
    if flag is None:  # --force: let the trainer take bf16 as if the CPU had it
        device_module.cpu_bf16 = lambda: "forced"  # type: ignore[assignment]
    fp32, bf16, ratio = step_ratio(args.rounds)
    verdict = "meets" if ratio >= GOAL else "misses"
    print(
        f"resnet18 @ 64x64, batch 32: fp32 {fp32 * 1e3:.0f} ms/step, bf16 {bf16 * 1e3:.0f} ms/step, fp32/bf16 = {ratio:.2f}x ({verdict} the {GOAL}x goal)"
        + ("" if flag else " [emulated bf16]")
    )
    accuracies = {p: digits_accuracy(p, args.epochs, threads) for p in ("fp32", "bf16")}
    gap = 100 * (accuracies["fp32"] - accuracies["bf16"])
    print(
        f"mnist_cnn on digits, {args.epochs} epochs: fp32 {accuracies['fp32']:.2%}, bf16 {accuracies['bf16']:.2%} (difference {gap:+.1f} points)"
    )


if __name__ == "__main__":
    main()
