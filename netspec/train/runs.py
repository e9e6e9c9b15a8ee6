"""Runs side by side: the run folders `netspec train` wrote, read back and compared.

One row per run: its folder, network, parameters and MACs (from the run's own spec copy, by
the IR: no torch), the settings that differ between the runs (the rest are the same for all
and are left out), the best epoch's validation metrics, the test metrics, the epochs and the
time trained. Folders that are not runs are refused, naming what each lacks; runs on other
data than the first are compared with a notice. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError
from netspec.io import read_text
from netspec.train.run_folder import SETTINGS, SPEC_COPY, read_settings

RESULT, METRICS = "result.json", "metrics.csv"
# Settings that differ between any two runs without making them different experiments.
_NOISE = {"data", "val_data", "test_data"}


@dataclass
class Run:
    """One run folder, read back."""

    folder: Path
    network: str
    params: int | None
    macs: int | None
    settings: dict[str, Any]
    data: str | None
    classes: Any
    result: dict[str, Any]
    curves: dict[str, list[float]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(v for v in self.curves.get("seconds", []) if not math.isnan(v))


@dataclass
class Comparison:
    """The runs, the settings that differ between them, and notices."""

    runs: list[Run]
    differing: list[str]
    notices: list[str]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per run: identity, figures, differing settings, metrics, time."""
        out = []
        for run in self.runs:
            row: dict[str, Any] = {
                "run": run.folder.name,
                "network": run.network,
                "params": run.params,
                "macs": run.macs,
            }
            row |= {k: _plain(run.settings.get(k)) for k in self.differing}
            best = run.result.get("best_val") or _legacy_best(run.result)
            row |= {f"val_{k}": v for k, v in best.items()}
            row |= {
                f"test_{k}": v
                for k, v in (run.result.get("test") or {}).items()
                if k not in ("examples", "last_weights")
            }
            row |= {"epochs_run": run.result.get("epochs_run"), "time": f"{run.seconds:.1f}s"}
            out.append(row)
        return out


def _legacy_best(result: dict[str, Any]) -> dict[str, Any]:
    """A result.json from before tasks: the best validation loss and accuracy."""
    return {"loss": result.get("best_val_loss"), "acc": result.get("best_val_acc")}


def _plain(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def read_run(folder: Path) -> Run:
    """A run folder's settings, result, spec figures and curves.

    Raises:
        NetspecError: the folder is not a run (no settings.json, result.json or spec.ns),
            or one of its files is damaged.
    """
    folder = Path(folder)
    missing = [n for n in (SETTINGS, RESULT, SPEC_COPY) if not (folder / n).is_file()]
    if not folder.is_dir() or missing:
        what = (
            "does not exist"
            if not folder.exists()
            else ("is not a folder" if not folder.is_dir() else f"has no {', '.join(missing)}")
        )
        raise NetspecError(
            f"{folder} is not a run folder: it {what}",
            hint="`netspec runs` compares folders written by `netspec train` (runs/NAME-...)",
        )
    saved = read_settings(folder, required=("settings",))
    try:
        result = json.loads(read_text(folder / RESULT, "run result", 1 << 20))
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except ValueError as err:
        raise NetspecError(f"{folder / RESULT} is damaged ({err})") from None
    params, macs = _figures(folder, saved)
    settings = saved["settings"]
    return Run(
        folder,
        str(saved.get("network", folder.name)),
        params,
        macs,
        settings,
        settings.get("data"),
        (saved.get("data") or {}).get("classes"),
        result,
        _curves(folder / METRICS),
    )


def _figures(folder: Path, saved: dict[str, Any]) -> tuple[int | None, int | None]:
    """Parameters and MACs of the run's own spec, at its bindings (None when it no longer
    builds, e.g. written by another netspec version)."""
    from netspec.ir.build import load_spec

    try:
        graph = load_spec(folder / SPEC_COPY).instantiate(saved.get("bindings") or {})
    except NetspecError:
        return saved.get("params"), None
    return graph.totals.params, graph.totals.macs


def _curves(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    rows = list(csv.DictReader(io.StringIO(read_text(path, "metrics file", 64 << 20))))
    columns = rows[0].keys() if rows else []
    return {c: [float(r[c]) if r.get(c) else math.nan for r in rows] for c in columns}


def compare(folders: list[Path]) -> Comparison:
    """Read every folder (all of them, before anything is written) and line the runs up.

    Raises:
        NetspecError: for folders that are not runs (every one named at once).
    """
    runs, errors = [], []
    for folder in folders:
        try:
            runs.append(read_run(folder))
        except NetspecError as err:
            errors.append(err.message)
    if errors:
        raise NetspecError(
            errors[0] if len(errors) == 1 else f"{len(errors)} of the folders are not runs",
            notes=errors if len(errors) > 1 else [],
            hint="`netspec runs` compares folders written by `netspec train` (runs/NAME-...)",
        )
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    differing = [
        k
        for k in keys
        if k not in _NOISE
        and len({json.dumps(r.settings.get(k), sort_keys=True) for r in runs}) > 1
    ]
    notices = []
    first = runs[0]
    for run in runs[1:]:
        if (run.data, run.classes) != (first.data, first.classes):
            notices.append(
                f"{run.folder.name} trained on other data ({run.data}) than {first.folder.name} "
                f"({first.data}): its metrics are not comparable"
            )
    return Comparison(runs, differing, notices)


# --- output ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render(comparison: Comparison, fmt: str) -> str | Any:
    """The comparison as text (markdown, csv, json) or a rich Table (table)."""
    rows = comparison.rows()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tail = ["epochs_run", "time"]
    metrics = [k for k in keys if k.startswith(("val_", "test_")) and k not in comparison.differing]
    metrics.sort(key=lambda k: not k.startswith("val_"))  # validation first, then test
    columns = [k for k in keys if k not in metrics and k not in tail] + metrics + tail
    if fmt == "json":
        return json.dumps(
            {"runs": rows, "differing": comparison.differing, "notices": comparison.notices},
            indent=2,
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    table = Table(title=f"{len(rows)} runs")
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "network") else "right")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    if comparison.differing:
        table.caption = "settings shown: those that differ between the runs"
    return table


def plot_runs(comparison: Comparison, path: Path) -> None:
    """Overlay the runs' validation loss and their first metric's curves, written atomically."""
    from matplotlib.figure import Figure

    from netspec.io import atomic_write
    from netspec.units import plain

    metric = next(
        (
            m
            for m in ("val_acc", "val_f1", "val_mae", "val_miou")
            if any(m in r.curves for r in comparison.runs)
        ),
        None,
    )
    panels = ["val_loss", *([metric] if metric else [])]
    figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for run in comparison.runs:
            values = run.curves.get(panel)
            if values:
                ax.plot(
                    run.curves.get("epoch", range(1, len(values) + 1)),
                    values,
                    "o-",
                    ms=3,
                    label=plain(run.folder.name, legend=True),
                )
        ax.set_title(panel.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(f"{len(comparison.runs)} runs")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
