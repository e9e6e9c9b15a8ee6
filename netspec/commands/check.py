"""`netspec check`: shapes, parameters, MACs, memory and budgets, without importing torch."""

from __future__ import annotations

import json
import shutil
import sys

import click

from netspec.commands.options import SPEC, load_graph, parse_shape, set_option
from netspec.errors import NetspecError, SpecErrors


@click.command()
@click.argument("spec", type=SPEC)
@set_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    help="table (plain text), markdown, csv (per-layer rows, raw numbers) or json (the IR graph)",
)
@click.option("--json", "as_json", is_flag=True, help="print the IR graph as JSON (--format json)")
@click.option(
    "--all-ops", is_flag=True, help="also count the cheap ops (BN, pooling, activations, adds)"
)
@click.option("--brief", is_flag=True, help="totals and budgets only, no per-layer rows")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="collapse the layers of scopes (blocks, named groups) deeper than N into one row each",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="batch size of the training-memory estimate [default: the spec's train batch_size]",
)
@click.option(
    "--columns",
    "extra_columns",
    type=click.Choice(["rf", "input"]),
    multiple=True,
    help="extra columns: rf (receptive field, jump and start per layer, with notes on "
    "layers that cover the whole input or lose pixels; in --json the receptive_fields), "
    "input (the shape each layer takes)",
)
@click.option(
    "--freeze",
    "freeze",
    metavar="PATTERN",
    multiple=True,
    help="layers held frozen, as `netspec train --freeze` takes them (fnmatch on layer ids, "
    "repeatable) [default: the spec's train freeze]: a trainable column and the frozen params",
)
@click.option(
    "--input",
    "input_shape",
    metavar="CxHxW",
    default=None,
    help="check at another input size without editing the spec, e.g. --input 3x299x299",
)
def check(
    spec: str,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    fmt: str,
    as_json: bool,
    all_ops: bool,
    brief: bool,
    depth: int | None,
    batch: int | None,
    extra_columns: tuple[str, ...],
    freeze: tuple[str, ...],
    input_shape: str | None,
) -> None:
    """Check SPEC (a file, or zoo:NAME for a bundled spec): every layer's output shape, kernel,
    params, MACs (and their shares) and activation memory; the weights and a training-memory
    estimate; budgets and shape assertions. Exit status 0 when every check holds, 2 otherwise.

    Numbers are never cut: printed to a file or a pipe the table has its natural width; at a
    narrow terminal the description column folds or goes first.

    With layers frozen (`--freeze`, or `freeze = [...]` in the spec's train section) the
    table says which layers train and the totals count trainable and frozen params apart."""
    from netspec.ir.spec import paused_gc

    # The cycle collector paused for the whole command, not only the build: its first pass
    # after the build would walk every object the build made (0.15 s at 220,000 nodes).
    with paused_gc():
        shape = parse_shape(input_shape) if input_shape is not None else None
        graph, errors = load_graph(spec, sets, extra, collect=True, input_shape=shape)
        if graph is not None:
            from netspec.summary import summary
            from netspec.train.settings import resolve_settings

            try:  # the training-memory estimate reads the train section: a mistake there is one
                resolve_settings(graph.train or None, spans=graph.train_spans)
            except NetspecError as e:
                if not any(e.message == seen.message for seen in errors):  # the IR's check found it
                    errors = [*errors, e]

            rf = "rf" in extra_columns
            patterns = freeze or tuple(graph.train.get("freeze") or ())
            frozen = None
            if patterns:
                from netspec.train.freeze import frozen_layers

                try:
                    frozen = set(frozen_layers(graph, tuple(patterns)))
                except NetspecError as e:
                    errors = [*errors, e]
            if as_json or fmt == "json":  # bytes straight out: no 100 MB str at 220,000 nodes
                from netspec.summary import json_bytes

                if rf:
                    from netspec.ir.receptive import with_receptive_fields

                    graph = with_receptive_fields(graph)
                out = sys.stdout.buffer
                out.write(json_bytes(graph))
                out.write(b"\n")
                out.flush()
            else:
                tty = sys.stdout.isatty()
                text = summary(
                    graph,
                    fmt,
                    width=shutil.get_terminal_size().columns if tty else None,
                    all_ops=all_ops,
                    rows=not brief,
                    depth=depth,
                    batch=batch,
                    color=tty,
                    rf=rf,
                    inputs="input" in extra_columns,
                    frozen=frozen,
                )
                sys.stdout.write(text)
                sys.stdout.flush()
        if errors:
            raise SpecErrors(errors)


@click.command()
@click.option("--wide", is_flag=True, help="print the full table, whatever the terminal's width")
def layers(wide: bool) -> None:
    """List the layer kinds (their spellings and arguments) and the combinators.

    Read from the layer registry, as the parser is. Arguments are in the order a call takes
    them: the positional ones, then (after `;`) those given by name; `name=default`, the name
    alone when it must be given, `in.c` when it defaults to the input's channels. The table
    fits the terminal; `--wide` adds each kind's meaning and prints every row on one line."""
    from rich.markup import escape
    from rich.table import Table

    from netspec import terminal
    from netspec.layers.reference import COMBINATORS, LAYERS, meaning, signature, written

    console = terminal.console(wide)
    columns = ("spellings", "arguments (positional; named)") + (("meaning",) if wide else ())
    kinds = Table("kind", *columns, title="layer kinds", title_justify="left")
    for cls in LAYERS:
        if cls.spellings:
            row = (cls.kind, written(cls), signature(cls), meaning(cls))
            kinds.add_row(*(escape(cell) for cell in row[: 1 + len(columns)]))
    console.print(kinds)
    joins = Table("form", "written", *(("arguments",) if wide else ()), "meaning")
    joins.title, joins.title_justify = "combinators", "left"
    for c in COMBINATORS:
        cells = (
            (c.name, c.written, c.arguments, c.meaning) if wide else (c.name, c.written, c.meaning)
        )
        joins.add_row(*(escape(cell) for cell in cells))
    console.print(joins)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the IR graph (what `check --json` prints)."""
    from netspec.ir.graph import Graph

    click.echo(json.dumps(Graph.model_json_schema(), indent=2))
