"""ONNX nodes to netspec layers: one small function per op type, in a table keyed by op type
(as onnx2torch does). An op without one fails naming the node, its op type and its position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from netspec.recover.graph import ImportError_, Op, Value

CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
# Exporter-made weight names: a batch norm folded into a conv leaves its bias unnamed.
ANONYMOUS = ("onnx::", "_v_", "val_")


@dataclass
class Reader:
    """What the handlers share: the constants, each value's shape, the ops made so far."""

    consts: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]  # value name -> shape without the batch
    ops: list[Op] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)  # value -> the op (or input) giving it
    producer: dict[str, str] = field(default_factory=dict)  # value -> op id
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    where: str = ""
    skip: set[str] = field(default_factory=set)  # node names a handler merged into another
    input_name: str = ""  # the network input's value
    last: set[str] = field(default_factory=set)  # values held channels-last (after a Transpose)

    def src(self, value: str) -> str:
        return self.alias.get(value, value)

    def const(self, node: onnx.NodeProto, i: int) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        return self.consts.get(node.input[i])

    def data_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [self.src(x) for x in node.input if x and x not in self.consts]

    def emit(
        self,
        node: onnx.NodeProto,
        spelling: str,
        args: list[tuple[str, Value]] | None = None,
        weights: list[str] | None = None,
        inputs: list[str] | None = None,
        note: str = "",
        out: str | None = None,
        op_id: str | None = None,
    ) -> None:
        op_id = op_id or node.name or node.output[0]
        ins = inputs if inputs is not None else self.data_inputs(node)
        if any(x in self.last for x in node.input):  # a per-position op on a channels-last view
            self.mark_last(out or node.output[0])
        shape = self.shapes.get(out or node.output[0])
        first = next((x for x in node.input if x and x not in self.consts), None)
        in_shape = self.shapes.get(first) if first else None
        self.ops.append(
            Op(
                op_id,
                spelling,
                tuple(args or ()),
                tuple(ins),
                tuple(weights or ()),
                note,
                self.where,
                shape,
                in_shape,
            )
        )
        self.alias[out or node.output[0]] = op_id

    def mark_last(self, value: str) -> None:
        """`value` is a channels-last view: its shape kept channels-first, as netspec's."""
        if value not in self.last:
            self.last.add(value)
            shape = self.shapes.get(value)
            if shape is not None:
                self.shapes[value] = (shape[-1], *shape[:-1])

    def only(self, value: str, op_type: str) -> onnx.NodeProto | None:
        """The one node reading `value`, when it is one and of `op_type`."""
        readers = self.consumers.get(value, [])
        return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None

    def scalar(self, node: onnx.NodeProto | None, value: float) -> bool:
        """Whether `node` has a constant operand equal to `value` (one element)."""
        if node is None:
            return False
        for x in node.input:
            c = self.consts.get(x)
            if c is not None and c.size == 1 and np.isclose(float(c.reshape(())), value):
                return True
        return False

    def fail(self, node: onnx.NodeProto, why: str, hint: str | None = None) -> ImportError_:
        return ImportError_(
            f"ONNX node `{node.name or node.output[0]}` ({node.op_type}, {self.where}): {why}",
            hint=hint,
        )


Handler = Callable[[Reader, onnx.NodeProto, dict[str, Any]], None]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = fn
        return fn

    return add


def attrs_of(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def one(values: list[int] | tuple[int, ...]) -> int | tuple[int, ...]:
    """An int when every spatial dim has the same value, else the tuple."""
    values = tuple(int(v) for v in values)
    return values[0] if len(set(values)) == 1 else values


def _pads(r: Reader, node: onnx.NodeProto, a: dict[str, Any], dims: int) -> int | tuple[int, ...]:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise r.fail(
            node, f"auto_pad={a['auto_pad']} is not supported", "export with explicit pads"
        )
    pads = list(a.get("pads", [0] * 2 * dims))
    begins, ends = pads[:dims], pads[dims:]
    if begins != ends:
        raise r.fail(node, f"asymmetric padding {pads} has no netspec form", "pad symmetrically")
    return one(begins)


@handles("Conv")
def _conv(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    w = r.const(node, 1)
    if w is None:
        raise r.fail(node, "the weight is not a constant")
    dims = w.ndim - 2
    groups = int(a.get("group", 1))
    bias = len(node.input) > 2 and bool(node.input[2])
    b = r.const(node, 2)
    if bias and node.input[2].startswith("val_") and b is not None and not b.any():
        bias = False  # a zero bias torch.export's graph made up for a conv without one
    c_in = w.shape[1] * groups
    args: list[tuple[str, Value]] = []
    depthwise = groups > 1 and groups == w.shape[0] == c_in
    if not depthwise:
        args.append(("channels", int(w.shape[0])))
    args += [
        ("kernel", one(a.get("kernel_shape", w.shape[2:]))),
        ("stride", one(a.get("strides", [1] * dims))),
        ("padding", _pads(r, node, a, dims)),
        ("dilation", one(a.get("dilations", [1] * dims))),
    ]
    if not depthwise:
        args.append(("groups", groups))
    args.append(("bias", bias))
    # A bias the exporter named itself: a batch norm folded into the conv (torch.onnx's eval
    # export does so; the model's own parameters keep their module names).
    note = "Conv+BN folded by the exporter" if bias and node.input[2].startswith(ANONYMOUS) else ""
    spelling = "DWCONV" if depthwise else "CONV"
    r.emit(node, spelling, args, list(node.input[1 : 3 if bias else 2]), note=note)


@handles("ConvTranspose")
def _conv_transpose(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    w = r.const(node, 1)
    if w is None:
        raise r.fail(node, "the weight is not a constant")
    dims = w.ndim - 2
    groups = int(a.get("group", 1))
    bias = len(node.input) > 2 and bool(node.input[2])
    args: list[tuple[str, Value]] = [
        ("channels", int(w.shape[1] * groups)),
        ("kernel", one(a.get("kernel_shape", w.shape[2:]))),
        ("stride", one(a.get("strides", [1] * dims))),
        ("padding", _pads(r, node, a, dims)),
        ("output_padding", one(a.get("output_padding", [0] * dims))),
        ("dilation", one(a.get("dilations", [1] * dims))),
    ]
    if groups != 1:
        args.append(("groups", groups))
    args.append(("bias", bias))
    r.emit(node, "CONVTRANSPOSE", args, list(node.input[1 : 3 if bias else 2]))


@handles("BatchNormalization")
def _batchnorm(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if len(node.output) > 1 and any(node.output[1:]):
        raise r.fail(node, "training-mode batch norm (running statistics as outputs)")
    eps = float(np.float32(a.get("epsilon", 1e-5)))
    eps = float(f"{eps:.6g}")
    r.emit(node, "BN", [("eps", eps)], list(node.input[1:5]))


def _unary(spelling: str) -> Handler:
    def handle(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
        r.emit(node, spelling)

    return handle


for _op, _spelling in {
    "Relu": "RELU",
    "Sigmoid": "SIGMOID",
    "Tanh": "TANH",
    "HardSwish": "HARDSWISH",
}.items():
    HANDLERS[_op] = _unary(_spelling)


@handles("HardSigmoid")
def _hardsigmoid(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if not (np.isclose(a.get("alpha", 0.2), 1 / 6) and np.isclose(a.get("beta", 0.5), 0.5)):
        raise r.fail(node, "only PyTorch's HardSigmoid (alpha=1/6, beta=0.5) has a netspec kind")
    r.emit(node, "HARDSIGMOID")


@handles("LeakyRelu")
def _leaky_relu(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    r.emit(node, "LEAKYRELU", [("slope", float(f"{a.get('alpha', 0.01):.6g}"))])


@handles("Elu")
def _elu(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    r.emit(node, "ELU", [("alpha", float(f"{a.get('alpha', 1.0):.6g}"))])


@handles("Gelu")
def _gelu(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    r.emit(node, "GELU", [("approximate", a.get("approximate", "none"))])


@handles("Clip")
def _clip(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    lo, hi = r.const(node, 1), r.const(node, 2)
    lo_v = float(lo) if lo is not None else a.get("min")
    hi_v = float(hi) if hi is not None else a.get("max")
    if lo_v == 0.0 and hi_v == 6.0:
        r.emit(node, "RELU6")
    elif lo_v == 0.0 and hi_v is None:
        r.emit(node, "RELU")
    else:
        raise r.fail(node, f"Clip({lo_v}, {hi_v}) has no netspec kind", "only ReLU6's Clip(0, 6)")


@handles("PRelu")
def _prelu(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    r.emit(node, "PRELU", weights=[node.input[1]])


@handles("Softmax")
def _softmax(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    rank = len(r.shapes.get(node.input[0], ())) + 1
    axis = int(a.get("axis", -1))
    if axis not in (1, 1 - rank) and not (rank == 2 and axis == -1):
        raise r.fail(node, f"softmax over axis {axis}; netspec's SOFTMAX is over channels (1)")
    r.emit(node, "SOFTMAX")


@handles("MaxPool", "AveragePool")
def _pool(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    k = a["kernel_shape"]
    dims = len(k)
    if any(d != 1 for d in a.get("dilations", [1] * dims)):
        raise r.fail(node, "dilated pooling has no netspec kind")
    if len(node.output) > 1 and any(node.output[1:]):
        raise r.fail(node, "MaxPool's indices output is not supported")
    padding = _pads(r, node, a, dims)
    avg = node.op_type == "AveragePool"
    if avg and padding != 0 and not a.get("count_include_pad", 0):
        raise r.fail(
            node,
            "average pooling that leaves the padding out of the count",
            "netspec's AVGPOOL counts the padding (PyTorch's default)",
        )
    args: list[tuple[str, Value]] = [
        ("kernel", one(k)),
        ("stride", one(a.get("strides", [1] * dims))),
        ("padding", padding),
        ("ceil", bool(a.get("ceil_mode", 0))),
    ]
    r.emit(node, "AVGPOOL" if avg else "MAXPOOL", args)


@handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    after = r.consumers.get(node.output[0], [])
    flat = len(after) == 1 and _is_flatten(r, after[0])
    avg = node.op_type == "GlobalAveragePool"
    if flat:  # GAP then Flatten: netspec's GAP (a vector)
        r.skip.add(after[0].name or after[0].output[0])
        r.alias[after[0].output[0]] = node.name or node.output[0]
        r.emit(
            node, "GAP" if avg else "GMP", note="GlobalPool+Flatten merged", out=after[0].output[0]
        )
        r.alias[node.output[0]] = node.name or node.output[0]
    elif avg:
        r.emit(node, "ADAPTIVEAVGPOOL", [("size", 1)])
    else:
        raise r.fail(node, "global max pooling kept as a map has no netspec kind")


@handles("ReduceMean")
def _reduce_mean(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """A mean over every spatial axis (`x.mean([2, 3])`): GAP, or ADAPTIVEAVGPOOL(1) kept."""
    axes_input = r.const(node, 1)
    axes = [int(x) for x in (axes_input if axes_input is not None else a.get("axes", []))]
    rank = len(r.shapes.get(node.input[0], ())) + 1
    if rank < 3 or sorted(x % rank for x in axes) != list(range(2, rank)):
        raise r.fail(node, f"a mean over axes {axes}; netspec averages over all spatial axes")
    if a.get("keepdims", 1):
        r.emit(node, "ADAPTIVEAVGPOOL", [("size", 1)])
    else:
        r.emit(node, "GAP", note="ReduceMean as GAP")


def _is_flatten(r: Reader, node: onnx.NodeProto) -> bool:
    if node.op_type == "Flatten":
        return int(attrs_of(node).get("axis", 1)) == 1
    if node.op_type == "Reshape":
        target = r.const(node, 1)
        return (
            target is not None
            and target.ndim == 1
            and len(target) == 2
            and (
                target[1] == -1 or int(target[1]) == int(np.prod(r.shapes.get(node.input[0], (0,))))
            )
        )
    return False


@handles("Flatten", "Reshape")
def _flatten(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    if not _is_flatten(r, node):
        raise r.fail(node, "a reshape other than a flatten to [batch, features]")
    r.emit(node, "FLATTEN")


@handles("Gemm")
def _gemm(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    w = r.const(node, 1)
    if w is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise r.fail(node, "only x @ W^T + b with a constant W is a netspec FC")
    units = w.shape[0] if a.get("transB", 0) else w.shape[1]
    bias = len(node.input) > 2 and bool(node.input[2])
    weights = [node.input[1] if a.get("transB", 0) else f"{node.input[1]}#T"]
    r.emit(node, "FC", [("units", int(units)), ("bias", bias)], weights + list(node.input[2:3]))


@handles("MatMul")
def _matmul(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    """x @ W (+ b): an FC; on a channels-last map (ConvNeXt's per-position Linear between
    permutes) a 1x1 CONV, the same weights and multiply-adds."""
    w = r.const(node, 1)
    if w is None or w.ndim != 2:
        raise r.fail(node, "only a product with a constant 2-D matrix is a netspec FC")
    on_map = node.input[0] in r.last and len(r.shapes.get(node.output[0], ())) > 1
    after = r.consumers.get(node.output[0], [])
    bias, out = None, node.output[0]
    if len(after) == 1 and after[0].op_type == "Add":
        other = [x for x in after[0].input if x != node.output[0]]
        if other and other[0] in r.consts and r.consts[other[0]].shape == (w.shape[1],):
            bias, out = other[0], after[0].output[0]
            r.skip.add(after[0].name or after[0].output[0])
    weights = [f"{node.input[1]}#T"] + ([bias] if bias else [])
    args: list[tuple[str, Value]] = [("units", int(w.shape[1])), ("bias", bias is not None)]
    if on_map:
        args = [("channels", int(w.shape[1])), ("kernel", 1), ("stride", 1), ("padding", 0)]
        args += [("dilation", 1), ("groups", 1), ("bias", bias is not None)]
    r.emit(
        node,
        "CONV" if on_map else "FC",
        args,
        weights,
        note="MatMul+Add merged" if bias else "",
        out=out,
    )


@handles("Add", "Sum", "Concat", "Mul")
def _join(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    ins = r.data_inputs(node)
    if len(ins) != len([x for x in node.input if x]):
        raise r.fail(
            node, "a constant operand (a bias or scale outside a layer) has no netspec form"
        )
    if node.op_type == "Concat" and int(a.get("axis", 1)) not in (
        1,
        -len(r.shapes.get(node.input[0], (0, 0, 0))) - 1,
    ):
        raise r.fail(
            node, f"concatenation along axis {a.get('axis')}; netspec's concat joins channels"
        )
    if len(ins) == 1:  # a one-input concat or sum is its input
        r.alias[node.output[0]] = ins[0]
        return
    kind = {"Add": "add", "Sum": "add", "Concat": "concat", "Mul": "mul"}[node.op_type]
    if kind == "mul" and len(ins) == 2:
        swish = _swish(r, ins)
        if swish is not None:
            r.ops.remove(swish[1])
            r.emit(
                node, swish[0], inputs=[swish[2]], note=f"x * {swish[1].spelling.lower()}(x) merged"
            )
            return
    r.emit(node, kind)


def _swish(r: Reader, ins: list[str]) -> tuple[str, Op, str] | None:
    """x * sigmoid(x) (SiLU) or x * hardsigmoid(x) (hard swish), the gate read only here."""
    by_id = {op.id: op for op in r.ops[-3:]}
    for x, g in (ins, ins[::-1]):
        gate = by_id.get(g)
        if gate is not None and gate.inputs == (x,) and gate.spelling in ("SIGMOID", "HARDSIGMOID"):
            readers = sum(1 for op in r.ops if g in op.inputs)
            if readers == 0:
                return ("SILU" if gate.spelling == "SIGMOID" else "HARDSWISH"), gate, x
    return None


@handles("Identity", "Dropout")
def _identity(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    r.alias[node.output[0]] = r.src(node.input[0])


@handles("LRN")
def _lrn(r: Reader, node: onnx.NodeProto, a: dict[str, Any]) -> None:
    args: list[tuple[str, Value]] = [
        ("size", int(a["size"])),
        ("alpha", float(f"{a.get('alpha', 1e-4):.6g}")),
        ("beta", float(f"{a.get('beta', 0.75):.6g}")),
        ("k", float(f"{a.get('bias', 1.0):.6g}")),
    ]
    r.emit(node, "LRN", args)


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A Constant node's value (its `value` tensor, or a scalar / list attribute)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(onnx.helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.array(list(onnx.helper.get_attribute_value(a)))
    return None
