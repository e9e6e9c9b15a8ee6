"""Each task's metrics, accumulated batch by batch as sums that data-parallel processes add up.

A `Meter` takes a batch's outputs (the logits the loss reads) and targets and keeps float64
sums on the batch's device (no synchronisation per step); `result` reduces them (across
processes when given a reducer) and returns the task's metrics by name:

- classify: ``acc`` (top-1) and ``top5`` (with at least 10 classes);
- dense: ``acc`` (per labelled pixel) and ``miou`` (`netspec.train.evaluate.mean_iou`);
- multilabel: ``acc`` (the share of label decisions right at 0.5), ``f1`` (micro) and, when
  the meter keeps the scores (validation, test, eval), ``map``;
- regression: ``mae``, ``rmse`` and ``r2``, in the targets' own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from netspec.train.data import IGNORE
from netspec.train.evaluate import mean_iou
from netspec.train.tasks import Task, loss_function, predictions

Reduce = Callable[[torch.Tensor], torch.Tensor]
TOP5_FROM = 10  # classes: top-5 accuracy is reported from this many on
# What each metric means, for table headers and docs.
LABELS = {
    "acc": "accuracy",
    "top5": "top-5 accuracy",
    "miou": "mean IoU",
    "f1": "F1 (micro)",
    "map": "mAP",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R^2",
}
LOWER_IS_BETTER = frozenset({"mae", "rmse", "loss"})


def metric_names(task: Task, scores: bool = True) -> tuple[str, ...]:
    """The metrics a task reports (`scores`: with those that need every score kept)."""
    if task.kind == "classify":
        return ("acc", "top5") if task.outputs >= TOP5_FROM else ("acc",)
    if task.kind == "dense":
        return ("acc", "miou")
    if task.kind == "multilabel":
        return ("acc", "f1", "map") if scores else ("acc", "f1")
    return ("mae", "rmse", "r2")


class Meter:
    """The running sums of one pass over data (see the module docstring)."""

    def __init__(self, task: Task, device: torch.device, keep_scores: bool = False) -> None:
        self.task = task
        k = task.outputs
        size = {
            "classify": 3,  # correct, correct in top 5, examples
            "dense": 2 + k * k + 1,  # correct, pixels, confusion (+ a bin for ignored pixels)
            "multilabel": 5,  # right decisions, examples, TP, FP, FN
            "regression": 1 + 4 * k,  # examples, |e|, e^2, y, y^2 per output
        }[task.kind]
        self.sums = torch.zeros(size, dtype=torch.float64, device=device)
        self.keep_scores = keep_scores and task.kind == "multilabel"
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        kind, k = self.task.kind, self.task.outputs
        out = out.detach().float()
        if kind == "classify":
            top = out.topk(min(5, out.shape[1]), dim=1).indices
            hits = top == y[:, None]
            self.sums[:3] += torch.stack(
                [hits[:, 0].sum(), hits.any(dim=1).sum(), torch.tensor(len(y), device=y.device)]
            ).double()
        elif kind == "dense":
            predicted, keep = out.argmax(dim=1), y != IGNORE
            cells = torch.where(keep, y * k + predicted, k * k)
            self.sums[0] += ((predicted == y) & keep).sum()
            self.sums[1] += keep.sum()
            self.sums[2:] += torch.bincount(cells.flatten(), minlength=k * k + 1).double()
        elif kind == "multilabel":
            guess, truth = out > 0, y > 0.5
            self.sums += torch.stack(
                [
                    (guess == truth).sum(),
                    torch.tensor(len(y), device=y.device),
                    (guess & truth).sum(),
                    (guess & ~truth).sum(),
                    (~guess & truth).sum(),
                ]
            ).double()
            if self.keep_scores:
                self.scores.append(out.cpu())
                self.targets.append(y.detach().cpu())
        else:
            err = predictions(self.task, out).double() - y.double()
            yd = y.double()
            parts = [err.abs().sum(0), err.square().sum(0), yd.sum(0), yd.square().sum(0)]
            self.sums[0] += len(y)
            self.sums[1:] += torch.cat(parts)

    def running(self) -> tuple[str, float]:
        """The headline metric so far, for the progress bar (synchronises once)."""
        name = "mae" if self.task.kind == "regression" else "acc"
        return name, self.result(None, headline=True)[name]

    def result(self, reduce: Reduce | None = None, headline: bool = False) -> dict[str, float]:
        """The metrics; `reduce` sums the sums across processes first (kept scores are
        this process's: a caller keeping scores evaluates the whole set in every process)."""
        sums = self.sums if reduce is None else reduce(self.sums.clone())
        s = sums.cpu().tolist()
        kind, k = self.task.kind, self.task.outputs
        if kind == "classify":
            n = s[2]
            out = {"acc": _div(s[0], n)}
            if k >= TOP5_FROM:
                out["top5"] = _div(s[1], n)
            return out
        if kind == "dense":
            out = {"acc": _div(s[0], s[1])}
            if not headline:
                out["miou"] = mean_iou(sums[2:-1].view(k, k).round().long().cpu())
            return out
        if kind == "multilabel":
            right, n, tp, fp, fn = s
            out = {"acc": _div(right, n * k), "f1": _div(2 * tp, 2 * tp + fp + fn)}
            if self.keep_scores and not headline:
                out["map"] = mean_average_precision(self.scores, self.targets)
            return out
        return _regression(s, k)


def _regression(s: list[float], k: int) -> dict[str, float]:
    n = s[0]
    abs_err, sq_err, y_sum, y_sq = (s[1 + i * k : 1 + (i + 1) * k] for i in range(4))
    r2 = []
    for sse, total, square in zip(sq_err, y_sum, y_sq, strict=True):
        sst = square - total * total / n if n else 0.0
        if sst > 1e-12:
            r2.append(1.0 - sse / sst)
    return {
        "mae": _div(sum(abs_err), n * k),
        "rmse": math.sqrt(_div(sum(sq_err), n * k)) if n else math.nan,
        "r2": sum(r2) / len(r2) if r2 else math.nan,
    }


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """The mean of the precision at the rank of each positive, scores ranked high to low
    (ties in the order given); NaN without positives."""
    positives = int(truth.sum())
    if positives == 0:
        return math.nan
    order = scores.argsort(descending=True, stable=True)
    hits = truth[order].double()
    ranks = torch.arange(1, len(hits) + 1, dtype=torch.float64)
    precision = hits.cumsum(0) / ranks
    return float((precision * hits).sum() / positives)


def mean_average_precision(scores: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    """mAP: the mean over labels with a positive of each label's `average_precision`."""
    if not scores:
        return math.nan
    s, t = torch.cat(scores), torch.cat(targets) > 0.5
    values = [average_precision(s[:, j], t[:, j]) for j in range(s.shape[1])]
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


def per_label(task: Task, scores: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
    """Per output: multilabel positives, AP and F1; regression MAE and R^2 (for `eval`)."""
    rows = []
    for j in range(task.outputs):
        if task.kind == "multilabel":
            truth, guess = y[:, j] > 0.5, scores[:, j] > 0
            tp = float((guess & truth).sum())
            f1 = _div(2 * tp, 2 * tp + float((guess & ~truth).sum() + (~guess & truth).sum()))
            rows.append(
                {
                    "positives": float(truth.sum()),
                    "ap": average_precision(scores[:, j], truth),
                    "f1": f1,
                }
            )
        else:
            pred, true = predictions(task, scores)[:, j].double(), y[:, j].double()
            sst = float((true - true.mean()).square().sum())
            sse = float((pred - true).square().sum())
            rows.append(
                {"mae": float((pred - true).abs().mean()), "r2": 1 - sse / sst if sst else math.nan}
            )
    return rows


@torch.no_grad()
def evaluate_task(
    logits: Callable[[torch.Tensor], torch.Tensor],
    task: Task,
    x: torch.Tensor,
    y: torch.Tensor,
    runtime: Any,
    batch_size: int = 256,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """A model's loss and metrics on examples `x` with targets `y`, and per output (multilabel
    and regression; empty otherwise)."""
    meter = Meter(task, runtime.device, keep_scores=True)
    objective = loss_function(task)
    total, outs = 0.0, []
    for start in range(0, len(y), batch_size):
        xb = runtime.batch(x[start : start + batch_size])
        yb = y[start : start + batch_size].to(runtime.device)
        with runtime.autocast():
            out = logits(xb).float()
        total += float(objective(out, yb)) * len(yb)
        meter.add(out, yb)
        if task.kind in ("multilabel", "regression"):
            outs.append(out.cpu())
    metrics = {"loss": total / len(y) if len(y) else math.nan, **meter.result()}
    rows = per_label(task, torch.cat(outs), y.cpu()) if outs else []
    return metrics, rows
