"""Normalization: batch norm (1-D and 2-D), local response norm (AlexNet, ZF Net), layer norm
and group norm; and ConvNeXt's learned per-channel layer scale."""

from __future__ import annotations

from pydantic import StrictFloat, StrictInt

from netspec.layers.base import (
    STAT_BYTES,
    BackwardMemory,
    Layer,
    NonNegFloat,
    PosFloat,
    PosInt,
    Rate,
    Shape,
    ShapeError,
    fmt_shape,
    numel,
    spatial_dims,
)
from netspec.layers.structure import divisors


class BatchNorm(Layer):
    """Batch normalization over channels: 2 parameters and 2 running buffers per channel.

    Args:
        eps: added to the variance (PyTorch's 1e-5; torchvision's GoogLeNet uses 0.001).
        momentum: running statistics update rate (PyTorch's convention).
    """

    kind = "batchnorm"
    backward_keeps = "input"
    spellings = {
        "BN": {},
        "BATCHNORM": {},
        "BN1D": {},
        "BN2D": {},
        "BATCHNORM1D": {},
        "BATCHNORM2D": {},
    }
    positional = ("eps",)
    short = "bn"
    fresh_output = True
    examples = (("image", "BN"), ("signal", "BN(eps=0.001)"), ("vector", "FC(6) -> BN"))

    eps: PosFloat = 1e-5
    momentum: Rate = 0.1

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return {"weight": (ins[0][0],), "bias": (ins[0][0],)}

    def running(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return {"running_mean": (ins[0][0],), "running_var": (ins[0][0],)}

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Keeps a mean and an inverse std per channel (fp32, per batch, not per example)."""
        memory = super().backward_memory(out, dtype_bytes)
        return memory._replace(fixed=2 * out[0] * STAT_BYTES)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 2 * numel(out)


class LocalResponseNorm(Layer):
    """Local response normalization across channels (AlexNet 2012): PyTorch's formula.

    Args:
        size: channels in the normalization window.
        alpha, beta, k: b = a / (k + alpha/size * sum(a^2)) ** beta.
    """

    kind = "lrn"
    backward_keeps = "input"
    spellings = {"LRN": {}, "LOCALRESPONSENORM": {}}
    positional = ("size",)
    examples = (("image", "LRN(3, alpha=0.1)"), ("image", "LRN(4)"), ("signal", "LRN(3)"))

    size: PosInt = 5
    alpha: NonNegFloat = 1e-4
    beta: NonNegFloat = 0.75
    k: NonNegFloat = 2.0

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        spatial_dims("LRN", ins[0], None)  # normalizes across channels at each position
        return ins[0]

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) * (self.size + 3)


def _per_channel(shape: Shape) -> dict[str, Shape]:
    return {"weight": (shape[0],), "bias": (shape[0],)}


class LayerNorm(Layer):
    """Layer normalization over the channels, at each position: ConvNeXt's LayerNorm2d on a
    [C, H, W] map (and on a [C, L] signal), PyTorch's nn.LayerNorm(N) on an [N] vector. A
    learned scale and shift per channel.

    Args:
        eps: added to the variance (1e-6, ConvNeXt's; PyTorch's default is 1e-5).
    """

    kind = "layernorm"
    backward_keeps = "input"
    short = "ln"
    spellings = {"LAYERNORM": {}, "LN": {}}
    positional = ("eps",)
    fresh_output = True
    examples = (("image", "LAYERNORM"), ("signal", "LN(1e-5)"), ("vector", "FC(6) -> LAYERNORM"))

    eps: PosFloat = 1e-6

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return _per_channel(ins[0])

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Keeps a mean and an inverse std per position (fp32, per example)."""
        memory = super().backward_memory(out, dtype_bytes)
        return memory._replace(extra=2 * (numel(out) // out[0]) * STAT_BYTES)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 4 * numel(out)


class GroupNorm(Layer):
    """Group normalization: channels in `groups` groups, each normalized over its channels and
    all positions (PyTorch's nn.GroupNorm); a learned scale and shift per channel.

    Args:
        groups: the number of groups; it must divide the channels.
        eps: added to the variance.
    """

    kind = "groupnorm"
    backward_keeps = "input"
    short = "gn"
    spellings = {"GROUPNORM": {}, "GN": {}}
    positional = ("groups", "eps")
    fresh_output = True
    examples = (
        ("image", "CONV(6, 1) -> GROUPNORM(3)"),
        ("signal", "CONV1D(4, 1) -> GN(2, eps=0.001)"),
        ("vector", "FC(6) -> GN(3)"),
    )

    groups: PosInt = 32
    eps: PosFloat = 1e-5

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        channels = ins[0][0]
        if channels % self.groups:
            raise ShapeError(
                f"GROUPNORM groups: expected a divisor of the {channels} input channels; "
                f"received groups={self.groups}",
                hint=f"the divisors of {channels}: {divisors(channels)}",
            )
        if numel(ins[0]) // self.groups < 2:  # PyTorch refuses: nothing to normalize
            raise ShapeError(
                f"GROUPNORM groups: each of the {self.groups} groups of [{fmt_shape(ins[0])}] "
                "would hold one value; a group needs at least two",
                hint=f"use fewer groups, e.g. GROUPNORM({max(1, self.groups // 2)})",
            )
        return ins[0]

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return _per_channel(ins[0])

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 4 * numel(out)

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Keeps a mean and an inverse std per group (fp32, per example)."""
        memory = super().backward_memory(out, dtype_bytes)
        return memory._replace(extra=2 * self.groups * STAT_BYTES)


class LayerScale(Layer):
    """A learned scale per channel (CaiT, ConvNeXt): x * gamma, gamma of shape [C, 1, 1] on a
    map ([C, 1] on a signal, [C] on a vector), as torchvision's ConvNeXt holds it.

    Args:
        init: gamma's initial value (1e-6, ConvNeXt's).
    """

    kind = "layer_scale"
    backward_keeps = "input"
    short = "scale"
    spellings = {"LAYERSCALE": {}}
    positional = ("init",)
    fresh_output = True
    examples = (("image", "LAYERSCALE(0.5)"), ("signal", "LAYERSCALE(2)"), ("vector", "LAYERSCALE"))

    init: StrictFloat | StrictInt = 1e-6

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return {"weight": (ins[0][0], *([1] * (len(ins[0]) - 1)))}

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out)
