"""`netspec explore`: every member of a family through the IR, the Pareto front, and a member
written out as a concrete spec. Never imports torch (matplotlib only for --plot)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from netspec.commands.explore_report import SORTS, report, score_table
from netspec.commands.options import OUTPUT_FILE, SPEC
from netspec.errors import NetspecError
from netspec.explore_score import DEFAULT as DEFAULT_PROXY
from netspec.explore_score import PROXIES
from netspec.io import atomic_write, check_output_folder, fmt_bytes


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
    help="params vs MACs scatter, front highlighted; with --train-top: the measured front beside the proxy-ranked one",
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
    help="write the result (spec, selection, every member, its proxy score and measured accuracy) for `netspec explore merge`",
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
    help="where --score takes its batch and --train-top its training data (a `netspec train --data` source)",
)
@click.option(
    "--score-batch",
    type=int,
    default=64,
    show_default=True,
    metavar="B",
    help="--score's batch size",
)
@click.option(
    "--train-top",
    type=int,
    metavar="K",
    help="train the K most promising members (by --score, else by --sort) with successive halving through Optuna (docs/explore.md; imports torch and optuna)",
)
@click.option(
    "--budget",
    metavar="TIME",
    help="--train-top: time this process may train (90s, 10m, 1h); no trial starts that would end past it",
)
@click.option(
    "--epochs",
    type=int,
    default=4,
    show_default=True,
    metavar="E",
    help="--train-top: the longest a trial trains (rungs at 1, 2, 4, ... epochs, the best half promoted)",
)
@click.option(
    "--train-limit",
    type=int,
    metavar="N",
    help="--train-top: keep N training examples of --data",
)
@click.option(
    "--storage",
    metavar="URL",
    help="--train-top: the study's store: sqlite:///FILE (default: a file next to --json, else in the current folder), postgresql://..., journal:PATH",
)
@click.option(
    "--study",
    "study_name",
    metavar="NAME",
    help="--train-top: the study's name (default: from the spec and the candidates, the same for the same command)",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="--train-top: training processes on this machine (other machines join with the same --storage)",
)
@click.option(
    "--heartbeat",
    type=int,
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="--train-top: a trial's heartbeat; one silent for 3 heartbeats is marked failed and rerun",
)
@click.option("--wide", is_flag=True, help="print the tables whole, whatever the terminal's width")
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
    train_top: int | None,
    budget: str | None,
    epochs: int,
    train_limit: int | None,
    storage: str | None,
    study_name: str | None,
    workers: int,
    heartbeat: int,
    wide: bool,
) -> None:
    """Explore the family SPEC: how many members are valid and why the others are not, which fit
    the budgets, and the Pareto front over (params, MACs, activation memory). Members are
    numbered in the whole declared space, so `--pick ROW -o member.ns` needs only the spec.

    Split a space over N processes or machines with `--shard K/N --json FILE` on each and
    join the files with `netspec explore merge FILE...`. Rank the members by a zero-cost
    proxy with `--score`, and train the best K with `--train-top K --budget TIME` (successive
    halving through Optuna; processes and machines with the same `--storage` share the work).

    Exit status 0 when some member fits the budgets, 2 otherwise (and on errors)."""
    from netspec import explore as ex
    from netspec.ir.build import load_spec

    for path in (plot_path, csv_path, output, json_path):  # refused before the work, not after it
        if path is not None:
            check_output_folder(Path(path))
    from netspec.commands.explore_trials import trials_settings

    trials = trials_settings(
        train_top,
        budget,
        epochs,
        train_limit,
        storage,
        study_name,
        workers,
        heartbeat,
        data,
        json_path,
        spec,
    )
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
    plot = None if trials else plot_path
    report(ex, result, sort_by, show_all, limit, spec, csv_path, plot, wide)
    scores = (
        score_table(result, score, data, score_batch, limit, wide) if score is not None else None
    )
    measured = None
    if trials is not None:
        from netspec.commands.explore_trials import run_trials

        measured = run_trials(result, scores, trials, sort_by, train_top or 0, plot_path)
    if json_path:
        from netspec.explore_merge import to_json

        atomic_write(json_path, to_json(result, sample, seed))
    if csv_path:
        atomic_write(csv_path, ex.to_csv(result))
    if plot_path and measured is None:
        ex.plot(result, plot_path)
    if json_path:
        print(f"result: {json_path}")
    if not result.front_fits or not result.front:
        from netspec.cli import set_exit_code

        set_exit_code(2)


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
    report(ex, result, sort_by, show_all, limit, result.spec.path, csv_path, None)
    from netspec.commands.explore_trials import print_measured

    print_measured(result)
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
