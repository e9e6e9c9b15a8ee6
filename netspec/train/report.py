"""What a run shows and keeps: the per-epoch progress, the metrics CSV, the learning-curve PNG
and the rich tables (epochs, --init matches, evaluation)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields
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

from netspec.io import atomic_write
from netspec.train.checkpoint import InitReport, write_text
from netspec.train.evaluate import Evaluation


@dataclass(frozen=True)
class EpochRecord:
    """One row of the metrics CSV. Validation figures are NaN when there is no validation set.

    For a dense output (labels a class per pixel) the losses and accuracies are per labelled
    pixel and the mean IoUs are kept; a classifier's mean IoUs are NaN (and not written).
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

    @property
    def per_pixel(self) -> bool:
        return not (math.isnan(self.train_miou) and math.isnan(self.val_miou))


DENSE_COLUMNS = tuple(f.name for f in fields(EpochRecord))
CSV_COLUMNS = DENSE_COLUMNS[:-2]  # a classifier's: no mean IoU


def per_pixel(history: list[EpochRecord]) -> bool:
    """Whether a run's records are a dense output's (they hold mean IoUs)."""
    return any(r.per_pixel for r in history)


def write_metrics(path: Path, history: list[EpochRecord]) -> None:
    """Atomically (re)write the metrics CSV from the whole history (with the mean IoU
    columns for a dense output)."""
    columns = DENSE_COLUMNS if per_pixel(history) else CSV_COLUMNS
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in history:
        writer.writerow(
            [
                "" if isinstance(v, float) and math.isnan(v) else v
                for v in astuple(record)[: len(columns)]
            ]
        )
    write_text(path, buffer.getvalue())


def plot_curves(path: Path, history: list[EpochRecord], title: str) -> None:
    """Save the learning curves: loss and accuracy per epoch, training vs validation (and
    the mean IoU for a dense output, whose accuracy is the pixel accuracy)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas
    from matplotlib.ticker import MaxNLocator

    epochs = [r.epoch for r in history]
    panels = [("loss", "loss"), ("acc", "accuracy")]
    if per_pixel(history):
        panels = [("loss", "loss per pixel"), ("acc", "pixel accuracy"), ("miou", "mean IoU")]
    figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    for ax, (metric, label) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        ax.plot(epochs, [getattr(r, f"train_{metric}") for r in history], "o-", label="train")
        val = [getattr(r, f"val_{metric}") for r in history]
        if not all(math.isnan(v) for v in val):
            ax.plot(epochs, val, "o-", label="validation")
        ax.set_title(f"model {label}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def _short(loss: float, acc: float) -> str:
    """Loss and accuracy short enough for a progress bar on an 80-column terminal."""
    return f"loss {_fmt(loss, 3)} acc {_pct(acc)}"


def epoch_line(record: EpochRecord, epochs: int) -> str:
    """One plain line per epoch, for logs that are not a terminal (a dense output's accuracy
    is per pixel, followed by its mean IoU)."""
    dense = record.per_pixel
    train_miou = f" miou {_fmt(record.train_miou)}" if dense else ""
    val_miou = f" val_miou {_fmt(record.val_miou)}" if dense else ""
    return (
        f"epoch {record.epoch}/{epochs}: loss {_fmt(record.train_loss)} acc {_fmt(record.train_acc)}"
        f"{train_miou} | val_loss {_fmt(record.val_loss)} val_acc {_fmt(record.val_acc)}{val_miou}"
        f" | lr {record.lr:.3g} | {record.seconds:.1f}s"
    )


def epoch_table(history: list[EpochRecord], best_epoch: int | None, title: str) -> Table:
    """The per-epoch table shown at the end of a run; the best epoch is starred."""
    dense = per_pixel(history)
    table = Table(title=title)
    columns = ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"]
    if dense:
        columns[2:5] = ["train pixel acc", "train mIoU", "val loss", "val pixel acc", "val mIoU"]
    for column in columns:
        table.add_column(column, justify="right")
    for r in history:
        best = r.epoch == best_epoch
        train = [_fmt(r.train_acc), _fmt(r.train_miou)] if dense else [_fmt(r.train_acc)]
        val = [_fmt(r.val_acc), _fmt(r.val_miou)] if dense else [_fmt(r.val_acc)]
        table.add_row(
            f"{r.epoch}{' *' if best else ''}",
            _fmt(r.train_loss),
            *train,
            _fmt(r.val_loss),
            *val,
            f"{r.lr:.3g}",
            f"{r.seconds:.1f}",
            style="bold green" if best else None,
        )
    if best_epoch is not None:
        table.caption = "* lowest validation loss (best.safetensors)"
    return table


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

    def update(self, step: int, loss: float, acc: float) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=step, metrics=_short(loss, acc))

    def finish(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.task is not None:
            val = f"val {_fmt(record.val_loss, 3)} {_pct(record.val_acc)}"
            if record.per_pixel:
                val += f" mIoU {_pct(record.val_miou)}"
            self.bar.update(
                self.task, metrics=f"{_short(record.train_loss, record.train_acc)} | {val}"
            )
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


def eval_tables(result: Evaluation, title: str) -> list[Table]:
    """The per-class accuracy table and the confusion matrix (or its worst pairs); for a dense
    output, the per-class IoU table and the confusion matrix in pixels."""
    if result.per_pixel:
        return [_iou_table(result, title), _confusion_table(result)]
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
    return [per_class, _confusion_table(result)]


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


def _confusion_table(result: Evaluation) -> Table:
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
    for name in names:
        table.add_column(name, justify="right")
    for i, row in enumerate(matrix):
        cells = [
            f"[bold green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "[dim]0[/]")
            for j, v in enumerate(row)
        ]
        table.add_row(names[i], *cells)
    return table
