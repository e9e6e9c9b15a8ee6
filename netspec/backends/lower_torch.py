"""Lower an IR graph to a trainable PyTorch module.

    model = build(graph, seed=0)     # a NetspecModule: nn.Module, channels-first, batch first
    probs = model(x)                 # the graph's output (probabilities when it ends in SOFTMAX)
    scores = model.logits(x)         # the output before a final SOFTMAX (for a cross-entropy loss)

Each layer kind has one lowering function in `LOWERINGS` (`@LOWERINGS.register("kind")`); it
takes the node's validated layer and its input shapes (without the batch) and returns an
`nn.Module`. `build` fails naming the kind when one is missing (`MissingLowering`, as the ONNX
backend does).

Module tree: submodules nest by the dots of the node ids, so node `layer2.basic1.conv1` is the
module at path `layer2.basic1.conv1`, a torch `Conv2d` (`Conv1d`, `BatchNorm2d`, `Linear`,
`Embedding`, ...), and `state_dict()` keys are torch's own (`layer2.basic1.conv1.weight`,
`.running_mean`, ...). Two lowerings subclass a torch module without changing its state:
a convolution whose `same` padding is asymmetric (TensorFlow's rule puts the odd pixel after)
zero-pads with `F.pad` before convolving, and an embedding transposes its output to
channels-first `[B, dim, L]`. Parameter-free nodes are parameter-free modules.

Initialization: every module keeps PyTorch's default initialization (`reset_parameters`),
drawn on the CPU, in node order, from torch's CPU generator seeded with `seed` inside
`torch.random.fork_rng`: the same graph and seed give identical weights, and the caller's
global RNG state is left as it was.

Forward: `build` precomputes an execution plan, a list of (module, input slots, output slot,
slots to free) over the nodes needed for the output, so `forward` is a tight loop with no
lookups by name; each tensor is dropped after its last use. ReLU (and a residual addition)
overwrite their input only where that is safe: the input is a fresh tensor (the layer class's
`fresh_output`: convolution, FC, batch norm, addition, concatenation), and no other node reads
it; which kinds may overwrite is the class's `reuses_input`.
"""

from __future__ import annotations

import functools
import math
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netspec.backends import LoweringError, LoweringTable, MissingLowering
from netspec.ir.graph import Graph, Node
from netspec.layers import Layer, Shape
from netspec.layers.activation import ELU, GELU, Dropout, DropPath, LeakyReLU, PReLU
from netspec.layers.base import expand
from netspec.layers.conv import Conv, ConvTranspose, LocallyConnected
from netspec.layers.linear import Dense, Embedding
from netspec.layers.norm import BatchNorm, GroupNorm, LayerNorm, LayerScale, LocalResponseNorm
from netspec.layers.pool import AdaptiveAvgPool, GlobalPool, Pool, Upsample
from netspec.layers.structure import ChannelShuffle, Slice

Lowering = Callable[[Any, tuple[Shape, ...]], nn.Module]

LOWERINGS: LoweringTable[Lowering] = LoweringTable("torch", "netspec/backends/lower_torch.py")


# ---- modules the torch library lacks ---------------------------------------------------------


class PaddedConv1d(nn.Conv1d):
    """A Conv1d with asymmetric zero padding (TensorFlow's `same`); torch's state, torch's names."""

    def __init__(self, *args: Any, pad: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pad = pad  # F.pad order: last dim first, (before, after) each

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


class PaddedConv2d(nn.Conv2d):
    """A Conv2d with asymmetric zero padding (TensorFlow's `same`); torch's state, torch's names."""

    def __init__(self, *args: Any, pad: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


class PaddedPool(nn.Module):
    """Pooling after asymmetric padding (TensorFlow's `same`): -inf for max, zeros for avg
    (counted in the average, as a symmetric padding is: count_include_pad)."""

    def __init__(
        self, mode: str, dims: int, kernel: Any, stride: Any, pad: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.pad, self.value = pad, -math.inf if mode == "max" else 0.0
        pools: dict[tuple[str, int], Any] = {
            ("max", 1): nn.MaxPool1d,
            ("max", 2): nn.MaxPool2d,
            ("avg", 1): nn.AvgPool1d,
            ("avg", 2): nn.AvgPool2d,
        }
        self.pool = pools[(mode, dims)](kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.pad(x, self.pad, value=self.value))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class ChannelsFirstEmbedding(nn.Embedding):
    """nn.Embedding whose output is channels-first: token ids [B, L] -> [B, dim, L]."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).transpose(1, 2)


class GlobalPooling(nn.Module):
    """Global average or max pooling over all positions, flattened: [B, C, *spatial] -> [B, C]."""

    def __init__(self, mode: str, dims: int) -> None:
        super().__init__()
        self.mode = mode
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        if self.dims == 2:
            x = F.adaptive_avg_pool2d(x, 1) if self.mode == "avg" else F.adaptive_max_pool2d(x, 1)
        else:
            x = F.adaptive_avg_pool1d(x, 1) if self.mode == "avg" else F.adaptive_max_pool1d(x, 1)
        return torch.flatten(x, 1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, dims={self.dims}"


class Add(nn.Module):
    """Sums its inputs; with `inplace`, accumulates into the first (which nothing else reads)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, first: Tensor, *rest: Tensor) -> Tensor:
        out = first
        for i, x in enumerate(rest):
            out = out.add_(x) if (self.inplace or i) else out + x
        return out

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Mul(nn.Module):
    """Multiplies its inputs element-wise, broadcasting (a gate: squeeze-excitation)."""

    def forward(self, first: Tensor, *rest: Tensor) -> Tensor:
        out = first
        for x in rest:
            out = out * x
        return out


class Concat(nn.Module):
    """Concatenates its inputs along channels (dim 1)."""

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, 1)


class ShuffleChannels(nn.Module):
    """[B, C, ...] viewed as [B, groups, C / groups, ...], transposed, flattened back."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        b, c, *rest = x.shape
        return x.view(b, self.groups, c // self.groups, *rest).transpose(1, 2).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ChannelSlice(nn.Module):
    """x[:, start:stop]: a view of channels start to stop - 1."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start = start
        self.stop = stop

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.start : self.stop]

    def extra_repr(self) -> str:
        return f"start={self.start}, stop={self.stop}"


class LocallyConnectedNd(nn.Module):
    """Unshared weights: the input's patches (unfold), each position multiplied by its own
    [filters, C * kernel area] matrix (einsum), then the bias per channel and position."""

    def __init__(
        self, c_in: int, filters: int, kernel: Shape, stride: Shape, out: Shape, bias: bool
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.out = kernel, stride, out
        self.weight = nn.Parameter(torch.empty(*out, filters, c_in, *kernel))
        self.bias = nn.Parameter(torch.empty(filters, *out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As a convolution's default: uniform within 1 / sqrt(fan in)."""
        bound = 1 / math.sqrt(self.weight.shape[-len(self.kernel) - 1] * math.prod(self.kernel))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.kernel) == 2:
            cols = F.unfold(x, self.kernel, stride=self.stride)  # [B, C * kh * kw, L]
        else:  # [B, C, L, k] -> [B, C * k, L]
            patches = x.unfold(2, self.kernel[0], self.stride[0])
            cols = patches.permute(0, 1, 3, 2).reshape(x.shape[0], -1, self.out[0])
        positions = math.prod(self.out)
        w = self.weight.reshape(positions, self.weight.shape[len(self.out)], -1)
        y = torch.einsum("bkl,lfk->bfl", cols, w).reshape(x.shape[0], -1, *self.out)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, out={self.out}"


class ChannelLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over dim 1 of [B, C, *spatial] (torchvision's LayerNorm2d): torch's state."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ScaleChannels(nn.Module):
    """x * weight, a learned scale per channel shaped to broadcast ([C, 1, 1] on maps)."""

    def __init__(self, shape: tuple[int, ...], init: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight


class StochasticDepth(nn.Module):
    """Stochastic depth, torchvision's "row" mode: in training each sample is zeroed with
    probability p, the others scaled by 1 / (1 - p); the identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---- one lowering per kind -------------------------------------------------------------------


@LOWERINGS.register("input")
def lower_input(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Identity()


@LOWERINGS.register("conv", "dwconv")
def lower_conv(layer: Conv, ins: tuple[Shape, ...]) -> nn.Module:
    (shape,) = ins
    k, s, d, pads = layer.geometry(shape)
    dims = len(k)
    kwargs: dict[str, Any] = dict(
        kernel_size=k, stride=s, dilation=d, groups=layer.groups, bias=layer.bias
    )
    if all(before == after for before, after in pads):
        cls = nn.Conv2d if dims == 2 else nn.Conv1d
        padding: Any = tuple(b for b, _ in pads)
        return cls(shape[0], layer.channels, padding=padding, **kwargs)
    flat = tuple(p for pair in reversed(pads) for p in pair)
    padded = PaddedConv2d if dims == 2 else PaddedConv1d
    return padded(shape[0], layer.channels, padding=0, pad=flat, **kwargs)


@LOWERINGS.register("conv_transpose")
def lower_conv_transpose(layer: ConvTranspose, ins: tuple[Shape, ...]) -> nn.Module:
    (shape,) = ins
    k: Any
    s: Any
    p: Any
    op: Any
    d: Any
    k, s, p, op, d = layer.geometry(shape)  # torch types sizes per dimensionality: 1-D or 2-D
    cls = nn.ConvTranspose2d if len(k) == 2 else nn.ConvTranspose1d
    return cls(
        shape[0],
        layer.channels,
        k,
        s,
        p,
        output_padding=op,
        groups=layer.groups,
        bias=layer.bias,
        dilation=d,
    )


@LOWERINGS.register("locally_connected")
def lower_locally_connected(layer: LocallyConnected, ins: tuple[Shape, ...]) -> nn.Module:
    (shape,) = ins
    k, s = layer.geometry(shape)
    out = layer.output_shape(ins)
    return LocallyConnectedNd(shape[0], layer.filters, k, s, out[1:], layer.bias)


@LOWERINGS.register("upsample")
def lower_upsample(layer: Upsample, ins: tuple[Shape, ...]) -> nn.Module:
    """nn.Upsample to the IR's size, a scale or not: the coordinates follow in / out
    (recompute_scale_factor=True), as ONNX's Resize does, and a dim that keeps its size is
    copied whatever the mode."""
    dims = len(ins[0]) - 1
    mode = {"nearest": "nearest", "bilinear": "bilinear" if dims == 2 else "linear"}.get(
        layer.mode, layer.mode
    )
    corners = layer.align_corners if mode != "nearest" else None
    return nn.Upsample(size=layer.sizes(ins[0]), mode=mode, align_corners=corners)


@LOWERINGS.register("pool")
def lower_pool(layer: Pool, ins: tuple[Shape, ...]) -> nn.Module:
    k: Any
    s: Any
    p: Any
    k, s, p = layer.geometry(ins[0])  # torch types sizes per dimensionality: 1-D or 2-D
    pads = layer.pads(ins[0])
    if any(b != a for b, a in pads):  # padding=same with an odd total: pad first, then pool
        flat = tuple(x for pair in reversed(pads) for x in pair)
        return PaddedPool(layer.mode, len(k), k, s, flat)
    if layer.mode == "max":
        pool: type[nn.Module] = nn.MaxPool2d if len(k) == 2 else nn.MaxPool1d
        return pool(k, s, p, ceil_mode=layer.ceil)
    pool = nn.AvgPool2d if len(k) == 2 else nn.AvgPool1d
    return pool(k, s, p, ceil_mode=layer.ceil, count_include_pad=True)


@LOWERINGS.register("global_pool")
def lower_global_pool(layer: GlobalPool, ins: tuple[Shape, ...]) -> nn.Module:
    return GlobalPooling(layer.mode, len(ins[0]) - 1)


@LOWERINGS.register("adaptive_avg_pool")
def lower_adaptive_avg_pool(layer: AdaptiveAvgPool, ins: tuple[Shape, ...]) -> nn.Module:
    dims = len(ins[0]) - 1
    size = expand(layer.size, dims, "size")
    return nn.AdaptiveAvgPool2d(size) if dims == 2 else nn.AdaptiveAvgPool1d(size)


@LOWERINGS.register("flatten")
def lower_flatten(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Flatten(1)


@LOWERINGS.register("fc")
def lower_fc(layer: Dense, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Linear(ins[0][0], layer.units, bias=layer.bias)


@LOWERINGS.register("embedding")
def lower_embedding(layer: Embedding, ins: tuple[Shape, ...]) -> nn.Module:
    return ChannelsFirstEmbedding(layer.vocab, layer.dim)


@LOWERINGS.register("batchnorm")
def lower_batchnorm(layer: BatchNorm, ins: tuple[Shape, ...]) -> nn.Module:
    cls = nn.BatchNorm2d if len(ins[0]) == 3 else nn.BatchNorm1d
    return cls(ins[0][0], eps=layer.eps, momentum=layer.momentum)


@LOWERINGS.register("layernorm")
def lower_layernorm(layer: LayerNorm, ins: tuple[Shape, ...]) -> nn.Module:
    cls = ChannelLayerNorm if len(ins[0]) > 1 else nn.LayerNorm
    return cls(ins[0][0], eps=layer.eps)


@LOWERINGS.register("groupnorm")
def lower_groupnorm(layer: GroupNorm, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.GroupNorm(layer.groups, ins[0][0], eps=layer.eps)


@LOWERINGS.register("layer_scale")
def lower_layer_scale(layer: LayerScale, ins: tuple[Shape, ...]) -> nn.Module:
    (shape,) = layer.weights(ins, ins[0]).values()
    return ScaleChannels(shape, layer.init)


@LOWERINGS.register("channel_shuffle")
def lower_channel_shuffle(layer: ChannelShuffle, ins: tuple[Shape, ...]) -> nn.Module:
    return ShuffleChannels(layer.groups)


@LOWERINGS.register("slice")
def lower_slice(layer: Slice, ins: tuple[Shape, ...]) -> nn.Module:
    return ChannelSlice(layer.start, layer.stop)


@LOWERINGS.register("lrn")
def lower_lrn(layer: LocalResponseNorm, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.LocalResponseNorm(layer.size, alpha=layer.alpha, beta=layer.beta, k=layer.k)


@LOWERINGS.register("relu")
def lower_relu(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.ReLU()


@LOWERINGS.register("leaky_relu")
def lower_leaky_relu(layer: LeakyReLU, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.LeakyReLU(layer.slope)


@LOWERINGS.register("tanh")
def lower_tanh(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Tanh()


@LOWERINGS.register("sigmoid")
def lower_sigmoid(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Sigmoid()


@LOWERINGS.register("silu")
def lower_silu(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.SiLU()


@LOWERINGS.register("relu6")
def lower_relu6(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.ReLU6()


@LOWERINGS.register("hardswish")
def lower_hardswish(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Hardswish()


@LOWERINGS.register("hardsigmoid")
def lower_hardsigmoid(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Hardsigmoid()


@LOWERINGS.register("gelu")
def lower_gelu(layer: GELU, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.GELU(approximate=layer.approximate)


@LOWERINGS.register("elu")
def lower_elu(layer: ELU, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.ELU(layer.alpha)


@LOWERINGS.register("prelu")
def lower_prelu(layer: PReLU, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.PReLU(ins[0][0], init=layer.init)


@LOWERINGS.register("softmax")
def lower_softmax(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Softmax(dim=1)


@LOWERINGS.register("dropout")
def lower_dropout(layer: Dropout, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Dropout(layer.p)


@LOWERINGS.register("drop_path")
def lower_drop_path(layer: DropPath, ins: tuple[Shape, ...]) -> nn.Module:
    return StochasticDepth(layer.p)


@LOWERINGS.register("concat")
def lower_concat(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return Concat()


@LOWERINGS.register("add")
def lower_add(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return Add()


@LOWERINGS.register("mul")
def lower_mul(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return Mul()


@LOWERINGS.register("identity")
def lower_identity(layer: Layer, ins: tuple[Shape, ...]) -> nn.Module:
    return nn.Identity()


# ---- the module ------------------------------------------------------------------------------

Step = tuple[nn.Module, tuple[int, ...], int, tuple[int, ...]]


class NetspecModule(nn.Module):
    """A network lowered from an IR graph; submodules at the node ids' dotted paths.

    Attributes:
        graph: the IR graph it was built from.
    """

    graph: Graph

    def __init__(
        self, graph: Graph, modules: dict[str, nn.Module], inputs: dict[str, list[str]]
    ) -> None:
        super().__init__()
        self.graph = graph
        for node in graph.nodes:
            self._place(node.id, modules[node.id])
        self._slots, self._plan = _plan(graph.nodes, modules, inputs, [graph.output])
        head = graph.node(graph.output)
        logits = head.inputs[0] if graph.ends_in_probabilities else graph.output
        if graph.ends_in_probabilities:
            self._logit_slots, self._logit_plan = _plan(graph.nodes, modules, inputs, [logits])
        else:
            self._logit_slots, self._logit_plan = self._slots, self._plan
        # Side heads: one plan computing the main output and every head's (training mode).
        self.head_names = tuple(h.name for h in graph.heads)
        if graph.heads:
            outs = [h.output for h in graph.heads]
            head_logits = [_logit_node(graph, h.output) for h in graph.heads]
            self._head_slots, self._head_plan, self._head_out = _plan_many(
                graph.nodes, modules, inputs, [graph.output, *outs]
            )
            self._hl_slots, self._hl_plan, self._hl_out = _plan_many(
                graph.nodes, modules, inputs, [logits, *head_logits]
            )

    def forward(self, x: Tensor) -> Any:
        """The graph's output for a batch `x` (probabilities when the spec ends in SOFTMAX).

        With side heads, in training mode: a named tuple `(output, <head>, ...)`, the main
        output first and each head's by its name; in eval mode the main output alone.
        """
        if self.head_names and self.training:
            outs = _run_many(x, self._head_plan, self._head_slots, self._head_out)
            return _named("Outputs", ("output", *self.head_names))(*outs)
        return _run(x, self._plan, self._slots)

    def logits(self, x: Tensor) -> Tensor:
        """The output before a final SOFTMAX (a cross-entropy loss's input); else as `forward`.
        Always the main head's alone (see `all_logits` for the side heads')."""
        return _run(x, self._logit_plan, self._logit_slots)

    def all_logits(self, x: Tensor) -> Any:
        """The main head's logits and every side head's (each before its own final SOFTMAX),
        in one pass: a named tuple `(logits, <head>, ...)`. Training's loss reads it."""
        kind = _named("Logits", ("logits", *self.head_names))
        if not self.head_names:
            return kind(self.logits(x))
        return kind(*_run_many(x, self._hl_plan, self._hl_slots, self._hl_out))

    def _place(self, node_id: str, module: nn.Module) -> None:
        *scopes, name = node_id.split(".")
        parent: nn.Module = self
        for i, scope in enumerate(scopes):
            child = parent._modules.get(scope)
            if child is None:
                child = Scope()
                _add(parent, scope, child, ".".join(scopes[: i + 1]))
            elif not isinstance(child, Scope):
                raise LoweringError(
                    f"node `{node_id}` nests under node `{'.'.join(scopes[: i + 1])}`, "
                    "which is a layer, not a scope; rename one of them with `as`"
                )
            parent = child
        if name in parent._modules:
            raise LoweringError(f"node `{node_id}` has the name of a scope; rename it with `as`")
        _add(parent, name, module, node_id)


class Scope(nn.Module):
    """A container for the nodes of one scope (`layer2`, `layer2.basic1`); not callable."""


def _add(parent: nn.Module, name: str, module: nn.Module, path: str) -> None:
    try:
        parent.add_module(name, module)
    except (KeyError, TypeError) as e:
        raise LoweringError(
            f"cannot name a torch module `{path}`: {e}; rename it with `as`"
        ) from None


def _run(x: Tensor, plan: Sequence[Step], nslots: int) -> Tensor:
    slots: list[Any] = [None] * nslots
    for module, ins, out, free in plan:
        x = module(*[slots[i] for i in ins]) if ins else module(x)
        if out >= 0:
            slots[out] = x
        for i in free:
            slots[i] = None
    return x


@functools.cache
def _named(name: str, fields: tuple[str, ...]) -> Any:
    """The named tuple type of a module's outputs (made once per set of head names)."""
    return namedtuple(name, fields)


def _logit_node(graph: Graph, node_id: str) -> str:
    node = graph.node(node_id)
    return node.inputs[0] if node.layer.probabilities else node_id


def _run_many(x: Tensor, plan: Sequence[Step], nslots: int, outs: Sequence[int]) -> list[Tensor]:
    slots: list[Any] = [None] * nslots
    for module, ins, out, free in plan:
        x = module(*[slots[i] for i in ins]) if ins else module(x)
        if out >= 0:
            slots[out] = x
        for i in free:
            slots[i] = None
    return [slots[i] for i in outs]


def _plan_many(
    nodes: list[Node],
    modules: dict[str, nn.Module],
    inputs: dict[str, list[str]],
    targets: list[str],
) -> tuple[int, list[Step], list[int]]:
    """As `_plan` for several outputs: each target keeps a slot of its own, never freed;
    returns the slots too, in the order of `targets`."""
    nslots, steps = _plan(nodes, modules, inputs, targets, keep=True)
    return nslots, steps, [_slot_of(steps, modules[t]) for t in targets]


def _slot_of(steps: list[Step], module: nn.Module) -> int:
    return next(out for m, _, out, _ in steps if m is module)


def _plan(
    nodes: list[Node],
    modules: dict[str, nn.Module],
    inputs: dict[str, list[str]],
    targets: list[str],
    keep: bool = False,
) -> tuple[int, list[Step]]:
    """The steps computing `targets`, and the number of slots they use.

    A step with no input slots reads the previous step's output (the batch, for the first
    step); any other read goes through a slot, freed after its last read. With `keep`, each
    target gets a slot of its own that is never freed (its output stays for the caller).
    """
    needed = set(targets)
    for node in reversed(nodes):
        if node.id in needed:
            needed.update(inputs[node.id])
    order = [n.id for n in nodes if n.id in needed]
    chained = {  # reads only the output of the step just before
        nid: len(inputs[nid]) == 1 and i > 0 and inputs[nid][0] == order[i - 1]
        for i, nid in enumerate(order)
    }
    slot: dict[str, int] = {}
    last_read: dict[str, str] = {}
    for nid in order:
        if not chained[nid]:
            for src in inputs[nid]:
                slot.setdefault(src, len(slot))
                last_read[src] = nid
    if keep:
        for t in targets:
            slot.setdefault(t, len(slot))
            last_read[t] = ""  # never freed
    steps: list[Step] = []
    for i, nid in enumerate(order):
        srcs = inputs[nid]
        if i > 0 and not srcs:
            raise LoweringError(f"node `{nid}` has no input but is not the first node")
        reads = () if chained[nid] else tuple(slot[src] for src in srcs)
        free = tuple(
            sorted({slot[src] for src in srcs if not chained[nid] and last_read[src] == nid})
        )
        steps.append((modules[nid], reads, slot.get(nid, -1), free))
    return len(slot), steps


def _inplace(nodes: list[Node], modules: dict[str, nn.Module]) -> dict[str, list[str]]:
    """Let ReLU and addition overwrite an input that is fresh and read by no other node.

    Returns each node's inputs in the order its module takes them: an in-place addition's
    accumulator first (a + b == b + a exactly, so the sum is unchanged).
    """
    readers: dict[str, int] = {}
    for node in nodes:
        for src in node.inputs:
            readers[src] = readers.get(src, 0) + 1
    fresh = {
        n.id
        for n in nodes
        # (an addition of one input returns that input itself: not fresh)
        if n.layer.fresh_output and (n.layer.arity is not None or len(n.inputs) > 1)
    }
    inputs = {n.id: list(n.inputs) for n in nodes}
    for node in nodes:
        if not node.layer.reuses_input:
            continue
        owned = [i for i, src in enumerate(node.inputs) if src in fresh and readers[src] == 1]
        if not owned or len(node.inputs) > 2:
            continue
        srcs = inputs[node.id]
        srcs.insert(0, srcs.pop(owned[0]))
        setattr(modules[node.id], "inplace", True)  # noqa: B010 (nn.Module types attributes as tensors)
    return inputs


def build(graph: Graph, seed: int = 0) -> NetspecModule:
    """Lower an IR graph to a `NetspecModule`, initialized deterministically from `seed`.

    Args:
        graph: a concrete IR graph (every free parameter bound).
        seed: seeds PyTorch's default initialization; the global RNG state is not disturbed.

    Raises:
        LoweringError: a layer kind has no torch lowering, or a node id cannot name a module.
    """
    LOWERINGS.require(n.kind for n in graph.nodes)
    shapes = {n.id: n.shape for n in graph.nodes}
    modules: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)
        for node in graph.nodes:
            modules[node.id] = LOWERINGS[node.kind](
                node.layer, tuple(shapes[i] for i in node.inputs)
            )
    inputs = _inplace(graph.nodes, modules)
    return NetspecModule(graph, modules, inputs)


__all__ = ["LOWERINGS", "LoweringError", "MissingLowering", "NetspecModule", "build"]
