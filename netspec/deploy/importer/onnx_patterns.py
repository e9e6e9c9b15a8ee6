"""ONNX subgraphs that are one netspec layer: what exporters spell with several nodes.

- a channels-last region: `Transpose(0, 2, 3, 1)` ... `Transpose(0, 3, 1, 2)` around
  per-position ops (ConvNeXt's LayerNorm2d and Linear layers): the transposes vanish, a
  LayerNormalization over the last axis is a LAYERNORM, a MatMul a 1x1 CONV;
- a layer norm written out (`ReduceMean`, `Sub`, `Mul`, `ReduceMean`, `Add`, `Sqrt`, `Div`,
  `Mul`, `Add`, netspec's own export below opset 17): LAYERNORM;
- GELU below opset 20 (`x * 0.5 * (1 + erf(x / sqrt 2))`, in torch's or netspec's order);
- ShuffleNet's channel shuffle (`Reshape` to groups, `Transpose`, `Reshape` back);
- a channel split (`Slice` or `Split` on the channels): SLICE;
- a per-channel scale (`Mul` by a [C, 1, 1] constant): LAYERSCALE;
- an embedding (`Gather` of a constant table by token ids): EMBEDDING;
- shape arithmetic on constants (`Shape` of a value of known shape, `Gather`, `Add`, `Div`...):
  computed here, so a slice's bounds or a reshape's target are constants.
Each handler falls back on the one-node handler of `onnx_ops` when its pattern is not there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from netspec.deploy.importer.onnx_ops import (
    HANDLERS,
    Reader,
    _flatten,
    _is_flatten,
    _join,
    _reduce_mean,
    attrs_of,
    constant_value,
    handles,
)
from netspec.recover.graph import INPUT, Value

# Ops that may run on a channels-last view: per-position (or elementwise) ones.
PER_POSITION = {
    "LayerNormalization",
    "MatMul",
    "Add",
    "Mul",
    "Div",
    "Erf",
    "Relu",
    "Gelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "Clip",
    "LeakyRelu",
    "Elu",
    "Identity",
    "Dropout",
}
FOLDABLE = {
    "Shape",
    "Slice",
    "Reshape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Cast",
}


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def fold(r: Reader, node: onnx.NodeProto) -> np.ndarray | None:
    """The value of shape arithmetic whose operands are all known, else None."""
    if any(x in r.last for x in node.input):
        return None
    return fold_values(node, r.consts, r.shapes)


def fold_values(
    node: onnx.NodeProto, consts: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
) -> np.ndarray | None:
    """The value of shape arithmetic whose operands are all known (a `Shape` of a value whose
    shape is, the batch taken as 1), else None."""
    if node.op_type not in FOLDABLE:
        return None
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        a = attrs_of(node)
        full = np.array([1, *shape], dtype=np.int64)
        return full[int(a.get("start", 0)) : a.get("end")]
    ins = [x for x in node.input if x]
    if not ins or any(x not in consts for x in ins):
        return None
    v = [np.asarray(consts[x]) for x in ins]
    a = attrs_of(node)
    op = node.op_type
    if op == "Gather":
        return np.take(v[0], v[1].astype(np.int64), axis=int(a.get("axis", 0)))
    if op in ("Unsqueeze", "Squeeze"):
        axes = [int(x) for x in (v[1] if len(v) > 1 else a.get("axes", []))]
        if op == "Squeeze":
            return np.squeeze(v[0], axis=tuple(axes)) if axes else np.squeeze(v[0])
        out = v[0]
        for axis in sorted(x % (out.ndim + len(axes)) for x in axes):
            out = np.expand_dims(out, axis)
        return out
    if op == "Reshape":
        target = [int(t) for t in v[1]]
        return v[0].reshape([v[0].shape[i] if t == 0 else t for i, t in enumerate(target)])
    if op == "Slice":
        index = [slice(None)] * v[0].ndim
        dims = [int(x) for x in (v[3] if len(v) > 3 else range(len(v[1])))]
        steps = v[4] if len(v) > 4 else [1] * len(v[1])
        for start, stop, axis, step in zip(v[1], v[2], dims, steps, strict=True):
            index[int(axis)] = slice(int(start), int(stop), int(step))
        return v[0][tuple(index)]
    if op == "Concat":
        return np.concatenate([np.atleast_1d(x) for x in v], axis=int(a.get("axis", 0)))
    if op == "Cast":
        return v[0].astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if op == "Div" and all(np.issubdtype(x.dtype, np.integer) for x in v):
        return np.trunc(v[0] / v[1]).astype(v[0].dtype)
    fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
    return np.asarray(fn(v[0], v[1]))


def fold_graph(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """Shape arithmetic whose operands are now known replaced by Constant nodes, in place (so
    that shape inference, run again, sees a slice's bounds); how many were."""
    consts = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if t.raw_data or t.dims == []
    }
    done = 0
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            value = constant_value(node)
            if value is not None:
                consts[node.output[0]] = value
            continue
        value = fold_values(node, consts, shapes)
        if value is not None:
            consts[node.output[0]] = value
            tensor = numpy_helper.from_array(np.asarray(value), node.output[0])
            graph.node[i].CopyFrom(
                onnx.helper.make_node("Constant", [], [node.output[0]], value=tensor)
            )
            done += 1
    return done


def fails_last(r: Reader, node: onnx.NodeProto) -> bool:
    """Whether `node` reads a channels-last view where it may not (a non per-position op)."""
    return node.op_type not in PER_POSITION | {"Transpose"} and any(x in r.last for x in node.input)


@handles("Transpose")
def _transpose(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """To channels-last and back: a view netspec's per-position layers need not."""
    x = node.input[0]
    rank = len(r.shapes.get(x, ())) + 1
    perm = [int(p) for p in a.get("perm", [])]
    to_last = [0, *range(2, rank), 1]
    to_first = [0, rank - 1, *range(1, rank - 1)]
    if x in r.last and perm == to_first:
        r.alias[node.output[0]] = r.src(x)
        return
    if x not in r.last and perm == to_last and rank >= 3:
        r.alias[node.output[0]] = r.src(x)
        r.shapes[node.output[0]] = r.shapes[x]
        r.last.add(node.output[0])  # its shape already channels-first (x's)
        return
    raise r.fail(
        node,
        f"a transpose {perm} other than to channels-last and back",
        "netspec's layers are channels-first; only per-position ops may run channels-last",
    )


@handles("LayerNormalization")
def _layer_norm(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    x = node.input[0]
    rank = len(r.shapes.get(x, ())) + 1
    axis = int(a.get("axis", -1)) % rank
    if axis != rank - 1 or not (x in r.last or rank == 2):
        raise r.fail(
            node,
            f"a layer norm over axis {a.get('axis', -1)} of a rank-{rank} tensor",
            "netspec's LAYERNORM normalizes the channels at each position",
        )
    if len(node.input) < 3 or not node.input[2] or r.const(node, 1) is None:
        raise r.fail(node, "a layer norm without a constant scale and bias")
    r.emit(node, "LAYERNORM", [("eps", _eps(a.get("epsilon", 1e-5)))], list(node.input[1:3]))


def _eps(value: float) -> float:
    return float(f"{float(np.float32(value)):.6g}")


@handles("ReduceMean")
def _reduce_mean_or_norm(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """A mean over the channels opening a written-out layer norm; else `_reduce_mean`."""
    match = _layer_norm_parts(r, node, a)
    if match is None:
        _reduce_mean(r, node, a)
        return
    eps, w, b, last, skipped = match
    r.skip.update(_name(n) for n in skipped)
    r.emit(node, "LAYERNORM", [("eps", eps)], [w, b], note="LayerNorm written out", out=last)


def _axes(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> list[int]:
    given = r.const(node, 1)
    return [int(x) for x in (given if given is not None else a.get("axes", []))]


def _layer_norm_parts(
    r: Reader, node: onnx.NodeProto, a: dict[str, Any]
) -> tuple[float, str, str, str, list[onnx.NodeProto]] | None:
    """mean = ReduceMean_c(x); d = x - mean; var = ReduceMean_c(d * d);
    (d / sqrt(var + eps)) * w + b: its eps, weight, bias, last value and nodes after the first."""
    x = node.input[0]
    if _axes(r, node, a) not in ([1], [-len(r.shapes.get(x, ())) - 1]) or not a.get("keepdims", 1):
        return None
    sub = r.only(node.output[0], "Sub")
    if sub is None or list(sub.input) != [x, node.output[0]]:
        return None
    readers = r.consumers.get(sub.output[0], [])
    square = next((n for n in readers if n.op_type == "Mul"), None)
    div = next((n for n in readers if n.op_type == "Div"), None)
    if len(readers) != 2 or square is None or div is None or set(square.input) != {sub.output[0]}:
        return None
    var = r.only(square.output[0], "ReduceMean")
    add = r.only(var.output[0], "Add") if var is not None else None
    sqrt = r.only(add.output[0], "Sqrt") if add is not None else None
    if (
        var is None
        or add is None
        or sqrt is None
        or list(div.input) != [sub.output[0], sqrt.output[0]]
    ):
        return None
    eps_in = [r.consts[i] for i in add.input if i in r.consts]
    scale = r.only(div.output[0], "Mul")
    shift = r.only(scale.output[0], "Add") if scale is not None else None
    if len(eps_in) != 1 or scale is None or shift is None:
        return None
    w = next((i for i in scale.input if i in r.consts), None)
    b = next((i for i in shift.input if i in r.consts), None)
    if w is None or b is None:
        return None
    eps = _eps(float(eps_in[0].reshape(())))
    return eps, w, b, shift.output[0], [sub, square, var, add, sqrt, div, scale, shift]


def _gelu_parts(r: Reader, node: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
    """0.5 x (1 + erf(x / sqrt 2)) from its first node (`x / sqrt 2` or `x * (1 / sqrt 2)`):
    its last value and the nodes after the first."""
    data = [x for x in node.input if x not in r.consts]
    if len(data) != 1:
        return None
    x = data[0]
    scaled = node.op_type == "Div" and r.scalar(node, math.sqrt(2))
    if not (scaled or (node.op_type == "Mul" and r.scalar(node, 1 / math.sqrt(2)))):
        return None
    erf = r.only(node.output[0], "Erf")
    one = r.only(erf.output[0], "Add") if erf is not None else None
    if erf is None or one is None or not r.scalar(one, 1.0):
        return None
    mul = r.only(one.output[0], "Mul")
    if mul is None:
        return None
    other = next(i for i in mul.input if i != one.output[0])
    if other in r.consts and r.scalar(mul, 0.5):  # torch.export: x * (0.5 * (1 + erf))
        last = r.only(mul.output[0], "Mul")
        if last is None or set(last.input) != {x, mul.output[0]}:
            return None
        return last.output[0], [erf, one, mul, last]
    if other == x:  # torch: (x * (1 + erf)) * 0.5
        half = r.only(mul.output[0], "Mul")
        if half is None or not r.scalar(half, 0.5):
            return None
        return half.output[0], [erf, one, mul, half]
    halves = [n for n in r.consumers.get(x, []) if n.output[0] == other]
    if halves and halves[0].op_type == "Mul" and r.scalar(halves[0], 0.5):  # netspec: (x*0.5)*(..)
        return mul.output[0], [erf, one, halves[0], mul]
    return None


@handles("Div")
def _div(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    match = _gelu_parts(r, node)
    if match is None:
        raise r.fail(node, "a division netspec has no layer kind for (only GELU's x / sqrt 2)")
    _emit_gelu(r, node, *match)


def _emit_gelu(r: Reader, node: onnx.NodeProto, out: str, rest: list[onnx.NodeProto]) -> None:
    r.skip.update(_name(n) for n in rest)
    x = next(i for i in node.input if i not in r.consts)
    r.emit(node, "GELU", inputs=[r.src(x)], note="GELU written out (erf)", out=out)


@handles("Mul")
def _mul(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """GELU's first node, a per-channel scale (LAYERSCALE), or a gate / product of branches."""
    match = _gelu_parts(r, node)
    if match is not None:
        _emit_gelu(r, node, *match)
        return
    consts = [i for i in node.input if i in r.consts]
    data = [i for i in node.input if i and i not in r.consts]
    if len(consts) == 1 and len(data) == 1:
        c = r.consts[consts[0]]
        shape = r.shapes.get(data[0])
        on_last = data[0] in r.last
        per_channel = (c.shape[0],) if on_last else (c.shape[0], *[1] * (len(shape or ()) - 1))
        if shape and c.shape[0] == shape[0] and c.shape == per_channel:
            r.emit(node, "LAYERSCALE", weights=[consts[0]], inputs=[r.src(data[0])])
            return
    _join(r, node, a)


@handles("Slice")
def _slice(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """`x[:, start:stop]` with constant bounds: SLICE."""
    x = node.input[0]
    shape = r.shapes.get(x)
    bounds = [r.const(node, i) for i in range(1, 5)]
    starts, ends, axes, steps = (None if b is None else [int(v) for v in b] for b in bounds)
    axes = axes if axes is not None else list(range(len(starts or [])))
    if (
        shape is None
        or starts is None
        or ends is None
        or len(axes) != 1
        or axes[0] % (len(shape) + 1) != 1
        or (steps is not None and steps != [1])
    ):
        raise r.fail(node, "a slice other than a channel range with constant bounds")
    channels = shape[0]
    start, stop = (
        max(0, min(v + channels if v < 0 else v, channels)) for v in (starts[0], ends[0])
    )
    if stop <= start:
        raise r.fail(node, f"an empty channel slice {start}:{stop}")
    r.emit(node, "SLICE", [("start", start), ("stop", stop)])


@handles("Split")
def _split(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """A channel split into parts: one SLICE per part."""
    x = node.input[0]
    shape = r.shapes.get(x)
    if shape is None or int(a.get("axis", 0)) % (len(shape) + 1) != 1:
        raise r.fail(node, "a split other than along the channels")
    given = r.const(node, 1)
    sizes = [int(v) for v in (given if given is not None else a.get("split", []))]
    if not sizes:
        n = len(node.output)
        sizes = [-(-shape[0] // n)] * (n - 1) + [shape[0] - -(-shape[0] // n) * (n - 1)]
    start = 0
    for k, (out, size) in enumerate(zip(node.output, sizes, strict=True)):
        args: list[tuple[str, Value]] = [("start", start), ("stop", start + size)]
        r.emit(node, "SLICE", args, inputs=[r.src(x)], out=out, op_id=f"{_name(node)}#{k}")
        start += size


@handles("Reshape")
def _reshape(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """A channel shuffle (view as [groups, C / groups, ...], swap, view back), else a flatten."""
    match = _shuffle_parts(r, node)
    if match is None:
        _flatten(r, node, a)
        return
    groups, out, rest = match
    r.skip.update(_name(n) for n in rest)
    r.emit(
        node, "CHANNELSHUFFLE", [("groups", groups)], note="channel shuffle written out", out=out
    )


def _shuffle_parts(r: Reader, node: onnx.NodeProto) -> tuple[int, str, list[onnx.NodeProto]] | None:
    shape = r.shapes.get(node.input[0])
    target = r.const(node, 1)
    if shape is None or target is None or _is_flatten(r, node) or len(target) != len(shape) + 2:
        return None
    groups, per = int(target[1]), int(target[2])
    if groups <= 0 or groups * per != shape[0] or list(target[3:]) != list(shape[1:]):
        return None
    swap = r.only(node.output[0], "Transpose")
    if swap is None or list(attrs_of(swap).get("perm", [])) != [0, 2, 1, *range(3, len(target))]:
        return None
    back = r.only(swap.output[0], "Reshape")
    again = r.const(back, 1) if back is not None else None
    if back is None or again is None or len(again) != len(shape) + 1:
        return None
    if [int(v) for v in again[2:]] != list(shape[1:]) or int(again[1]) not in (-1, shape[0]):
        return None
    return groups, back.output[0], [swap, back]


@handles("Gather")
def _gather(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """Rows of a constant table by the input's token ids: an EMBEDDING (its output
    channels-last, [L, dim]: the transpose after it makes it netspec's [dim, L])."""
    table = r.const(node, 0)
    ids = node.input[1] if len(node.input) > 1 else ""
    if table is None or table.ndim != 2 or int(a.get("axis", 0)) != 0 or r.src(ids) != INPUT:
        raise r.fail(node, "a gather other than an embedding table read by the input's token ids")
    r.mark_last(node.output[0])
    args: list[tuple[str, Value]] = [("dim", int(table.shape[1])), ("vocab", int(table.shape[0]))]
    r.emit(node, "EMBEDDING", args, [node.input[0]], inputs=[INPUT])


assert HANDLERS["Reshape"] is _reshape and HANDLERS["Flatten"] is _flatten


RESIZE_MODES = {  # (mode, coordinate transformation) -> (netspec mode, align_corners)
    ("nearest", "asymmetric"): ("nearest", False),
    ("linear", "half_pixel"): ("bilinear", False),
    ("linear", "pytorch_half_pixel"): ("bilinear", False),
    ("linear", "align_corners"): ("bilinear", True),
    ("cubic", "half_pixel"): ("bicubic", False),
    ("cubic", "pytorch_half_pixel"): ("bicubic", False),
    ("cubic", "align_corners"): ("bicubic", True),
}


@handles("Resize", "Upsample")
def _resize(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """Resize by constant scales or to a constant size: UPSAMPLE (`like=input` when the size is
    the network input's, as a segmentation head's last resize)."""
    shape = r.shapes.get(node.input[0])
    out = r.shapes.get(node.output[0])
    mode = str(a.get("mode", "nearest"))
    transform = str(a.get("coordinate_transformation_mode", "half_pixel"))
    if node.op_type == "Upsample":
        transform = "asymmetric"
    picked = RESIZE_MODES.get((mode, transform))
    if mode == "nearest" and a.get("nearest_mode", "round_prefer_floor") != "floor":
        picked = None
    if mode == "cubic" and not np.isclose(a.get("cubic_coeff_a", -0.75), -0.75):
        picked = None
    if picked is None or a.get("antialias", 0) or a.get("exclude_outside", 0):
        raise r.fail(
            node,
            f"a resize (mode={mode}, coordinate_transformation_mode={transform}) that PyTorch's "
            "interpolate does not make",
            "netspec's UPSAMPLE is nearest (floor, asymmetric), bilinear or bicubic (-0.75)",
        )
    if shape is None or out is None or out[0] != shape[0]:
        raise r.fail(node, "a resize whose shapes are not known, or that changes the channels")
    scales = r.const(node, 1 if node.op_type == "Upsample" else 2)
    sizes = r.const(node, 3) if node.op_type == "Resize" else None
    args: list[tuple[str, Value]] = []
    if sizes is not None and sizes.size:
        whole = r.shapes.get(r.input_name)
        if whole is not None and tuple(out[1:]) == tuple(whole[1:]):
            args.append(("like", "input"))
        else:
            args.append(("size", _one(out[1:])))
    elif scales is not None and scales.size and float(scales[0]) == 1 == float(scales[1]):
        factors = tuple(_num(float(s)) for s in scales[2:])
        ratios = [o / i for o, i in zip(out[1:], shape[1:], strict=True)]
        if all(isinstance(f, int) for f in factors):
            args.append(("scale", factors[0] if len(set(factors)) == 1 else factors))  # type: ignore[arg-type]
        elif np.allclose(ratios, [float(f) for f in factors], rtol=1e-6):  # a size, as a scale
            args.append(("size", _one(out[1:])))
        else:
            args.append(("scale", factors[0] if len(set(factors)) == 1 else factors))  # type: ignore[arg-type]
    else:
        raise r.fail(node, "a resize by scales or sizes that are not constants")
    args.append(("mode", picked[0]))
    if picked[1]:
        args.append(("align_corners", True))
    r.emit(node, "UPSAMPLE", args)


def _one(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else tuple(values)


def _num(value: float) -> int | float:
    return int(value) if value.is_integer() else value
