"""Receptive fields from the IR alone (no torch): for every node, how many input pixels one
output position sees (`size`), how many input pixels apart neighbouring output positions are
(`jump`, the effective stride) and where output position 0's field starts (`start`), one value
per spatial dim. The layer facts come from each kind's `window()` (netspec/layers); the rules
are those of Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
Networks" (Distill, 2019):

- A sliding window (conv, pool; reach = dilation * (kernel - 1) + 1):
  size += (reach - 1) * jump; start -= pad * jump; jump *= stride.
- A transposed window (transposed conv; nearest upsampling = kernel scale, stride scale;
  bilinear = the transposed conv computing it): one output position reads at most
  floor((reach - 1) / stride) + 1 input positions, so size += floor((reach - 1) / stride) *
  jump; jump /= stride; start += ceil((pad - reach + 1) / stride) * jump. Past one, jump is a
  fraction and sizes are averages over the output grid, rounded up.
- Several inputs (add, concat, mul): the union of the inputs' fields of output position 0 -
  the largest over the branches when they are centred alike. A mul gate from a global pool
  (squeeze-excitation) makes the field the whole input: every output does depend on it; a
  branch broadcast along a dim is widened by (positions - 1) x jump to the left, so that every
  output position's field holds it.
- A layer that drops the positions (GAP, FLATTEN, FC on a map): one window over the whole map.
- Position-wise layers (activations, norms, identity, slices) keep their input's field.

Sizes are unclipped: a field reaching into the padding counts the padded pixels, as in the
paper (AlexNet's 195, VGG16's 212).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from netspec.ir.graph import Graph, Node, ReceptiveField
from netspec.layers.base import Layer, Shape, Window

Num = int | Fraction


@dataclass(frozen=True)
class Field:
    """One node's field: exact numbers (a Fraction only past an upsampling)."""

    size: tuple[Num, ...]
    jump: tuple[Num, ...]
    start: tuple[Num, ...]
    unread: tuple[int, ...] = ()
    gaps: bool = False


def _apply(f: Field, w: Window, in_shape: Shape, out_shape: Shape) -> Field:
    if w.transposed:
        size = tuple(
            r + ((e - 1) // s) * j
            for r, e, s, j in zip(f.size, w.reach, w.stride, f.jump, strict=True)
        )
        start = tuple(
            a + -((e - 1 - p) // s) * j
            for a, e, s, p, j in zip(f.start, w.reach, w.stride, w.pad, f.jump, strict=True)
        )
        thinned: tuple[Num, ...] = tuple(
            Fraction(j) / s for j, s in zip(f.jump, w.stride, strict=True)
        )
        return Field(size, thinned, start)
    size = tuple(r + (e - 1) * j for r, e, j in zip(f.size, w.reach, f.jump, strict=True))
    start = tuple(a - p * j for a, p, j in zip(f.start, w.pad, f.jump, strict=True))
    jump = tuple(j * s for j, s in zip(f.jump, w.stride, strict=True))
    unread: tuple[int, ...] = ()
    if len(out_shape) == len(in_shape):  # a map in, a map out: which input rows are read
        last = (
            (m - 1) * s - p + e - 1
            for m, s, p, e in zip(out_shape[1:], w.stride, w.pad, w.reach, strict=True)
        )
        unread = tuple(int(max(n - 1 - x, 0)) for n, x in zip(in_shape[1:], last, strict=True))
        if not any(unread):
            unread = ()
    gaps = any(e < s for e, s in zip(w.reach, w.stride, strict=True))
    return Field(size, jump, start, unread, gaps)


def _union(fields: list[Field], full: list[Field]) -> Field:
    """The union of the inputs' fields of output position 0; the jump is that of the inputs
    with the output's positions (`full`: a broadcast gate has one position and no jump)."""
    if len(fields) == 1:
        return fields[0]
    dims = range(len(fields[0].size))
    left = tuple(min(f.start[d] for f in fields) for d in dims)
    right = tuple(max(f.start[d] + f.size[d] for f in fields) for d in dims)
    return Field(
        tuple(r - a for a, r in zip(left, right, strict=True)),
        tuple(max(f.jump[d] for f in full or fields) for d in dims),
        left,
    )


def _join(node: Node, ins: list[tuple[Field | None, Shape]]) -> Field:
    """The field of a node joining branches (add, concat, mul). A branch broadcast along a
    dim (a [C, 1, 1] gate) is the same for every output position: its field is widened so that
    position i's (start + i * jump onwards) still covers it for every i."""
    full = [f for f, shape in ins if f is not None and shape[1:] == node.shape[1:]]
    fields = [f for f, _ in ins if f is not None]
    jump = tuple(max(f.jump[d] for f in full or fields) for d in range(len(fields[0].size)))
    spread = []
    for f, shape in ins:
        if f is None:
            continue
        if shape[1:] != node.shape[1:]:
            reach = [
                (m - 1) * j if n == 1 else 0
                for n, m, j in zip(shape[1:], node.shape[1:], jump, strict=True)
            ]
            f = Field(
                tuple(r + x for r, x in zip(f.size, reach, strict=True)),
                f.jump,
                tuple(a - x for a, x in zip(f.start, reach, strict=True)),
            )
        spread.append(f)
    return _union(spread, full)


def _global(shape: Shape) -> Window:
    n = shape[1:]
    return Window(n, n, (0,) * len(n), (1,) * len(n))


def _positions(node: Node) -> int | None:
    """The spatial dims of an input node ([C, H, W]: 2; tokens [L]: 1), None for a flat one."""
    layer = node.layer
    if getattr(layer, "vocab", None) is not None:
        return 1
    rank = len(node.shape) - 1
    return rank or None


def compute(graph: Graph) -> dict[str, Field | None]:
    """Every node's field (None where the input has no positions: a flat vector input)."""
    out: dict[str, Field | None] = {}
    shapes: dict[str, Shape] = {}
    windows: dict[tuple, Window | None] = {}
    pointwise = Layer.window
    for node in graph.nodes:
        shapes[node.id] = node.shape
        if not node.inputs:
            dims = _positions(node)
            out[node.id] = Field((1,) * dims, (1,) * dims, (0,) * dims) if dims else None
            continue
        ins = [f for f in (out[i] for i in node.inputs) if f is not None]
        if not ins:
            out[node.id] = None
            continue
        field = _join(node, [(out[i], shapes[i]) for i in node.inputs]) if len(ins) > 1 else ins[0]
        in_shape = shapes[node.inputs[0]]
        layer = node.layer
        if type(layer).window is pointwise:
            if len(node.shape) < len(in_shape) and len(in_shape) > 1:  # FC, FLATTEN on a map
                field = _apply(field, _global(in_shape), in_shape, node.shape)
            elif len(ins) == 1:
                field = Field(field.size, field.jump, field.start)  # no notes carried over
            out[node.id] = field
            continue
        key = (node.kind, id(node.args), in_shape)
        if key not in windows:
            windows[key] = layer.window(in_shape)
        window = windows[key]
        out[node.id] = field if window is None else _apply(field, window, in_shape, node.shape)
    return out


def _num(x: Num) -> int | float:
    return int(x) if x == int(x) else float(x)


def covers(field: Field, node_shape: Shape, input_shape: tuple[int, ...]) -> bool:
    """Every output position of the node sees every pixel of the input."""
    n = input_shape[-len(field.size) :]
    m = node_shape[1:] if len(node_shape) - 1 == len(field.size) else (1,) * len(field.size)
    return all(
        a <= 0 and a + r >= nn and a + (mm - 1) * j <= 0
        for a, r, j, nn, mm in zip(field.start, field.size, field.jump, n, m, strict=True)
    )


def receptive_fields(graph: Graph) -> list[ReceptiveField]:
    """The JSON form: one entry per node with positions, in execution order."""
    fields = compute(graph)
    result = []
    for node in graph.nodes:
        f = fields[node.id]
        if f is None:
            continue
        values: dict[str, Any] = {
            "node": node.id,
            "size": tuple(math.ceil(r) for r in f.size),
            "jump": tuple(map(_num, f.jump)),
            "start": tuple(map(_num, f.start)),
            "covers": covers(f, node.shape, graph.input.shape),
            "unread": f.unread,
            "gaps": f.gaps,
        }
        result.append(ReceptiveField.model_construct(**values))  # computed here: no validation
    return result


def with_receptive_fields(graph: Graph) -> Graph:
    """A copy of the graph carrying its receptive fields (for `check --json --columns rf`)."""
    return graph.model_copy(update={"receptive_fields": receptive_fields(graph)})


def text(values: tuple[int | float, ...]) -> str:
    """195 for a square field, 11x3 otherwise; fractions to 3 significant digits."""
    cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]
    return cells[0] if len(set(cells)) == 1 else "x".join(cells)


def seen(f: ReceptiveField, shape: Shape, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per dim, how many input pixels at the far end no output position of the node sees
    (its fields, clipped to the input, stop short of them); -1 where neighbouring fields
    leave gaps between them (jump > size)."""
    n = input_shape[-len(f.size) :]
    m = shape[1:] if len(shape) - 1 == len(f.size) else (1,) * len(f.size)
    return tuple(
        -1 if j > r and mm > 1 else max(math.ceil(nn - (a + (mm - 1) * j + r)), 0)
        for a, r, j, nn, mm in zip(f.start, f.size, f.jump, n, m, strict=True)
    )


def notes(graph: Graph, fields: list[ReceptiveField]) -> list[str]:
    """What the fields tell a reader: the first layer whose field covers the whole input, and
    every layer whose windows leave input pixels unseen - rows or columns at the end of its
    input unread (the floor in the output size) or a stride wider than its window - when
    that loses pixels of the network's input (a 1x1 stride-2 shortcut beside a 3x3 path does
    not)."""
    lines = []
    shapes = {n.id: n.shape for n in graph.nodes}
    by_node = {f.node: f for f in fields}
    inputs = {n.id: n.inputs for n in graph.nodes}
    size = graph.input.shape[1:] or graph.input.shape
    first = next((f for f in fields if f.covers), None)
    if first is not None:
        lines.append(
            f"{first.node}: the first layer whose receptive field ({text(first.size)}) covers "
            f"the whole {'x'.join(map(str, size))} input at every output position"
        )
    for f in fields:
        if not (f.unread or f.gaps):
            continue
        source = inputs[f.node][0]
        lost = seen(f, shapes[f.node], graph.input.shape)
        before = seen(by_node[source], shapes[source], graph.input.shape)
        if lost == before or not any(lost):
            continue
        n = shapes[source][1:]
        axes = ("row", "column") if len(n) == 2 else ("position",)
        if any(x < 0 for x in lost):
            what = "its stride is wider than its field: input pixels between its windows"
        else:
            what = "input " + " and ".join(
                f"{ax}s {nn - x}-{nn - 1}" if x > 1 else f"{ax} {nn - 1}"
                for ax, x, nn in zip(axes, lost, size, strict=True)
                if x
            )
        unread = " and ".join(
            f"{u} {ax}" + ("s" if u > 1 else "") for ax, u in zip(axes, f.unread, strict=True) if u
        )
        where = f" of its {'x'.join(map(str, n))} input unread"
        lines.append(
            f"{f.node}: {what} reach no output of this layer"
            + (f" (its windows leave the last {unread}{where})" if unread else "")
        )
    return lines


__all__ = ["Field", "compute", "notes", "receptive_fields", "seen", "text", "with_receptive_fields"]
