"""The tables `netspec explore` and `netspec explore merge` print: the report of an
exploration (counts, failures, the Pareto front) and the ranking by a zero-cost proxy."""

from __future__ import annotations

from netspec.errors import NetspecError
from netspec.io import fmt_bytes

SORTS = ("params", "macs", "memory")


def score_table(r, proxy: str, data: str, batch: int, limit: int | None, wide: bool = False):
    """Rank the members that fit (else the valid ones) by `proxy`; say what it cost and which
    members it could not score."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from netspec import explore as ex
    from netspec import terminal
    from netspec.explore_score import score_front, score_members

    if batch < 1:
        raise NetspecError(f"--score-batch takes a positive batch size; received {batch}")
    pool = r.fitting or r.valid
    scores = score_members(r.spec, pool, proxy, data=data, batch=batch)
    for m in pool:
        m.score = scores.values.get(m.number)
    console = terminal.console(wide, highlight=False)
    cost = ", ".join(
        f"{name} {sec:.2f} s ({sec / len(pool) * 1e3:.1f} ms/member)"
        for name, sec in scores.seconds.items()
    )
    console.print(
        f"scored {len(pool)} member(s) by {proxy} on one batch of {batch} from {escape(data)}: {cost}"
    )
    if scores.nan:
        shown = ", ".join(f"#{n}" for n in scores.nan[:10]) + (
            " ..." if len(scores.nan) > 10 else ""
        )
        console.print(
            f"[yellow]note[/]: {proxy} is not a number for {len(scores.nan)} member(s) ({shown}): recorded as NaN, ranked last"
        )
    front = {m.number for m in score_front(scores)}
    ranked = scores.ranked()
    shown_rows = ranked[: limit or 10]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"ranked by {proxy} (higher predicts higher accuracy; * on the {proxy} vs MACs front): "
        f"{len(shown_rows)} of {len(ranked)}",
        title_justify="left",
        pad_edge=False,
    )
    for col in ("rank", "#", *r.space.names, proxy, "params", "MACs", "front"):
        table.add_column(col, justify="left" if col == "front" else "right")
    for i, m in enumerate(shown_rows, 1):
        table.add_row(
            str(i),
            str(m.number),
            *(escape(ex.literal(v)) for v in m.bindings.values()),
            f"{scores.values[m.number]:.4g}",
            f"{m.params:,}",
            f"{m.macs:,}",
            "*" if m.number in front else "",
        )
    terminal.print_whole(console, table)
    return scores


def report(
    ex,
    r,
    sort_by: str,
    show_all: bool,
    limit: int | None,
    path: str,
    csv_path: str | None,
    plot_path: str | None,
    wide: bool = False,
) -> None:
    """The whole report: the counts, the invalid members by reason, then the front (or every
    member that fits, with `show_all`) and where the CSV and plot went."""
    from rich.markup import escape

    from netspec import terminal

    console = terminal.console(wide, highlight=False)  # --wide: the tables whole
    _counts(console, r)
    if r.failures:
        _failures(console, ex, r)
    rows = (r.fitting or r.valid) if show_all else r.front
    rows = sorted(rows, key=lambda m: (m.figure(sort_by), m.number))
    _members(console, ex, r, rows, sort_by, show_all, limit)
    if rows:
        console.print(
            f"write one as a spec: netspec explore {escape(path)} --pick {rows[0].number} -o member.ns"
        )
    for what, p in (("CSV", csv_path), ("plot", plot_path)):
        if p:
            console.print(f"{what}: {escape(p)}")


def _counts(console, r) -> None:
    """The headline (how many members, how fast) and the valid / invalid / fitting counts."""
    from rich.markup import escape
    from rich.table import Table

    n = len(r.members)
    scope = f"{n:,} random members of {r.space.size:,}" if r.sampled else f"{n:,} members"
    if r.shard is not None:
        scope += f" (shard {r.shard[0]}/{r.shard[1]})"
    speed = f" ({n / r.seconds:,.0f}/s)" if n >= 1000 and r.seconds > 0 else ""
    console.print(
        f"[bold]{escape(r.spec.name)}[/]: {scope} ({escape(r.space.describe())}), explored in {r.seconds * 1000:.0f} ms{speed}"
    )
    valid, fitting = len(r.valid), len(r.fitting)
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_column()
    summary.add_row("valid", f"{valid:,}", f"{valid / n:.0%}" if n else "")
    summary.add_row(
        "invalid", f"{n - valid:,}", f"{len(r.failures)} reason(s)" if r.failures else ""
    )
    if r.budgets:
        summary.add_row(
            "fit the budgets", f"{fitting:,}", ", ".join(f"{k} {v}" for k, v in r.budgets.items())
        )
        for metric, count in r.over_counts().items():
            if count:
                summary.add_row(f"  over {metric}", f"{count:,}", f"{metric} {r.budgets[metric]}")
    else:
        summary.add_row("fit the budgets", f"{fitting:,}", "the spec declares no budget")
    console.print(summary)
    if n == 1:
        console.print(
            "[yellow]note[/]: one member explored: there is nothing to compare it with "
            "(widen the --grid, or give the family more values)"
        )


def _failures(console, ex, r) -> None:
    """The invalid members grouped by reason, each with where in the spec and an example."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from netspec import terminal

    table = Table(
        box=box.SIMPLE_HEAD,
        title="invalid members, by reason",
        title_justify="left",
        pad_edge=False,
    )
    table.add_column("members", justify="right")
    table.add_column("reason")
    table.add_column("where", no_wrap=True)
    table.add_column("e.g.")
    for g in r.failures:
        where = f"{g.span.line}:{g.span.col}" if g.span else "-"
        snippet = ex.source_snippet(r.spec, g.span)
        if snippet:
            where += f" `{snippet}`"
        if g.detail:
            where += f"\n{g.detail}"
        first = g.members[0]
        table.add_row(
            f"{g.count:,}",
            escape(g.message),
            escape(where),
            escape(f"#{first.number} {first.label()}"),
        )
    note = terminal.fit(table, console, cut=("e.g.", "reason")).note()
    console.print(table)
    if note:
        console.print(note)


def _members(console, ex, r, rows, sort_by: str, show_all: bool, limit: int | None) -> None:
    """The front (or, with `show_all`, every member that fits, the front's starred)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from netspec import terminal

    if show_all:
        title = (
            "members that fit the budgets"
            if r.fitting
            else "[yellow]no member fits the budgets[/]; the valid members"
        )
        title += " (* on the Pareto front over params, MACs, memory)"
    else:
        title = "Pareto front over (params, MACs, memory)"
        title += (
            " among the members that fit the budgets"
            if r.front_fits
            else ": [yellow]no member fits the budgets[/]; front of the valid members"
        )
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{title}: {len(rows)} member(s), by {sort_by}",
        title_justify="left",
        pad_edge=False,
    )
    table.add_column("#", justify="right", style="bold")
    for name in r.space.names:
        table.add_column(name, justify="right")
    heads = {"params": "params", "macs": "MACs", "memory": "memory"}
    for metric in SORTS:
        table.add_column(heads[metric] + (" ▲" if metric == sort_by else ""), justify="right")
    if show_all:
        table.add_column("front")
    shown = rows if limit is None else rows[:limit]
    for m in shown:
        cells = [
            str(m.number),
            *(escape(ex.literal(v)) for v in m.bindings.values()),
            f"{m.params:,}",
            f"{m.macs:,}",
            fmt_bytes(m.memory),
        ]
        if show_all:
            cells.append("*" if m.on_front else "")
        table.add_row(*cells, style="bold" if show_all and m.on_front else None)
    terminal.print_whole(console, table)
    if len(shown) < len(rows):
        console.print(f"  ... {len(rows) - len(shown)} more (drop --limit to see them)")
