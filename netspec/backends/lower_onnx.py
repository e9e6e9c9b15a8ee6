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

torch is imported only to draw the seeded initial weights (`initial_weights`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netspec import __version__
from netspec.backends import LoweringTable
from netspec.errors import NetspecError
from netspec.io import atomic_path
from netspec.io import checkpoint_file as io_checkpoint_file
from netspec.ir.graph import Graph, Node
from netspec.layers import KINDS, Layer, fmt_shape, numel
from netspec.layers.activation import ELU, GELU, LeakyReLU
from netspec.layers.base import expand
from netspec.layers.conv import Conv, ConvTranspose, window_out
from netspec.layers.linear import Dense, Embedding
from netspec.layers.norm import BatchNorm, GroupNorm, LayerNorm, LocalResponseNorm
from netspec.layers.pool import AdaptiveAvgPool, GlobalPool, Pool, Upsample
from netspec.layers.structure import ChannelShuffle, Input, Slice

DEFAULT_OPSET = 21
MIN_OPSET = 13  # Softmax over one axis, Squeeze/Unsqueeze/Slice taking their axes as inputs
MAX_OPSET = 26  # the newest opset onnxruntime 1.31 runs (it reads IR versions up to 13)
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for a single-file model
# PyTorch's state_dict keeps this counter beside the running statistics; inference ignores it.
IGNORED_WEIGHTS = ("num_batches_tracked",)


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


@dataclass
class Lowered:
    """A lowered model and how the IR maps onto it.

    The weights stay numpy arrays until written: `model` holds each initializer's name, type
    and dims but not its data, which is in `arrays`. `write` streams the complete model with
    every weight copied once, straight from its array; `to_proto` builds it in memory.

    Attributes:
        model: the ONNX model, initializers without their data.
        arrays: each initializer's data (little-endian, in the model's dtype), in model order.
        tensors: IR node id -> the ONNX tensor holding that node's output (identity, dropout
            and folded batch norms share their input's tensor).
        folded: ids of the batch norms folded into their convolution.
        parameters: elements in all initializers.
    """

    model: onnx.ModelProto
    arrays: dict[str, np.ndarray]
    tensors: dict[str, str]
    folded: list[str]
    parameters: int

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def write(self, f: BinaryIO) -> None:
        """Write the model's protobuf bytes, exactly `to_proto().SerializeToString()`, without
        building them in memory: the fields before the initializers, then each initializer's
        header and its array's buffer, then the fields after (protobuf's field order)."""
        if self.nbytes > MAX_PROTO_BYTES:
            raise NetspecError(
                f"the weights take {self.nbytes / 2**30:.1f} GiB, past the 2 GiB a single ONNX file holds",
                hint="export with --fp16 to halve them",
            )
        graph = self.model.graph
        head_g = onnx.GraphProto(
            node=graph.node, name=graph.name
        ).SerializeToString()  # fields 1, 2
        tail_g = onnx.GraphProto()  # fields 10 and on
        tail_g.CopyFrom(graph)
        tail_g.ClearField("node")
        tail_g.ClearField("name")
        tail_g.ClearField("initializer")
        tail_g_bytes = tail_g.SerializeToString()
        inits = []
        for tensor in graph.initializer:
            data = self.arrays[tensor.name]
            header = tensor.SerializeToString() + _key_len(9, data.nbytes)  # raw_data is field 9
            inits.append((_key_len(5, len(header) + data.nbytes) + header, data))  # initializer: 5
        graph_len = len(head_g) + sum(len(h) + d.nbytes for h, d in inits) + len(tail_g_bytes)
        head_m, tail_m = onnx.ModelProto(), onnx.ModelProto()
        head_m.CopyFrom(self.model)
        head_m.ClearField("graph")
        tail_m.opset_import.extend(head_m.opset_import)  # fields 8 and on
        tail_m.metadata_props.extend(head_m.metadata_props)
        head_m.ClearField("opset_import")
        head_m.ClearField("metadata_props")
        f.write(head_m.SerializeToString() + _key_len(7, graph_len) + head_g)  # graph is field 7
        for header, data in inits:
            f.write(header)
            f.write(data.data)
        f.write(tail_g_bytes + tail_m.SerializeToString())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue()

    def to_proto(self) -> onnx.ModelProto:
        """The complete model in memory (every weight in its initializer's raw_data)."""
        return onnx.ModelProto.FromString(self.to_bytes())


def _key_len(field_number: int, length: int) -> bytes:
    """A protobuf key for a length-delimited field, then the length, both as varints."""
    return _varint(field_number << 3 | 2) + _varint(length)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- weights -----------------------------------------------------------------------------------


def expected_weights(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every weight the graph needs, by state_dict name, with its shape (PyTorch's layouts)."""
    out: dict[str, tuple[int, ...]] = {}
    shapes = {n.id: n.shape for n in graph.nodes}
    for node in graph.nodes:
        ins = tuple(shapes[i] for i in node.inputs)
        for name, shape in node.layer.state(ins, node.shape).items():
            out[f"{node.id}.{name}"] = shape
    return out


def check_weights(
    graph: Graph, weights: Mapping[str, np.ndarray], origin: str
) -> dict[str, np.ndarray]:
    """The graph's weights from `weights` as float32 arrays, refusing missing, extra or misshapen ones."""
    want = expected_weights(graph)
    extra = sorted(
        k for k in weights if k not in want and k.rsplit(".", 1)[-1] not in IGNORED_WEIGHTS
    )
    missing = [k for k in want if k not in weights]
    if missing or extra:
        notes = []
        if missing:
            notes.append(f"missing ({len(missing)}): " + _listing(missing))
        if extra:
            notes.append(f"not in the spec ({len(extra)}): " + _listing(extra))
        raise NetspecError(
            f"the weights in {origin} do not match the spec",
            notes=notes,
            hint="was the checkpoint trained from another spec or other --set values?",
        )
    out: dict[str, np.ndarray] = {}
    for name, shape in want.items():
        array = np.asarray(weights[name])
        if tuple(array.shape) != shape:
            raise NetspecError(
                f"the weight `{name}` in {origin} has shape [{fmt_shape(array.shape)}]; "
                f"the spec needs [{fmt_shape(shape)}]",
                hint="was the checkpoint trained from another spec or other --set values?",
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise NetspecError(
                f"the weight `{name}` in {origin} is {array.dtype}, not floating point"
            )
        out[name] = array.astype(np.float32, copy=False)
    return out


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself, or for a training run's folder its best.safetensors (else last.safetensors)."""
    return io_checkpoint_file(path)


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a safetensors checkpoint (or a run folder's, see `checkpoint_file`) as float32 numpy
    arrays; bfloat16 goes through torch when numpy lacks it."""
    path = checkpoint_file(path)
    try:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    except TypeError:  # a dtype this numpy lacks (bfloat16 without ml_dtypes)
        from safetensors.torch import load_file as load_torch

        return {
            k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in load_torch(str(path)).items()
        }
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header
        raise NetspecError(
            f"cannot read the checkpoint {path}: {err}", hint="is it a .safetensors file?"
        ) from None
    # float16, bfloat16 (numpy's through ml_dtypes) and float64 checkpoints: float32, as exported
    return {
        k: v.astype(np.float32) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v
        for k, v in arrays.items()
    }


def initial_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded initialization of the PyTorch lowering, so both backends hold the same weights."""
    from netspec.backends.lower_torch import LoweringError, build

    try:
        module = build(graph, seed=seed)
    except LoweringError as err:  # a node id torch cannot name: the user renames it with `as`
        raise NetspecError(str(err)) from None
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


# --- lowering --------------------------------------------------------------------------------


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
        self.fold = _foldable(graph) if options.fold_bn else {}
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
LOWERINGS: LoweringTable[Lowering] = LoweringTable("onnx")


@LOWERINGS.register("input")
def _input(ctx: Context, node: Node, layer: Input, xs: list[str]) -> str:
    if layer.vocab is not None:  # token ids
        ctx.inputs.append(
            helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT64, [BATCH, *layer.shape])
        )
        return INPUT_NAME
    ctx.inputs.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, *layer.shape])
    )
    if ctx.options.fp16:
        return ctx.emit(
            "Cast", [INPUT_NAME], "input.cast", out="input.fp16", to=TensorProto.FLOAT16
        )
    return INPUT_NAME


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


@LOWERINGS.register("upsample")
def _upsample(ctx: Context, node: Node, layer: Upsample, xs: list[str]) -> str:
    n = node.id
    dims = len(ctx.in_shape(node)) - 1
    factors = [1.0, 1.0, *(float(f) for f in expand(layer.scale, dims, "scale"))]
    scales = ctx.emit(
        "Constant",
        [],
        f"{n}.scales",
        value=helper.make_tensor(f"{n}.scales", TensorProto.FLOAT, [len(factors)], factors),
    )
    # PyTorch's coordinates: nearest is floor(out / scale) (ONNX's asymmetric + floor);
    # bilinear with align_corners=False is half_pixel.
    if layer.mode == "nearest":
        attrs = {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        }
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    # onnx's shape inference gives Resize's batch dimension a fresh name: declare it `batch`
    # (the other dims stay inferred, and must agree).
    return ctx.declare(ctx.emit("Resize", [xs[0], "", scales], n, **attrs), node.shape)


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
    assert isinstance(bn.layer, BatchNorm)  # `_foldable` pairs only batch norms
    scale = gamma / np.sqrt(var + float(bn.layer.eps))
    return w * scale.astype(w.dtype).reshape(-1, *([1] * (w.ndim - 1))), (b - mean) * scale + beta


def _foldable(graph: Graph) -> dict[str, Node]:
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


@LOWERINGS.register("pool")
def _pool(ctx: Context, node: Node, layer: Pool, xs: list[str]) -> str:
    in_shape = ctx.in_shape(node)
    k, s, p = layer.geometry(in_shape)
    want = node.shape[1:]
    floor = tuple(
        window_out(n, kk, ss, 1, pp, pp)
        for n, kk, ss, pp in zip(in_shape[1:], k, s, p, strict=True)
    )
    # ONNX's ceil rule lacks PyTorch's "the last window must start inside the input or its left
    # padding", so ceil_mode=1 is used only where both rules give the IR's size.
    onnx_ceil = tuple(
        math.ceil((n + 2 * pp - kk) / ss) + 1
        for n, kk, ss, pp in zip(in_shape[1:], k, s, p, strict=True)
    )
    begins, ends, ceil = list(p), list(p), 0
    if layer.padding == "same":  # TensorFlow's rule: the odd pixel after (no ceil mode)
        begins, ends = [b for b, _ in layer.pads(in_shape)], [a for _, a in layer.pads(in_shape)]
    elif layer.ceil and want != floor:
        if want == onnx_ceil:
            ceil = 1
        elif layer.mode == "max":  # extra end padding never wins a max
            ends = [
                pp + max(0, (o - 1) * ss + kk - (n + 2 * pp))
                for n, kk, ss, pp, o in zip(in_shape[1:], k, s, p, want, strict=True)
            ]
        else:
            raise NetspecError(
                f"AVGPOOL `{node.id}` with ceil=on on a {fmt_shape(in_shape[1:])} input rounds differently per "
                "dimension, which ONNX's AveragePool cannot express",
                node.span,
                hint="use ceil=off, or a square input",
            )
    attrs: dict[str, Any] = {
        "kernel_shape": list(k),
        "strides": list(s),
        "pads": begins + ends,
        "ceil_mode": ceil,
    }
    if layer.mode == "avg":
        attrs["count_include_pad"] = 1  # PyTorch's default
    return ctx.emit("MaxPool" if layer.mode == "max" else "AveragePool", xs, node.id, **attrs)


@LOWERINGS.register("global_pool")
def _global_pool(ctx: Context, node: Node, layer: GlobalPool, xs: list[str]) -> str:
    op = "GlobalAveragePool" if layer.mode == "avg" else "GlobalMaxPool"
    pooled = ctx.emit(op, xs, node.id, out=f"{node.id}.pooled")
    return ctx.emit("Flatten", [pooled], f"{node.id}.flatten", out=node.id, axis=1)


@LOWERINGS.register("adaptive_avg_pool")
def _adaptive_avg_pool(ctx: Context, node: Node, layer: AdaptiveAvgPool, xs: list[str]) -> str:
    size, out = ctx.in_shape(node)[1:], node.shape[1:]
    if any(n % o for n, o in zip(size, out, strict=True)):
        raise NetspecError(
            f"ADAPTIVEAVGPOOL `{node.id}` pools {fmt_shape(size)} to {fmt_shape(out)}, which ONNX cannot "
            "express: ONNX has no adaptive pooling, and the input size is not a multiple of the output size",
            node.span,
            hint=f"make the input a multiple of {fmt_shape(out)}, or pool to a size dividing {fmt_shape(size)}",
        )
    if all(o == 1 for o in out):
        return ctx.emit("GlobalAveragePool", xs, node.id)
    kernel = [n // o for n, o in zip(size, out, strict=True)]
    return ctx.emit("AveragePool", xs, node.id, kernel_shape=kernel, strides=kernel)


@LOWERINGS.register("flatten")
def _flatten(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Flatten", xs, node.id, axis=1)


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


@LOWERINGS.register("channel_shuffle")
def _channel_shuffle(ctx: Context, node: Node, layer: ChannelShuffle, xs: list[str]) -> str:
    n = node.id
    c, *rest = ctx.in_shape(node)
    g = layer.groups
    split = ctx.constant(f"{n}.split_shape", [0, g, c // g, *rest])  # 0: the batch, copied
    grid = ctx.emit("Reshape", [xs[0], split], f"{n}.split")
    perm = [0, 2, 1, *range(3, 3 + len(rest))]
    swapped = ctx.emit("Transpose", [grid], f"{n}.transpose", perm=perm)
    flat = ctx.constant(f"{n}.shape", [0, c, *rest])
    return ctx.emit("Reshape", [swapped, flat], n, out=n)


@LOWERINGS.register("slice")
def _slice(ctx: Context, node: Node, layer: Slice, xs: list[str]) -> str:
    n = node.id
    bounds = [
        ctx.constant(f"{n}.start", [layer.start]),
        ctx.constant(f"{n}.stop", [layer.stop]),
        ctx.constant(f"{n}.axes", [1]),
    ]
    return ctx.emit("Slice", [xs[0], *bounds], n)


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


def _unary(op: str, **fixed: Any) -> Lowering:
    def lower(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
        return ctx.emit(op, xs, node.id, **fixed)

    lower.__name__ = f"_{op.lower()}"
    return lower


@LOWERINGS.register("leaky_relu")
def _leaky_relu(ctx: Context, node: Node, layer: LeakyReLU, xs: list[str]) -> str:
    return ctx.emit("LeakyRelu", xs, node.id, alpha=float(layer.slope))


@LOWERINGS.register("silu")
def _silu(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    # x * sigmoid(x) at every opset: onnxruntime 1.31 has no kernel for ONNX's Swish (opset 24).
    gate = ctx.emit("Sigmoid", xs, f"{node.id}.sigmoid")
    return ctx.emit("Mul", [xs[0], gate], node.id, out=node.id)


@LOWERINGS.register("relu6")
def _relu6(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    n = node.id  # Clip's bounds are inputs (opset 11 and on), in the compute dtype
    return ctx.emit("Clip", [xs[0], ctx.scalar(f"{n}.min", 0.0), ctx.scalar(f"{n}.max", 6.0)], n)


@LOWERINGS.register("hardsigmoid")
def _hardsigmoid(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("HardSigmoid", xs, node.id, alpha=1 / 6, beta=0.5)  # PyTorch's, not ONNX's 0.2


@LOWERINGS.register("hardswish")
def _hardswish(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    if ctx.options.opset >= 14:
        return ctx.emit("HardSwish", xs, node.id)
    gate = ctx.emit("HardSigmoid", xs, f"{node.id}.gate", alpha=1 / 6, beta=0.5)
    return ctx.emit("Mul", [xs[0], gate], node.id, out=node.id)


@LOWERINGS.register("gelu")
def _gelu(ctx: Context, node: Node, layer: GELU, xs: list[str]) -> str:
    if ctx.options.opset >= 20:
        return ctx.emit("Gelu", xs, node.id, approximate=layer.approximate)
    # Below opset 20, PyTorch's formulas: 0.5 x (1 + erf(x / sqrt 2)), or with approximate=tanh
    # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
    n, x = node.id, xs[0]
    if layer.approximate == "none":
        inner = ctx.emit("Mul", [x, ctx.scalar(f"{n}.rsqrt2", 1 / math.sqrt(2))], f"{n}.scale")
        core = ctx.emit("Erf", [inner], f"{n}.erf")
    else:
        cube = ctx.emit("Mul", [x, ctx.emit("Mul", [x, x], f"{n}.square")], f"{n}.cube")
        cubic = ctx.emit("Mul", [cube, ctx.scalar(f"{n}.c", 0.044715)], f"{n}.cubic")
        poly = ctx.emit("Add", [x, cubic], f"{n}.poly")
        scale = ctx.scalar(f"{n}.sqrt2pi", math.sqrt(2 / math.pi))
        core = ctx.emit("Tanh", [ctx.emit("Mul", [poly, scale], f"{n}.scale")], f"{n}.tanh")
    one_plus = ctx.emit("Add", [core, ctx.scalar(f"{n}.one", 1.0)], f"{n}.one_plus")
    half_x = ctx.emit("Mul", [x, ctx.scalar(f"{n}.half", 0.5)], f"{n}.half_x")
    return ctx.emit("Mul", [half_x, one_plus], n, out=n)


@LOWERINGS.register("elu")
def _elu(ctx: Context, node: Node, layer: ELU, xs: list[str]) -> str:
    return ctx.emit("Elu", xs, node.id, alpha=float(layer.alpha))


@LOWERINGS.register("prelu")
def _prelu(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("PRelu", [xs[0], ctx.channel_weight(node, "weight")], node.id)


@LOWERINGS.register("softmax")
def _softmax(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    if ctx.options.logits and node.id == ctx.graph.output:
        return xs[0]
    return ctx.emit("Softmax", xs, node.id, axis=1)


@LOWERINGS.register("dropout", "drop_path", "identity")
def _passthrough(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    """Dropout and stochastic depth (the identity at inference) and identity: no node, the
    input's tensor."""
    return xs[0]


@LOWERINGS.register("concat")
def _concat(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Concat", xs, node.id, axis=1)


@LOWERINGS.register("add")
def _add(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    return ctx.emit("Add" if len(xs) == 2 else "Sum", xs, node.id)


@LOWERINGS.register("mul")
def _mul(ctx: Context, node: Node, layer: Layer, xs: list[str]) -> str:
    # ONNX's Mul broadcasts as NumPy does; the IR's shapes have one rank (the batch leads).
    out = xs[0]
    for i, x in enumerate(xs[1:]):
        last = i == len(xs) - 2
        out = ctx.emit("Mul", [out, x], node.id if last else f"{node.id}.{i + 1}")
    return out


LOWERINGS.register("relu")(_unary("Relu"))
LOWERINGS.register("tanh")(_unary("Tanh"))
LOWERINGS.register("sigmoid")(_unary("Sigmoid"))


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


# --- checking and writing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check of an exported model: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class ExportReport:
    """What `export` wrote."""

    path: Path
    bytes: int
    opset: int
    ir_version: int
    parameters: int
    onnx_nodes: int
    folded: list[str]
    checks: list[Check] = field(default_factory=list)

    @classmethod
    def of(
        cls, lowered: Lowered, path: str | Path, size: int, opset: int, checks: list[Check]
    ) -> ExportReport:
        """The report of `lowered`, written to `path` (`size` bytes) and checked by `checks`."""
        return cls(
            path=Path(path),
            bytes=size,
            opset=opset,
            ir_version=lowered.model.ir_version,
            parameters=lowered.parameters,
            onnx_nodes=len(lowered.model.graph.node),
            folded=lowered.folded,
            checks=checks,
        )


def require_passed(checks: list[Check]) -> None:
    """Raise `ExportCheckFailed` naming every failed check; nothing is written after it."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportCheckFailed("; ".join(f"{c.name}: {c.detail}" for c in failed))


class ExportCheckFailed(RuntimeError):
    """A lowered model failed a check: a bug in netspec, never the user's; nothing is written."""


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every tensor's shape as `onnx.shape_inference` sees it (a symbolic dim by its name).
    Initializers need no data for this: `Lowered.model` will do."""
    inferred = onnx.shape_inference.infer_shapes(
        model, check_type=True, strict_mode=True, data_prop=True
    )
    g = inferred.graph
    out: dict[str, list[int | str]] = {}
    for info in [*g.input, *g.value_info, *g.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            out[info.name] = [
                d.dim_param if d.HasField("dim_param") else d.dim_value
                for d in info.type.tensor_type.shape.dim
            ]
    return out


def shape_mismatches(lowered: Lowered, graph: Graph) -> list[str]:
    """IR nodes whose ONNX tensor has another shape than the IR's `[batch, *shape]`."""
    shapes = inferred_shapes(lowered.model)
    bad = []
    for node in graph.nodes:
        want: list[int | str] = [BATCH, *node.shape]
        got = shapes.get(lowered.tensors[node.id])
        if got != want:
            bad.append(
                f"{node.id}: IR {_dims(want)}, ONNX {_dims(got) if got is not None else 'unknown'}"
            )
    return bad


def verify(
    lowered: Lowered, graph: Graph, written: str | Path | bytes | None = None, run: bool = True
) -> list[Check]:
    """The checks every export passes: onnx's full checker, the IR's shapes at every node, and
    (with `run`) onnxruntime loading the model and running a batch of 2 on the CPU.

    Args:
        written: the model as written (a file or its bytes); by default, `lowered.to_bytes()`.
    """
    data = written if written is not None else lowered.to_bytes()
    checks = []
    try:
        onnx.checker.check_model(data, full_check=True)
        checks.append(Check("onnx.checker (full)", True, "passed"))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        checks.append(Check("onnx.checker (full)", False, str(err).strip().splitlines()[0]))
        return checks
    bad = shape_mismatches(lowered, graph)
    n = len(graph.nodes)
    detail = (
        f"all {n} IR nodes match" if not bad else f"{len(bad)} of {n} differ: " + "; ".join(bad[:3])
    )
    checks.append(Check("shape inference vs IR", not bad, detail))
    if run:
        checks.append(_run_check(graph, data))
    return checks


def _run_check(graph: Graph, data: str | Path | bytes) -> Check:
    from netspec.runtime import example_input, open_session

    try:
        session = open_session(data, provider="cpu")
        y = session.run(example_input(graph.input.shape, graph.input.vocab, batch=2))
    except Exception as err:  # onnxruntime's errors have no common base class
        return Check("onnxruntime (CPU)", False, str(err).strip().splitlines()[0])
    want = (2, *graph.output_shape)
    ok = y.shape == want and bool(np.isfinite(y).all())
    detail = f"runs a batch of 2: output [{fmt_shape(y.shape)}]" + (
        "" if ok else f", expected [{fmt_shape(want)}], finite"
    )
    return Check("onnxruntime (CPU)", ok, detail)


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` that replaces it when the block ends normally, and is
    removed when it raises (see `netspec.io.atomic_path`, which does the work)."""
    with atomic_path(path) as tmp:
        yield tmp


def write_atomic(path: str | Path, data: bytes | Lowered) -> Path:
    """Write bytes, or a lowered model, to `path` atomically (see `staged`), synced to disk."""
    with staged(path) as tmp:
        _write(tmp, data)
    return Path(path)


def _write(tmp: Path, data: bytes | Lowered) -> None:
    with tmp.open("wb") as f:
        if isinstance(data, Lowered):
            data.write(f)
        else:
            f.write(data)


def export(
    graph: Graph,
    path: str | Path,
    weights: Mapping[str, np.ndarray],
    options: LowerOptions | None = None,
    *,
    origin: str = "the weights",
    note: str = "",
    check: bool = True,
    run: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Lower and write to `path`: to a temporary file beside it, checked there (see `verify`),
    then moved over `path`; nothing is written when a check fails.

    Args:
        check: run the checks (`False` only for timing the export itself).
        run: include onnxruntime's check.

    Raises:
        NetspecError: the user's mistake (weights that do not fit, a layer ONNX cannot express,
            a folder that does not exist).
        ExportCheckFailed: the model failed a check (a bug in netspec).
    """
    options = options or LowerOptions()
    graph, weights = for_outputs(graph, weights, options)
    lowered = lower(graph, weights, options, origin=origin, note=note, metadata=metadata)
    checks: list[Check] = []
    with staged(path) as tmp:
        _write(tmp, lowered)
        if check:
            checks = verify(lowered, graph, tmp, run=run)
            require_passed(checks)
        size = tmp.stat().st_size
    return ExportReport.of(lowered, path, size, options.opset, checks)


def _dims(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _in_shape(graph: Graph, node: Node) -> tuple[int, ...]:
    return graph.node(node.inputs[0]).shape


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def missing_lowerings() -> list[str]:
    """Registered layer kinds with no ONNX lowering (a test keeps this empty)."""
    return LOWERINGS.missing(KINDS)
