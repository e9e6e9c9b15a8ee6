"""Pooling: windowed max/avg (1-D and 2-D), global, and adaptive; and its inverse, upsampling."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

from netspec.layers.base import (
    INDEX_BYTES,
    BackwardMemory,
    Bool,
    IntOrTuple,
    Layer,
    NonNegInt,
    PosFloat,
    PosInt,
    Shape,
    ShapeError,
    Window,
    expand,
    fmt_shape,
    numel,
    spatial_dims,
)
from netspec.layers.conv import conv_padding, window_out


class Pool(Layer):
    """Max or average pooling: `POOL(kernel=2, stride=kernel, padding=0)`; bare POOL is 2x2 max, stride 2.

    Args:
        kernel, stride: an int or one per spatial dim; stride defaults to the kernel.
        padding: pixels added on each side (at most half the kernel, as in PyTorch), `valid`, or
            `same` (TensorFlow's rule, as CONV's: output = ceil(input / stride), an odd total
            padding puts the extra pixel after; max pads with -inf, avg counts the zeros).
        mode: `max` or `avg` (MAXPOOL and AVGPOOL preset it).
        ceil: round the output size up (PyTorch's ceil_mode; GoogLeNet uses it).

    Input shape: [C, H, W] or [C, L]. Output shape: [C, H', W'] or [C, L'].
    """

    kind = "pool"
    backward_keeps = "input"
    spellings = {
        "POOL": {},
        "MAXPOOL": {"mode": "max"},
        "AVGPOOL": {"mode": "avg"},
        "MAXPOOL2D": {"mode": "max", "dims": 2},
        "AVGPOOL2D": {"mode": "avg", "dims": 2},
        "MAXPOOL1D": {"mode": "max", "dims": 1},
        "AVGPOOL1D": {"mode": "avg", "dims": 1},
        "POOL1D": {"dims": 1},
    }
    positional = ("kernel", "stride", "padding")
    examples = (
        ("image", "MAXPOOL(3, stride=2, padding=1, ceil=on)"),
        ("image", "AVGPOOL(2)"),
        ("signal", "AVGPOOL1D(3, stride=2, padding=1)"),
        ("image", "MAXPOOL(3, stride=2, padding=same)"),
        ("image", "CONV(4) -> AVGPOOL(3, stride=2, padding=same)"),
        ("signal", "AVGPOOL1D(3, stride=2, padding=same)"),
    )

    kernel: IntOrTuple = 2
    stride: IntOrTuple | None = None
    padding: Literal["valid", "same"] | NonNegInt | tuple[NonNegInt, ...] = 0
    mode: Literal["max", "avg"] = "max"
    ceil: Bool = False
    dims: Literal[1, 2] | None = None

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Max pooling keeps int64 indices, one per output element."""
        memory = super().backward_memory(out, dtype_bytes)
        return memory._replace(extra=numel(out) * INDEX_BYTES) if self.mode == "max" else memory

    def geometry(self, shape: Shape) -> tuple[Shape, Shape, Shape]:
        dims = spatial_dims("POOL", shape, self.dims)
        k = expand(self.kernel, dims, "kernel")
        s = expand(self.stride if self.stride is not None else self.kernel, dims, "stride")
        if self.padding == "valid":
            p: Shape = (0,) * dims
        elif self.padding == "same":
            p = tuple(b for b, _ in self.pads(shape))
        else:
            p = expand(self.padding, dims, "padding")
        return k, s, p

    def pads(self, shape: Shape) -> tuple[tuple[int, int], ...]:
        """(before, after) padding per spatial dim; unequal only with `padding=same`."""
        if self.padding == "same":
            dims = spatial_dims("POOL", shape, self.dims)
            k = expand(self.kernel, dims, "kernel")
            s = expand(self.stride if self.stride is not None else self.kernel, dims, "stride")
            return conv_padding("same", shape[1:], k, s, (1,) * dims)
        return tuple((p, p) for p in self.geometry(shape)[2])

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        (shape,) = ins
        k, s, p = self.geometry(shape)
        if self.padding == "same" and self.ceil:
            raise ShapeError(
                "ceil=on and padding=same both set the output size",
                hint="padding=same already gives ceil(input / stride)",
            )
        if any(pp * 2 > kk for pp, kk in zip(p, k, strict=True)):
            raise ShapeError(
                f"padding {fmt_shape(p)} is more than half the {fmt_shape(k)} pooling window"
            )
        out = tuple(
            window_out(n, kk, ss, 1, b, a, self.ceil)
            for n, kk, ss, (b, a) in zip(shape[1:], k, s, self.pads(shape), strict=True)
        )
        if min(out) <= 0:
            raise ShapeError(
                f"the {fmt_shape(k)} pooling window does not fit the {fmt_shape(shape[1:])} input: "
                "the spatial size collapses to 0",
                hint="remove this pool, or pool less often before it",
            )
        return (shape[0], *out)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        k, _, _ = self.geometry(ins[0])
        return numel(out) * numel(k)

    def window(self, in_shape: Shape) -> Window:
        k, s, _ = self.geometry(in_shape)
        pads = tuple(b for b, _ in self.pads(in_shape))
        return Window(k, s, pads, (1,) * len(k))


class GlobalPool(Layer):
    """Global average or max pooling over all spatial positions: [C, H, W] -> [C].

    Args:
        mode: `avg` (GAP, GLOBALAVGPOOL) or `max` (GMP, GLOBALMAXPOOL).
    """

    kind = "global_pool"
    backward_keeps = "input"
    short = "gpool"
    examples = (("image", "GAP"), ("signal", "GMP"))
    spellings = {
        "GLOBALPOOL": {},
        "GAP": {"mode": "avg"},
        "GLOBALAVGPOOL": {"mode": "avg"},
        "GLOBALAVGPOOL1D": {"mode": "avg"},
        "GLOBALAVGPOOL2D": {"mode": "avg"},
        "GMP": {"mode": "max"},
        "GLOBALMAXPOOL": {"mode": "max"},
        "GLOBALMAXPOOL1D": {"mode": "max"},
        "GLOBALMAXPOOL2D": {"mode": "max"},
    }
    positional = ("mode",)

    mode: Literal["avg", "max"] = "avg"

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        spatial_dims("GLOBALPOOL", ins[0], None)
        return (ins[0][0],)

    def window(self, in_shape: Shape) -> Window:
        """One window over the whole map."""
        n = in_shape[1:]
        return Window(n, n, (0,) * len(n), (1,) * len(n))

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Average pooling to one value per channel is a mean (PyTorch computes it so), whose
        backward needs only the input's shape; max pooling keeps int64 indices."""
        memory = super().backward_memory(out, dtype_bytes)
        if self.mode == "avg":
            return memory._replace(keeps="nothing")
        return memory._replace(extra=numel(out) * INDEX_BYTES)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(ins[0])


class AdaptiveAvgPool(Layer):
    """Average pooling to a fixed output size, whatever the input size (torchvision's heads).

    Args:
        size: the output size, an int or one per spatial dim.
    """

    kind = "adaptive_avg_pool"
    backward_keeps = "input"
    short = "apool"
    examples = (("image", "ADAPTIVEAVGPOOL(2)"), ("signal", "ADAPTIVEAVGPOOL(3)"))
    spellings = {"ADAPTIVEAVGPOOL": {}, "ADAPTIVEPOOL": {}}
    positional = ("size",)

    size: IntOrTuple = 1

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        dims = spatial_dims("ADAPTIVEAVGPOOL", ins[0], None)
        return (ins[0][0], *expand(self.size, dims, "size"))

    def window(self, in_shape: Shape) -> Window:
        """PyTorch's windows: output i averages floor(i n / m) to ceil((i + 1) n / m) - 1; with
        n a multiple of m, windows of n / m at stride n / m. Otherwise the widest window at
        stride floor(n / m): an upper bound on the size, the stride a lower one."""
        n = in_shape[1:]
        m = expand(self.size, len(n), "size")
        kernel = tuple(
            max(-(-(i + 1) * n_ // m_) - i * n_ // m_ for i in range(m_))
            for n_, m_ in zip(n, m, strict=True)
        )
        stride = tuple(max(n_ // m_, 1) for n_, m_ in zip(n, m, strict=True))
        return Window(kernel, stride, (0,) * len(n), (1,) * len(n))

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Down to one value per channel it is a mean, whose backward keeps nothing."""
        memory = super().backward_memory(out, dtype_bytes)
        return memory._replace(keeps="nothing") if all(d == 1 for d in out[1:]) else memory

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(ins[0])


class Upsample(Layer):
    """Upsampling (resizing) by a scale or to a size: `UPSAMPLE(scale=2, mode=nearest)`,
    `UPSAMPLE(size=(513, 513), mode=bilinear)`, `UPSAMPLE(like=input, mode=bilinear)` (PyTorch's
    nn.Upsample, ONNX's Resize).

    Args:
        scale: the factor, a positive number or one per spatial dim: the output size is
            floor(input * scale) (PyTorch's rule, in float64), and the interpolation follows
            the sizes, output / input (PyTorch's recompute_scale_factor=True): 2 and 1.5 on
            an input of 5 give 10 and 7, the second read at 7 / 5. 2 when neither size nor
            like is given.
        size: the output size, an int or one per spatial dim (instead of a scale).
        like: the spatial size of another node, by its name: `input` (the network's input), a
            layer or group named with `as`, or a dotted name in quotes (`like="layer1.conv2"`);
            the node must come before this one. The builder turns it into `size`.
        mode: `nearest` (each output reads the input at floor(position / scale)), `bilinear`
            (linear along each spatial dim; on a [C, L] signal, linear) or `bicubic` (maps only).
        align_corners: bilinear and bicubic only: the corner pixels of input and output are
            aligned (PyTorch's align_corners=True); off, pixel centres are (half-pixel).

    Input shape: [C, H, W] or [C, L]. Output shape: [C, H', W'] or [C, L'].
    """

    kind = "upsample"
    backward_keeps = "nothing"
    spellings = {"UPSAMPLE": {}}
    positional = ("scale", "mode")
    refers = "like"
    examples = (
        ("image", "UPSAMPLE"),
        ("image", "UPSAMPLE((2, 3), mode=bilinear)"),
        ("signal", "UPSAMPLE(3, bilinear)"),
        ("signal", "UPSAMPLE(2)"),
        ("image", "UPSAMPLE((2.5, 1.25), bilinear, align_corners=on)"),
        ("image", "UPSAMPLE(size=(13, 10), mode=bicubic)"),
        ("image", "MAXPOOL -> UPSAMPLE(like=input, mode=bilinear)"),
        ("signal", "UPSAMPLE(size=17, mode=bilinear, align_corners=on)"),
    )

    scale: PosFloat | tuple[PosFloat, ...] | None = None
    size: IntOrTuple | None = None
    like: str | None = None
    mode: Literal["nearest", "bilinear", "bicubic"] = "nearest"
    align_corners: Bool = False

    def resolve(self, shape: Shape) -> Upsample:
        """`like=NAME` made `size=`, given the named node's output shape."""
        if self.scale is not None or self.size is not None:
            given = "scale" if self.scale is not None else "size"
            value = self.scale if self.scale is not None else self.size
            assert value is not None
            raise ShapeError(
                f"UPSAMPLE takes one of scale, size and like; received like={self.like} and "
                f"{given}={_fmt_size(value)}",
                hint=f"drop {given}=: like= sets the size",
            )
        if len(shape) not in (2, 3):
            raise ShapeError(
                f"UPSAMPLE like={self.like}: expected a feature map [C, H, W] or [C, L] to take "
                f"the size of; received [{fmt_shape(shape)}]"
            )
        return self.model_copy(update={"like": None, "size": tuple(shape[1:])})

    def sizes(self, shape: Shape) -> Shape:
        """The output's spatial size: `size`, or floor(input * scale) per dim (PyTorch's rule)."""
        dims = len(shape) - 1
        if self.size is not None:
            return expand(self.size, dims, "size")
        return tuple(math.floor(n * s) for n, s in zip(shape[1:], self.factors(dims), strict=True))

    def factors(self, dims: int) -> tuple[float, ...]:
        """The scale per spatial dim (2 when neither scale nor size is given)."""
        scale = self.scale if self.scale is not None else 2
        if isinstance(scale, tuple):
            if len(scale) != dims:
                raise ShapeError(
                    f"scale has {len(scale)} values but the input has {dims} spatial dims"
                )
            return tuple(float(s) for s in scale)
        return (float(scale),) * dims

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        (shape,) = ins
        if len(shape) not in (2, 3):
            raise ShapeError(
                f"UPSAMPLE expected a feature map [C, H, W] or [C, L]; received [{fmt_shape(shape)}]",
                hint="a flat vector has no positions to upsample; move UPSAMPLE before FC/FLATTEN/GAP"
                if len(shape) == 1
                else None,
            )
        if self.like is not None:  # the builder resolves it (Layer.refers) before this
            raise ShapeError(f"UPSAMPLE like={self.like} was not resolved")
        if self.scale is not None and self.size is not None:
            raise ShapeError(
                "UPSAMPLE takes a scale or a size, not both",
                hint="drop one: size= fixes the output, scale= multiplies the input's",
            )
        if self.align_corners and self.mode == "nearest":
            raise ShapeError(
                "UPSAMPLE align_corners=on needs mode=bilinear or bicubic; received mode=nearest",
                hint="nearest picks a pixel, it has no corners to align: drop align_corners",
            )
        if self.mode == "bicubic" and len(shape) != 3:
            raise ShapeError(
                f"UPSAMPLE mode=bicubic needs a [C, H, W] map; received [{fmt_shape(shape)}]",
                hint="use mode=bilinear on a signal",
            )
        out = self.sizes(shape)
        if min(out) <= 0:
            raise ShapeError(
                f"UPSAMPLE output size: expected at least 1; received {fmt_shape(out)} from the "
                f"{fmt_shape(shape[1:])} input",
                hint="use a larger scale",
            )
        return (shape[0], *out)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out)

    def window(self, in_shape: Shape) -> Window:
        """Nearest: a transposed window of `scale` taps at stride `scale` (each output reads
        one input). Bilinear: the transposed conv that computes it, 2 * scale - scale % 2 taps,
        padding ceil((scale - 1) / 2) (each output reads two neighbours per dim). Any other
        resize (a ratio that is not an integer, bicubic, align_corners): `_resize_window`."""
        out = self.sizes(in_shape)
        scale = tuple(o // n for o, n in zip(out, in_shape[1:], strict=True))
        whole = all(o == n * s for o, n, s in zip(out, in_shape[1:], scale, strict=True))
        ones = (1,) * len(scale)
        if not whole or self.mode == "bicubic" or self.align_corners:
            return _resize_window(self, in_shape[1:], out)
        if self.mode == "nearest":
            return Window(scale, scale, (0,) * len(scale), ones, transposed=True)
        kernel = tuple(2 * s - s % 2 for s in scale)
        return Window(kernel, scale, tuple(s // 2 for s in scale), ones, transposed=True)


def _resize_window(layer: Upsample, sizes: Shape, out: Shape) -> Window:
    """A transposed window holding what each output reads, at the ratio the interpolation
    uses (out / in; (out - 1) / (in - 1) with align_corners): output o
    reads from floor(x) - before to floor(x) + after, x = o / ratio + offset (nearest: 0,
    before = after = 0; linear: half-pixel offset, after = 1; cubic: before 1, after 2). The
    window starts one position early and ends one late, for floating-point rounding: an
    upper bound by up to two positions."""
    before, after = {"nearest": (0, 0), "bilinear": (0, 1), "bicubic": (1, 2)}[layer.mode]
    kernel: list[int] = []
    strides: list[int | Fraction] = []
    pads: list[int | Fraction] = []
    for n, m in zip(sizes, out, strict=True):
        if layer.align_corners:
            ratio = Fraction(m - 1, n - 1) if n > 1 and m > 1 else Fraction(1)
        else:
            ratio = Fraction(m, n)
        offset = (
            Fraction(0) if layer.mode == "nearest" or layer.align_corners else (1 / ratio - 1) / 2
        )
        first = math.floor(offset) - before - 1  # where output 0's reading starts
        last = math.ceil(offset + after + 1 - first)  # its end, past the start, in input steps
        reach = math.ceil(last * ratio) + 1
        kernel.append(reach)
        strides.append(ratio)
        pads.append(reach - 1 + first * ratio)
    return Window(tuple(kernel), tuple(strides), tuple(pads), (1,) * len(sizes), transposed=True)


def _fmt_size(value: float | tuple[float, ...]) -> str:
    """A size or scale as spec text: `2`, `1.5`, `(513, 513)`."""
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}"


__all__ = ["Pool", "GlobalPool", "AdaptiveAvgPool", "Upsample", "PosInt"]
