"""Normalization: batch norm (1-D and 2-D) and local response norm (AlexNet, ZF Net)."""

from __future__ import annotations

from netspec.layers.base import (
    Layer,
    NonNegFloat,
    PosFloat,
    PosInt,
    Rate,
    Shape,
    numel,
    spatial_dims,
)


class BatchNorm(Layer):
    """Batch normalization over channels: 2 parameters and 2 running buffers per channel.

    Args:
        eps: added to the variance (PyTorch's 1e-5; torchvision's GoogLeNet uses 0.001).
        momentum: running statistics update rate (PyTorch's convention).
    """

    kind = "batchnorm"
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

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 2 * numel(out)


class LocalResponseNorm(Layer):
    """Local response normalization across channels (AlexNet 2012): PyTorch's formula.

    Args:
        size: channels in the normalization window.
        alpha, beta, k: b = a / (k + alpha/size * sum(a^2)) ** beta.
    """

    kind = "lrn"
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
