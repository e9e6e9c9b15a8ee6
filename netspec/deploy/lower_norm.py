"""ONNX lowerings of the normalization family: BATCHNORM, LAYERNORM, GROUPNORM, LAYERSCALE, LRN."""

from __future__ import annotations

from netspec.deploy.lower_base import LOWERINGS, Context
from netspec.ir.graph import Node
from netspec.layers import Layer, numel
from netspec.layers.norm import BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm


@LOWERINGS.register("batchnorm")
def _batchnorm(ctx: Context, node: Node, layer: BatchNorm, xs: list[str]) -> str:
    if node.id in ctx.folded:
        return xs[0]
    names = layer.state((ctx.in_shape(node),), node.shape)  # ONNX's input order is torch's
    return ctx.emit(
        "BatchNormalization",
        [xs[0], *(ctx.weight(node, n) for n in names)],
        node.id,
        epsilon=layer.eps,
    )


def _normalize(ctx: Context, x: str, axis: int, eps: float, n: str) -> str:
    """(x - mean) / sqrt(var + eps) over one axis, the variance biased (PyTorch's)."""
    centered = ctx.emit("Sub", [x, ctx.reduce_mean(x, axis, f"{n}.mean")], f"{n}.centered")
    square = ctx.emit("Mul", [centered, centered], f"{n}.square")
    var = ctx.reduce_mean(square, axis, f"{n}.var")
    std = ctx.emit(
        "Sqrt", [ctx.emit("Add", [var, ctx.scalar(f"{n}.eps", eps)], f"{n}.var_eps")], f"{n}.std"
    )
    return ctx.emit("Div", [centered, std], f"{n}.normalized")


def _affine(ctx: Context, node: Node, x: str) -> str:
    """x * weight + bias, per channel (broadcast over the positions)."""
    n = node.id
    scaled = ctx.emit("Mul", [x, ctx.channel_weight(node, "weight")], f"{n}.scale")
    return ctx.emit("Add", [scaled, ctx.channel_weight(node, "bias")], n, out=n)


@LOWERINGS.register("layernorm")
def _layernorm(ctx: Context, node: Node, layer: LayerNorm, xs: list[str]) -> str:
    # Over the channels (axis 1) at each position, for maps and vectors alike: ONNX's
    # LayerNormalization normalizes over trailing axes, which is not a map's channels.
    return _affine(ctx, node, _normalize(ctx, xs[0], 1, layer.eps, node.id))


@LOWERINGS.register("groupnorm")
def _groupnorm(ctx: Context, node: Node, layer: GroupNorm, xs: list[str]) -> str:
    n, shape = node.id, ctx.in_shape(node)
    grouped = ctx.emit(
        "Reshape",
        [
            xs[0],
            ctx.constant(f"{n}.grouped_shape", [0, layer.groups, numel(shape) // layer.groups]),
        ],
        f"{n}.grouped",
    )
    normalized = _normalize(ctx, grouped, 2, layer.eps, n)
    back = ctx.emit(
        "Reshape", [normalized, ctx.constant(f"{n}.shape", [0, *shape])], f"{n}.ungrouped"
    )
    return _affine(ctx, node, back)


@LOWERINGS.register("layer_scale")
def _layer_scale(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Mul", [xs[0], ctx.weight(node, "weight")], node.id)  # [C, 1, 1] already


@LOWERINGS.register("lrn")
def _lrn(ctx: Context, node: Node, layer: LocalResponseNorm, xs: list[str]) -> str:
    if len(ctx.in_shape(node)) == 3 and layer.size % 2:
        return ctx.emit(
            "LRN",
            xs,
            node.id,
            size=layer.size,
            alpha=float(layer.alpha),
            beta=float(layer.beta),
            bias=float(layer.k),
        )
    # onnxruntime's LRN takes only odd sizes on 4-D input; otherwise PyTorch's own formula:
    # x / (k + alpha * avg(x^2 over channels [c - size//2, c + (size-1)//2], zero-padded)) ** beta
    spatial = len(ctx.in_shape(node)) - 1
    n = node.id
    sq = ctx.emit("Mul", [xs[0], xs[0]], f"{n}.square")
    axis = ctx.constant(f"{n}.axis", [1])
    lifted = ctx.emit("Unsqueeze", [sq, axis], f"{n}.unsqueeze")  # [B, 1, C, ...]: pool over C
    pads = [layer.size // 2] + [0] * spatial + [(layer.size - 1) // 2] + [0] * spatial
    avg = ctx.emit(
        "AveragePool",
        [lifted],
        f"{n}.window",
        kernel_shape=[layer.size] + [1] * spatial,
        pads=pads,
        count_include_pad=1,
    )
    window = ctx.emit("Squeeze", [avg, axis], f"{n}.squeeze")
    scaled = ctx.emit("Mul", [window, ctx.scalar(f"{n}.alpha", layer.alpha)], f"{n}.alpha")
    base = ctx.emit("Add", [scaled, ctx.scalar(f"{n}.k", layer.k)], f"{n}.k")
    div = ctx.emit("Pow", [base, ctx.scalar(f"{n}.beta", layer.beta)], f"{n}.beta")
    return ctx.emit("Div", [xs[0], div], n, out=n)
