"""Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of a model on data.

For a dense output (labels a class per pixel) every figure is per pixel: the loss is the mean
cross-entropy over the labelled pixels, the confusion matrix counts pixels, the accuracy is
the pixel accuracy, and `iou` gives each class's intersection over union; pixels labelled
`IGNORE` (255) count nowhere.

Mean IoU convention: IoU_c = TP_c / (TP_c + FP_c + FN_c) for each class present in the labels
or in the predictions (a nonzero union); a class absent from both has no IoU (NaN) and is left
out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netspec.train.data import IGNORE
from netspec.train.device import Runtime

Logits = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Evaluation:
    """A model's results on a data set.

    Attributes:
        loss: mean cross-entropy per example, or per labelled pixel (NaN on an empty set).
        confusion: ``(classes, classes)`` counts of examples (or pixels), rows the true class,
            columns the prediction.
        class_names: one name per class.
        per_pixel: the labels were a class per pixel (a dense output).
    """

    loss: float
    confusion: torch.Tensor
    class_names: list[str]
    per_pixel: bool = False

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

    def iou(self) -> list[float]:
        """Intersection over union per class; NaN for a class neither labelled nor predicted."""
        return iou(self.confusion)

    @property
    def mean_iou(self) -> float:
        """The mean IoU over the classes present in the labels or the predictions."""
        return mean_iou(self.confusion)


def iou(confusion: torch.Tensor) -> list[float]:
    """Per-class IoU, TP / (TP + FP + FN), from a confusion matrix (rows true, columns
    predicted); NaN where the class is in neither the labels nor the predictions."""
    hits = confusion.diagonal().double()
    union = confusion.sum(dim=0).double() + confusion.sum(dim=1).double() - hits
    return [
        h / u if u else float("nan") for h, u in zip(hits.tolist(), union.tolist(), strict=True)
    ]


def mean_iou(confusion: torch.Tensor) -> float:
    """The mean of `iou` over the classes that have one (NaN when none has)."""
    present = [v for v in iou(confusion) if v == v]
    return sum(present) / len(present) if present else float("nan")


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

    With per-pixel labels ``(N, H, W)`` both are over the labelled pixels (`IGNORE` left out).
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
        predicted = out.argmax(dim=1)
        if yb.dim() > 1:  # per pixel: the labelled pixels only
            loss += F.cross_entropy(out, yb, reduction="sum", ignore_index=IGNORE).double()
            keep = yb != IGNORE
            yb, predicted = yb[keep], predicted[keep]
        else:
            loss += F.cross_entropy(out, yb, reduction="sum").double()
        confusion += torch.bincount(yb * classes + predicted, minlength=classes * classes)
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
    count = int(confusion.sum())  # examples, or labelled pixels
    mean = float(loss) / count if count else float("nan")
    return Evaluation(mean, confusion.cpu(), class_names, per_pixel=y.dim() > 1)


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
