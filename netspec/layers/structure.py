"""Graph structure: the input, concatenation, addition and identity."""

from __future__ import annotations

from netspec.layers.base import Layer, PosInt, Shape, ShapeError, fmt_shape, numel


class Input(Layer):
    """The network's input: a tensor [C, H, W] / [C, L], or token ids [L] with a vocabulary."""

    kind = "input"
    arity = 0
    examples = (("image", "IDENTITY"), ("signal", "IDENTITY"), ("tokens", "EMBEDDING(3)"))

    shape: tuple[PosInt, ...]
    vocab: PosInt | None = None  # set for token inputs

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        return self.shape


class Concat(Layer):
    """Concatenation along channels of branches with the same spatial size (Inception)."""

    kind = "concat"
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


class Identity(Layer):
    """Passes its input through unchanged (a plain skip in add(...))."""

    kind = "identity"
    spellings = {"IDENTITY": {}, "SKIP": {}}
    inplace = True
