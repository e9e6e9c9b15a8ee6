"""ONNX lowerings of the linear family: FC and EMBEDDING."""

from __future__ import annotations

from netspec.deploy.lower_base import LOWERINGS, Context
from netspec.ir.graph import Node
from netspec.layers.linear import Dense, Embedding


@LOWERINGS.register("fc")
def _fc(ctx: Context, node: Node, layer: Dense, xs: list[str]) -> str:
    inputs = [xs[0], ctx.weight(node, "weight")] + (
        [ctx.weight(node, "bias")] if layer.bias else []
    )
    return ctx.emit("Gemm", inputs, node.id, transB=1)


@LOWERINGS.register("embedding")
def _embedding(ctx: Context, node: Node, layer: Embedding, xs: list[str]) -> str:
    rows = ctx.emit(
        "Gather", [ctx.weight(node, "weight"), xs[0]], node.id, out=f"{node.id}.rows", axis=0
    )
    return ctx.emit(
        "Transpose", [rows], f"{node.id}.transpose", out=node.id, perm=[0, 2, 1]
    )  # [B, dim, L]
