"""`netspec draw`: the network as a diagram (SVG, PNG, PDF or Graphviz DOT)."""

from __future__ import annotations

from pathlib import Path

import click

from netspec.commands.options import OUTPUT_FILE, SPEC, load_graph, set_option
from netspec.draw import DRAW_TIMEOUT_S, MAX_BOXES
from netspec.errors import NetspecError


@click.command()
@click.argument("spec", type=SPEC)
@click.option(
    "-o",
    "--output",
    required=True,
    type=OUTPUT_FILE,
    help="the file to write: .svg, .png, .pdf or .dot (Graphviz source)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "png", "pdf", "dot"]),
    help="the format, when the output's suffix does not say it",
)
@click.option(
    "--collapse",
    is_flag=True,
    help="draw each named group, block call and repetition as one box with its subtotals",
)
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="draw scopes nested deeper than N as one box each (1: top-level groups only)",
)
@click.option(
    "--color",
    type=click.Choice(["params", "macs", "memory"]),
    default=None,
    help="shade the boxes by their share of params, MACs or activation memory",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DRAW_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="stop Graphviz's layout after this long (a clear error, no file written)",
)
@click.option(
    "--max-boxes",
    type=click.IntRange(min=1),
    default=MAX_BOXES,
    show_default=True,
    metavar="N",
    help="refuse diagrams of more boxes (they take Graphviz minutes): use --collapse instead",
)
@set_option
def draw(
    spec: str,
    output: str,
    fmt: str | None,
    collapse: bool,
    depth: int | None,
    color: str | None,
    timeout: float,
    max_boxes: int,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
) -> None:
    """Draw SPEC (a file, or zoo:NAME for a bundled spec): one box per layer with its arguments and output shape, branches as
    branches, implicit layers dashed. Laid out by Graphviz `dot` (not needed for .dot)."""
    from netspec import draw as diagram
    from netspec.io import atomic_write

    path = Path(output)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in diagram.FORMATS:
        raise NetspecError(
            f"cannot tell the format of `{output}`",
            hint="end the file name with .svg, .png, .pdf or .dot, or pass --format",
        )
    graph = load_graph(spec, sets, extra)
    built = diagram.build(graph, depth=depth, collapse=collapse, color=color)
    diagram.check_size(built, max_boxes)
    data = diagram.render(diagram.to_dot(built), fmt, timeout=timeout)
    atomic_write(path, data)
    click.echo(f"wrote {path} ({len(built.boxes)} boxes, {len(graph.nodes)} layers)")
