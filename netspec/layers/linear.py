"""Fully connected layers, flatten, and token embedding."""

from __future__ import annotations

from netspec.layers.base import (
    Bool,
    Layer,
    NonNegFloat,
    PosInt,
    Shape,
    ShapeError,
    fmt_shape,
    numel,
)


class Flatten(Layer):
    """[C, H, W] -> [C*H*W]. The compiler adds one (marked implicit) before an FC on a map."""

    kind = "flatten"
    backward_keeps = "nothing"
    shares_input = True
    spellings = {"FLATTEN": {}}
    inplace = True  # a view
    examples = (("image", "FLATTEN"), ("signal", "FLATTEN"))

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        return (numel(ins[0]),)


class Dense(Layer):
    """Fully connected: `FC(units)`, also spelled DENSE and LINEAR.

    Args:
        units: output features.
        bias: a learned bias per unit.
        l1, l2: weight penalties applied in training.

    Input shape: [N] (a map is flattened first, implicitly). Output shape: [units].
    """

    kind = "fc"
    backward_keeps = "input"
    spellings = {"FC": {}, "DENSE": {}, "LINEAR": {}}
    positional = ("units",)
    flattens_input = True
    penalized = True
    fresh_output = True
    examples = (("image", "FC(5)"), ("vector", "FC(4, bias=off)"))

    units: PosInt = 128
    bias: Bool = True
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        if len(ins[0]) != 1:
            raise ShapeError(
                f"FC needs a flat [N] input; received [{fmt_shape(ins[0])}]",
                hint="add FLATTEN before it",
            )
        return (self.units,)

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"weight": (self.units, ins[0][0])}
        if self.bias:
            shapes["bias"] = (self.units,)
        return shapes

    def macs(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return ins[0][0] * self.units

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return self.units if self.bias else 0


class Embedding(Layer):
    """Token embedding: [L] token ids -> [dim, L] (channels-first, ready for CONV1D).

    Args:
        dim: the embedding size.
        vocab: the vocabulary size; defaults to the input's `tokens(vocab=...)`.
        l1, l2: weight penalties applied in training.
    """

    kind = "embedding"
    backward_keeps = "input"
    spellings = {"EMBEDDING": {}, "EMBED": {}}
    positional = ("dim", "vocab")
    contextual = {"vocab": "vocab"}
    takes_tokens = True
    penalized = True
    examples = (("tokens", "EMBEDDING(4)"),)

    dim: PosInt
    vocab: PosInt
    l1: NonNegFloat = 0.0
    l2: NonNegFloat = 0.0

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        if len(ins[0]) != 1:
            raise ShapeError(
                f"EMBEDDING needs a [L] sequence of token ids; received [{fmt_shape(ins[0])}]",
                hint="declare the input as `input tokens(length=L, vocab=V)`",
            )
        return (self.dim, ins[0][0])

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        return {"weight": (self.vocab, self.dim)}
