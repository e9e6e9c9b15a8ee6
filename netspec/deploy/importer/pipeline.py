"""`netspec import`: a model from another format as a spec, its exactness checked.

Read the source into flat layers, recover the tree and its blocks, write the spec, compile it,
then hold it to the source: the same parameter count, and (with the source's weights under
netspec's state-dict names) the same outputs on random input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netspec import compile_spec
from netspec.deploy.importer.keras import KerasModel
from netspec.deploy.importer.onnx_reader import OnnxModel, read_onnx, source_macs, source_params
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.recover.graph import INPUT, Item, Op, group_concats, nest_concats, to_tree, walk
from netspec.recover.write import Written, write_spec

GENERIC_NAMES = {"main_graph", "torch_jit", "torch-jit-export", "tf2onnx", ""}
TOLERANCE = 1e-5  # largest |difference| over the largest |source output|


@dataclass
class Imported:
    """A model imported as a spec: the text, its graph, the weights by state-dict name."""

    written: Written
    graph: Graph
    weights: dict[str, np.ndarray]
    source_params: int  # weight elements the source's layers read
    source_macs: int  # multiply-adds of its convolutions and products, from its own shapes
    source_nodes: int
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def recover(ops: list[Op], output: str) -> list[Item]:
    """The tree of a flat graph (a dense block's growing concatenations nested first)."""
    return to_tree(group_concats(nest_concats(ops), output), output)


def compile_written(text: str) -> Graph:
    try:
        return compile_spec(text)
    except NetspecError as e:
        raise NetspecError(
            f"the imported spec does not compile (a bug in the importer): {e.message}",
            hint="`netspec import --flat` writes one layer a line, which may compile",
        ) from None


def state_weights(
    graph: Graph, items: list[Item], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The source's tensors under the compiled graph's state-dict names: the k-th layer with
    weights in the tree is the graph's k-th (the builder's order), each checked for kind and
    shape."""
    ops = [op for op in walk(items) if op.weights]
    shapes = {n.id: n.shape for n in graph.nodes}
    nodes = [n for n in graph.nodes if n.params or n.buffers]
    if len(ops) != len(nodes):
        raise NetspecError(
            f"the imported spec has {len(nodes)} layers with weights; the source {len(ops)}"
        )
    out = {}
    for op, node in zip(ops, nodes, strict=True):
        state = node.layer.state(tuple(shapes[i] for i in node.inputs), node.shape)
        if len(state) != len(op.weights):
            raise NetspecError(
                f"source node `{op.id}` ({op.spelling}) has {len(op.weights)} weights; the spec's "
                f"`{node.id}` ({node.kind}) {len(state)}"
            )
        for (name, shape), w in zip(state.items(), op.weights, strict=True):
            array = arrays[w]
            if array.size != int(np.prod(shape)):
                raise NetspecError(
                    f"source tensor `{w}` is {list(array.shape)}; the spec's `{node.id}.{name}` "
                    f"{list(shape)}"
                )
            out[f"{node.id}.{name}"] = np.ascontiguousarray(array.reshape(shape), np.float32)
    return out


def figures(graph: Graph) -> int:
    return graph.totals.params + graph.totals.buffers


def import_onnx(
    path: str | Path, input_shape: tuple[int, ...] | None = None, flat: bool = False
) -> Imported:
    """Import an ONNX file: the spec, its graph and weights; figures checked (outputs:
    `verify_outputs`)."""
    model = read_onnx(path, input_shape)
    return from_model(model, Path(str(path)).name, flat)


def from_model(model: OnnxModel | KerasModel, source: str, flat: bool = False) -> Imported:
    """The spec of a read ONNX model, compiled, its weights named, its figures checked."""
    items = recover(model.ops, model.output)
    generic = model.name in GENERIC_NAMES
    name = Path(source).stem if generic else model.name
    written = write_spec(items, name, model.input_shape, source, flat)
    graph = compile_written(written.text)
    weights = state_weights(graph, items, model.weights)
    imported = Imported(
        written, graph, weights, source_params(model), source_macs(model), model.nodes
    )
    check_figures(imported)
    return imported


def check_figures(imported: Imported) -> None:
    """The spec's parameters (with BN running statistics) and MACs against the source's."""
    mine = figures(imported.graph)
    theirs = imported.source_params
    imported.checks.append(
        ("params", mine == theirs, f"{mine:,} (params + BN running stats); source {theirs:,}")
    )
    macs = imported.graph.totals.macs
    imported.checks.append(
        ("MACs", macs == imported.source_macs, f"{macs:,}; source {imported.source_macs:,}")
    )


def verify_outputs(imported: Imported, run_source: Any, batch: int = 2, seed: int = 0) -> None:
    """Run the spec (torch, the imported weights) and the source on one random batch."""
    import torch

    from netspec.backends.lower_torch import build

    graph = imported.graph
    module = build(graph)
    state = {k: torch.from_numpy(v.copy()) for k, v in imported.weights.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise NetspecError(
            f"weights do not fit the spec: missing {missing[:3]}, extra {unexpected[:3]}"
        )
    module.eval()
    rng = np.random.default_rng(seed)
    shape = (batch, *graph.input.shape)
    vocab = graph.input.vocab
    x = (
        rng.integers(0, vocab, shape, dtype=np.int64)
        if vocab
        else rng.standard_normal(shape).astype(np.float32)
    )
    with torch.no_grad():
        mine = module(torch.from_numpy(x)).numpy()
    theirs = np.asarray(run_source(x), dtype=np.float32)
    if mine.shape != theirs.shape:
        imported.checks.append(("outputs", False, f"shape {mine.shape} vs source {theirs.shape}"))
        return
    scale = float(np.abs(theirs).max()) or 1.0
    rel = float(np.abs(mine - theirs).max()) / scale
    imported.checks.append(
        (
            "outputs",
            rel <= TOLERANCE,
            f"max |difference| / max |source| = {rel:.2e} (limit {TOLERANCE:g})",
        )
    )


def ort_runner(model: Any) -> Any:
    """A function running an ONNX model (a ModelProto) in onnxruntime on CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return run


__all__ = ["INPUT", "Imported", "import_onnx", "ort_runner", "verify_outputs"]
