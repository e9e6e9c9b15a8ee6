"""What a run shows and keeps: the per-epoch progress, the metrics CSV, the learning-curve PNG
and the rich tables (epochs, --init matches, evaluation)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from netspec import terminal
from netspec.io import atomic_write
from netspec.train.checkpoint import InitReport, write_text
from netspec.train.evaluate import Evaluation


@dataclass(frozen=True)
class EpochRecord:
    """One row of the metrics CSV. Validation figures are NaN when there is no validation set.

    For a dense output (labels a class per pixel) the losses and accuracies are per labelled
    pixel and the mean IoUs are kept; a classifier's mean IoUs are NaN (and not written).
    `metrics` holds the task's other metrics (`netspec.train.metrics`) as ``train_<name>``
    and ``val_<name>``: top5, f1, map, mae, rmse, r2; a regression's accuracies are NaN.
    """

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    train_miou: float = math.nan
    val_miou: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        epoch: int,
        train_loss: float,
        train: Mapping[str, float],
        val_loss: float,
        val: Mapping[str, float],
        lr: float,
        seconds: float,
    ) -> EpochRecord:
        """A record from the metrics by name of the training pass and the validation."""
        nan = math.nan
        extra = {
            f"{side}_{k}": v
            for side, values in (("train", train), ("val", val))
            for k, v in values.items()
            if k not in ("acc", "miou")
        }
        return cls(
            epoch,
            train_loss,
            train.get("acc", nan),
            val_loss,
            val.get("acc", nan),
            lr,
            seconds,
            train.get("miou", nan),
            val.get("miou", nan),
            extra,
        )

    @property
    def per_pixel(self) -> bool:
        return not (math.isnan(self.train_miou) and math.isnan(self.val_miou))

    def val_metrics(self) -> dict[str, float]:
        """The validation loss and metrics by name (those the task has)."""
        out = {"loss": self.val_loss}
        if not (math.isnan(self.train_acc) and math.isnan(self.val_acc)):
            out["acc"] = self.val_acc
        if self.per_pixel:
            out["miou"] = self.val_miou
        out |= {k[4:]: v for k, v in self.metrics.items() if k.startswith("val_")}
        return out


DENSE_COLUMNS = tuple(f.name for f in fields(EpochRecord))[:-1]
CSV_COLUMNS = DENSE_COLUMNS[:-2]  # a classifier's: no mean IoU


def _columns(history: list[EpochRecord]) -> list[str]:
    """The CSV's columns: a classifier's, the mean IoUs for a dense output, the task's other
    metrics; the accuracies only when the task has them."""
    columns = list(DENSE_COLUMNS if per_pixel(history) else CSV_COLUMNS)
    if history and all(math.isnan(r.train_acc) and math.isnan(r.val_acc) for r in history):
        columns = [c for c in columns if c not in ("train_acc", "val_acc")]
    extra = list(dict.fromkeys(k for r in history for k in r.metrics))
    return columns + extra


def per_pixel(history: list[EpochRecord]) -> bool:
    """Whether a run's records are a dense output's (they hold mean IoUs)."""
    return any(r.per_pixel for r in history)


def write_metrics(path: Path, history: list[EpochRecord]) -> None:
    """Atomically (re)write the metrics CSV from the whole history (with the mean IoU
    columns for a dense output)."""
    columns = _columns(history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in history:
        values = [_value(record, c) for c in columns]
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in values])
    write_text(path, buffer.getvalue())


def _value(record: EpochRecord, column: str) -> Any:
    if column in record.metrics:
        return record.metrics[column]
    return getattr(record, column, math.nan)


def plot_curves(path: Path, history: list[EpochRecord], title: str) -> None:
    """Save the learning curves: loss and accuracy per epoch, training vs validation (and
    the mean IoU for a dense output, whose accuracy is the pixel accuracy)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas
    from matplotlib.ticker import MaxNLocator

    from netspec.units import plain

    epochs = [r.epoch for r in history]
    panels = metric_panels(history)
    figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for ax, (metric, label) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        for side, name in (("train", "train"), ("val", "validation")):
            values = [_value(r, f"{side}_{metric}") for r in history]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, "o-", label=name)
        ax.set_title(f"model {label}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(plain(title))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


_METRIC_LABELS = {
    "top5": "top-5 accuracy",
    "f1": "F1 (micro)",
    "map": "mAP",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R^2",
}


def metric_panels(history: list[EpochRecord]) -> list[tuple[str, str]]:
    """(metric, label) of each curve panel: the loss, the accuracy (when the task has one),
    the mean IoU of a dense output, the task's other metrics."""
    if per_pixel(history):
        return [("loss", "loss per pixel"), ("acc", "pixel accuracy"), ("miou", "mean IoU")]
    panels = [("loss", "loss")]
    if "train_acc" in _columns(history):
        panels.append(("acc", "accuracy"))
    names = dict.fromkeys(k.split("_", 1)[1] for r in history for k in r.metrics)
    return panels + [(m, _METRIC_LABELS.get(m, m)) for m in names]


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def _short(loss: float, value: float, name: str = "acc") -> str:
    """Loss and accuracy (or MAE) short enough for a progress bar on an 80-column terminal."""
    shown = _pct(value) if name == "acc" else _fmt(value, 3)
    return f"loss {_fmt(loss, 3)} {name} {shown}"


def epoch_line(record: EpochRecord, epochs: int) -> str:
    """One plain line per epoch, for logs that are not a terminal (a dense output's accuracy
    is per pixel, followed by its mean IoU)."""
    dense = record.per_pixel
    train_miou = f" miou {_fmt(record.train_miou)}" if dense else ""
    val_miou = f" val_miou {_fmt(record.val_miou)}" if dense else ""
    has_acc = not (math.isnan(record.train_acc) and math.isnan(record.val_acc))
    acc = f" acc {_fmt(record.train_acc)}" if has_acc else ""
    val_acc = f" val_acc {_fmt(record.val_acc)}" if has_acc else ""
    extra = {"train": "", "val": ""}
    for key, value in record.metrics.items():
        side, name = key.split("_", 1)
        extra[side] += f" {name if side == 'train' else key} {_fmt(value)}"
    return (
        f"epoch {record.epoch}/{epochs}: loss {_fmt(record.train_loss)}{acc}{train_miou}"
        f"{extra['train']} | val_loss {_fmt(record.val_loss)}{val_acc}{val_miou}{extra['val']}"
        f" | lr {record.lr:.3g} | {record.seconds:.1f}s"
    )


def epoch_table(
    history: list[EpochRecord], best_epoch: int | None, title: str, loss_note: str | None = None
) -> Table:
    """The per-epoch table shown at the end of a run; the best epoch is starred. `loss_note`
    says what the loss columns sum (side heads)."""
    dense = per_pixel(history)
    table = Table(title=title)
    metrics = [m for m, _ in metric_panels(history)[1:]]
    names = {"acc": "pixel acc" if dense else "acc", "miou": "mIoU", **_SHORT}
    columns = ["epoch", "train loss"] + [f"train {names.get(m, m)}" for m in metrics]
    columns += ["val loss"] + [f"val {names.get(m, m)}" for m in metrics] + ["lr", "seconds"]
    for column in columns:
        table.add_column(column, justify="right")
    for r in history:
        best = r.epoch == best_epoch
        table.add_row(
            f"{r.epoch}{' *' if best else ''}",
            _fmt(r.train_loss),
            *(_fmt(_value(r, f"train_{m}")) for m in metrics),
            _fmt(r.val_loss),
            *(_fmt(_value(r, f"val_{m}")) for m in metrics),
            f"{r.lr:.3g}",
            f"{r.seconds:.1f}",
            style="bold green" if best else None,
        )
    notes = ["* lowest validation loss (best.safetensors)"] if best_epoch is not None else []
    table.caption = "; ".join([*notes, *([loss_note] if loss_note else [])]) or None
    return table


_SHORT = {"top5": "top-5", "f1": "F1", "map": "mAP", "mae": "MAE", "rmse": "RMSE", "r2": "R^2"}


class EpochProgress:
    """A rich progress bar per epoch (loss and accuracy as it goes) on a terminal; one plain
    line per epoch otherwise; nothing at all when `enabled` is false (other ranks, --quiet)."""

    def __init__(self, console: Console, epochs: int, enabled: bool = True) -> None:
        self.console = console
        self.epochs = epochs
        self.enabled = enabled
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> EpochProgress:
        if self.enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, epoch: int, steps: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(f"epoch {epoch}/{self.epochs}", total=steps, metrics="")

    def update(self, step: int, loss: float, name: str, value: float) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=step, metrics=_short(loss, value, name))

    def finish(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.task is not None:
            name = "acc" if not math.isnan(record.val_acc) else "mae"
            value = record.val_acc if name == "acc" else record.metrics.get("val_mae", math.nan)
            train = record.train_acc if name == "acc" else record.metrics.get("train_mae", math.nan)
            val = (
                f"val {_fmt(record.val_loss, 3)} {_pct(value) if name == 'acc' else _fmt(value, 3)}"
            )
            if record.per_pixel:
                val += f" mIoU {_pct(record.val_miou)}"
            self.bar.update(self.task, metrics=f"{_short(record.train_loss, train, name)} | {val}")
        else:
            self.console.print(epoch_line(record, self.epochs), highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)


def init_table(report: InitReport, origin: str, model: Mapping[str, Any] | None = None) -> Table:
    """Which layers `--init` loaded, which are new, which were skipped for their shape (with
    both shapes); with the model's state_dict, the shapes of the loaded and new tensors too."""
    layers: dict[str, list[str]] = {}
    detail: dict[str, str] = {}

    def mark(key: str, status: str) -> None:
        layer = key.rsplit(".", 1)[0]
        statuses = layers.setdefault(layer, [])
        if status not in statuses:
            statuses.append(status)

    def shapes(key: str) -> None:
        if model is not None and key in model:
            layer, name = key.rsplit(".", 1) if "." in key else (key, key)
            shown = f"{name} {list(model[key].shape)}"
            detail[layer] = f"{detail[layer]}, {shown}" if layer in detail else shown

    for key in report.loaded:
        mark(key, "loaded")
        shapes(key)
    for key in report.new:
        mark(key, "new")
        shapes(key)
    for key, theirs, ours in report.skipped:
        mark(key, "skipped")
        layer = key.rsplit(".", 1)[0]
        shown = f"{key.rsplit('.', 1)[-1]}: checkpoint {list(theirs)}, model {list(ours)}"
        detail[layer] = f"{detail[layer]}, {shown}" if layer in detail else shown
    for key in report.unused:
        mark(key, "unused")
    table = Table(title=f"--init {origin}")
    for column in ("layer", "status", "note"):
        table.add_column(column)
    colors = {"loaded": "green", "new": "yellow", "skipped": "red", "unused": "dim"}
    for layer, statuses in layers.items():
        shown = ", ".join(f"[{colors[s]}]{s}[/]" for s in statuses)
        table.add_row(layer, shown, detail.get(layer, ""))
    table.caption = (
        f"{len(report.loaded)} tensors loaded, {len(report.new)} new, "
        f"{len(report.skipped)} skipped (shape mismatch), {len(report.unused)} unused"
    )
    return table


# Above this many classes the full matrix is unreadable: show the most confused pairs.
_MATRIX_LIMIT = 20


def eval_tables(result: Evaluation, title: str, console: Console | None = None) -> list[Table]:
    """The per-class accuracy table and the confusion matrix (or its worst pairs); for a dense
    output, the per-class IoU table and the confusion matrix in pixels. Given the console,
    a matrix wider than it heads its columns by class number, the names in its caption."""
    matrix = _confusion_table(result)
    if console is not None and terminal.natural_width(console, matrix) > console.width:
        matrix = _confusion_table(result, numbered=True)
    if result.per_pixel:
        return [_iou_table(result, title), matrix]
    per_class = Table(
        title=f"{title}: accuracy {result.accuracy:.2%} ({result.count} examples, loss {result.loss:.4f})"
    )
    for column in ("class", "examples", "correct", "accuracy"):
        per_class.add_column(column, justify="right")
    totals = result.confusion.sum(dim=1).tolist()
    hits = result.confusion.diagonal().tolist()
    for name, total, hit, acc in zip(
        result.class_names, totals, hits, result.per_class(), strict=True
    ):
        per_class.add_row(name, str(total), str(hit), "-" if math.isnan(acc) else f"{acc:.2%}")
    return [per_class, matrix]


def _iou_table(result: Evaluation, title: str) -> Table:
    """Per class: labelled and predicted pixels, IoU and accuracy (recall); the mean IoU
    over the classes labelled or predicted (the others show `-` and are left out)."""
    ious = result.iou()
    present = sum(1 for v in ious if not math.isnan(v))
    table = Table(
        title=f"{title}: pixel accuracy {_pct2(result.accuracy)}, mean IoU {_pct2(result.mean_iou)} "
        f"over {present} of {len(ious)} classes ({result.count:,} labelled pixels, "
        f"loss {result.loss:.4f})"
    )
    for column in ("class", "pixels", "predicted", "IoU", "accuracy"):
        table.add_column(column, justify="right")
    totals = result.confusion.sum(dim=1).tolist()
    predicted = result.confusion.sum(dim=0).tolist()
    for name, total, guessed, iou, acc in zip(
        result.class_names, totals, predicted, ious, result.per_class(), strict=True
    ):
        table.add_row(name, f"{total:,}", f"{guessed:,}", _pct2(iou), _pct2(acc))
    table.caption = (
        "IoU = TP / (TP + FP + FN); mean IoU over the classes labelled or predicted; "
        "pixels labelled 255 are ignored"
    )
    return table


def _pct2(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2%}"


def _confusion_table(result: Evaluation, numbered: bool = False) -> Table:
    names, matrix = result.class_names, result.confusion.tolist()
    if len(names) > _MATRIX_LIMIT:
        pairs = sorted(
            (
                (matrix[i][j], i, j)
                for i in range(len(names))
                for j in range(len(names))
                if i != j and matrix[i][j]
            ),
            reverse=True,
        )[:_MATRIX_LIMIT]
        table = Table(
            title=f"most confused pairs ({len(names)} classes: too many for the full matrix)"
        )
        for column in ("true", "predicted", "count"):
            table.add_column(column, justify="right")
        for count, i, j in pairs:
            table.add_row(names[i], names[j], str(count))
        return table
    unit = "pixels, " if result.per_pixel else ""
    table = Table(title=f"confusion matrix ({unit}rows: true class, columns: predicted)")
    table.add_column("true \\ pred", justify="right", style="bold")
    for i, name in enumerate(names):
        table.add_column(str(i) if numbered else name, justify="right")
    if numbered:
        table.caption = "columns: " + ", ".join(f"{i} {name}" for i, name in enumerate(names))
    for i, row in enumerate(matrix):
        cells = [
            f"[bold green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "[dim]0[/]")
            for j, v in enumerate(row)
        ]
        table.add_row(names[i], *cells)
    return table


def print_task_eval(logits: Any, task: Any, data: Any, runtime: Any, title: str) -> None:
    """`netspec eval` for multilabel and regression: the metrics, then one row per output."""
    from netspec.train.metrics import LABELS, evaluate_task

    metrics, rows = evaluate_task(logits, task, data.x, data.y, runtime)
    console = Console()
    table = Table(title=f"{title}: {len(data)} examples, {task.kind} task")
    columns = ["output"] + (
        ["positives", "AP", "F1"] if task.kind == "multilabel" else ["MAE", "R^2"]
    )
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in zip(data.class_names, rows, strict=False):
        table.add_row(name, *(_fmt(v) if k != "positives" else f"{v:.0f}" for k, v in row.items()))
    console.print(table)
    shown = ", ".join(f"{LABELS.get(k, k)}: {_fmt(v)}" for k, v in metrics.items())
    console.print(shown, highlight=False, soft_wrap=True)
