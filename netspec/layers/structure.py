"""Graph structure: the input, concatenation, addition, identity, and channel slices and
shuffles (ShuffleNet, CSP)."""

from __future__ import annotations

from netspec.layers.base import (
    INDEX_BYTES,
    BackwardMemory,
    Layer,
    NonNegInt,
    PosInt,
    Shape,
    ShapeError,
    fmt_shape,
    numel,
)


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


class Input(Layer):
    """The network's input: a tensor [C, H, W] / [C, L], or token ids [L] with a vocabulary."""

    kind = "input"
    backward_keeps = "nothing"
    arity = 0
    examples = (("image", "IDENTITY"), ("signal", "IDENTITY"), ("tokens", "EMBEDDING(3)"))

    shape: tuple[PosInt, ...]
    vocab: PosInt | None = None  # set for token inputs

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        return self.shape

    def text(self, in_shape: Shape | None = None) -> str:
        """Its declaration: `input [3, 224, 224]`, `input tokens(length=400, vocab=5000)`."""
        if self.vocab is not None:
            return f"input tokens(length={self.shape[0]}, vocab={self.vocab})"
        return f"input [{', '.join(map(str, self.shape))}]"

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """Token ids are int64, whatever the dtype."""
        stored = numel(out) * (INDEX_BYTES if self.vocab is not None else dtype_bytes)
        return super().backward_memory(out, dtype_bytes)._replace(stored=stored)


class Concat(Layer):
    """Concatenation along channels of branches with the same spatial size (Inception)."""

    kind = "concat"
    backward_keeps = "nothing"
    arity = None
    fresh_output = True
    examples = (("image", "concat(CONV(2, 1), MAXPOOL(3, stride=1, padding=1), IDENTITY)"),)

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        first = ins[0]
        for shape in ins[1:]:
            if len(shape) != len(first) or shape[1:] != first[1:]:
                listing = ", ".join(f"[{fmt_shape(s)}]" for s in ins)
                raise ShapeError(
                    f"concat needs branches with the same spatial size; received {listing}",
                    hint="give every branch the same stride and padding (padding=same keeps sizes)",
                )
        return (sum(s[0] for s in ins), *first[1:])


class Add(Layer):
    """Element-wise sum of branches with identical shapes (residual connections)."""

    kind = "add"
    backward_keeps = "nothing"
    arity = None
    fresh_output = True  # with two or more inputs (one input is returned itself)
    reuses_input = True
    examples = (
        ("image", "CONV(4) -> add(CONV(4) -> BN, IDENTITY)"),
        ("image", "add(RELU, IDENTITY, SIGMOID)"),
        ("signal", "residual(CONV1D(6, stride=2), project=auto)"),
    )

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        first = ins[0]
        for shape in ins[1:]:
            if shape != first:
                listing = " + ".join(f"[{fmt_shape(s)}]" for s in ins)
                raise ShapeError(
                    f"add needs branches of identical shape; received {listing}",
                    hint="use residual(..., project=auto) for a 1x1 conv + BN projection shortcut",
                )
        return first

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) * (len(ins) - 1)


def broadcast(ins: tuple[Shape, ...]) -> Shape | None:
    """NumPy's broadcasting of shapes of one rank (each dim equal, or 1); None when they do not.

    The ranks must match: the batch dimension, left out of IR shapes, would otherwise take part
    in the alignment in PyTorch and ONNX and change the meaning.
    """
    first = ins[0]
    if any(len(s) != len(first) for s in ins):
        return None
    out = []
    for dims in zip(*ins, strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


class Mul(Layer):
    """Element-wise product of branches, with NumPy's broadcasting (a gate: squeeze-excitation).

    `mul(IDENTITY, ADAPTIVEAVGPOOL(1) -> CONV(c // 4, 1) -> RELU -> CONV(c, 1) -> SIGMOID)`
    scales each channel of a [C, H, W] map by a [C, 1, 1] gate. Each dimension must be equal or
    1 in every branch, and the branches must have the same rank. Costs no MACs (a rescale).
    """

    kind = "mul"
    backward_keeps = "input"
    arity = None
    fresh_output = True
    examples = (
        ("image", "CONV(4) -> mul(IDENTITY, ADAPTIVEAVGPOOL(1) -> CONV(4, 1) -> SIGMOID)"),
        ("image", "mul(RELU, IDENTITY, TANH)"),
        ("signal", "mul(IDENTITY, ADAPTIVEAVGPOOL(1))"),
    )

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        out = broadcast(ins)
        if out is None:
            listing = " * ".join(f"[{fmt_shape(s)}]" for s in ins)
            ranks = len({len(s) for s in ins}) > 1
            where = ""
            if not ranks:
                names = ("channels", "height", "width") if len(ins[0]) == 3 else ("channels",)
                for i, dims in enumerate(zip(*ins, strict=True)):
                    if len({d for d in dims if d != 1}) > 1:
                        name = names[i] if i < len(names) else f"dim {i}"
                        where = f" ({name}: {' vs '.join(map(str, dims))})"
                        break
            raise ShapeError(
                "mul needs branches whose shapes broadcast (each dim equal, or 1); "
                f"received {listing}{where}",
                hint="a gate keeps its map's rank: ADAPTIVEAVGPOOL(1) gives [C, 1, 1] where GAP "
                "flattens to [C]"
                if ranks
                else "make the gate's channels equal the map's, e.g. CONV(in.c, 1) inside a block",
            )
        return out

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out) * (len(ins) - 1)


class Identity(Layer):
    """Passes its input through unchanged (a plain skip in add(...))."""

    kind = "identity"
    backward_keeps = "nothing"
    shares_input = True
    spellings = {"IDENTITY": {}, "SKIP": {}}
    inplace = True
    transparent = True


class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle: `CHANNELSHUFFLE(groups=2)`. Channels [g0 | g1 | ...] are
    interleaved (view as [groups, C / groups], transpose, flatten), so that the next grouped
    convolution mixes the groups. No parameters.
    """

    kind = "channel_shuffle"
    backward_keeps = "nothing"
    short = "shuffle"
    spellings = {"CHANNELSHUFFLE": {}}
    positional = ("groups",)
    examples = (
        ("image", "CONV(6, 1) -> CHANNELSHUFFLE(3)"),
        ("signal", "CONV1D(4, 1) -> CHANNELSHUFFLE"),
        ("vector", "FC(6) -> CHANNELSHUFFLE(3)"),
    )

    groups: PosInt = 2

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        channels = ins[0][0]
        if channels % self.groups:
            raise ShapeError(
                f"CHANNELSHUFFLE groups: expected a divisor of the {channels} input channels; "
                f"received groups={self.groups}",
                hint=f"the divisors of {channels}: {divisors(channels)}",
            )
        return ins[0]

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return numel(out)


class Slice(Layer):
    """Channels `start` to `stop` (excluded) of its input: `SLICE(start, stop)`, as Python's
    `x[:, start:stop]`. A channel split: `concat(SLICE(0, c) -> ..., SLICE(c, 2*c) -> ...)`.
    """

    kind = "slice"
    backward_keeps = "nothing"
    shares_input = True
    spellings = {"SLICE": {}}
    positional = ("start", "stop")
    inplace = True  # a view
    examples = (
        ("image", "CONV(6, 1) -> concat(SLICE(0, 2), SLICE(2, 6) -> CONV(2))"),
        ("signal", "SLICE(1, 2)"),
        ("vector", "SLICE(3, 9)"),
    )

    start: NonNegInt
    stop: PosInt

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        channels = ins[0][0]
        what = "channels" if len(ins[0]) > 1 else "features"
        if self.start >= channels:
            raise ShapeError(
                f"SLICE start: expected 0 to {channels - 1} (the input has {channels} {what}); "
                f"received start={self.start}",
                hint=f"the input is [{fmt_shape(ins[0])}]",
            )
        if self.stop > channels:
            raise ShapeError(
                f"SLICE stop: expected at most {channels} (the input has {channels} {what}); "
                f"received stop={self.stop}",
                hint=f"stop is excluded, as in Python: SLICE({self.start}, {channels}) "
                f"takes {what} {self.start} to {channels - 1}",
            )
        if self.stop <= self.start:
            raise ShapeError(
                f"SLICE is empty: expected stop > start; received start={self.start}, "
                f"stop={self.stop}",
                hint="stop is excluded, as in Python: SLICE(a, a + n) takes n " + what,
            )
        return (self.stop - self.start, *ins[0][1:])
