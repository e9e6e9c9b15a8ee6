"""The frame every ONNX lowering shares: the options, the `Context` a graph is lowered in, and
`LOWERINGS`, the table of per-kind lowering functions (filled by the `lower_*` family modules;
see `netspec.deploy.lowering`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netspec.backends import LoweringTable
from netspec.errors import NetspecError
from netspec.ir.graph import Graph, Node
from netspec.layers.conv import Conv
from netspec.layers.norm import BatchNorm

DEFAULT_OPSET = 21
MIN_OPSET = 13  # Softmax over one axis, Squeeze/Unsqueeze/Slice taking their axes as inputs
MAX_OPSET = 26  # the newest opset onnxruntime 1.31 runs (it reads IR versions up to 13)
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"


@dataclass(frozen=True)
class LowerOptions:
    """How to lower: the opset and the inference-only rewrites (see the module docstring)."""

    opset: int = DEFAULT_OPSET
    fold_bn: bool = False
    fp16: bool = False
    logits: bool = False
    all_outputs: bool = False

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise NetspecError(
                f"--opset must be in {MIN_OPSET}..{MAX_OPSET}; received {self.opset}",
                hint=f"the default, {DEFAULT_OPSET}, suits onnxruntime 1.31; {MAX_OPSET} is the newest it runs",
            )


class Context:
    """What the per-kind functions share: the graph, the weights and the ONNX graph under way."""

    def __init__(
        self, graph: Graph, weights: Mapping[str, np.ndarray], options: LowerOptions
    ) -> None:
        self.graph = graph
        self.weights = weights
        self.options = options
        self.dtype = np.float16 if options.fp16 else np.float32
        self.elem_type = TensorProto.FLOAT16 if options.fp16 else TensorProto.FLOAT
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.tensors: dict[str, str] = {}
        self.used: set[str] = {INPUT_NAME, OUTPUT_NAME}
        self.shapes = {n.id: n.shape for n in graph.nodes}
        self.fold = foldable(graph) if options.fold_bn else {}
        self.folded = {bn.id for bn in self.fold.values()}
        self.parameters = 0

    def fresh(self, name: str) -> str:
        """A tensor name not used yet: `name`, or `name.2`, `name.3`, ..."""
        candidate, n = name, 1
        while candidate in self.used:
            n += 1
            candidate = f"{name}.{n}"
        self.used.add(candidate)
        return candidate

    def emit(
        self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs: Any
    ) -> str:
        """Add one ONNX node named `name`; returns its output tensor: a fresh name from `out`
        (or `name`), or exactly the graph's output name."""
        output = OUTPUT_NAME if out == OUTPUT_NAME else self.fresh(out or name)
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def declare(self, tensor: str, shape: tuple[int, ...]) -> str:
        """State a tensor's shape, [batch, *shape], where onnx's shape inference cannot tell the
        batch dimension; returns the tensor."""
        self.value_info.append(
            helper.make_tensor_value_info(tensor, self.elem_type, [BATCH, *shape])
        )
        return tensor

    def constant(self, name: str, values: list[int]) -> str:
        """An int64 vector as a Constant node (axes, starts...): not an initializer, not a weight."""
        return self.emit(
            "Constant",
            [],
            name,
            value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values),
        )

    def scalar(self, name: str, value: float) -> str:
        """A float scalar in the compute dtype as a Constant node (not a weight)."""
        array = np.asarray(value, dtype=self.dtype)
        return self.emit("Constant", [], name, value=numpy_helper.from_array(array, name))

    def initializer(self, name: str, array: np.ndarray) -> str:
        """A weight: its header in the model, its data (cast once, if at all) kept aside."""
        self.used.add(name)
        self.initializers.append(
            onnx.TensorProto(name=name, data_type=self.elem_type, dims=array.shape)
        )
        self.arrays[name] = np.ascontiguousarray(
            array, dtype=np.dtype(self.dtype).newbyteorder("<")
        )
        self.parameters += array.size
        return name

    def weight(self, node: Node, name: str) -> str:
        key = f"{node.id}.{name}"
        return self.initializer(key, self.weights[key])

    def channel_weight(self, node: Node, name: str) -> str:
        """A per-channel weight ([C] in the state_dict) as an initializer of the same name shaped
        [C, 1, 1] ([C, 1] for signals, [C] for vectors): it broadcasts over a [B, C, ...] input."""
        key = f"{node.id}.{name}"
        array = self.weights[key]
        spatial = len(self.in_shape(node)) - 1
        return self.initializer(key, array.reshape(array.shape[0], *([1] * spatial)))

    def reduce_mean(self, x: str, axis: int, name: str) -> str:
        """ReduceMean over one axis, kept (axes became an input at opset 18)."""
        if self.options.opset >= 18:
            return self.emit("ReduceMean", [x, self.constant(f"{name}.axes", [axis])], name)
        return self.emit("ReduceMean", [x], name, axes=[axis], keepdims=1)

    def in_shape(self, node: Node, i: int = 0) -> tuple[int, ...]:
        return self.shapes[node.inputs[i]]


Lowering = Callable[[Context, Node, Any, list[str]], str]
LOWERINGS: LoweringTable[Lowering] = LoweringTable("onnx", "the family's netspec/deploy/lower_*.py")


def foldable(graph: Graph) -> dict[str, Node]:
    """conv id -> the batch norm that folds into it: the one right after it, its only consumer."""
    consumers: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    layers = {n.id: n.layer for n in graph.nodes}
    fold = {}
    for n in graph.nodes:
        if (
            isinstance(n.layer, BatchNorm)
            and isinstance(layers[n.inputs[0]], Conv)
            and consumers.get(n.inputs[0]) == 1
            and n.inputs[0] != graph.output
        ):
            fold[n.inputs[0]] = n
    return fold


__all__ = [
    "BATCH",
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "LOWERINGS",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "Context",
    "Lowering",
    "LowerOptions",
    "foldable",
]
