"""`netspec explore --train-top K --budget TIME`: the options read, the trials run
(`netspec.explore_trials`), the measured front printed and plotted."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
STAGE3 = ("budget", "storage", "study", "workers", "train-limit")


def parse_time(text: str) -> float:
    """`90`, `90s`, `10m`, `1.5h` in seconds."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", text)
    if not found:
        raise NetspecError(
            f"--budget takes a time; received {text!r}", hint="e.g. --budget 90s, 10m or 1h"
        )
    return float(found.group(1)) * _UNITS[found.group(2) or ""]


def trials_settings(
    top: int | None,
    budget: str | None,
    epochs: int,
    limit: int | None,
    storage: str | None,
    study: str | None,
    workers: int,
    heartbeat: int,
    data: str,
    json_path: str | None,
    spec: str,
) -> Any:
    """The stage-3 settings the flags give, or None without --train-top (checked before any work)."""
    if top is None:
        given = [
            name
            for name, value in zip(
                STAGE3, (budget, storage, study, workers != 1, limit), strict=True
            )
            if value
        ]
        if given:
            raise NetspecError(
                f"--{given[0]} goes with --train-top",
                hint=f"e.g. netspec explore {spec} --train-top 8 --budget 10m",
            )
        return None
    from netspec.explore_trials import Trials

    if top < 2:
        raise NetspecError(
            f"--train-top takes at least 2 members (successive halving compares them); received {top}"
        )
    if budget is None:
        raise NetspecError(
            "--train-top needs --budget TIME",
            hint=f"e.g. netspec explore {spec} --train-top {top} --budget 10m",
        )
    for flag, value in (("--workers", workers), ("--heartbeat", heartbeat), ("--epochs", epochs)):
        if value < 1:
            raise NetspecError(f"{flag} takes a positive number; received {value}")
    if limit is not None and limit < 1:
        raise NetspecError(f"--train-limit takes a positive number; received {limit}")
    seconds = parse_time(budget)
    if seconds <= 0:
        raise NetspecError(f"--budget takes a positive time; received {budget!r}")
    default = (
        Path(json_path).with_suffix(".optuna.db")
        if json_path
        else Path(f"{Path(spec).stem}.optuna.db")
    )
    return Trials(
        budget=seconds,
        data=data,
        epochs=epochs,
        storage=storage,
        default_storage=default,
        study=study,
        workers=workers,
        heartbeat=heartbeat,
        limit=limit,
    )


def candidates(r: Any, scores: Any, sort_by: str, top: int) -> list[Any]:
    """The `top` most promising members: by the proxy's ranking, else by `sort_by` (the
    cheapest first) among the members that fit the budgets (else the valid ones)."""
    if scores is not None:
        return list(scores.ranked()[:top])
    pool = r.fitting or r.valid
    return sorted(pool, key=lambda m: (m.figure(sort_by), m.number))[:top]


def run_trials(r: Any, scores: Any, t: Any, sort_by: str, top: int, plot_path: str | None) -> Any:
    """Train the candidates, attach what was measured to the members, print the front."""
    from rich.console import Console

    from netspec.explore_trials import LATENCY_NOTE, measured_front, train_top

    console = Console(highlight=False)
    chosen = candidates(r, scores, sort_by, top)
    by = f"by {scores.proxy}" if scores is not None else f"by {sort_by}, the cheapest first"
    console.print(
        f"training the {len(chosen)} most promising member(s) ({by}) on {t.data}: successive halving "
        f"over 1..{t.epochs} epoch(s), budget {t.budget:g} s, {t.workers} worker(s) here"
    )
    out = train_top(r.spec, chosen, t, console)
    console.print(
        f"study {out.study!r} in {out.storage}: {len(out.results)} of {len(chosen)} member(s) trained"
        + (
            f", {out.failed_runs} trial(s) lost with their process and rerun"
            if out.failed_runs
            else ""
        )
    )
    console.print(f"budget estimate: {out.estimate}")
    if out.stopped_by_budget:
        left = len(chosen) - len(out.results)
        console.print(
            f"[yellow]note[/]: the budget ended the work here; {left} member(s) not trained yet "
            "(run the same command again to go on: the study keeps what was done)"
        )
    members = {m.number: m for m in chosen}
    for n, res in out.results.items():
        members[n].measured = {
            "accuracy": None if math.isnan(res.accuracy) else res.accuracy,
            "epochs": res.epochs,
            "state": res.state,
            "seconds": res.seconds,
            "latency_ms": res.latency_ms,
            "error": res.error,
        }
    front = set(measured_front(members.values()))
    measured_table(console, r, [members[n] for n in sorted(out.results)], front, LATENCY_NOTE)
    if plot_path:
        from netspec.explore_plot import plot_trials

        plot_trials(r, chosen, scores, front, plot_path)
        console.print(f"plot: {plot_path}")
    return out


def print_measured(r: Any) -> None:
    """`explore merge`: the measured front of the members the results carry, if any."""
    from rich.console import Console

    from netspec.explore_trials import LATENCY_NOTE, measured_front

    rows = [m for m in r.members if m.measured]
    if rows:
        front = set(measured_front(rows))
        measured_table(Console(highlight=False), r, rows, front, LATENCY_NOTE)


def measured_table(console: Any, r: Any, rows: list[Any], front: set[int], note: str) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from netspec import explore as ex
    from netspec import terminal

    rows = sorted(rows, key=lambda m: (-(m.measured.get("accuracy") or -1.0), m.number))
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"measured: {len(rows)} trained member(s), by accuracy (* on the front of accuracy "
        f"against MACs, params and latency; {note})",
        title_justify="left",
        pad_edge=False,
    )
    for col in (
        "#",
        *r.space.names,
        "val acc",
        "epochs",
        "trial",
        "params",
        "MACs",
        "latency ms",
        "front",
    ):
        table.add_column(col, justify="left" if col in ("trial", "front") else "right")
    for m in rows:
        d = m.measured
        acc = d.get("accuracy")
        lat = d.get("latency_ms")
        table.add_row(
            str(m.number),
            *(escape(ex.literal(v)) for v in m.bindings.values()),
            "NaN" if acc is None else f"{acc:.3f}",
            str(d.get("epochs")),
            escape(d.get("state", "") + (f": {d['error']}" if d.get("error") else "")),
            f"{m.params:,}",
            f"{m.macs:,}",
            "-" if lat is None else f"{lat:.3f}",
            "*" if m.number in front else "",
        )
    terminal.print_whole(console, table)
