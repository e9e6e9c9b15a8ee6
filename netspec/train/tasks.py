"""Training tasks: what a network learns, the loss that follows from it, and its metrics.

A task is declared (``train { task = multilabel }``, ``task = regression(loss=mae)``,
``--task``), never guessed from the data. ``auto`` (the default) means what it always meant
and nothing more: a spec ending in SOFTMAX, or declaring ``classes N``, is a single-label
classifier; ``classes K per pixel`` is a dense one. Anything else must say its task.

=========== ======================== ============================== ===========================
task        output                   loss                           metrics
=========== ======================== ============================== ===========================
classify    ``[K]``, SOFTMAX or not  cross-entropy on the logits    acc (top-1), top5 (K >= 10)
multilabel  ``[K]`` ending in SIGMOID binary cross-entropy, logits  acc (per label), f1, map
regression  ``[K]``, no SOFTMAX      mse, mae or smooth_l1          mae, rmse, r2
dense       ``[K, H, W]`` per pixel  cross-entropy per pixel        acc (per pixel), miou
=========== ======================== ============================== ===========================

Regression targets are normalised for training (z = (y - mean) / std per output, the
statistics of the training set, recorded in the run's ``task.json``) when the output has no
final activation; the model then predicts z, and every metric is in the targets' own units.
With a final activation (SIGMOID, TANH, ...) the targets are taken as they are and must lie in
its range.

Metric conventions: f1 is the micro F1 over all labels at threshold 0.5; map the mean over
labels (with a positive example) of the average precision of the scores ranked; r2 the mean
over outputs of 1 - SSE/SST.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.train.data import IGNORE, Dataset

TASK_FILE = "task.json"
LOSSES = {
    "classify": ("cross_entropy",),
    "dense": ("cross_entropy",),
    "multilabel": ("bce",),
    "regression": ("mse", "mae", "smooth_l1"),
}
# A final activation's range: regression targets must lie in it.
_RANGES = {
    "sigmoid": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "relu6": (0.0, 6.0),
}
_ACTIVATIONS = {*_RANGES, "leaky_relu", "silu", "hardswish", "gelu", "elu", "prelu"}
_CLASS_HINT = "for a classifier declare `classes N` and end with SOFTMAX"


@dataclass(frozen=True)
class Task:
    """A resolved task.

    Attributes:
        kind: classify, multilabel, regression or dense.
        outputs: classes, labels or regression targets per example.
        loss: the loss's name (`LOSSES`).
        activation: the output's final layer kind (a regression may end in one).
        mean, std: regression: the statistics z = (y - mean) / std is trained on (per output);
            empty when the targets are taken as they are.
    """

    kind: str
    outputs: int
    loss: str
    activation: str | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def normalised(self) -> bool:
        return bool(self.mean)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Task:
        known = {f.name for f in dataclasses.fields(cls)}
        plain: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known
        }
        return cls(**plain)


def resolve_task(graph: Graph, task: str = "auto", loss: str = "auto") -> Task:
    """The task `graph` trains on, from the declared `task` and `loss` (settings' values).

    Raises:
        NetspecError: when the task is not declared and the spec does not say it, or the
            combination would train the wrong thing (SIGMOID with a single-label loss, a
            regression target on a classifier, ...); located at the train section's key.
    """
    span = graph.train_spans.get("task") if task != "auto" else None
    final = graph.node(graph.output).layer.kind
    kind = _infer(graph, final) if task == "auto" else task
    try:
        kind = _check_task(graph, kind, final)
    except NetspecError as err:
        err.span = err.span or span
        raise
    chosen = LOSSES[kind][0] if loss == "auto" else loss
    if chosen not in LOSSES[kind]:
        raise NetspecError(
            f"the loss {chosen} does not train a {kind} task",
            graph.train_spans.get("loss"),
            hint=f"a {kind} task trains with {' or '.join(LOSSES[kind])}"
            + (
                " (sigmoid outputs: binary cross-entropy per output)"
                if kind == "multilabel"
                else ""
            ),
        )
    outputs = graph.output_shape[0]
    activation = final if kind == "regression" and final in _ACTIVATIONS else None
    return Task(kind, outputs, chosen, activation)


def _infer(graph: Graph, final: str) -> str:
    """`auto`: dense, or classify when the spec says so (SOFTMAX or `classes`); else refused."""
    if graph.per_pixel:
        return "dense"
    if final == "sigmoid":
        raise NetspecError(
            f"{graph.name} ends in SIGMOID: trained as a classifier, cross-entropy over classes "
            "would read its outputs as scores of classes that exclude each other",
            hint="declare the task: `train { task = multilabel }` (binary cross-entropy per "
            "output; one output is a binary task), or end in SOFTMAX for one class per example",
        )
    if graph.ends_in_probabilities or graph.classes is not None:
        return "classify"
    shape = ", ".join(map(str, graph.output_shape))
    raise NetspecError(
        f"{graph.name} outputs [{shape}] and says neither `classes` nor a task: training would "
        "have to guess what its outputs mean",
        hint=f"{_CLASS_HINT}; for values, `train {{ task = regression }}`",
    )


def _check_task(graph: Graph, kind: str, final: str) -> str:
    shape = graph.output_shape
    if graph.per_pixel:
        if kind not in ("dense", "classify"):
            raise NetspecError(
                f"{graph.name} outputs a class per pixel (`classes K per pixel`); it trains the "
                f"dense task, not {kind}"
            )
        return "dense"
    if kind == "dense":
        raise NetspecError(
            f"task = dense needs a per-pixel output, but {graph.name} outputs {list(shape)}",
            hint="declare `classes K per pixel` and end in a map [K, H, W]",
        )
    if len(shape) != 1:
        raise NetspecError(
            f"{graph.name} outputs {list(shape)}, not a vector: a {kind} task needs one",
            hint="end in FC(K) (a map needs GAP or FLATTEN first)",
        )
    if kind == "classify" and final == "sigmoid":
        raise NetspecError(
            f"{graph.name} ends in SIGMOID, which a single-label classifier (cross-entropy "
            "over classes that exclude each other) cannot train",
            hint="use `task = multilabel` for independent yes/no outputs, or end in SOFTMAX",
        )
    if kind == "multilabel" and final != "sigmoid":
        raise NetspecError(
            f"a multilabel task needs a final SIGMOID (one probability per label), but "
            f"{graph.name} ends in {final.upper()}",
            hint="end the chain in -> SIGMOID"
            + (": a SOFTMAX makes the labels compete" if graph.ends_in_probabilities else ""),
        )
    if kind == "regression" and (graph.ends_in_probabilities or graph.classes is not None):
        what = "ends in SOFTMAX" if graph.ends_in_probabilities else "declares `classes`"
        raise NetspecError(
            f"{graph.name} {what}, a classifier: a regression target cannot train it",
            hint="a regression ends in FC(K) (or an activation bounding its values), "
            "without `classes` and SOFTMAX",
        )
    for head in graph.heads:
        head_final = graph.node(head.output).layer.kind
        if kind == "multilabel" and head_final != "sigmoid":
            raise NetspecError(
                f"side head `{head.name}` must end in SIGMOID like the main output",
                head.span,
            )
    return kind


def training_graph(graph: Graph, task: Task) -> Graph:
    """The graph whose outputs the loss reads: for multilabel, each SIGMOID's input (binary
    cross-entropy on the logits, stable); otherwise `graph` itself. The modules and their
    names are the same, so weights go between the two unchanged."""
    if task.kind != "multilabel":
        return graph

    def before(node_id: str) -> str:
        return graph.node(node_id).inputs[0]

    heads = [h.model_copy(update={"output": before(h.output)}) for h in graph.heads]
    return graph.model_copy(update={"output": before(graph.output), "heads": heads})


def fit_statistics(task: Task, train: Dataset) -> Task:
    """A regression task with its normalisation (no final activation), or the targets'
    range checked against the final activation's; other tasks unchanged.

    Raises:
        NetspecError: regression targets outside the final activation's range.
    """
    if task.kind != "regression":
        return task
    y = train.y.double()
    if task.activation is not None:
        low, high = _RANGES.get(task.activation, (-math.inf, math.inf))
        if len(y) and (float(y.min()) < low or float(y.max()) > high):
            raise NetspecError(
                f"the regression targets lie in [{float(y.min()):g}, {float(y.max()):g}] but "
                f"the output ends in {task.activation.upper()}, whose values lie in "
                f"[{low:g}, {high:g}]",
                hint="drop the final activation (the targets are then normalised), or scale "
                "the targets into its range",
            )
        return task
    mean = y.mean(dim=0) if len(y) else torch.zeros(task.outputs, dtype=torch.float64)
    std = y.std(dim=0, unbiased=False) if len(y) > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return dataclasses.replace(task, mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def write_task(folder: Path, task: Task) -> None:
    from netspec.train.checkpoint import write_text

    write_text(Path(folder) / TASK_FILE, json.dumps(task.to_json(), indent=2) + "\n")


def read_task(folder: Path) -> Task | None:
    """The task a run folder recorded, or None (a run from before tasks, or none there)."""
    path = Path(folder) / TASK_FILE
    if not path.is_file():
        return None
    try:
        return Task.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise NetspecError(f"{path} is damaged ({err})") from None


# --- the loss --------------------------------------------------------------------------------


def loss_function(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The mean loss of a batch: outputs (the logits for classify, multilabel and dense)
    against targets as the data holds them."""
    if task.kind in ("classify", "dense"):
        return cross_entropy
    if task.kind == "multilabel":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.float(), y)
    raw = {"mse": F.mse_loss, "mae": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[task.loss]
    return lambda out, y: raw(out.float(), normalise(task, y))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the scores before the softmax (log-softmax inside: stable).

    Per-pixel labels ``(N, H, W)`` against scores ``(N, K, H, W)``: the mean over the labelled
    pixels (`IGNORE` left out); a batch with none labelled gives 0, not NaN.
    """
    if y.dim() > 1:
        total = F.cross_entropy(logits.float(), y, ignore_index=IGNORE, reduction="sum")
        return total / (y != IGNORE).sum().clamp_min(1)
    return F.cross_entropy(logits.float(), y)


def normalise(task: Task, y: torch.Tensor) -> torch.Tensor:
    if not task.normalised:
        return y
    mean = torch.tensor(task.mean, dtype=y.dtype, device=y.device)
    return (y - mean) / torch.tensor(task.std, dtype=y.dtype, device=y.device)


def predictions(task: Task, out: torch.Tensor) -> torch.Tensor:
    """What the outputs say in the targets' terms: regression values in their own units,
    multilabel probabilities; class scores as they are."""
    if task.kind == "regression" and task.normalised:
        mean = torch.tensor(task.mean, device=out.device)
        return out.float() * torch.tensor(task.std, device=out.device) + mean
    if task.kind == "multilabel":
        return torch.sigmoid(out.float())
    return out


def test_line(test: dict[str, float]) -> str:
    """The end of a run, in one line: the test set's loss and metrics."""
    weights = "the last weights (no validation set)" if test.get("last_weights") else "best weights"
    shown = ", ".join(
        f"test_{k} {v:.4f}" for k, v in test.items() if k not in ("examples", "last_weights")
    )
    return f"test ({int(test.get('examples', 0))} examples, {weights}): {shown}"
