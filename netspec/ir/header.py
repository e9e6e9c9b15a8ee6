"""The build's header stages that are not the chain: the input layer (a tensor or token
ids), and the train section's settings and their check (as `netspec train` reads them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.bindings import setting_value
from netspec.ir.expr import eval_int
from netspec.ir.graph import Graph
from netspec.ir.sections import train_check
from netspec.ir.spec import ParsedSpec
from netspec.layers.structure import Input

_BATCH_NAMES = {"none", "n", "b", "batch", "batch_size", "bs"}  # `input [None, 3, 32, 32]`


def input_layer(
    spec: ParsedSpec, decl: ast.InputDecl, env: Mapping[str, Any], layers: dict
) -> Input:
    """The input's layer: a shape `[C, H, W]` or token ids with their vocabulary."""
    if decl.shape is not None:
        return _shape_input(spec, decl.shape, decl.span, env, layers)
    return _tokens_input(decl, env)


def _shape_input(
    spec: ParsedSpec, shape: list[ast.Expr], span: Any, env: Mapping[str, Any], layers: dict
) -> Input:
    """`input [C, H, W]` (never with a batch dimension), its layer shared by the spec's builds."""
    first = shape[0]
    if (
        isinstance(first, ast.Name)
        and first.id not in env
        and (len(shape) == 4 or first.id.lower() in _BATCH_NAMES)
    ):
        rest = ", ".join(spec.text_of(e.span) for e in shape[1:])
        raise NetspecError(
            f"`{first.id}` looks like a batch dimension; the input is one example",
            first.span,
            hint=f"write the input without the batch: `input [{rest}]`",
        )
    dims = tuple(eval_int(e, env, "an input dimension", 1) for e in shape)
    if len(dims) > 3:
        raise NetspecError(
            f"input [{', '.join(map(str, dims))}] has {len(dims)} dims; netspec takes [C, H, W], [C, L] or [N]",
            span,
        )
    layer = layers.get((Input, dims))
    if layer is None:
        layer = layers[(Input, dims)] = Input(shape=dims)
    return layer


def _tokens_input(decl: ast.InputDecl, env: Mapping[str, Any]) -> Input:
    """`input tokens(length=..., vocab=...)`: both arguments, no other."""
    kw = {}
    for arg in decl.tokens or ():
        if arg.name not in ("length", "vocab"):
            raise NetspecError(
                f"tokens() takes length and vocab; received `{arg.name or 'a positional value'}`",
                arg.span,
                hint=did_you_mean(arg.name or "", ["length", "vocab"]),
            )
        kw[arg.name] = eval_int(arg.value, env, f"tokens {arg.name}", 1)
    for need in ("length", "vocab"):
        if need not in kw:
            raise NetspecError(
                f"tokens() needs `{need}`",
                decl.span,
                hint="e.g. `input tokens(length=21, vocab=10000)`",
            )
    return Input(shape=(kw["length"],), vocab=kw["vocab"])


def train_settings(spec: ParsedSpec, env: Mapping[str, Any]) -> dict[str, Any]:
    """The train section's settings, evaluated."""
    if spec.train is None:
        return {}
    return {s.name: setting_value(s.value, env) for s in spec.train.settings}


def train_error(spec: ParsedSpec, graph: Graph) -> NetspecError | None:
    """`check` validates the train section as `train` would (no torch needed)."""
    try:
        train_check()(graph.train, graph.train_spans)
    except NetspecError as e:
        if e.span is None and spec.train is not None:
            e.span = spec.train.span
        return e
    return None
