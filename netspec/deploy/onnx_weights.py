"""Read the weights of an ONNX model as layers in the order its graph runs them.

Each node that holds weights is one layer, its initializers given torch's names by the op's
input positions: Conv and ConvTranspose (W, B) -> weight, bias; Gemm (B, C) -> weight, bias
(B transposed when `transB` is 0); MatMul -> weight (transposed); BatchNormalization (scale,
B, mean, var) -> weight, bias, running_mean, running_var; LayerNormalization and
InstanceNormalization (scale, B) -> weight, bias; PRelu (slope) -> weight; a Mul by a constant
of shape [C, 1, ...] -> a layer scale. A MatMul's bias (an Add of a constant right after it)
joins its layer. Nodes are taken in the graph's order, which ONNX requires to be a
topological order: the order the layers run.

torch.onnx.export folds batch norms into their convolutions by default
(`do_constant_folding=True` in eval mode); such a file has convolutions with a bias where the
spec has a convolution and a batch norm. The mapper takes those as they are written (see
`netspec.weights.mapper`), so export with `do_constant_folding=False` (or
`training=TrainingMode.PRESERVE`) to keep the batch norms as layers.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from netspec.errors import NetspecError

# op type -> the torch suffix of each weight input, by position (None: not a weight)
_ROLES: dict[str, tuple[str | None, ...]] = {
    "Conv": (None, "weight", "bias"),
    "ConvTranspose": (None, "weight", "bias"),
    "Gemm": (None, "weight", "bias"),
    "MatMul": (None, "weight"),
    "BatchNormalization": (None, "weight", "bias", "running_mean", "running_var"),
    "LayerNormalization": (None, "weight", "bias"),
    "InstanceNormalization": (None, "weight", "bias"),
    "PRelu": (None, "weight"),
    "Mul": (None, "layer_scale"),
}


def read_onnx_layers(path: Path) -> OrderedDict[str, dict[str, np.ndarray]]:
    """The weight-holding nodes of the ONNX model at `path`, in graph order: node name ->
    {torch suffix: array in torch's layout}.

    Raises:
        NetspecError: when the file is not a readable ONNX model.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, ValueError, ... for a damaged file
        raise NetspecError(
            f"cannot read {path} as an ONNX model: {str(err).strip()[:200] or type(err).__name__}",
            hint="the file is truncated or not an ONNX model",
        ) from None
    inits = {t.name: t for t in model.graph.initializer}
    consts = {  # Constant nodes hold weights too (the dynamo exporter writes some)
        n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"
    }
    for node in model.graph.node:  # the TorchScript exporter shares equal initializers
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    layers: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
    last_matmul: tuple[str, str] | None = None  # (layer, output name) of the previous MatMul
    for i, node in enumerate(model.graph.node):
        roles = _ROLES.get(node.op_type)
        name = node.name or f"{node.op_type.lower()}_{i}"
        if node.op_type == "Add" and last_matmul and last_matmul[1] in node.input:
            bias = [x for x in node.input if x in inits or x in consts]
            if bias:
                tensor = inits[bias[0]] if bias[0] in inits else consts[bias[0]]
                layers[last_matmul[0]]["bias"] = numpy_helper.to_array(tensor)
            last_matmul = None
            continue
        if roles is None:
            continue
        inputs = list(node.input)
        if node.op_type == "Mul":  # the constant may be either operand
            inputs.sort(key=lambda x: x in inits or x in consts)
        tensors = {}
        for role, source in zip(roles, inputs, strict=False):
            tensor = inits[source] if source in inits else consts.get(source)
            if role is not None and tensor is not None:
                tensors[role] = numpy_helper.to_array(tensor)
        if node.op_type == "Mul" and not _is_scale(tensors.get("layer_scale")):
            continue  # a scalar factor (hardswish's 1/6), not a learned scale
        if not tensors:
            continue
        if node.op_type == "Gemm" and "weight" in tensors:
            attrs = {a.name: a for a in node.attribute}
            if "transB" not in attrs or attrs["transB"].i == 0:
                tensors["weight"] = tensors["weight"].T
        if node.op_type == "MatMul":
            tensors["weight"] = tensors["weight"].T
            last_matmul = (name, node.output[0])
        layers[name] = tensors
    return layers


def _is_scale(array: np.ndarray | None) -> bool:
    """A learned per-channel scale: [C, 1, ...] with C > 1."""
    return (
        array is not None
        and array.ndim >= 2
        and array.shape[0] > 1
        and array.size == array.shape[0]
    )
