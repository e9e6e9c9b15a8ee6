"""`netspec explore --train-top K --plot FILE.png`: the measured front beside the proxy-ranked
one (Agg, no GUI; matplotlib as `netspec.explore.plot` uses it)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netspec.explore import Exploration, Member
from netspec.io import atomic_write


def plot_trials(
    exp: Exploration, chosen: Sequence[Member], scores: Any, front: set[int], path: str | Path
) -> None:
    """Left: measured validation accuracy against MACs for the trained members, the measured
    front in red. Right: the candidates as the proxy ranked them (its value against MACs, the
    proxy's front in red), or by cost without a proxy (params against MACs, the static front)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    trained = [m for m in chosen if m.measured and m.measured.get("accuracy") is not None]
    for group, style in (
        ([m for m in trained if m.number not in front], {"color": "tab:blue", "alpha": 0.6}),
        ([m for m in trained if m.number in front], {"color": "tab:red", "edgecolors": "black"}),
    ):
        if group:
            left.scatter(
                [max(m.macs, 1) for m in group],
                [m.measured["accuracy"] for m in group if m.measured],
                **style,
            )
    for m in trained:
        if m.measured and m.number in front:
            left.annotate(f"#{m.number}", (max(m.macs, 1), m.measured["accuracy"]), fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("MACs")
    left.set_ylabel("validation accuracy (trained)")
    left.set_title(f"measured: {len(trained)} trained, front {len(front)}")
    left.grid(True, alpha=0.3)
    if scores is not None:
        from netspec.explore_score import score_front

        best = {m.number for m in score_front(scores)}
        pts = [m for m in scores.members if not math.isnan(scores.values[m.number])]
        for group, style in (
            ([m for m in pts if m.number not in best], {"color": "0.6", "alpha": 0.6}),
            ([m for m in pts if m.number in best], {"color": "tab:red", "edgecolors": "black"}),
        ):
            if group:
                right.scatter(
                    [max(m.macs, 1) for m in group],
                    [scores.values[m.number] for m in group],
                    **style,
                )
        right.set_ylabel(f"{scores.proxy} (higher predicts higher accuracy)")
        right.set_title(f"ranked by {scores.proxy}: front {len(best)}")
    else:
        for group, style in (
            ([m for m in exp.valid if not m.on_front], {"color": "0.6", "alpha": 0.6}),
            (exp.front, {"color": "tab:red", "edgecolors": "black"}),
        ):
            if group:
                right.scatter([max(m.macs, 1) for m in group], [m.params for m in group], **style)
        right.set_yscale("log")
        right.set_ylabel("parameters")
        right.set_title("ranked by cost (no --score): the static front")
    right.set_xscale("log")
    right.set_xlabel("MACs")
    right.grid(True, alpha=0.3)
    fig.suptitle(f"{exp.spec.name}: measured front (left) and proxy-ranked front (right)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
