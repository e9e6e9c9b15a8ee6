"""The network's output against the declared classes: `[classes]` scores per example, or a
map whose channels are the classes (`classes N per pixel`), and the classifier a final
SOFTMAX completes (a flatten and an FC where missing). Functions of the build's `Propagation`
stage (the nodes, the last node that is not the identity, the first that flattened a map)."""

from __future__ import annotations

from netspec.errors import NetspecError, Span
from netspec.frontend import ast
from netspec.ir.naming import Scope, Value
from netspec.ir.shapes import Propagation
from netspec.layers import fmt_shape
from netspec.layers.conv import Conv
from netspec.layers.linear import Dense, Flatten


def output_error(
    nodes: Propagation, out: Value, last: ast.Element, classes: int | None, per_pixel: bool
) -> NetspecError | None:
    """The output must be the declared classes: `[classes]` scores per example."""
    if per_pixel:
        return dense_error(nodes, out, last.span, classes)
    if out.shape == (classes,):
        return None
    if len(out.shape) == 1:
        return NetspecError(
            f"the network outputs [{fmt_shape(out.shape)}] but the spec declares {classes} classes",
            last.span,
            hint=f"end with FC({classes}) -> SOFTMAX, or declare `classes {out.shape[0]}`",
        )
    return NetspecError(
        f"the network outputs a map [{fmt_shape(out.shape)}], not the {classes} classes the spec declares",
        last.span,
        hint=f"for one label per example end with GAP -> FC({classes}) -> SOFTMAX",
    )


def dense_error(
    nodes: Propagation, out: Value, span: Span | None, classes: int | None
) -> NetspecError | None:
    """A per-pixel output must be a map whose channels are the classes."""
    if len(out.shape) == 1:
        if nodes.flattened is not None:
            where, at, flat = nodes.flattened
            what = f"`{where}` flattens the map to [{fmt_shape(flat)}]"
        else:
            at, what = span, f"the output [{fmt_shape(out.shape)}] has no pixels"
        return NetspecError(
            f"the spec declares {classes} classes per pixel, but {what}",
            at,
            hint="a dense output keeps its map: end with a 1x1 conv to the classes, "
            f"e.g. CONV({classes}, 1) -> SOFTMAX (no FLATTEN, FC or global pool)",
        )
    if out.shape[0] != classes:
        _, node_id, at = nodes.tail or (None, None, span)
        return NetspecError(
            f"the per-pixel output has {out.shape[0]} maps [{fmt_shape(out.shape)}] but the "
            f"spec declares {classes} classes",
            at,
            hint=f"end with CONV({classes}, 1) -> SOFTMAX, or declare `classes {out.shape[0]} per pixel`",
        )
    return None


def classifier(
    nodes: Propagation,
    cur: Value,
    call: ast.Call,
    scope: Scope,
    classes: int | None,
    per_pixel: bool,
) -> Value:
    """The final SOFTMAX needs [classes] scores: add a flatten and an FC where missing,
    but never under a classifier the spec wrote itself (an FC, a 1x1 conv to `classes`
    maps): a mismatch there is an error showing both numbers."""
    if per_pixel:  # a dense output: no flatten, no FC; the map must be the classes
        err = dense_error(nodes, cur, call.span, classes)
        if err is not None:
            raise err
        return cur
    if classes is None or cur.shape == (classes,):
        return cur
    if nodes.tail is not None:
        _check_own_classifier(nodes.tail, cur, classes)
    if len(cur.shape) > 1:
        cur = nodes.add_node(Flatten(), [cur], call.span, scope, implicit=True)
    if cur.shape != (classes,):
        cur = nodes.add_node(Dense(units=classes), [cur], call.span, scope, implicit=True)
    return cur


def _check_own_classifier(tail: tuple, cur: Value, classes: int) -> None:
    """The spec's own classifier (the last node that is not the identity) against the
    classes: an FC to other units, or a 1x1 conv to `classes` maps (scores per pixel)."""
    layer, node_id, span = tail
    if isinstance(layer, Dense):
        raise NetspecError(
            f"the classifier `{node_id}` outputs {layer.units} scores but the spec declares {classes} classes",
            span,
            hint=f"write FC({classes}) (or FC(classes)), or declare `classes {layer.units}`",
        )
    if (
        isinstance(layer, Conv)
        and len(cur.shape) > 1
        and cur.shape[0] == classes
        and set(_as_tuple(layer.kernel)) == {1}
    ):
        raise NetspecError(
            f"the network ends in a 1x1 conv to {classes} maps [{fmt_shape(cur.shape)}]: "
            "scores per pixel, not one label per example",
            span,
            hint=f"add GAP before SOFTMAX for one label per example; "
            f"for a per-pixel output declare `classes {classes} per pixel`",
        )


def check_not_probabilities(nodes: Propagation, cur: Value, call: ast.Call) -> None:
    """`SOFTMAX -> SOFTMAX`: probabilities normalised again are wrong, never meant. A light
    build keeps no nodes: the last one made (`nodes.last`) is what a nameless input (out of
    the family's cache, netspec.ir.walk) comes from."""
    last = nodes.last
    if (
        last is not None
        and last[0].probabilities
        and (last[1] == cur.node or (nodes.light and not cur.node))
    ):
        raise NetspecError(
            f"{call.name.upper()} takes the output of `{last[1]}`, which is already probabilities",
            call.span,
            hint="remove one of them: a softmax of probabilities flattens them toward uniform",
        )


def _as_tuple(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)
