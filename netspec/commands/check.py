"""`netspec check`: shapes, parameters, MACs, memory and budgets, without importing torch."""

from __future__ import annotations

import json
import sys

import click

from netspec.commands.options import load_graph, set_option
from netspec.errors import SpecErrors


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="print the IR graph as JSON")
@click.option(
    "--all-ops", is_flag=True, help="also count the cheap ops (BN, pooling, activations, adds)"
)
@click.option("--brief", is_flag=True, help="totals and budgets only, no per-layer rows")
def check(
    spec: str,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    as_json: bool,
    all_ops: bool,
    brief: bool,
) -> None:
    """Check SPEC: every layer's output shape, params, MACs and activation memory; budgets and
    shape assertions. Exit status 0 when every check holds, 2 otherwise."""
    graph, errors = load_graph(spec, sets, extra, collect=True)
    if graph is not None:
        if as_json:
            sys.stdout.write(graph.model_dump_json(indent=2) + "\n")
        else:
            from rich.console import Console

            from netspec.summary import render

            render(graph, Console(), all_ops=all_ops, rows=not brief)
    if errors:
        raise SpecErrors(errors)


@click.command()
def layers() -> None:
    """List the layer kinds, their spellings and arguments."""
    from rich.console import Console
    from rich.table import Table

    from netspec.layers import LAYERS

    table = Table(title="layer kinds")
    for col in ("kind", "spellings", "arguments (positional first)"):
        table.add_column(col)
    for cls in LAYERS:
        if not cls.spellings:
            continue
        args = []
        for name, field in cls.model_fields.items():
            if name == "dims":
                continue
            default = "" if field.is_required() else f"={field.default}"
            args.append(f"{name}{default}")
        table.add_row(cls.kind, ", ".join(cls.spellings), ", ".join(args))
    Console().print(table)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the IR graph (what `check --json` prints)."""
    from netspec.ir.graph import Graph

    click.echo(json.dumps(Graph.model_json_schema(), indent=2))
