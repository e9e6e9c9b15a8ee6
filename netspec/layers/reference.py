"""The language's reference, read from the registry: each kind's spellings and arguments (in the
order a call takes them) and its meaning, and the combinators that join layers. `netspec layers`
prints it and tools/gen_docs.py writes it to docs/layers.md, so the two cannot differ from the
parser, which reads the same classes."""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from netspec.layers import LAYERS
from netspec.layers.base import Layer, spec_value


class Argument(NamedTuple):
    """One argument of a kind: its name and default as spec text ("" when it must be given)."""

    name: str
    default: str
    positional: bool

    def __str__(self) -> str:
        return f"{self.name}={self.default}" if self.default else self.name


class Combinator(NamedTuple):
    """A form that joins or repeats chains, with its arguments, as `netspec layers` lists it."""

    name: str
    written: str
    arguments: str
    meaning: str


# Kinds with no spelling of their own are written as statements or combinators.
WRITTEN = {
    "input": "input [C, H, W] / [C, L] / [N] / tokens(length=L, vocab=V)",
    "concat": "concat(chain, chain, ...)",
    "add": "add(chain, chain, ...), residual(chain, ...)",
    "mul": "mul(chain, chain, ...)",
}

COMBINATORS: tuple[Combinator, ...] = (
    Combinator("chain", "A -> B -> C", "", "layers one after the other"),
    Combinator(
        "concat",
        "concat(chain, chain, ...)",
        "two or more chains",
        "parallel branches joined along channels (same spatial size)",
    ),
    Combinator("add", "add(chain, chain, ...)", "two or more chains", "parallel branches summed"),
    Combinator(
        "residual",
        "residual(chain, project=off, when=(condition))",
        "chain; project=auto|on|off (off); when: a condition (none: always)",
        "chain plus its input; project=auto adds a 1x1 conv + BN shortcut when shapes differ",
    ),
    Combinator(
        "mul",
        "mul(chain, chain, ...)",
        "two or more chains",
        "branches multiplied element-wise, broadcasting (a gate)",
    ),
    Combinator(
        "repetition",
        "[chain]*N, [chain]*N for i",
        "N: a count; i: the index, 0 to N - 1",
        "the chain N times in a row",
    ),
    Combinator(
        "optional",
        "X?, X?(condition)",
        "the switch named after X, or a condition",
        "X when its switch is on (or the condition holds), else nothing",
    ),
    Combinator(
        "block",
        "block NAME(a, b=1) = chain",
        "parameters, with defaults",
        "a parameterised chain, called like a layer: NAME(64, b=2)",
    ),
    Combinator(
        "head",
        "head NAME at LAYER: chain",
        "a layer or a named group to branch at",
        "a side output branching off the main chain",
    ),
    Combinator("group", "[chain] as name", "", "names a chain (its scope) or a layer"),
    Combinator("shape", "X : [C, H, W]", "", "asserts X's output shape"),
)


def _default(cls: type[Layer], name: str) -> str:
    field = cls.model_fields[name]
    if name in cls.from_input_channels:
        return "in.c"  # filled from the input's channels when not given
    if field.is_required():
        return ""
    value: Any = field.default
    return "none" if value is None else spec_value(value)


def arguments(cls: type[Layer]) -> list[Argument]:
    """A kind's arguments in the order a call takes them: its positional ones, then the rest;
    none for the kinds written as statements or combinators (their fields are the compiler's)."""
    if not cls.spellings:
        return []
    names = [n for n in cls.model_fields if n != "dims"]  # dims: set by the spelling
    order = [n for n in cls.positional if n in names] + [
        n for n in names if n not in cls.positional
    ]
    return [Argument(n, _default(cls, n), n in cls.positional) for n in order]


def signature(cls: type[Layer]) -> str:
    """`CONV(channels=32, kernel=3, stride=1, padding=same; dilation=1, ...)`: the positional
    arguments, then (after `;`) the ones taken by name only."""
    args = arguments(cls)
    bare = ", ".join(str(a) for a in args if a.positional)
    named = ", ".join(str(a) for a in args if not a.positional)
    return "; ".join(part for part in (bare, named) if part)


def written(cls: type[Layer]) -> str:
    """How a spec writes the kind: its spellings, or the statement or combinator."""
    if cls.spellings:
        return ", ".join(cls.spellings)
    if cls.kind not in WRITTEN:
        raise NotImplementedError(
            f"layer kind `{cls.kind}` has no spelling: say how it is written in WRITTEN"
        )
    return WRITTEN[cls.kind]


def meaning(cls: type[Layer]) -> str:
    """The first paragraph of its docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


__all__ = ["COMBINATORS", "LAYERS", "WRITTEN", "Argument", "arguments", "meaning", "signature"]
