"""Round-trips of a layer through its printed text (`Layer.text`, issue 25): the text, put in a
spec of its own on the same input, must build the same layer: same kind, arguments, output
shape and parameters."""

from __future__ import annotations

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph, Node
from netspec.layers import Layer

Shape = tuple[int, ...]


def layer_cases(graph: Graph) -> dict[tuple[Layer, Shape], Node]:
    """Each distinct (layer, input shape) of a graph's one-input layers, with a node of it. The
    input and the joins (concat, add, mul: combinators, not calls) are left out."""
    shapes = {n.id: n.shape for n in graph.nodes}
    cases: dict[tuple[Layer, Shape], Node] = {}
    for node in graph.nodes:
        if node.layer.arity != 1 or len(node.inputs) != 1:
            continue
        cases.setdefault((node.layer, shapes[node.inputs[0]]), node)
    return cases


def round_trip(layer: Layer, in_shape: Shape, node: Node) -> str | None:
    """None when the text of `layer` on `in_shape` builds it back; else what differs."""
    text = layer.text(in_shape)
    if layer.takes_tokens:
        head = f"input tokens(length={in_shape[0]}, vocab={getattr(layer, 'vocab', 1)})"
    else:
        head = f"input [{', '.join(map(str, in_shape))}]"
    try:
        spec = load_spec_text(f"network roundtrip\n{head}\n{text}\n")
        graph = spec if isinstance(spec, Graph) else spec.instantiate({})
    except (NetspecError, SpecErrors) as e:
        return f"`{text}` does not build: {e}"
    (back,) = [n for n in graph.nodes if n.kind != "input"]
    if back.layer != layer:
        return f"`{text}` builds {back.layer!r}, not {layer!r}"
    if (back.shape, back.params, back.buffers, back.macs) != (
        node.shape,
        node.params,
        node.buffers,
        node.macs,
    ):
        return f"`{text}` builds other figures: {back.shape} {back.params} vs {node.shape} {node.params}"
    return None
