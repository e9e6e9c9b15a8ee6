"""Convolution and transposed convolution, 1-D and 2-D (the dimensionality follows the input)."""

from __future__ import annotations

from typing import ClassVar, Literal

from netspec.layers.base import (
    Bool,
    IntOrTuple,
    Layer,
    NonNegFloat,
    NonNegInt,
    PosInt,
    Shape,
    ShapeError,
    Window,
    expand,
    fmt_shape,
    numel,
    spatial_dims,
)

Padding = Literal["same", "valid"] | NonNegInt | tuple[NonNegInt, ...]


def conv_padding(
    padding: Padding, size: Shape, kernel: Shape, stride: Shape, dilation: Shape
) -> tuple[tuple[int, int], ...]:
    """(before, after) padding per spatial dim. SAME follows TensorFlow: out = ceil(in / stride),
    the extra pixel (when the total is odd) goes after."""
    dims = len(size)
    if padding == "valid":
        return ((0, 0),) * dims
    if padding == "same":
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple((p, p) for p in expand(padding, dims, "padding"))


def window_out(n: int, k: int, s: int, d: int, before: int, after: int, ceil: bool = False) -> int:
    """Output length of a sliding window (PyTorch's formula, ceil mode included)."""
    span = n + before + after - d * (k - 1) - 1
    if span < 0 and not ceil:
        return 0
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + before:
        out -= 1  # the last window must start inside the input or its left padding
    return max(out, 0)


class Conv(Layer):
    """Convolution: `CONV(channels, kernel=3, stride=1, padding=same)`.

    Args:
        channels: output channels (feature maps).
        kernel, stride, dilation: an int, or one value per spatial dim.
        padding: `same` (output = ceil(input / stride)), `valid` (none), or explicit pixels.
        groups: grouped convolution; input and output channels must divide by it.
        bias: a learned bias per output channel.
        l1, l2: weight penalties applied in training (Keras' kernel_regularizer).

    Input shape: [C, H, W] or [C, L]. Output shape: [channels, H', W'] or [channels, L'].
    """

    kind = "conv"
    backward_keeps = "input"
    spellings = {"CONV": {}, "CONV2D": {"dims": 2}, "CONV1D": {"dims": 1}}
    positional: ClassVar[tuple[str, ...]] = ("channels", "kernel", "stride", "padding")
    penalized = True
    fresh_output = True
    examples = (
        ("image", "CONV(4, 3, stride=2)"),
        ("image", "CONV(6, (3, 2), padding=valid, dilation=(1, 2), bias=off)"),
        ("image", "CONV(4, 1) -> CONV(6, 4, stride=3, groups=2)"),
        ("signal", "CONV1D(4, 3, stride=2, padding=1)"),
    )

    channels: PosInt = 32
    kernel: IntOrTuple = 3
    stride: IntOrTuple = 1
    padding: Padding = "same"
    dilation: IntOrTuple = 1
    groups: PosInt = 1
    bias: Bool = True
    dims: Literal[1, 2] | None = None
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    def geometry(self, shape: Shape) -> tuple[Shape, Shape, Shape, tuple[tuple[int, int], ...]]:
        dims = spatial_dims("CONV", shape, self.dims)
        k = expand(self.kernel, dims, "kernel")
        s = expand(self.stride, dims, "stride")
        d = expand(self.dilation, dims, "dilation")
        pads = conv_padding(self.padding, shape[1:], k, s, d)
        return k, s, d, pads

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        (shape,) = ins
        c_in = shape[0]
        if c_in % self.groups or self.channels % self.groups:
            raise ShapeError(
                f"groups={self.groups} must divide both the {c_in} input and {self.channels} output channels"
            )
        k, s, d, pads = self.geometry(shape)
        out = tuple(
            window_out(n, kk, ss, dd, b, a)
            for n, kk, ss, dd, (b, a) in zip(shape[1:], k, s, d, pads, strict=True)
        )
        if min(out) <= 0:
            reach = "x".join(str(dd * (kk - 1) + 1) for kk, dd in zip(k, d, strict=True))
            raise ShapeError(
                f"the {fmt_shape(k)} kernel (reach {reach}) does not fit the {fmt_shape(shape[1:])} input: "
                "the spatial size collapses to 0",
                hint="use a smaller kernel, padding=same, or fewer downsampling layers before this one",
            )
        return (self.channels, *out)

    def window(self, in_shape: Shape) -> Window:
        k, s, d, pads = self.geometry(in_shape)
        return Window(k, s, tuple(b for b, _ in pads), d)

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        k = expand(self.kernel, len(out) - 1, "kernel")
        shapes: dict[str, Shape] = {"weight": (self.channels, ins[0][0] // self.groups, *k)}
        if self.bias:
            shapes["bias"] = (self.channels,)
        return shapes

    def macs(self, ins: tuple[Shape, ...], out: Shape) -> int:
        k = expand(self.kernel, len(out) - 1, "kernel")
        return numel(out) * (ins[0][0] // self.groups) * numel(k)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) if self.bias else 0

    def explain_size(
        self, in_shape: Shape, out: Shape, declared: Shape
    ) -> tuple[list[str], str | None] | None:
        """How the size was computed, and the fix (AlexNet's 224 vs 227 puzzle)."""
        k, s, d, pads = self.geometry(in_shape)
        notes = []
        for n, kk, ss, dd, (b, a), got in zip(in_shape[1:], k, s, d, pads, out[1:], strict=True):
            if self.padding == "same":
                notes.append(f"padding=same with stride {ss}: ceil({n} / {ss}) = {got}")
            else:
                notes.append(f"floor(({n} + {b + a} - {dd * (kk - 1) + 1}) / {ss}) + 1 = {got}")
            break  # the first spatial axis tells the story
        want = declared[1]
        kk, ss, dd = k[0], s[0], d[0]
        need_valid = (want - 1) * ss + dd * (kk - 1) + 1
        valid_here = (in_shape[1] - dd * (kk - 1) - 1) // ss + 1
        options = []
        if need_valid != in_shape[1]:
            options.append(
                f"a {need_valid}x{need_valid} input with padding=valid gives {want}x{want}"
            )
        if valid_here == want:
            options.append(f"padding=valid on this input gives {want}x{want}")
        else:
            options.append(f"padding=valid on this input gives {valid_here}x{valid_here}")
        return notes, "; ".join(options) if options else None


class DepthwiseConv(Conv):
    """Depthwise convolution: `DWCONV(kernel=3, stride=1, padding=same)`, one kxk filter per
    input channel (MobileNet's); `CONV(in.c, kernel, groups=in.c)` by another name.

    Args:
        kernel, stride, padding, dilation, bias, l1, l2: as CONV's.
        channels, groups: the input's channel count unless given (channels = a multiple of
            it: a depth multiplier).
    """

    kind = "dwconv"
    backward_keeps = "input"
    short = "dwconv"  # not Conv's
    spellings = {"DWCONV": {}, "DWCONV2D": {"dims": 2}, "DWCONV1D": {"dims": 1}}
    positional = ("kernel", "stride", "padding")
    from_input_channels = ("channels", "groups")
    examples = (
        ("image", "CONV(4) -> DWCONV(3, 2)"),
        ("image", "DWCONV(5, padding=valid, bias=off)"),
        ("image", "DWCONV(3, channels=6)"),
        ("signal", "DWCONV1D(3, stride=2)"),
    )


class ConvTranspose(Layer):
    """Transposed convolution (up-convolution): `CONVTRANSPOSE(channels, kernel=2, stride=2)`.

    Bare, it is U-Net's 2x2 up-convolution doubling the size. The output size is PyTorch's:
    out = (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1.

    Args:
        channels: output channels.
        kernel, stride, padding, output_padding, dilation: an int, or one value per spatial dim;
            output_padding (added on one side) must be less than the stride or the dilation.
        groups: grouped; input and output channels must divide by it.
        bias: a learned bias per output channel.
        l1, l2: weight penalties applied in training.

    Params: cin * (channels / groups) * kernel area (+ channels). MACs: input pixels x cin x
    (channels / groups) x kernel area (each input pixel scatters one kernel per output channel).
    """

    kind = "conv_transpose"
    backward_keeps = "input"
    short = "upconv"
    spellings = {
        "CONVTRANSPOSE": {},
        "CONVTRANSPOSE2D": {"dims": 2},
        "CONVTRANSPOSE1D": {"dims": 1},
    }
    positional = ("channels", "kernel", "stride", "padding")
    penalized = True
    fresh_output = True
    examples = (
        ("image", "CONVTRANSPOSE(4)"),
        ("image", "CONVTRANSPOSE(6, 3, stride=2, padding=1, output_padding=1, bias=off)"),
        ("image", "CONV(4, 1) -> CONVTRANSPOSE(6, (3, 2), stride=(1, 2), dilation=2, groups=2)"),
        ("signal", "CONVTRANSPOSE1D(4, 4, stride=3, padding=2, output_padding=2)"),
    )

    channels: PosInt
    kernel: IntOrTuple = 2
    stride: IntOrTuple = 2
    padding: NonNegInt | tuple[NonNegInt, ...] = 0
    output_padding: NonNegInt | tuple[NonNegInt, ...] = 0
    dilation: IntOrTuple = 1
    groups: PosInt = 1
    bias: Bool = True
    dims: Literal[1, 2] | None = None
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    def geometry(self, shape: Shape) -> tuple[Shape, Shape, Shape, Shape, Shape]:
        """kernel, stride, padding, output_padding, dilation: one value per spatial dim each."""
        dims = spatial_dims("CONVTRANSPOSE", shape, self.dims)
        return (
            expand(self.kernel, dims, "kernel"),
            expand(self.stride, dims, "stride"),
            expand(self.padding, dims, "padding"),
            expand(self.output_padding, dims, "output_padding"),
            expand(self.dilation, dims, "dilation"),
        )

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        (shape,) = ins
        c_in = shape[0]
        if c_in % self.groups or self.channels % self.groups:
            raise ShapeError(
                f"CONVTRANSPOSE groups: expected a divisor of both the {c_in} input and the "
                f"{self.channels} output channels; received groups={self.groups}"
            )
        k, s, p, op, d = self.geometry(shape)
        for o, ss, dd in zip(op, s, d, strict=True):
            if o >= ss and o >= dd:
                raise ShapeError(
                    f"CONVTRANSPOSE output_padding: expected less than the stride ({fmt_shape(s)}) "
                    f"or the dilation ({fmt_shape(d)}); received {fmt_shape(op)}",
                    hint="a stride-s conv maps s input sizes to one output size; output_padding "
                    "picks among them, so it is at most s - 1",
                )
        out = tuple(
            (n - 1) * ss - 2 * pp + dd * (kk - 1) + o + 1
            for n, kk, ss, pp, o, dd in zip(shape[1:], k, s, p, op, d, strict=True)
        )
        if min(out) <= 0:
            raise ShapeError(
                f"CONVTRANSPOSE output size: expected at least 1; received {fmt_shape(out)} "
                f"from the {fmt_shape(shape[1:])} input with padding {fmt_shape(p)}",
                hint="use less padding",
            )
        return (self.channels, *out)

    def explain_size(
        self, in_shape: Shape, out: Shape, declared: Shape
    ) -> tuple[list[str], str | None] | None:
        """The output-size rule on the first axis that differs, and the output_padding (if any)
        that gives the declared size (U-Net's 3x3 stride-2 up-convolution gives 2n - 1)."""
        k, s, p, op, d = self.geometry(in_shape)
        for axis, (n, got, want) in enumerate(
            zip(in_shape[1:], out[1:], declared[1:], strict=True)
        ):
            if got == want:
                continue
            kk, ss, pp, oo, dd = k[axis], s[axis], p[axis], op[axis], d[axis]
            notes = [
                f"(in {n} - 1) * stride {ss} - 2 * padding {pp} + dilation {dd} * (kernel {kk} - 1)"
                f" + output_padding {oo} + 1 = {got}"
            ]
            base = got - oo
            reach = max(ss, dd)  # output_padding ranges over 0 .. max(stride, dilation) - 1
            if base <= want < base + reach:
                return notes, f"output_padding={want - base} gives {want}"
            return (
                notes,
                f"output_padding reaches {base} to {base + reach - 1} from {n}; change the kernel, stride or padding",
            )
        return None

    def window(self, in_shape: Shape) -> Window:
        k, s, p, _, d = self.geometry(in_shape)
        return Window(k, s, p, d, transposed=True)

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        k = expand(self.kernel, len(out) - 1, "kernel")
        shapes: dict[str, Shape] = {"weight": (ins[0][0], self.channels // self.groups, *k)}
        if self.bias:
            shapes["bias"] = (self.channels,)
        return shapes

    def macs(self, ins: tuple[Shape, ...], out: Shape) -> int:
        k = expand(self.kernel, len(out) - 1, "kernel")
        return numel(ins[0]) * (self.channels // self.groups) * numel(k)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) if self.bias else 0


class LocallyConnected(Layer):
    """Locally connected layer: `LOCALLYCONNECTED(filters, kernel=3, stride=1)`, a convolution
    whose weights are not shared: each output position has its own filters (Keras'
    LocallyConnected2D/1D; deck 004's step from fully connected to convolutional).

    Args:
        filters: output channels.
        kernel, stride: an int, or one value per spatial dim. No padding (Keras' `valid`):
            the output is floor((input - kernel) / stride) + 1 per dim.
        bias: a learned bias per output channel and position.

    Params: out_h * out_w * kernel area * input channels * filters (+ out_h * out_w * filters),
    Keras' count. MACs: as the convolution's, out_h * out_w * filters * kernel area * input
    channels. Weights in the state_dict: `weight` [out_h, out_w, filters, C, kh, kw],
    `bias` [filters, out_h, out_w] (1-D: [out_l, filters, C, k] and [filters, out_l]).

    Input shape: [C, H, W] or [C, L]. Output shape: [filters, H', W'] or [filters, L'].
    """

    kind = "locally_connected"
    backward_keeps = "input"
    short = "local"
    spellings = {
        "LOCALLYCONNECTED": {},
        "LOCALLYCONNECTED2D": {"dims": 2},
        "LOCALLYCONNECTED1D": {"dims": 1},
    }
    positional = ("filters", "kernel", "stride")
    fresh_output = True
    examples = (
        ("image", "LOCALLYCONNECTED(4)"),
        ("image", "LOCALLYCONNECTED(3, (3, 2), stride=(2, 1), bias=off)"),
        ("image", "CONV(2, 1) -> LOCALLYCONNECTED2D(5, 2, stride=2)"),
        ("signal", "LOCALLYCONNECTED1D(4, 3, stride=2)"),
    )

    filters: PosInt
    kernel: IntOrTuple = 3
    stride: IntOrTuple = 1
    bias: Bool = True
    dims: Literal[1, 2] | None = None

    def geometry(self, shape: Shape) -> tuple[Shape, Shape]:
        """kernel and stride, one value per spatial dim each."""
        dims = spatial_dims("LOCALLYCONNECTED", shape, self.dims)
        return expand(self.kernel, dims, "kernel"), expand(self.stride, dims, "stride")

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        (shape,) = ins
        k, s = self.geometry(shape)
        out = tuple(
            window_out(n, kk, ss, 1, 0, 0) for n, kk, ss in zip(shape[1:], k, s, strict=True)
        )
        if min(out) <= 0:
            raise ShapeError(
                f"LOCALLYCONNECTED: the {fmt_shape(k)} kernel does not fit the "
                f"{fmt_shape(shape[1:])} input (it takes no padding)",
                hint="use a smaller kernel, or fewer downsampling layers before this one",
            )
        return (self.filters, *out)

    def window(self, in_shape: Shape) -> Window:
        k, s = self.geometry(in_shape)
        return Window(k, s, (0,) * len(k), (1,) * len(k))

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        k, _ = self.geometry(ins[0])
        shapes: dict[str, Shape] = {"weight": (*out[1:], self.filters, ins[0][0], *k)}
        if self.bias:
            shapes["bias"] = out
        return shapes

    def macs(self, ins: tuple[Shape, ...], out: Shape) -> int:
        k, _ = self.geometry(ins[0])
        return numel(out) * ins[0][0] * numel(k)

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) if self.bias else 0
