"""Element-wise activations, softmax and dropout: shape-preserving and in place."""

from __future__ import annotations

from netspec.layers.base import Layer, NonNegFloat, Rate, Shape, numel


class _Elementwise(Layer):
    inplace = True

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out)


class ReLU(_Elementwise):
    """max(0, x)."""

    kind = "relu"
    spellings = {"RELU": {}}
    reuses_input = True


class LeakyReLU(_Elementwise):
    """x for x > 0, slope * x otherwise. Args: slope (0.01, PyTorch's default)."""

    kind = "leaky_relu"
    short = "lrelu"
    spellings = {"LEAKYRELU": {}, "LRELU": {}}
    positional = ("slope",)
    examples = (("image", "LEAKYRELU(0.2)"),)

    slope: NonNegFloat = 0.01


class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    kind = "tanh"
    spellings = {"TANH": {}}


class Sigmoid(_Elementwise):
    """Logistic sigmoid."""

    kind = "sigmoid"
    spellings = {"SIGMOID": {}}


class SiLU(_Elementwise):
    """x * sigmoid(x), also spelled SWISH (EfficientNet, MobileNetV3)."""

    kind = "silu"
    spellings = {"SILU": {}, "SWISH": {}}


class Softmax(_Elementwise):
    """Softmax over channels (the class scores). Training folds it into the loss."""

    kind = "softmax"
    spellings = {"SOFTMAX": {}}
    probabilities = True
    examples = (("image", "SOFTMAX"), ("vector", "FC(4) -> SOFTMAX"))


class Dropout(Layer):
    """Zeroes a fraction `p` of activations in training; the identity at inference. Args: p (0.5)."""

    kind = "dropout"
    spellings = {"DROPOUT": {}}
    positional = ("p",)
    inplace = True
    examples = (("image", "DROPOUT(0.3)"), ("vector", "DROPOUT"))

    p: Rate = 0.5
