"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a model on data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netspec.train.device import Runtime

Logits = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Evaluation:
    """A model's results on a data set.

    Attributes:
        loss: mean cross-entropy per example (NaN on an empty set).
        confusion: ``(classes, classes)`` counts, rows the true class, columns the prediction.
        class_names: one name per class.
    """

    loss: float
    confusion: torch.Tensor
    class_names: list[str]

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(self.confusion.diagonal().sum()) / self.count if self.count else float("nan")

    def per_class(self) -> list[float]:
        """Accuracy (recall) per true class; NaN for a class with no examples."""
        totals = self.confusion.sum(dim=1).tolist()
        hits = self.confusion.diagonal().tolist()
        return [h / t if t else float("nan") for h, t in zip(hits, totals, strict=True)]


@torch.no_grad()
def evaluation_sums(
    logits: Logits,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    runtime: Runtime,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (float64) and the confusion matrix, on the runtime's device.

    They are sums so that data-parallel processes can all-reduce them before dividing.
    """
    loss = torch.zeros((), dtype=torch.float64, device=runtime.device)
    confusion = torch.zeros(classes * classes, dtype=torch.int64, device=runtime.device)
    for start in range(0, len(y), batch_size):
        xb = runtime.batch(x[start : start + batch_size])
        yb = y[start : start + batch_size].to(runtime.device)
        with runtime.autocast():
            out = logits(xb)
        out = out.float()
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        confusion += torch.bincount(yb * classes + out.argmax(dim=1), minlength=classes * classes)
    return loss, confusion.view(classes, classes)


def evaluate(
    logits: Logits,
    x: torch.Tensor,
    y: torch.Tensor,
    class_names: list[str],
    runtime: Runtime,
    batch_size: int = 256,
) -> Evaluation:
    """Evaluate `logits` (a model in eval mode) on examples `x` with labels `y`."""
    loss, confusion = evaluation_sums(logits, x, y, len(class_names), runtime, batch_size)
    mean = float(loss) / len(y) if len(y) else float("nan")
    return Evaluation(mean, confusion.cpu(), class_names)


def onnx_logits(run: Callable[[np.ndarray], np.ndarray], probabilities: bool) -> Logits:
    """An ONNX model's run function (e.g. `runtime.Session.run`) as `Logits` for `evaluate`.

    A model ending in a softmax outputs probabilities p: log p serves as its scores (the
    log-softmax of log p is log p itself), so the loss is the same cross-entropy as the
    checkpoint's. A model exported with --logits outputs the scores themselves.
    """

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = torch.from_numpy(np.asarray(run(np.ascontiguousarray(x.cpu().numpy())), np.float32))
        return out.clamp_min(1e-12).log() if probabilities else out

    return logits
