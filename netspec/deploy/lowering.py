"""IR -> ONNX, built directly with `onnx.helper`: no torch module is traced.

Each layer kind has one lowering function in `LOWERINGS` (`@LOWERINGS.register("kind")`); a
kind without one fails loudly, naming it (`MissingLowering`, as the torch backend does). The
weights each node needs (names and shapes) are its layer class's `state`. The model has a dynamic batch dimension (`batch`), one input named
`input` (float32 ``[batch, *shape]``, or int64 token ids ``[batch, L]``) and one output named
`output` (float32 ``[batch, *out]``). ONNX node names are the spec's layer names
(`layer2.basic1.conv1`) and initializers are named like PyTorch's `state_dict`
(`layer2.basic1.conv1.weight`), so a checkpoint maps onto the graph by name.

Options:
    fold_bn: a batch norm right after a convolution (and its only consumer) is folded into the
        convolution's weights and bias; the other batch norms stay.
    fp16: weights and compute in half precision; the input and the output stay float32, with a
        Cast after the input and one before the output (token ids need no cast).
    logits: leave out a final softmax, so the output is the raw class scores.
    all_outputs: with side heads (`head aux1 at ...`), each head is an output too, named after
        it; by default the heads (training-only outputs) are left out with their weights.

The per-kind functions live by family in `lower_conv`, `lower_pool`, `lower_linear`, `lower_norm`,
`lower_activation` and `lower_structure`; their frame (`Context`, the options) in `lower_base`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from netspec import __version__
from netspec.deploy import (  # noqa: F401  (each registers its kinds in LOWERINGS)
    lower_activation,
    lower_conv,
    lower_linear,
    lower_norm,
    lower_pool,
    lower_structure,
)
from netspec.deploy.lower_base import (
    BATCH,
    INPUT_NAME,
    LOWERINGS,
    OUTPUT_NAME,
    Context,
    LowerOptions,
)
from netspec.deploy.weights import check_weights
from netspec.deploy.writer import Lowered
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers import KINDS


def lower(
    graph: Graph,
    weights: Mapping[str, np.ndarray],
    options: LowerOptions | None = None,
    *,
    origin: str = "the weights",
    note: str = "",
    metadata: Mapping[str, str] | None = None,
) -> Lowered:
    """Lower an IR graph to an ONNX model holding `weights` (state_dict names -> arrays).

    Args:
        graph: the IR.
        weights: every weight the graph needs (see `expected_weights`); extra
            `num_batches_tracked` counters are ignored.
        options: opset, fold_bn, fp16, logits.
        origin: how to name the weights in error messages (a checkpoint's path).
        note: where the weights come from, for the metadata (`seed=0`, a checkpoint's digest).
        metadata: more metadata entries (e.g. `netspec.classes`, a trained run's class names).

    Raises:
        NetspecError: a layer ONNX cannot express, or weights that do not fit the graph.
    """
    options = options or LowerOptions()
    graph, weights = for_outputs(graph, weights, options)
    LOWERINGS.require(n.kind for n in graph.nodes)
    _check_token_ids(graph)
    ctx = Context(graph, check_weights(graph, weights, origin), options)
    for node in graph.nodes:
        ctx.tensors[node.id] = LOWERINGS[node.kind](
            ctx, node, node.layer, [ctx.tensors[i] for i in node.inputs]
        )
    final = ctx.tensors[graph.output]
    out_shape = graph.output_shape
    if options.fp16:
        ctx.emit("Cast", [final], "output.cast", out=OUTPUT_NAME, to=TensorProto.FLOAT)
    elif final == INPUT_NAME or final in ctx.arrays:
        ctx.emit("Identity", [final], "output.identity", out=OUTPUT_NAME)
    else:
        _rename(ctx.nodes, final, OUTPUT_NAME)
        ctx.tensors = {k: OUTPUT_NAME if v == final else v for k, v in ctx.tensors.items()}
        ctx.value_info = [v for v in ctx.value_info if v.name != final]  # declared as the output
    out_type = (
        TensorProto.INT64 if graph.input.is_tokens and final == INPUT_NAME else TensorProto.FLOAT
    )
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, out_type, [BATCH, *out_shape])]
    for head in graph.heads:  # only with all_outputs: for_outputs drops them otherwise
        tensor = ctx.tensors[head.output]
        if options.fp16:
            ctx.emit("Cast", [tensor], f"{head.name}.cast", out=head.name, to=TensorProto.FLOAT)
        else:
            ctx.emit("Identity", [tensor], f"{head.name}.identity", out=head.name)
        shape: list[str | int | None] = [BATCH, *graph.node(head.output).shape]
        outputs.append(helper.make_tensor_value_info(head.name, TensorProto.FLOAT, shape))
    onnx_graph = helper.make_graph(
        ctx.nodes,
        graph.name,
        ctx.inputs,
        outputs,
        initializer=ctx.initializers,
        doc_string=graph.description or "",
        value_info=ctx.value_info,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", options.opset)],
        producer_name="netspec",
        producer_version=__version__,
        doc_string=graph.description or "",
    )
    # onnx would write its newest IR version; onnxruntime reads only up to 13: use the opset's own.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    helper.set_model_props(model, _metadata(graph, options, note) | dict(metadata or {}))
    return Lowered(model, ctx.arrays, ctx.tensors, sorted(ctx.folded), ctx.parameters)


def for_outputs(
    graph: Graph, weights: Mapping[str, np.ndarray], options: LowerOptions
) -> tuple[Graph, Mapping[str, np.ndarray]]:
    """The graph and weights to lower: without the side heads (and their weights) unless
    `options.all_outputs`."""
    if not graph.heads or options.all_outputs:
        return graph, weights
    prefixes = tuple(h.name + "." for h in graph.heads)
    return graph.main_path(), {k: v for k, v in weights.items() if not k.startswith(prefixes)}


def _check_token_ids(graph: Graph) -> None:
    """Token ids (int64) feed EMBEDDING and nothing else; EMBEDDING reads nothing else. The IR
    lets a flat [L] input pass for an [N] vector, which ONNX's types refuse."""
    tokens = graph.nodes[0].id if graph.input.is_tokens else None
    for node in graph.nodes:
        if node.layer.takes_tokens and node.inputs != [tokens]:
            raise NetspecError(
                f"EMBEDDING `{node.id}` must read the input's token ids",
                node.span,
                hint="declare `input tokens(length=L, vocab=V)` and put EMBEDDING first",
            )
        if not node.layer.takes_tokens and tokens in node.inputs:
            raise NetspecError(
                f"`{node.id}` reads token ids; only EMBEDDING can",
                node.span,
                hint="start the chain with EMBEDDING(dim)",
            )


def _rename(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for n in nodes:
        for seq in (n.input, n.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new


def _metadata(graph: Graph, options: LowerOptions, note: str) -> dict[str, str]:
    return {
        "netspec.name": graph.name,
        "netspec.source_hash": graph.source_hash or "",
        "netspec.version": __version__,
        "netspec.bindings": json.dumps(graph.bindings, sort_keys=True),
        "netspec.input": "tokens" if graph.input.is_tokens else "float32",
        "netspec.output": "probabilities"
        if graph.ends_in_probabilities and not options.logits
        else "scores",
        "netspec.options": json.dumps(
            {"fold_bn": options.fold_bn, "fp16": options.fp16, "logits": options.logits}
        ),
        "netspec.weights": note,
        **({"netspec.per_pixel": "true"} if graph.per_pixel else {}),
    }


def missing_lowerings() -> list[str]:
    """Registered layer kinds with no ONNX lowering (a test keeps this empty)."""
    return LOWERINGS.missing(KINDS)


__all__ = ["for_outputs", "lower", "missing_lowerings"]
