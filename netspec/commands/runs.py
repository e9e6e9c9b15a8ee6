"""`netspec runs`: training runs side by side, as a table and overlaid learning curves."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("folders", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    help="how to print the comparison",
)
@click.option("--plot", metavar="PNG", help="overlay the runs' validation curves in this image")
def runs(folders: tuple[str, ...], fmt: str, plot: str | None) -> None:
    """Compare training runs: spec, params, MACs, the settings that differ, best validation
    and test metrics, time.

    \b
    netspec runs runs/baseline runs/dropout runs/l2 runs/augment runs/bn --plot runs.png
    netspec runs runs/* --format markdown
    """
    from rich.console import Console

    from netspec.train.runs import compare, plot_runs, render

    comparison = compare([Path(f) for f in folders])  # every folder read before any output
    for notice in comparison.notices:
        click.echo(f"note: {notice}", err=True)
    shown = render(comparison, fmt)
    if isinstance(shown, str):
        click.echo(shown, nl=False)
    else:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: the whole table, never cut at 80
            console = Console(width=max(80, shown.columns and 12 * len(shown.columns)))
        console.print(shown)
    if plot is not None:
        plot_runs(comparison, Path(plot))
        click.echo(f"curves: {plot}", err=True)
