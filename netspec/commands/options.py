"""Options shared by several commands (kept free of heavy imports)."""

from __future__ import annotations

import os

import click

from netspec.errors import NetspecError
from netspec.io import parse_bindings


def set_option(f):
    """`--set N=2` (repeatable) plus trailing `M=3 K=1 pool=on` words after the spec."""
    f = click.argument("extra", nargs=-1, metavar="[NAME=VALUE]...")(f)
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="NAME=VALUE",
        help="bind a free parameter (repeatable)",
    )(f)


class OutputFile(click.Path):
    """A file to write. A name ending in a path separator (`-o out.svg/`) names a folder, and
    is refused rather than quietly written as `out.svg`."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value, param, ctx):
        text = str(value)
        if text.endswith(("/", os.sep)):
            raise NetspecError(
                f"`{text}` ends with `/`: it names a folder, not a file to write",
                hint=f"drop the slash, or name a file inside it: {text}FILE",
            )
        return super().convert(value, param, ctx)


OUTPUT_FILE = OutputFile()


class SpecPath(click.ParamType):
    """A spec argument: a file path, or `zoo:NAME` for a spec bundled with netspec
    (`zoo:resnet50`). Converts to the file's path, so every command reads it as a file."""

    name = "spec"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SPEC"

    def convert(self, value, param, ctx) -> str:
        from netspec.zoo import PREFIX, path_of

        text = str(value)
        if text.startswith(PREFIX):
            return str(path_of(text[len(PREFIX) :]))  # an unknown name: a NetspecError, exit 2
        return text


SPEC = SpecPath()


def given(*params: str) -> list[str]:
    """Which of the current command's options (by parameter name) the command line set, as
    their flags (`--calib-size`): an option left at its default is not given."""
    ctx = click.get_current_context()
    flags = {p.name: p.opts[-1] for p in ctx.command.params if isinstance(p, click.Option)}
    return [
        flags[name]
        for name in params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]


def parse_shape(text: str) -> tuple[int, ...]:
    """`3x299x299` (or `3,299,299`) -> (3, 299, 299), for `--input`."""
    parts = text.replace(",", "x").replace(" ", "").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or len(dims) > 3 or min(dims) < 1:
        raise NetspecError(
            f"--input takes C x H x W (or C x L, or N) positive integers; received `{text}`",
            hint="e.g. --input 3x299x299",
        )
    return dims


def override_input(spec, shape: tuple[int, ...]) -> int:
    """Replace a parsed spec's declared input shape (`--input 3x299x299`), keeping its span so
    errors still point at the `input` line. The spec's shape assertions state the shapes of its
    declared input, so they are dropped; returns how many were."""
    import dataclasses

    from netspec.frontend import ast

    decl = spec.input
    if decl is None or decl.shape is None:
        raise NetspecError(
            "--input overrides a tensor input ([C, H, W]); this spec's input is tokens",
            hint="change `input tokens(length=..., vocab=...)` in the spec",
        )
    span = decl.span
    nums = [ast.Num(span=span, value=d, text=str(d)) for d in shape]
    spec.input = dataclasses.replace(decl, shape=nums)
    dropped = 0
    for el in spec.elements():
        if el.assertion is not None:
            el.assertion = None
            dropped += 1
    return dropped


def load_graph(
    spec: str,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    collect: bool = False,
    input_shape: tuple[int, ...] | None = None,
):
    """Parse and instantiate a spec with the command line's bindings (and `--input` shape)."""
    from netspec.ir.build import load_spec

    bindings = parse_bindings(tuple(sets) + tuple(extra))
    if spec.endswith(".onnx"):  # through the importer: onnx is imported only for such a file
        from netspec.deploy.importer.pipeline import import_onnx
        from netspec.ir.build import load_spec_text

        parsed = load_spec_text(import_onnx(spec, input_shape).written.text, spec)
        input_shape = None
    else:
        parsed = load_spec(spec)
    if input_shape is not None and override_input(parsed, input_shape):
        shown = "x".join(map(str, input_shape))
        click.echo(
            f"note: --input {shown}: the spec's shape assertions state the shapes of its declared"
            " input and are not checked",
            err=True,
        )
    return parsed.instantiate(bindings, collect=collect)
