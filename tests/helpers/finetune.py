"""The fine-tuning experiment of issue 21, shared by tests/test_finetune.py and
tools/bench_finetune.py: LeNet-5 pretrained on digits 0-4, then trained on 5-9 from a few
examples per class, from the pretrained weights or from scratch on the same budget (same
epochs, batch size and examples), each arm at a learning rate of its own. Accuracy is measured
on every 5-9 example not trained on (about 900).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

import netspec
from netspec.ir.graph import Graph
from netspec.train import trainer
from netspec.train.data import Dataset, DataSplit, load_data
from netspec.train.launch import train
from netspec.train.settings import resolve_settings
from netspec.train.trainer import Job

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lenet5.ns"
BATCH = 4


def digits(graph: Graph, keep: range, per_class: int | None, seed: int = 0,
           names: list[str] | None = None) -> DataSplit:  # fmt: skip
    """Digits of the classes in `keep`, relabelled 0..; with `per_class`, that many training
    examples per class (drawn with `seed`) and every other one for validation."""
    data = load_data("digits", graph.input.shape, 10, val_split=0.0, seed=0)
    x, y = data.train.x, data.train.y
    mask = (y >= keep.start) & (y < keep.stop)
    x, y = x[mask], y[mask] - keep.start
    if per_class is None:
        chosen = torch.arange(len(y))
    else:
        g = torch.Generator().manual_seed(seed)
        chosen = torch.cat(
            [torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)][:per_class]
             for c in range(len(keep))]
        )  # fmt: skip
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[chosen] = False
    names = [str(d) for d in keep] if names is None else names
    return DataSplit(Dataset(x[chosen], y[chosen], names), Dataset(x[rest], y[rest], names))


def run(graph: Graph, data: DataSplit, out: Path, init: str | None = None, **settings) -> float:
    """Train in this process, quietly; the last epoch's validation accuracy. The run folder's
    learning-curve plot is left out (matplotlib took half of each run's time)."""
    s = resolve_settings(graph.train, {"batch_size": 16, "schedule": "none"} | settings)
    job = Job(graph, s, data, out, device="cpu", init=init, quiet=True, threads=1)
    out.mkdir(parents=True)
    with mock.patch.object(trainer, "plot_curves", lambda *args, **kwargs: None):
        return train(job).history[-1].val_acc


def pretrain(out: Path) -> float:
    """LeNet-5 with its 10-way head on every example of 0-4 (so that the 5-way head of the
    fine-tuning is re-initialised, as 1000 -> 7 is); the validation accuracy (of 0-4)."""
    ten = netspec.compile_spec(SPEC)
    every = [str(d) for d in range(10)]
    return run(ten, digits(ten, range(0, 5), 120, names=every), out, epochs=6, lr=0.003)


ARMS = ("scratch", "fine-tuned", "two-stage")


@dataclass(frozen=True)
class Arm:
    """One side of the comparison at one setting. `mode`: `scratch` (seeded initialization),
    `fine-tuned` (from the pretrained run, every layer training from the first epoch) or
    `two-stage` (from the pretrained run, the classifier alone for the first epoch, then every
    layer)."""

    mode: str
    per_class: int
    lr: float
    epochs: int


def few_shot(arm: Arm, seed: int, pretrained: Path, out: Path) -> float:
    """One run on 5-9 from `arm.per_class` examples per class (drawn with `seed`, which also
    seeds initialization and order; batch 4, Adam, no schedule); its accuracy on the
    remaining 5-9 examples."""
    graph = netspec.compile_spec(SPEC, bindings={"classes": 5})
    data = digits(graph, range(5, 10), arm.per_class, seed=seed)
    budget = {"epochs": arm.epochs, "seed": seed, "lr": arm.lr, "batch_size": BATCH}
    if arm.mode == "scratch":
        return run(graph, data, out, **budget)
    staged = {"freeze_epochs": 1} if arm.mode == "two-stage" else {}
    return run(graph, data, out, init=str(pretrained), **budget, **staged)
