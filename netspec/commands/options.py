"""Options shared by several commands (kept free of heavy imports)."""

from __future__ import annotations

import click

from netspec.errors import NetspecError


def parse_bindings(pairs: tuple[str, ...]) -> dict[str, str]:
    """`N=2 M=3 pool=on` -> {"N": "2", ...}; the spec coerces the values."""
    out: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split():
            if "=" not in item:
                raise NetspecError(
                    f"--set takes NAME=VALUE; received `{item}`", hint="e.g. --set N=2 M=3 pool=on"
                )
            name, value = item.split("=", 1)
            out[name.strip()] = value.strip()
    return out


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


def load_graph(spec: str, sets: tuple[str, ...], extra: tuple[str, ...], collect: bool = False):
    """Parse and instantiate a spec with the command line's bindings."""
    from netspec.ir.build import load_spec

    bindings = parse_bindings(tuple(sets) + tuple(extra))
    return load_spec(spec).instantiate(bindings, collect=collect)
