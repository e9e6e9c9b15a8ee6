"""Element-wise activations, softmax and dropout: shape-preserving and in place."""

from __future__ import annotations

from typing import Literal

from netspec.layers.base import (
    BackwardMemory,
    Layer,
    NonNegFloat,
    PosFloat,
    Rate,
    Shape,
    numel,
)


class _Elementwise(Layer):
    inplace = True

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out)


class ReLU(_Elementwise):
    """max(0, x)."""

    kind = "relu"
    backward_keeps = "output"
    shares_input = True
    spellings = {"RELU": {}}
    reuses_input = True


class LeakyReLU(_Elementwise):
    """x for x > 0, slope * x otherwise. Args: slope (0.01, PyTorch's default)."""

    kind = "leaky_relu"
    backward_keeps = "input"
    short = "lrelu"
    spellings = {"LEAKYRELU": {}, "LRELU": {}}
    positional = ("slope",)
    examples = (("image", "LEAKYRELU(0.2)"),)

    slope: NonNegFloat = 0.01


class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    kind = "tanh"
    backward_keeps = "output"
    spellings = {"TANH": {}}


class Sigmoid(_Elementwise):
    """Logistic sigmoid."""

    kind = "sigmoid"
    backward_keeps = "output"
    spellings = {"SIGMOID": {}}


class SiLU(_Elementwise):
    """x * sigmoid(x), also spelled SWISH (EfficientNet, MobileNetV3)."""

    kind = "silu"
    backward_keeps = "input"
    spellings = {"SILU": {}, "SWISH": {}}


class ReLU6(_Elementwise):
    """min(max(0, x), 6) (MobileNet V2)."""

    kind = "relu6"
    backward_keeps = "input"
    short = "relu6_"  # node names relu6_1, relu6_2 (not relu61)
    spellings = {"RELU6": {}}


class HardSwish(_Elementwise):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""

    kind = "hardswish"
    backward_keeps = "input"
    spellings = {"HARDSWISH": {}, "HSWISH": {}}


class HardSigmoid(_Elementwise):
    """relu6(x + 3) / 6, PyTorch's (MobileNetV3's squeeze-excitation gate)."""

    kind = "hardsigmoid"
    backward_keeps = "input"
    spellings = {"HARDSIGMOID": {}, "HSIGMOID": {}}


class GELU(_Elementwise):
    """x * Phi(x) (ConvNeXt, transformers). Args: approximate (`none`, exact with erf; `tanh`)."""

    kind = "gelu"
    backward_keeps = "input"
    spellings = {"GELU": {}}
    positional = ("approximate",)
    examples = (("image", "GELU"), ("vector", "FC(6) -> GELU(approximate=tanh)"))

    approximate: Literal["none", "tanh"] = "none"


class ELU(_Elementwise):
    """x for x > 0, alpha * (exp(x) - 1) otherwise. Args: alpha (1.0)."""

    kind = "elu"
    backward_keeps = "input"
    spellings = {"ELU": {}}
    positional = ("alpha",)
    examples = (("image", "ELU"), ("signal", "ELU(0.5)"))

    alpha: PosFloat = 1.0


class PReLU(_Elementwise):
    """x for x > 0, a_c * x otherwise, a learned slope per channel (PyTorch's
    nn.PReLU(num_parameters=C)). Args: init (the slopes' initial value, 0.25)."""

    kind = "prelu"
    backward_keeps = "input"
    spellings = {"PRELU": {}}
    positional = ("init",)
    inplace = False  # a learned op: its output is a new tensor
    examples = (("image", "PRELU"), ("signal", "PRELU(0.1)"), ("vector", "FC(5) -> PRELU"))

    init: NonNegFloat = 0.25

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return {"weight": (ins[0][0],)}


class Softmax(_Elementwise):
    """Softmax over channels (the class scores). Training folds it into the loss."""

    kind = "softmax"
    backward_keeps = "output"
    spellings = {"SOFTMAX": {}}
    probabilities = True
    examples = (("image", "SOFTMAX"), ("vector", "FC(4) -> SOFTMAX"))


class Dropout(Layer):
    """Zeroes a fraction `p` of activations in training; the identity at inference. Args: p (0.5)."""

    kind = "dropout"
    backward_keeps = "nothing"
    spellings = {"DROPOUT": {}}
    positional = ("p",)
    inplace = True
    transparent = True
    examples = (("image", "DROPOUT(0.3)"), ("vector", "DROPOUT"))

    p: Rate = 0.5

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        # Training makes a new tensor and keeps its mask, one element per element at the dtype
        # (PyTorch on the CPU; CUDA's fused dropout keeps 1 byte: this is the upper figure).
        return super().backward_memory(out, dtype_bytes)._replace(extra=numel(out) * dtype_bytes)


class DropPath(Layer):
    """Stochastic depth (ConvNeXt, EfficientNet): in training, each sample's whole input is
    zeroed with probability `p` and the rest scaled by 1 / (1 - p) (torchvision's "row" mode);
    the identity at inference and in ONNX. Put it at the end of a residual branch. Args: p (0.1).
    """

    kind = "drop_path"
    backward_keeps = "nothing"
    short = "droppath"
    spellings = {"DROPPATH": {}, "STOCHASTICDEPTH": {}}
    positional = ("p",)
    inplace = True
    examples = (("image", "residual(CONV(3) -> DROPPATH(0.2))"), ("vector", "DROPPATH"))

    p: Rate = 0.1

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Keeps its per-example mask (one value each); with p = 0 it is its input itself."""
        if self.p == 0:
            return BackwardMemory(True, "nothing", 0, 0, 0)
        return super().backward_memory(out, dtype_bytes)._replace(extra=dtype_bytes)
