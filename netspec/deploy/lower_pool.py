"""ONNX lowerings of the pooling family: MAXPOOL and AVGPOOL, GLOBALPOOL, ADAPTIVEAVGPOOL."""

from __future__ import annotations

import math
from typing import Any

from netspec.deploy.lower_base import LOWERINGS, Context
from netspec.errors import NetspecError
from netspec.ir.graph import Node
from netspec.layers import fmt_shape
from netspec.layers.conv import window_out
from netspec.layers.pool import AdaptiveAvgPool, GlobalPool, Pool


@LOWERINGS.register("pool")
def _pool(ctx: Context, node: Node, layer: Pool, xs: list[str]) -> str:
    in_shape = ctx.in_shape(node)
    k, s, p = layer.geometry(in_shape)
    want = node.shape[1:]
    floor = tuple(
        window_out(n, kk, ss, 1, pp, pp)
        for n, kk, ss, pp in zip(in_shape[1:], k, s, p, strict=True)
    )
    # ONNX's ceil rule lacks PyTorch's "the last window must start inside the input or its left
    # padding", so ceil_mode=1 is used only where both rules give the IR's size.
    onnx_ceil = tuple(
        math.ceil((n + 2 * pp - kk) / ss) + 1
        for n, kk, ss, pp in zip(in_shape[1:], k, s, p, strict=True)
    )
    begins, ends, ceil = list(p), list(p), 0
    if layer.padding == "same":  # TensorFlow's rule: the odd pixel after (no ceil mode)
        begins, ends = [b for b, _ in layer.pads(in_shape)], [a for _, a in layer.pads(in_shape)]
    elif layer.ceil and want != floor:
        if want == onnx_ceil:
            ceil = 1
        elif layer.mode == "max":  # extra end padding never wins a max
            ends = [
                pp + max(0, (o - 1) * ss + kk - (n + 2 * pp))
                for n, kk, ss, pp, o in zip(in_shape[1:], k, s, p, want, strict=True)
            ]
        else:
            raise NetspecError(
                f"AVGPOOL `{node.id}` with ceil=on on a {fmt_shape(in_shape[1:])} input rounds differently per "
                "dimension, which ONNX's AveragePool cannot express",
                node.span,
                hint="use ceil=off, or a square input",
            )
    attrs: dict[str, Any] = {
        "kernel_shape": list(k),
        "strides": list(s),
        "pads": begins + ends,
        "ceil_mode": ceil,
    }
    if layer.mode == "avg":
        attrs["count_include_pad"] = 1  # PyTorch's default
    return ctx.emit("MaxPool" if layer.mode == "max" else "AveragePool", xs, node.id, **attrs)


@LOWERINGS.register("global_pool")
def _global_pool(ctx: Context, node: Node, layer: GlobalPool, xs: list[str]) -> str:
    op = "GlobalAveragePool" if layer.mode == "avg" else "GlobalMaxPool"
    pooled = ctx.emit(op, xs, node.id, out=f"{node.id}.pooled")
    return ctx.emit("Flatten", [pooled], f"{node.id}.flatten", out=node.id, axis=1)


@LOWERINGS.register("adaptive_avg_pool")
def _adaptive_avg_pool(ctx: Context, node: Node, layer: AdaptiveAvgPool, xs: list[str]) -> str:
    size, out = ctx.in_shape(node)[1:], node.shape[1:]
    if any(n % o for n, o in zip(size, out, strict=True)):
        raise NetspecError(
            f"ADAPTIVEAVGPOOL `{node.id}` pools {fmt_shape(size)} to {fmt_shape(out)}, which ONNX cannot "
            "express: ONNX has no adaptive pooling, and the input size is not a multiple of the output size",
            node.span,
            hint=f"make the input a multiple of {fmt_shape(out)}, or pool to a size dividing {fmt_shape(size)}",
        )
    if all(o == 1 for o in out):
        return ctx.emit("GlobalAveragePool", xs, node.id)
    kernel = [n // o for n, o in zip(size, out, strict=True)]
    return ctx.emit("AveragePool", xs, node.id, kernel_shape=kernel, strides=kernel)
