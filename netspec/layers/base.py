"""What a layer kind is: a frozen pydantic model of its arguments plus pure counting rules.

Counting conventions (written down once; the README repeats them):

- Shapes are channels-first without the batch dimension: ``[C, H, W]`` for images,
  ``[C, L]`` for 1-D signals, ``[L]`` for token ids, ``[N]`` for flat vectors.
- ``params`` counts trainable parameters exactly as PyTorch does (bias on by default; batch
  norm has 2 per channel). ``buffers`` counts non-trainable state (batch norm's running mean
  and variance, 2 per channel; PyTorch's scalar ``num_batches_tracked`` is not counted).
- ``macs`` counts the multiply-adds of convolutions and fully connected layers only, as
  torchvision's published "GFLOPS" figures do (they are multiply-adds). FLOPs = 2 x MACs.
- ``ops`` counts the cheap operations the MAC figure leaves out (bias adds, batch norm,
  pooling, activations, additions), one per element touched, for ``--all-ops``.
- Activation memory counts the elements of every layer output, forward only, per example.
  Layers that may overwrite their input (ReLU and the other activations, softmax), dropout
  (the identity at inference), flatten (a view) and identity add nothing.
- Training memory (``netspec.memory``) asks each layer what one training step holds for it:
  `backward_memory` (what its backward pass keeps, whether its output shares its input's
  storage, and the masks, indices or statistics it saves besides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

Shape = tuple[int, ...]

PosInt = Annotated[StrictInt, Field(gt=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Rate = Annotated[StrictFloat | StrictInt, Field(ge=0, lt=1)]
NonNegFloat = Annotated[StrictFloat | StrictInt, Field(ge=0)]
PosFloat = Annotated[StrictFloat | StrictInt, Field(gt=0)]
IntOrTuple = PosInt | tuple[PosInt, ...]
Bool = StrictBool


INDEX_BYTES = 8  # int64: max pooling's indices, token ids
STAT_BYTES = 4  # fp32: normalization layers' saved means and inverse stds

Keeps = Literal["input", "output", "nothing"]


class BackwardMemory(NamedTuple):
    """What a layer holds for one training step's backward pass (see `netspec.memory`)."""

    shares_input: bool  # its output lives in its input's storage (in place, or a view)
    keeps: Keeps  # the tensor its backward reads: its input, its output, or none
    stored: int  # bytes per example of its output tensor (when it has its own storage)
    extra: int  # bytes per example saved besides tensors: masks, indices, statistics
    fixed: int  # bytes per batch whatever its size: batch statistics


class ShapeError(Exception):
    """A layer cannot take its input; the IR builder attaches the span and context."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Window:
    """How a layer's output positions read its input positions, one value per spatial dim: the
    receptive-field facts (netspec/ir/receptive.py). A sliding window (conv, pool) reads
    `kernel` taps `dilation` apart, starting at `output * stride - pad`. A transposed window
    (transposed conv, upsampling) scatters each input position over `kernel` outputs
    `dilation` apart, starting at `input * stride - pad`: an output step is 1 / stride input
    steps."""

    kernel: tuple[int, ...]
    # A fraction (and so the padding) only for a resize by a ratio that is not an integer.
    stride: tuple[int | Fraction, ...]
    pad: tuple[int | Fraction, ...]  # before (left, top)
    dilation: tuple[int, ...]
    transposed: bool = False

    @property
    def reach(self) -> tuple[int, ...]:
        """The extent of one window: dilation * (kernel - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))


class RegistryError(Exception):
    """Two layer classes claim one kind or one spelling: a programming error, found at import."""


# kind -> class, filled by `Layer.__pydantic_init_subclass__` in definition order.
REGISTRY: dict[str, type[Layer]] = {}


class Layer(BaseModel):
    """Base of every layer kind. Subclasses declare arguments as fields and override the rules.

    A subclass that sets `kind` in its own body is registered under that kind when it is
    defined; a helper base (no `kind` of its own, like `_Elementwise`) is not.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, defer_build=True)

    kind: ClassVar[str] = ""
    # The base of its default node names (`bn1`, `bn2`); the kind when empty.
    short: ClassVar[str] = ""
    # How specs spell it, upper case, with argument presets: {"MAXPOOL": {"mode": "max"}}.
    spellings: ClassVar[dict[str, dict[str, Any]]] = {}
    positional: ClassVar[tuple[str, ...]] = ()
    # None: any number of inputs (concat, add); otherwise exactly this many.
    arity: ClassVar[int | None] = 1
    # True when the output may overwrite the input: it adds no activation memory.
    inplace: ClassVar[bool] = False
    # Arguments filled from the spec's context when not given: {"vocab": "vocab"}.
    contextual: ClassVar[dict[str, str]] = {}
    # Arguments that default to the input's channel count when not given (a depthwise conv's
    # channels and groups).
    from_input_channels: ClassVar[tuple[str, ...]] = ()
    # Builder behaviour: a map input gets an implicit FLATTEN first (FC).
    flattens_input: ClassVar[bool] = False
    # Builder behaviour: reads the token ids of a `tokens(...)` input, and only it does.
    takes_tokens: ClassVar[bool] = False
    # Outputs class probabilities: a spec ending in it trains on the logits before it.
    probabilities: ClassVar[bool] = False
    # The identity at inference (dropout, identity): the classifier check looks through it.
    transparent: ClassVar[bool] = False
    # Training: its `weight` takes the L1/L2 penalties (its own l1=/l2= first, then global).
    penalized: ClassVar[bool] = False
    # torch lowering: the output is a fresh tensor its backward pass does not need, so the one
    # node reading it may overwrite it.
    fresh_output: ClassVar[bool] = False
    # torch lowering: its module takes `inplace` and may overwrite a fresh, unshared input.
    reuses_input: ClassVar[bool] = False
    # The checklist's cases (tests/test_registry.py): (input, chain) pairs exercising the kind,
    # input one of "image" [C, H, W], "signal" [C, L], "vector" [N], "tokens" [L]. Empty: its
    # first spelling, bare, on an image.
    examples: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Training memory: what its backward pass keeps ("input", "output" or "nothing"). Every
    # kind states it in its own class body (the registry checklist names one that does not).
    backward_keeps: ClassVar[Keeps | None] = None
    # Training memory: its output is its input's storage (in place, or a view), so a tensor
    # kept by both is counted once.
    shares_input: ClassVar[bool] = False
    # The argument naming another node (`UPSAMPLE(like=stem)`), if any: the builder looks the
    # name up and replaces the layer with `resolve(that node's output shape)`.
    refers: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:
            return
        if cls.kind in REGISTRY:
            raise RegistryError(
                f"layer kind `{cls.kind}` is defined twice: "
                f"{REGISTRY[cls.kind].__qualname__} and {cls.__qualname__}"
            )
        for spelling in cls.spellings:
            for other in REGISTRY.values():
                if spelling in other.spellings:
                    raise RegistryError(
                        f"spelling `{spelling}` is claimed by {other.__qualname__} "
                        f"and {cls.__qualname__}"
                    )
        if not cls.short:
            cls.short = cls.kind
        REGISTRY[cls.kind] = cls

    def resolve(self, shape: Shape) -> Layer:
        """The layer with its `refers` argument replaced, given the named node's output shape."""
        return self

    def weights(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        """Its trainable tensors: state_dict suffix -> shape in PyTorch's layout."""
        return {}

    def running(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        """Its non-trainable state (running statistics): state_dict suffix -> shape."""
        return {}

    def state(self, ins: tuple[Shape, ...], out: Shape) -> dict[str, Shape]:
        """Every tensor of its state_dict (weights, then running state), by suffix."""
        return {**self.weights(ins, out), **self.running(ins, out)}

    def output_shape(self, ins: tuple[Shape, ...]) -> Shape:
        return ins[0]

    def params(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return sum(numel(s) for s in self.weights(ins, out).values())

    def buffers(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return sum(numel(s) for s in self.running(ins, out).values())

    def macs(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 0

    def ops(self, ins: tuple[Shape, ...], out: Shape) -> int:
        return 0

    def window(self, in_shape: Shape) -> Window | None:
        """How its output positions read its input's (receptive fields); None: position by
        position (activations, norms, additions, concatenation). A layer whose output has no
        positions while its input has (FC, FLATTEN) reads them all, and needs no window."""
        return None

    def backward_memory(self, out: Shape, dtype_bytes: int) -> BackwardMemory:
        """What one training step holds for this layer, for an output of shape `out` at
        `dtype_bytes` per element. Kinds whose memory depends on their arguments override it."""
        keeps = self.backward_keeps
        if keeps is None:
            raise NotImplementedError(
                f"layer kind `{self.kind}` does not state what its backward pass keeps "
                "(backward_keeps)"
            )
        return BackwardMemory(self.shares_input, keeps, numel(out) * dtype_bytes, 0, 0)

    def explain_size(
        self, in_shape: Shape, out: Shape, declared: Shape
    ) -> tuple[list[str], str | None] | None:
        """For a failed shape assertion on its output: notes on how the size was computed and a
        hint for the fix, or None when the kind has nothing to say."""
        return None

    def spelling(self) -> tuple[str, dict[str, Any]]:
        """The spelling that says most of it: the one whose presets it matches in the most
        arguments (`AVGPOOL1D` for an average pool on signals), with those presets."""
        best: tuple[str, dict[str, Any]] | None = None
        for spelling, presets in self.spellings.items():
            matches = all(getattr(self, k) == v for k, v in presets.items())
            if matches and (best is None or len(presets) > len(best[1])):
                best = (spelling, presets)
        return best if best is not None else (self.kind, {})

    def text(self, in_shape: Shape | None = None) -> str:
        """The layer as spec text that parses back to it: `CONV(64, kernel=7, stride=2)`.

        Its spelling (see `spelling`), its main argument (the first positional one) bare, then
        every other argument that differs from its default, by name (`defaults` lines of the
        spec do not count: the text stands on its own). An argument filled from the input's
        channels (a depthwise conv's) is left out when it equals `in_shape`'s, and only then.
        Every place that prints a layer (tables, diagrams, errors) prints this.
        """
        spelling, presets = self.spelling()
        fields = type(self).model_fields
        bare: list[str] = []
        named: list[str] = []
        for i, name in enumerate(self.positional):
            # The main argument shows when it is a size (channels, units, kernel) or not its
            # default; the ones after it go bare while they are required (SLICE's stop).
            value, field = getattr(self, name), fields[name]
            size = isinstance(value, int | tuple) and not isinstance(value, bool)
            shows = size or value != field.default if i == 0 else True
            if name in presets or len(bare) < i or not shows or (i and not field.is_required()):
                break
            bare.append(name)
        parts = [spec_value(getattr(self, name)) for name in bare]
        for name, field in fields.items():
            value = getattr(self, name)
            if name in bare or name in presets:
                continue
            if name in self.from_input_channels:  # its default is the input's channels
                if in_shape and value == in_shape[0]:
                    continue
            elif value == field.default:
                continue
            named.append(f"{name}={spec_value(value)}")
        return f"{spelling}({', '.join(parts + named)})" if parts or named else spelling


def spec_value(value: Any) -> str:
    """A value as spec text: `(3, 2)`, `on`, `same`, `1e-06` (floats exactly, as repr)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(spec_value(v) for v in value) + ")"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def numel(shape: Shape) -> int:
    return math.prod(shape)


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def expand(value: int | tuple[int, ...], dims: int, what: str) -> tuple[int, ...]:
    """Broadcast an int to one value per spatial dim; check a tuple's length."""
    if isinstance(value, int):
        return (value,) * dims
    if len(value) != dims:
        raise ShapeError(f"{what} has {len(value)} values but the input has {dims} spatial dims")
    return tuple(value)


def spatial_dims(layer: str, shape: Shape, dims: int | None) -> int:
    """The number of spatial dims of a [C, H, W] / [C, L] input; refuses flat vectors."""
    rank = len(shape) - 1
    if rank not in (1, 2):
        raise ShapeError(
            f"{layer} needs a [C, H, W] or [C, L] input; received [{fmt_shape(shape)}]",
            hint="it follows a layer that flattened its input; move it before FC/FLATTEN"
            if rank == 0
            else None,
        )
    if dims is not None and dims != rank:
        raise ShapeError(
            f"{layer}{dims}D needs a {dims + 1}-D input; received [{fmt_shape(shape)}]"
        )
    return rank
