"""Read an ONNX file into netspec's flat layers (`netspec.recover.graph.Op`) and its weights.

Shapes come from the graph, or from onnx's shape inference; the batch dimension may be
symbolic, any other must be fixed (or given with `--input-shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from onnx import numpy_helper

from netspec.deploy.importer.keras import KerasModel
from netspec.deploy.importer.onnx_ops import (
    CONTROL_FLOW,
    HANDLERS,
    Reader,
    attrs_of,
    constant_value,
)
from netspec.deploy.importer.onnx_patterns import fails_last, fold, fold_graph
from netspec.errors import NetspecError
from netspec.io import read_input
from netspec.recover.graph import INPUT, ImportError_, Op


@dataclass
class OnnxModel:
    """An ONNX model read as netspec layers."""

    name: str
    input_name: str
    input_shape: tuple[int, ...]  # without the batch
    ops: list[Op]
    output: str  # the op giving the model's output
    weights: dict[str, np.ndarray]  # tensor name (`name#T`: transposed) -> array
    model: onnx.ModelProto
    nodes: int  # ONNX nodes in the graph


def load_model(path: str | Path | bytes) -> onnx.ModelProto:
    """Parse an ONNX file (or its bytes); one that is not ONNX (or is cut short) is a clear
    error."""
    data = path if isinstance(path, bytes) else read_input(path, "ONNX file")
    folder = None if isinstance(path, bytes) else Path(path).parent
    path = "the model" if isinstance(path, bytes) else path
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise NetspecError(
            f"{path}: not an ONNX file (the protobuf does not parse: {e})",
            hint="a truncated download or another format; check the file",
        ) from None
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if external and folder is None:
        raise NetspecError("the model keeps its weights in external files; import it from a file")
    if external:  # weights beside the file (netspec export's --external-data, large models)
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(folder))
    if not model.graph.node or not model.opset_import:
        raise NetspecError(
            f"{path}: not an ONNX model (no graph nodes or no opset)",
            hint="netspec import reads .onnx model files and .keras files",
        )
    return model


def _input(model: onnx.ModelProto, given: tuple[int, ...] | None) -> tuple[str, tuple[int, ...]]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise NetspecError(
            f"the model has {len(inputs)} inputs ({names}); netspec networks have one"
        )
    value = inputs[0]
    dims = value.type.tensor_type.shape.dim
    if given is not None:
        if len(given) != len(dims) - 1:
            raise NetspecError(
                f"--input-shape gives {len(given)} dims; input `{value.name}` has {len(dims) - 1} "
                "besides the batch"
            )
        return value.name, given
    shape = []
    for i, d in enumerate(dims[1:], 1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise NetspecError(
                f"input `{value.name}` has a dynamic dimension {i} (`{d.dim_param or '?'}`); "
                "netspec needs a fixed input shape",
                hint="give one with --input-shape, e.g. --input-shape 3x224x224 (without the batch)",
            )
        shape.append(d.dim_value)
    return value.name, tuple(shape)


def _fix_input(model: onnx.ModelProto, name: str, shape: tuple[int, ...]) -> None:
    for value in model.graph.input:
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            for d, n in zip(dims[1:], shape, strict=True):
                d.Clear()
                d.dim_value = n
    del model.graph.value_info[:]


def _array(t: onnx.TensorProto) -> np.ndarray:
    """An initializer's values: float32 raw data read in place (one copy less than onnx's)."""
    if t.data_type == onnx.TensorProto.FLOAT and t.raw_data and not t.external_data:
        return np.frombuffer(t.raw_data, dtype="<f4").reshape(tuple(t.dims))
    return numpy_helper.to_array(t)


def _light(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large weights' data left out (their dims kept): shape inference
    reads only small constants' values (a reshape's target), and serializing 100 MB of weights
    for it took most of an import's time."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for t in model.graph.initializer:
        if int(np.prod(t.dims)) <= 64:
            graph.initializer.append(t)
        else:
            graph.initializer.append(
                onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
            )
            graph.input.append(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            )
    return light


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Each value's shape without the batch, by onnx's shape inference; again after folding
    shape arithmetic (a `Shape` -> `Gather` -> `Div` chain giving a slice's bounds) that the
    inference left dynamic."""
    light = _light(model)
    for _ in range(4):
        out = _inferred(light)
        if not fold_graph(light.graph, out):
            break
    return out


def _inferred(light: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    except Exception as e:  # noqa: BLE001 (onnx raises several kinds on a malformed graph)
        raise NetspecError(f"onnx shape inference failed: {e}") from None
    out = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims[1:]):
            out[v.name] = tuple(d.dim_value for d in dims[1:])
    return out


def read_onnx(
    path: str | Path | bytes, input_shape: tuple[int, ...] | None = None, name: str | None = None
) -> OnnxModel:
    """Read an ONNX file as netspec layers.

    Raises:
        NetspecError: not an ONNX file, a dynamic input without `input_shape`, control flow,
            an op with no netspec kind (naming the node, its op type and position).
    """
    model = load_model(path)
    input_name, shape = _input(model, input_shape)
    if input_shape is not None:
        _fix_input(model, input_name, shape)
    graph = model.graph
    consts = {t.name: _array(t) for t in graph.initializer}
    r = Reader(consts, _shapes(model), input_name=input_name)
    r.alias[input_name] = INPUT
    for node in graph.node:
        for x in dict.fromkeys(node.input):  # a node reading a value twice counted once
            r.consumers.setdefault(x, []).append(node)
        if node.op_type == "Constant" and (value := constant_value(node)) is not None:
            consts[node.output[0]] = value  # known before the nodes that precede it (patterns)
    for node in graph.node:  # shape arithmetic known before the patterns that read it
        if (value := fold(r, node)) is not None:
            consts[node.output[0]] = value
    total = len(graph.node)
    for i, node in enumerate(graph.node):
        r.where = f"node {i + 1} of {total}"
        if (node.name or node.output[0]) in r.skip:
            continue
        _read_node(r, node, consts)
    outputs = [o.name for o in graph.output]
    if len(outputs) != 1:
        raise NetspecError(f"the model has {len(outputs)} outputs; netspec networks have one")
    if outputs[0] in r.last:
        raise ImportError_("the model's output is channels-last (a Transpose not undone)")
    output = r.src(outputs[0])
    if output == INPUT:
        raise ImportError_("the model's output is its input: no layers")
    weights = _weights(r.ops, consts)
    title = name or graph.name or (Path(path).stem if not isinstance(path, bytes) else "")
    return OnnxModel(title, input_name, shape, r.ops, output, weights, model, total)


def _read_node(r: Reader, node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> None:
    """One ONNX node: a constant or shape arithmetic kept as a value, else its layer(s) by
    its op's handler; refused with the node named where netspec has no form for it."""
    if node.op_type in CONTROL_FLOW:
        raise r.fail(node, "control flow has no netspec form", "export the model traced, unrolled")
    if node.domain not in ("", "ai.onnx"):
        raise r.fail(node, f"an op of domain `{node.domain}` has no netspec kind")
    if node.op_type == "Constant":
        value = constant_value(node)
        if value is None:
            raise r.fail(node, "a constant netspec cannot read")
        consts[node.output[0]] = value
        return
    if node.op_type == "Identity" and node.input[0] in consts:
        consts[node.output[0]] = consts[node.input[0]]
        return
    value = fold(r, node)
    if value is not None:  # shape arithmetic on constants
        consts[node.output[0]] = value
        return
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        raise r.fail(node, "no netspec layer kind for this op", _hint(node.op_type))
    if fails_last(r, node):
        raise r.fail(
            node,
            "reads a channels-last view (after a Transpose); netspec's layers are channels-first",
            "only per-position ops (LayerNormalization, MatMul, activations) may run there",
        )
    handler(r, node, attrs_of(node))
    if node.op_type in ("Identity", "Dropout") and node.input[0] in r.last:
        r.mark_last(node.output[0])


def _hint(op_type: str) -> str:
    return "netspec's kinds: `netspec layers`; supported ONNX ops: " + ", ".join(sorted(HANDLERS))


def _weights(ops: list[Op], consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for op in ops:
        for w in op.weights:
            base = w.removesuffix("#T")
            array = consts[base]
            out[w] = np.ascontiguousarray(array.T if w.endswith("#T") else array)
    return out


def source_params(model: OnnxModel | KerasModel) -> int:
    """The elements of every weight the model's layers read (a shared tensor counted per
    reader, as each netspec layer owns its own)."""
    return sum(int(model.weights[w].size) for op in model.ops for w in op.weights)


def source_macs(model: OnnxModel | KerasModel) -> int:
    """Multiply-adds of the convolutions and matrix products, from the ONNX shapes and weight
    sizes alone (netspec's convention: output elements x the weights each one reads)."""
    total = 0
    for op in model.ops:
        if op.spelling in ("CONV", "DWCONV", "FC") and op.shape is not None:
            w = model.weights[op.weights[0]]
            per = w.size // w.shape[0] if op.spelling != "FC" else w.shape[1]
            total += int(np.prod(op.shape)) // (op.shape[0]) * w.shape[0] * per
        elif op.spelling == "CONVTRANSPOSE" and op.in_shape is not None:
            w = model.weights[op.weights[0]]
            total += int(np.prod(op.in_shape)) * (w.size // w.shape[0])
    return total


__all__ = ["OnnxModel", "load_model", "read_onnx", "source_macs", "source_params"]
