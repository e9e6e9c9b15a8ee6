"""ONNX lowerings of the structural kinds: the input, FLATTEN, CONCAT, ADD, MUL, SLICE and
CHANNELSHUFFLE."""

from __future__ import annotations

from onnx import TensorProto, helper

from netspec.deploy.lower_base import BATCH, INPUT_NAME, LOWERINGS, Context
from netspec.ir.graph import Node
from netspec.layers import Layer
from netspec.layers.structure import ChannelShuffle, Input, Slice


@LOWERINGS.register("input")
def _input(ctx: Context, node: Node, layer: Input, xs: list[str]) -> str:
    if layer.vocab is not None:  # token ids
        ctx.inputs.append(
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT64, [BATCH, *layer.shape])
        )
        return INPUT_NAME
    ctx.inputs.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, *layer.shape])
    )
    if ctx.options.fp16:
        return ctx.emit(
            "Cast", [INPUT_NAME], "input.cast", out="input.fp16", to=TensorProto.FLOAT16
        )
    return INPUT_NAME


@LOWERINGS.register("flatten")
def _flatten(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Flatten", xs, node.id, axis=1)


@LOWERINGS.register("channel_shuffle")
def _channel_shuffle(ctx: Context, node: Node, layer: ChannelShuffle, xs: list[str]) -> str:
    n = node.id
    c, *rest = ctx.in_shape(node)
    g = layer.groups
    split = ctx.constant(f"{n}.split_shape", [0, g, c // g, *rest])  # 0: the batch, copied
    grid = ctx.emit("Reshape", [xs[0], split], f"{n}.split")
    perm = [0, 2, 1, *range(3, 3 + len(rest))]
    swapped = ctx.emit("Transpose", [grid], f"{n}.transpose", perm=perm)
    flat = ctx.constant(f"{n}.shape", [0, c, *rest])
    return ctx.emit("Reshape", [swapped, flat], n, out=n)


@LOWERINGS.register("slice")
def _slice(ctx: Context, node: Node, layer: Slice, xs: list[str]) -> str:
    n = node.id
    bounds = [
        ctx.constant(f"{n}.start", [layer.start]),
        ctx.constant(f"{n}.stop", [layer.stop]),
        ctx.constant(f"{n}.axes", [1]),
    ]
    return ctx.emit("Slice", [xs[0], *bounds], n)


@LOWERINGS.register("concat")
def _concat(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Concat", xs, node.id, axis=1)


@LOWERINGS.register("add")
def _add(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Add" if len(xs) == 2 else "Sum", xs, node.id)


@LOWERINGS.register("mul")
def _mul(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    # ONNX's Mul broadcasts as NumPy does; the IR's shapes have one rank (the batch leads).
    out = xs[0]
    for i, x in enumerate(xs[1:]):
        last = i == len(xs) - 2
        out = ctx.emit("Mul", [out, x], node.id if last else f"{node.id}.{i + 1}")
    return out
