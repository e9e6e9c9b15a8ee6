"""`netspec import`: an ONNX file, a PyTorch module or a Keras file as a readable spec, its
figures and outputs checked against the source before anything is written."""

from __future__ import annotations

import sys

import click

from netspec.commands.options import parse_shape
from netspec.errors import NetspecError
from netspec.io import atomic_path, atomic_write


@click.command("import")
@click.argument("source")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="the spec to write (.ns)"
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="also write the source's weights as safetensors, under the spec's state-dict names",
)
@click.option(
    "--input-shape",
    metavar="CxHxW",
    default=None,
    help="the input without the batch: needed for a PyTorch module, or an ONNX file whose "
    "input has dynamic dims",
)
@click.option("--flat", is_flag=True, help="one layer a line: no blocks, no repetitions")
def import_cmd(
    source: str, output: str, weights: str | None, input_shape: str | None, flat: bool
) -> None:
    """Import SOURCE as a spec: an .onnx file, a Keras 3 .keras file, or a PyTorch module
    `module:package.path:factory` (a callable returning an nn.Module; give --input-shape).

    The spec is compiled and held to the source: its parameters and MACs equal the source's,
    and with the source's weights its outputs on random input equal the source's within 1e-5
    (relative). Any mismatch, or a node netspec cannot express, is an error (exit 2) and
    nothing is written."""
    from netspec.deploy.importer.sources import import_any

    shape = parse_shape(input_shape) if input_shape is not None else None
    imported = import_any(source, shape, flat=flat)
    for what, ok, detail in imported.checks:
        click.echo(f"  {'ok  ' if ok else 'FAIL'} {what:8} {detail}", err=True)
    if not imported.ok:
        failed = ", ".join(what for what, ok, _ in imported.checks if not ok)
        raise NetspecError(
            f"the imported spec does not match {source} ({failed}); nothing written",
            hint="please report it: the importer wrote a spec that is not the source's network",
        )
    atomic_write(output, imported.written.text)
    if weights is not None:
        from safetensors.numpy import save_file

        with atomic_path(weights) as tmp:
            save_file(imported.weights, str(tmp))
    text = imported.written.text
    lines = len(text.splitlines())
    blocks = ", ".join(b.name for b in imported.written.blocks) or "none"
    click.echo(
        f"wrote {output}: {lines} lines, blocks: {blocks}; "
        f"{imported.graph.totals.params:,} params, {imported.graph.totals.macs:,} MACs"
        + (f"; weights {weights}" if weights else ""),
        err=True,
    )
    sys.stdout.flush()
