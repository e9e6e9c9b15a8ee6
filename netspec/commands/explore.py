"""`netspec explore`: every member of a family through the IR, the Pareto front, and a member
written out as a concrete spec. Never imports torch (matplotlib only for --plot)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from netspec.commands.options import OUTPUT_FILE, SPEC
from netspec.errors import NetspecError
from netspec.explore_score import DEFAULT as DEFAULT_PROXY
from netspec.explore_score import PROXIES
from netspec.io import atomic_write, check_output_folder, fmt_bytes

SORTS = ("params", "macs", "memory")


class _ExploreCommand(click.Command):
    """`netspec explore SPEC ...`, and `netspec explore merge A.json B.json ...`."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        if args and args[0] == "merge":
            return merge.make_context("explore merge", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@click.command(cls=_ExploreCommand)
@click.argument("spec", type=SPEC)
@click.argument("extra", nargs=-1, metavar="[NAME=VALUES]...")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="NAME=VALUES",
    help="explore only these values: N=1,2  M=2..4  pool=on (repeatable; bare NAME=VALUES words after SPEC also count)",
)
@click.option(
    "--sample",
    type=int,
    metavar="K",
    help="evaluate K random members (for spaces too large to enumerate)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="random seed for --sample")
@click.option(
    "--sort",
    "sort_by",
    type=click.Choice(SORTS),
    default="params",
    show_default=True,
    help="order the front by this figure",
)
@click.option(
    "--plot",
    "plot_path",
    type=OUTPUT_FILE,
    metavar="FILE.png",
    help="params vs MACs scatter, front highlighted",
)
@click.option(
    "--csv",
    "csv_path",
    type=OUTPUT_FILE,
    metavar="FILE",
    help="every explored member as CSV",
)
@click.option(
    "--pick", type=int, metavar="ROW", help="write member ROW (the # column) as a concrete spec"
)
@click.option(
    "-o",
    "--output",
    type=OUTPUT_FILE,
    metavar="FILE",
    help="where --pick writes (default: stdout)",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="list every member that fits the budgets, not only the front",
)
@click.option("--limit", type=int, default=None, metavar="ROWS", help="show at most ROWS rows")
@click.option(
    "--shard",
    metavar="K/N",
    help="explore only the members numbered K modulo N (K, K+N, ...); join with `netspec explore merge`",
)
@click.option(
    "--json",
    "json_path",
    type=OUTPUT_FILE,
    metavar="FILE",
    help="write the result (spec, selection, every member) for `netspec explore merge`",
)
@click.option(
    "--score",
    type=click.Choice(PROXIES),
    is_flag=False,
    flag_value=DEFAULT_PROXY,
    help=f"rank the members that fit the budgets by a zero-cost proxy at initialisation; bare --score: {DEFAULT_PROXY}, the best measured (docs/explore.md; imports torch)",
)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    metavar="SOURCE",
    help="where --score takes its batch (a `netspec train --data` source)",
)
@click.option(
    "--score-batch",
    type=int,
    default=64,
    show_default=True,
    metavar="B",
    help="--score's batch size",
)
def explore(
    spec: str,
    extra: tuple[str, ...],
    grids: tuple[str, ...],
    sample: int | None,
    seed: int,
    sort_by: str,
    plot_path: str | None,
    csv_path: str | None,
    pick: int | None,
    output: str | None,
    show_all: bool,
    limit: int | None,
    shard: str | None,
    json_path: str | None,
    score: str | None,
    data: str,
    score_batch: int,
) -> None:
    """Explore the family SPEC: how many members are valid and why the others are not, which fit
    the budgets, and the Pareto front over (params, MACs, activation memory). Members are
    numbered in the whole declared space, so `--pick ROW -o member.ns` needs only the spec.

    Split a space over N processes or machines with `--shard K/N --json FILE` on each and
    join the files with `netspec explore merge FILE...`.

    Exit status 0 when some member fits the budgets, 2 otherwise (and on errors)."""
    from netspec import explore as ex
    from netspec.ir.build import load_spec

    for path in (plot_path, csv_path, output, json_path):  # refused before the work, not after it
        if path is not None:
            check_output_folder(Path(path))
    family = load_spec(spec)
    if pick is not None:
        _pick(ex, family, pick, output)
        return
    if output is not None:
        raise NetspecError(
            "-o/--output goes with --pick",
            hint=f"e.g. netspec explore {spec} --pick 3 -o member.ns",
        )
    grid = ex.parse_grid(family, grids + extra) if grids or extra else None
    parts = _parse_shard(shard) if shard is not None else None
    result = ex.explore(family, grid=grid, sample=sample, seed=seed, shard=parts)
    if json_path:
        from netspec.explore_merge import to_json

        atomic_write(json_path, to_json(result, sample, seed))
    if csv_path:
        atomic_write(csv_path, ex.to_csv(result))
    if plot_path:
        ex.plot(result, plot_path)
    _report(ex, result, sort_by, show_all, limit, spec, csv_path, plot_path)
    if score is not None:
        _score(result, score, data, score_batch, limit)
    if json_path:
        print(f"result: {json_path}")
    if not result.front_fits or not result.front:
        from netspec.cli import set_exit_code

        set_exit_code(2)


def _score(r, proxy: str, data: str, batch: int, limit: int | None) -> None:
    """Rank the members that fit (else the valid ones) by `proxy`; say what it cost and which
    members it could not score."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from netspec import explore as ex
    from netspec.explore_score import score_front, score_members

    if batch < 1:
        raise NetspecError(f"--score-batch takes a positive batch size; received {batch}")
    pool = r.fitting or r.valid
    scores = score_members(r.spec, pool, proxy, data=data, batch=batch)
    console = Console(highlight=False)
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
    _print_wide(console, table)


def _parse_shard(text: str) -> tuple[int, int]:
    from netspec.explore import check_shard

    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise NetspecError(
            f"--shard takes K/N (shard K of N), received {text!r}",
            hint="e.g. --shard 1/2 on one machine and --shard 2/2 on another",
        )
    parts = (int(k), int(n))
    check_shard(parts)
    return parts


@click.command()
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...")
@click.option(
    "--sort",
    "sort_by",
    type=click.Choice(SORTS),
    default="params",
    show_default=True,
    help="order the front by this figure",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="list every member that fits the budgets, not only the front",
)
@click.option("--limit", type=int, default=None, metavar="ROWS", help="show at most ROWS rows")
@click.option(
    "--csv",
    "csv_path",
    type=OUTPUT_FILE,
    metavar="FILE",
    help="every member of every shard as CSV",
)
def merge(
    results: tuple[str, ...], sort_by: str, show_all: bool, limit: int | None, csv_path: str | None
) -> None:
    """Join the results of `netspec explore SPEC --shard K/N --json FILE` (every K of one N)
    into one report and one Pareto front, as the unsharded run would give."""
    from netspec import explore as ex
    from netspec.explore_merge import merge as join

    if csv_path:
        check_output_folder(Path(csv_path))
    result = join(results)
    if csv_path:
        atomic_write(csv_path, ex.to_csv(result))
    _report(ex, result, sort_by, show_all, limit, result.spec.path, csv_path, None)
    if not result.front_fits:
        from netspec.cli import set_exit_code

        set_exit_code(2)


def _pick(ex, family, number: int, output: str | None) -> None:
    text, member, graph = ex.pick(family, number, output)
    if output is None:
        sys.stdout.write(text)
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    t = graph.totals
    console.print(
        f"wrote [bold]{escape(output)}[/]: member #{member.number} ({escape(member.label())}): "
        f"{t.params:,} params, {t.macs:,} MACs, {fmt_bytes(t.memory_bytes)} activations"
    )
    if member.over:
        console.print(
            f"[yellow]note[/]: it exceeds the budget ({', '.join(member.over)}); `netspec check {escape(output)}` will say so"
        )
    else:
        console.print(f"check it: netspec check {escape(output)}")


def _report(
    ex,
    r,
    sort_by: str,
    show_all: bool,
    limit: int | None,
    path: str,
    csv_path: str | None,
    plot_path: str | None,
) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
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

    if r.failures:
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
        console.print(table)

    rows = (r.fitting or r.valid) if show_all else r.front
    rows = sorted(rows, key=lambda m: (m.figure(sort_by), m.number))
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
    _print_wide(console, table)
    if len(shown) < len(rows):
        console.print(f"  ... {len(rows) - len(shown)} more (drop --limit to see them)")
    if rows:
        console.print(
            f"write one as a spec: netspec explore {escape(path)} --pick {rows[0].number} -o member.ns"
        )
    for what, p in (("CSV", csv_path), ("plot", plot_path)):
        if p:
            console.print(f"{what}: {escape(p)}")


def _print_wide(console, table) -> None:
    """Print a table uncut: into a pipe or a file, widen the console to the table's natural
    width (rich assumes 80 columns there and would cut numbers short)."""
    if not console.is_terminal:
        from rich.measure import Measurement

        need = Measurement.get(console, console.options.update_width(1000), table).maximum
        console.width = max(console.width, need)
    console.print(table)
