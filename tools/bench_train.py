"""Benchmark: one training step of netspec's built module beside a hand-written PyTorch module
of the same architecture, eager and under torch.compile, measured side by side in one run.

    python tools/bench_train.py [--threads N] [--seconds S] [--no-compile] [--quick]

A step is what `netspec train` does per batch: forward to the logits, cross-entropy, backward,
an SGD (momentum) update. Both modules get the same weights (the hand-written one loads the
built one's state_dict, so their names and shapes match exactly) and the same batch; the first
step's losses are checked equal before anything is timed. The two take turns, one step each
per round, alternating which goes first; the ratio is the median of the per-round ratios, so
the drifting load of a shared machine weighs on both alike. Each row starts from a reset of
torch.compile's caches.

Models: mnist_cnn (specs/mnist_cnn.ns, batch 64) and resnet18 at a 64x64 input (specs/resnet18.ns
compiled with its input overridden and its 224-based shape assertions dropped, batch 16).
Target: built / hand-written <= 1.03.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

import netspec
from netspec.ir.build import load_spec_text
from netspec.timing import Timing, busy_note, cpu_threads

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.03


# --- the hand-written twins (names follow the spec's node ids, so state_dicts load as is) ---


class MnistCNN(nn.Module):
    """The course's Keras MNIST CNN, written as a PyTorch user would."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 16, 3)
        self.conv3 = nn.Conv2d(16, 16, 3)
        self.fc1 = nn.Linear(144, 15)
        self.fc2 = nn.Linear(15, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class Basic(nn.Module):
    """torchvision's BasicBlock: two 3x3 conv + BN, a 1x1 conv + BN projection when needed."""

    def __init__(self, cin: int, c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = None
        if stride != 1 or cin != c:
            conv = nn.Conv2d(cin, c, 1, stride, bias=False)
            self.shortcut = nn.Sequential(OrderedDict(conv1=conv, bn1=nn.BatchNorm2d(c)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu(out, inplace=True)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, cin = (64, 128, 256, 512), 64
        for i, c in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            blocks = OrderedDict(basic1=Basic(cin, c, stride), basic2=Basic(c, c, 1))
            self.add_module(f"layer{i}", nn.Sequential(blocks))
            cin = c
        self.fc1 = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc1(x.mean(dim=(2, 3)))


def resnet18_graph(size: int):
    """specs/resnet18.ns with a `size` x `size` input (its 224-based assertions dropped)."""
    text = (ROOT / "specs" / "resnet18.ns").read_text()
    text = text.replace("input [3, 224, 224]", f"input [3, {size}, {size}]")
    text = re.sub(r"\s*:\s*\[[^\]]*\]", "", text)
    return load_spec_text(text, f"<resnet18 at {size}x{size}>").instantiate({})


# --- measuring ---------------------------------------------------------------------------


def stepper(model: nn.Module, logits: Callable, x: torch.Tensor, y: torch.Tensor) -> Callable:
    """One training step: forward to the logits, cross-entropy, backward, SGD with momentum."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def pair(graph, hand: nn.Module, batch: int, compiled: bool) -> tuple[Callable, Callable, float]:
    """The built and hand-written steps with identical weights and batch, and the time it
    took to compile them (0 in eager mode). Raises if their first losses differ."""
    built = netspec.build(graph, seed=0)
    hand.load_state_dict(built.state_dict())
    built.train()
    hand.train()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *graph.input.shape, generator=generator)
    y = torch.randint(0, graph.classes, (batch,), generator=generator)
    built_logits, hand_logits = built.logits, hand
    started = time.perf_counter()
    if compiled:
        built_logits, hand_logits = torch.compile(built.logits), torch.compile(hand)
    steps = stepper(built, built_logits, x, y), stepper(hand, hand_logits, x, y)
    first = [float(step()) for step in steps]  # compiles, in compiled mode
    if abs(first[0] - first[1]) > 1e-4 * max(1.0, abs(first[1])):
        raise SystemExit(f"{graph.name}: the built and hand-written losses differ: {first}")
    return steps[0], steps[1], time.perf_counter() - started if compiled else 0.0


def paired(
    a: Callable, b: Callable, seconds: float, min_rounds: int
) -> tuple[Timing, Timing, float]:
    """Time `a` and `b` in rounds of one call each, alternating which goes first, until each
    has had `seconds`. Returns both timings and the median of the per-round ratios a / b:
    pairing each call with its neighbour cancels the drift of a shared machine's load."""
    for fn in (a, b, a, b):  # warm-up
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    start, rounds = time.perf_counter(), 0
    while rounds < 400 and (rounds < min_rounds or time.perf_counter() - start < 2 * seconds):
        for i in (0, 1) if rounds % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            (a, b)[i]()
            times[i].append(time.perf_counter() - t0)
        rounds += 1
    ratio = statistics.median(x / y for x, y in zip(*times, strict=True))
    return _timing(times[0]), _timing(times[1]), ratio


def _timing(times: list[float]) -> Timing:
    ordered = sorted(times)
    return Timing(
        statistics.median(ordered), ordered[round(0.9 * (len(ordered) - 1))], len(ordered)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=cpu_threads(), help="torch CPU threads")
    ap.add_argument("--seconds", type=float, default=6.0, help="time per side, per row")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--quick", action="store_true", help="1 s per side, fewer rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = 1.0 if args.quick else args.seconds
    console = Console(width=140)
    note = busy_note(args.threads)
    if note:
        console.print(note)

    models = [
        ("mnist_cnn", netspec.compile_spec(ROOT / "specs" / "mnist_cnn.ns"), MnistCNN, 64),
        ("resnet18 @ 64x64", resnet18_graph(64), ResNet18, 16),
    ]
    modes = ["eager"] if args.no_compile else ["eager", "torch.compile"]
    title = f"training step (forward + loss + backward + SGD), CPU, {args.threads} thread(s)"
    table = Table(title=title, caption="ratio: median of per-round ratios netspec / hand-written")
    columns = (
        "model",
        "batch",
        "mode",
        "netspec ms",
        "hand-written ms",
        "ratio",
        "target",
        "rounds",
        "compile s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for name, graph, hand_cls, batch in models:
        for mode in modes:
            # NetspecModule.logits is one code object for every built model: without a reset,
            # dynamo's guards for the previous row's model would weigh on this row's calls
            torch._dynamo.reset()
            built_step, hand_step, compile_s = pair(graph, hand_cls(), batch, mode != "eager")
            ours, theirs, ratio = paired(built_step, hand_step, seconds, 6 if args.quick else 12)
            table.add_row(
                name,
                str(batch),
                mode,
                _ms(ours),
                _ms(theirs),
                f"{ratio:.3f}",
                f"<= {TARGET}" + (" ok" if ratio <= TARGET else " MISSED"),
                str(ours.runs),
                f"{compile_s:.0f}" if compile_s else "",
            )
    console.print(table)


def _ms(t: Timing) -> str:
    return f"{t.median * 1e3:.1f} (p90 {t.p90 * 1e3:.1f})"


if __name__ == "__main__":
    main()
