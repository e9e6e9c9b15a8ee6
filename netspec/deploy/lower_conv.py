"""ONNX lowerings of the convolution family: CONV, DWCONV, CONVTRANSPOSE, LOCALLYCONNECTED,
UPSAMPLE, and the folding of a batch norm into the convolution before it (`--fold-bn`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from netspec.deploy.lower_base import LOWERINGS, Context
from netspec.ir.graph import Node
from netspec.layers.conv import Conv, ConvTranspose, LocallyConnected
from netspec.layers.norm import BatchNorm
from netspec.layers.pool import Upsample


@LOWERINGS.register("conv", "dwconv")
def _conv(ctx: Context, node: Node, layer: Conv, xs: list[str]) -> str:
    k, s, d, pads = layer.geometry(ctx.in_shape(node))
    attrs: dict[str, Any] = {
        "kernel_shape": list(k),
        "strides": list(s),
        "dilations": list(d),
        "pads": [b for b, _ in pads] + [e for _, e in pads],  # all begins, then all ends
        "group": layer.groups,
    }
    bn = ctx.fold.get(node.id)
    if bn is not None:
        w, b = _folded(ctx.weights, node, bn, layer.bias)
        inputs = [
            xs[0],
            ctx.initializer(f"{node.id}.weight", w),
            ctx.initializer(f"{node.id}.bias", b),
        ]
    else:
        inputs = [xs[0], ctx.weight(node, "weight")] + (
            [ctx.weight(node, "bias")] if layer.bias else []
        )
    return ctx.emit("Conv", inputs, node.id, **attrs)


@LOWERINGS.register("conv_transpose")
def _conv_transpose(ctx: Context, node: Node, layer: ConvTranspose, xs: list[str]) -> str:
    k, s, p, op, d = layer.geometry(ctx.in_shape(node))
    inputs = [xs[0], ctx.weight(node, "weight")] + (
        [ctx.weight(node, "bias")] if layer.bias else []
    )
    return ctx.emit(
        "ConvTranspose",
        inputs,
        node.id,
        kernel_shape=list(k),
        strides=list(s),
        pads=list(p) * 2,  # all begins, then all ends
        output_padding=list(op),
        dilations=list(d),
        group=layer.groups,
    )


@LOWERINGS.register("locally_connected")
def _locally_connected(ctx: Context, node: Node, layer: LocallyConnected, xs: list[str]) -> str:
    """Exact and as large as torch's unfold: one strided Slice per kernel offset gives that
    tap of every patch, [B, C, *out]; stacked on a new axis and reshaped, the patches
    [B, C * taps, L] (torch's unfold order); then one batched MatMul over the L positions with
    the weight reshaped to [L, C * taps, filters]; then the bias."""
    n = node.id
    shape = ctx.in_shape(node)
    k, s = layer.geometry(shape)
    out = node.shape[1:]
    c, positions, taps = shape[0], math.prod(out), math.prod(k)
    axes = ctx.constant(f"{n}.axes", list(range(2, 2 + len(k))))
    steps = ctx.constant(f"{n}.steps", list(s))
    where = ctx.constant(f"{n}.where", [2])
    tapped = []
    for t, offset in enumerate(np.ndindex(*k)):
        starts = ctx.constant(f"{n}.start{t}", list(offset))
        ends = ctx.constant(
            f"{n}.end{t}", [o + st * (m - 1) + 1 for o, st, m in zip(offset, s, out, strict=True)]
        )
        cut = ctx.emit("Slice", [xs[0], starts, ends, axes, steps], f"{n}.tap{t}")
        tapped.append(ctx.emit("Unsqueeze", [cut, where], f"{n}.tap{t}.unsqueeze"))
    stacked = ctx.emit("Concat", tapped, f"{n}.patches", axis=2)  # [B, C, taps, *out]
    cols = ctx.emit(
        "Reshape", [stacked, ctx.constant(f"{n}.cols_shape", [0, c * taps, positions])], f"{n}.cols"
    )
    rows = ctx.emit("Transpose", [cols], f"{n}.rows", perm=[2, 0, 1])  # [L, B, C * taps]
    matrix = ctx.emit(
        "Reshape",
        [ctx.weight(node, "weight"), ctx.constant(f"{n}.w_shape", [positions, layer.filters, -1])],
        f"{n}.matrix",
    )
    matrix = ctx.emit("Transpose", [matrix], f"{n}.matrix_t", perm=[0, 2, 1])  # [L, C*taps, F]
    product = ctx.emit("MatMul", [rows, matrix], f"{n}.matmul")  # [L, B, F]
    per_batch = ctx.emit("Transpose", [product], f"{n}.transpose", perm=[1, 2, 0])
    y = ctx.emit(
        "Reshape",
        [per_batch, ctx.constant(f"{n}.shape", [0, layer.filters, *out])],
        f"{n}.reshape" if layer.bias else n,
    )
    if not layer.bias:
        return y
    return ctx.emit("Add", [y, ctx.weight(node, "bias")], n)


@LOWERINGS.register("upsample")
def _upsample(ctx: Context, node: Node, layer: Upsample, xs: list[str]) -> str:
    """Resize with scales, out / in per dim (scales, unlike sizes, leave the batch dimension
    free at every opset), each the float32 for which onnxruntime computes the IR's size.
    Nearest where Resize's source pixels (floor(out / scale)) would differ from PyTorch's
    (floor(out * (in / out)) in float32), off by one at a rounding: a Gather of PyTorch's."""
    n = node.id
    sizes, out = ctx.in_shape(node)[1:], node.shape[1:]
    if layer.mode == "nearest" and any(
        not np.array_equal(_nearest_onnx(i, o), _nearest_torch(i, o))
        for i, o in zip(sizes, out, strict=True)
    ):
        x = xs[0]
        for axis, (i, o) in enumerate(zip(sizes, out, strict=True)):
            if i != o:
                rows = ctx.constant(f"{n}.index{axis}", _nearest_torch(i, o).tolist())
                last = all(a == b for a, b in zip(sizes[axis + 1 :], out[axis + 1 :], strict=True))
                x = ctx.emit("Gather", [x, rows], n if last else f"{n}.gather{axis}", axis=axis + 2)
        return ctx.declare(x, node.shape)
    factors = [1.0, 1.0] + [resize_scale(i, o, o / i) for i, o in zip(sizes, out, strict=True)]
    scales = ctx.emit(
        "Constant",
        [],
        f"{n}.scales",
        value=helper.make_tensor(f"{n}.scales", TensorProto.FLOAT, [len(factors)], factors),
    )
    # PyTorch's coordinates: nearest is floor(out / scale) (ONNX's asymmetric + floor);
    # bilinear and bicubic are half_pixel, or align_corners; bicubic's a is PyTorch's -0.75.
    attrs: dict[str, Any]
    if layer.mode == "nearest":
        attrs = {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        }
    else:
        attrs = {
            "mode": "linear" if layer.mode == "bilinear" else "cubic",
            "coordinate_transformation_mode": "align_corners"
            if layer.align_corners
            else "half_pixel",
        }
        if layer.mode == "bicubic":
            attrs["cubic_coeff_a"] = -0.75
    # onnx's shape inference gives Resize's batch dimension a fresh name: declare it `batch`
    # (the other dims stay inferred, and must agree).
    return ctx.declare(ctx.emit("Resize", [xs[0], "", scales], n, **attrs), node.shape)


def _nearest_torch(size: int, out: int) -> np.ndarray:
    """PyTorch's nearest source pixels: min(floor(o * (in / out)), in - 1), in float32."""
    ratio = np.float32(size) / np.float32(out)
    index = np.floor(np.arange(out, dtype=np.float32) * ratio).astype(np.int64)
    return np.minimum(index, size - 1)


def _nearest_onnx(size: int, out: int) -> np.ndarray:
    """onnxruntime's with the exported scale: min(floor(o / scale), in - 1), in float32."""
    scale = np.float32(resize_scale(size, out, out / size))
    index = np.floor(np.arange(out, dtype=np.float32) / scale).astype(np.int64)
    return np.minimum(index, size - 1)


def resize_scale(size: int, out: int, wanted: float) -> float:
    """The float32 scale nearest `wanted` for which floor(size * scale) is `out`, computed in
    float32 (onnxruntime) and in float64 (onnx's shape inference) alike."""

    def sizes(scale: np.float32) -> tuple[int, int]:
        return int(np.floor(np.float32(size) * scale)), math.floor(size * float(scale))

    scale = np.float32(wanted)
    step = np.float32(np.inf) if min(sizes(scale)) < out else np.float32(0)
    for _ in range(64):  # a few ulps at most
        if sizes(scale) == (out, out):
            return float(scale)
        scale = np.nextafter(scale, step, dtype=np.float32)
    raise AssertionError(f"no float32 scale resizes {size} to {out}")


def _folded(
    weights: Mapping[str, np.ndarray], conv: Node, bn: Node, has_bias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Conv then BN as one conv: w' = w * s, b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps).
    The per-channel vectors in float64; w * s is one float32 rounding, as the product would be."""
    w = weights[f"{conv.id}.weight"]
    b = weights[f"{conv.id}.bias"].astype(np.float64) if has_bias else np.zeros(w.shape[0])
    gamma, beta, mean, var = (
        weights[f"{bn.id}.{n}"].astype(np.float64)
        for n in ("weight", "bias", "running_mean", "running_var")
    )
    assert isinstance(bn.layer, BatchNorm)  # `foldable` pairs only batch norms
    scale = gamma / np.sqrt(var + float(bn.layer.eps))
    return w * scale.astype(w.dtype).reshape(-1, *([1] * (w.ndim - 1))), (b - mean) * scale + beta
