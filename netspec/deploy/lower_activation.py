"""ONNX lowerings of the activation family (RELU ... GELU, PRELU, SOFTMAX) and of the kinds that
are the identity at inference (DROPOUT, DROPPATH, IDENTITY)."""

from __future__ import annotations

import math
from typing import Any

from netspec.deploy.lower_base import LOWERINGS, Context, Lowering
from netspec.ir.graph import Node
from netspec.layers import Layer
from netspec.layers.activation import ELU, GELU, LeakyReLU


def _unary(op: str, **fixed: Any) -> Lowering:
    def lower(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
        return ctx.emit(op, xs, node.id, **fixed)

    lower.__name__ = f"_{op.lower()}"
    return lower


@LOWERINGS.register("leaky_relu")
def _leaky_relu(ctx: Context, node: Node, layer: LeakyReLU, xs: list[str]) -> str:
    return ctx.emit("LeakyRelu", xs, node.id, alpha=float(layer.slope))


@LOWERINGS.register("silu")
def _silu(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    # x * sigmoid(x) at every opset: onnxruntime 1.31 has no kernel for ONNX's Swish (opset 24).
    gate = ctx.emit("Sigmoid", xs, f"{node.id}.sigmoid")
    return ctx.emit("Mul", [xs[0], gate], node.id, out=node.id)


@LOWERINGS.register("relu6")
def _relu6(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    n = node.id  # Clip's bounds are inputs (opset 11 and on), in the compute dtype
    return ctx.emit("Clip", [xs[0], ctx.scalar(f"{n}.min", 0.0), ctx.scalar(f"{n}.max", 6.0)], n)


@LOWERINGS.register("hardsigmoid")
def _hardsigmoid(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("HardSigmoid", xs, node.id, alpha=1 / 6, beta=0.5)  # PyTorch's, not ONNX's 0.2


@LOWERINGS.register("hardswish")
def _hardswish(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    if ctx.options.opset >= 14:
        return ctx.emit("HardSwish", xs, node.id)
    gate = ctx.emit("HardSigmoid", xs, f"{node.id}.gate", alpha=1 / 6, beta=0.5)
    return ctx.emit("Mul", [xs[0], gate], node.id, out=node.id)


@LOWERINGS.register("gelu")
def _gelu(ctx: Context, node: Node, layer: GELU, xs: list[str]) -> str:
    if ctx.options.opset >= 20:
        return ctx.emit("Gelu", xs, node.id, approximate=layer.approximate)
    # Below opset 20, PyTorch's formulas: 0.5 x (1 + erf(x / sqrt 2)), or with approximate=tanh
    # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
    n, x = node.id, xs[0]
    if layer.approximate == "none":
        inner = ctx.emit("Mul", [x, ctx.scalar(f"{n}.rsqrt2", 1 / math.sqrt(2))], f"{n}.scale")
        core = ctx.emit("Erf", [inner], f"{n}.erf")
    else:
        cube = ctx.emit("Mul", [x, ctx.emit("Mul", [x, x], f"{n}.square")], f"{n}.cube")
        cubic = ctx.emit("Mul", [cube, ctx.scalar(f"{n}.c", 0.044715)], f"{n}.cubic")
        poly = ctx.emit("Add", [x, cubic], f"{n}.poly")
        scale = ctx.scalar(f"{n}.sqrt2pi", math.sqrt(2 / math.pi))
        core = ctx.emit("Tanh", [ctx.emit("Mul", [poly, scale], f"{n}.scale")], f"{n}.tanh")
    one_plus = ctx.emit("Add", [core, ctx.scalar(f"{n}.one", 1.0)], f"{n}.one_plus")
    half_x = ctx.emit("Mul", [x, ctx.scalar(f"{n}.half", 0.5)], f"{n}.half_x")
    return ctx.emit("Mul", [half_x, one_plus], n, out=n)


@LOWERINGS.register("elu")
def _elu(ctx: Context, node: Node, layer: ELU, xs: list[str]) -> str:
    return ctx.emit("Elu", xs, node.id, alpha=float(layer.alpha))


@LOWERINGS.register("prelu")
def _prelu(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("PRelu", [xs[0], ctx.channel_weight(node, "weight")], node.id)


@LOWERINGS.register("softmax")
def _softmax(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    if ctx.options.logits and node.id == ctx.graph.output:
        return xs[0]
    return ctx.emit("Softmax", xs, node.id, axis=1)


@LOWERINGS.register("dropout", "drop_path", "identity")
def _passthrough(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    """Dropout and stochastic depth (the identity at inference) and identity: no node, the
    input's tensor."""
    return xs[0]


LOWERINGS.register("relu")(_unary("Relu"))
LOWERINGS.register("tanh")(_unary("Tanh"))
LOWERINGS.register("sigmoid")(_unary("Sigmoid"))
