"""Property tests: each layer's shape rule and counts against PyTorch's real modules.

Hypothesis draws random layer configurations. For each, the IR's `output_shape` must equal the
output shape of a torch module built here directly from the configuration (not through the
lowering, so the two are independent), and `params`/`buffers` must equal the module's counts.
Where the IR refuses a configuration (ShapeError), torch must refuse it too or produce an empty
output. The lowering's module (LOWERINGS) must agree with both.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from netspec.backends.lower_torch import LOWERINGS
from netspec.layers import Layer, Shape, ShapeError
from netspec.layers.conv import Conv
from netspec.layers.linear import Dense, Embedding
from netspec.layers.norm import BatchNorm, LocalResponseNorm
from netspec.layers.pool import AdaptiveAvgPool, GlobalPool, Pool

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIGHT = settings(PROPERTY, max_examples=40)  # the rules with little to explore
TORCH_REFUSES = (RuntimeError, ValueError, TypeError, IndexError)


def per_dim(values: st.SearchStrategy[int], dims: int) -> st.SearchStrategy[int | tuple[int, ...]]:
    """An int, or a tuple of one value per spatial dim."""
    return st.one_of(values, st.tuples(*[values] * dims))


def each(value: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (value,) * dims if isinstance(value, int) else value


def ir_shape(layer: Layer, in_shape: Shape) -> Shape | None:
    """The IR's output shape, or None where the IR refuses the input."""
    try:
        return layer.output_shape((in_shape,))
    except ShapeError:
        return None


def torch_shape(make: object, x: torch.Tensor) -> tuple[nn.Module | None, Shape | None]:
    """Build a module with `make()` and run `x` through it; (None, None) where torch refuses."""
    try:
        module = make()  # type: ignore[operator]
        with torch.no_grad():
            y = module(x)
    except TORCH_REFUSES:
        return None, None
    return module, tuple(y.shape[1:])


class Fn(nn.Module):
    """A parameter-free function as a module."""

    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)  # type: ignore[operator]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_buffers(module: nn.Module) -> int:
    return sum(
        b.numel() for name, b in module.named_buffers() if not name.endswith("num_batches_tracked")
    )


def check(layer: Layer, in_shape: Shape, make: object, x: torch.Tensor) -> None:
    """The IR and torch agree on the shape, or both refuse; counts agree; the lowering too."""
    out = ir_shape(layer, in_shape)
    module, real = torch_shape(make, x)
    if out is None:
        assert real is None or math.prod(real) == 0, (
            f"IR refuses {layer!r} on {in_shape}; torch gives {real}"
        )
        return
    assert real == out, f"{layer!r} on {in_shape}: IR {out}, torch {real}"
    assert module is not None
    assert layer.params((in_shape,), out) == count(module)
    assert layer.buffers((in_shape,), out) == count_buffers(module)
    lowered = LOWERINGS[layer.kind](layer, (in_shape,))
    with torch.no_grad():
        assert tuple(lowered(x).shape[1:]) == out
    assert count(lowered) == count(module)
    assert count_buffers(lowered) == count_buffers(module)


# ---- convolution -----------------------------------------------------------------------------


def tf_same_pads(size: Shape, k: Shape, s: Shape, d: Shape) -> tuple[int, ...]:
    """TensorFlow's SAME padding as F.pad wants it (last dim first), written out independently."""
    pads: list[int] = []
    for n, kk, ss, dd in reversed(list(zip(size, k, s, d, strict=True))):
        total = max((math.ceil(n / ss) - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[Conv, Shape]:
    dims = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    divisible = draw(st.booleans()) or groups == 1
    c_in = groups * draw(st.integers(1, 3)) if divisible else draw(st.integers(1, 6))
    c_out = groups * draw(st.integers(1, 3)) if divisible else draw(st.integers(1, 6))
    size = tuple(draw(st.integers(1, 17)) for _ in range(dims))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), per_dim(st.integers(0, 3), dims)))
    layer = Conv(
        channels=c_out,
        kernel=draw(per_dim(st.integers(1, 5), dims)),
        stride=draw(per_dim(st.integers(1, 3), dims)),
        padding=padding,
        dilation=draw(per_dim(st.integers(1, 3), dims)),
        groups=groups,
        bias=draw(st.booleans()),
    )
    return layer, (c_in, *size)


@PROPERTY
@given(conv_cases())
def test_conv_shape_and_params_match_torch(case: tuple[Conv, Shape]) -> None:
    layer, in_shape = case
    dims = len(in_shape) - 1
    k, s, d = (each(v, dims) for v in (layer.kernel, layer.stride, layer.dilation))
    if layer.padding == "same":
        pad, explicit = tf_same_pads(in_shape[1:], k, s, d), 0
    else:
        pad, explicit = (0,) * 2 * dims, 0 if layer.padding == "valid" else layer.padding
    cls = nn.Conv2d if dims == 2 else nn.Conv1d

    def make() -> nn.Module:
        conv = cls(in_shape[0], layer.channels, k, s, explicit, d, layer.groups, layer.bias)
        return nn.Sequential(nn.ZeroPad2d(pad) if dims == 2 else nn.ConstantPad1d(pad, 0.0), conv)

    check(layer, in_shape, make, torch.randn(2, *in_shape))
    out = ir_shape(layer, in_shape)
    if layer.padding == "same" and out is not None:  # TensorFlow's rule: ceil(input / stride)
        assert out[1:] == tuple(math.ceil(n / ss) for n, ss in zip(in_shape[1:], s, strict=True))


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own note on its reference
@LIGHT
@given(
    c=st.integers(1, 4),
    size=st.integers(1, 12),
    k=st.integers(1, 6),
    d=st.integers(1, 3),
    dims=st.sampled_from([1, 2]),
)
def test_same_padding_at_stride_1_matches_torch_same(
    c: int, size: int, k: int, d: int, dims: int
) -> None:
    """At stride 1 torch has its own padding='same'; its output must equal the lowering's."""
    layer = Conv(channels=3, kernel=k, dilation=d, padding="same")
    in_shape = (c, *[size] * dims)
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    lowered = LOWERINGS["conv"](layer, (in_shape,))
    ref = cls(c, 3, k, padding="same", dilation=d)
    ref.load_state_dict(lowered.state_dict())
    x = torch.randn(2, *in_shape)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), ref(x))
    assert layer.output_shape((in_shape,)) == (3, *[size] * dims)


# ---- pooling ---------------------------------------------------------------------------------


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple[Pool, Shape]:
    dims = draw(st.sampled_from([1, 2]))
    kernel = draw(per_dim(st.integers(1, 5), dims))
    half = min(each(kernel, dims)) // 2
    # Mostly legal padding (at most half the window); sometimes one pixel more, to be refused.
    padding = draw(st.one_of(st.just("valid"), st.integers(0, half), st.just(half + 1)))
    layer = Pool(
        kernel=kernel,
        stride=draw(st.one_of(st.none(), per_dim(st.integers(1, 3), dims))),
        padding=padding,
        mode=draw(st.sampled_from(["max", "avg"])),
        ceil=draw(st.booleans()),
    )
    return layer, (draw(st.integers(1, 3)), *[draw(st.integers(1, 13)) for _ in range(dims)])


@PROPERTY
@given(pool_cases())
def test_pool_shape_matches_torch(case: tuple[Pool, Shape]) -> None:
    layer, in_shape = case
    dims = len(in_shape) - 1
    stride = layer.kernel if layer.stride is None else layer.stride
    padding = 0 if layer.padding == "valid" else layer.padding
    if layer.mode == "max":
        cls = nn.MaxPool2d if dims == 2 else nn.MaxPool1d

        def make() -> nn.Module:
            return cls(layer.kernel, stride, padding, ceil_mode=layer.ceil)

    else:
        cls = nn.AvgPool2d if dims == 2 else nn.AvgPool1d

        def make() -> nn.Module:
            return cls(layer.kernel, stride, padding, ceil_mode=layer.ceil, count_include_pad=True)

    check(layer, in_shape, make, torch.randn(2, *in_shape))


@pytest.mark.parametrize(
    ("layer", "in_shape", "torch_out"),
    [
        (Pool(kernel=2, ceil=True), (1, 1), (1, 1)),
        (Pool(kernel=3, stride=2, ceil=True), (4, 2, 2), (4, 1, 1)),
        (Pool(kernel=3, stride=2, mode="avg", ceil=True), (4, 2, 5), (4, 1, 2)),
    ],
)
def test_pool_ceil_mode_with_a_window_larger_than_the_input(
    layer: Pool, in_shape: Shape, torch_out: Shape
) -> None:
    """PyTorch's ceil mode keeps one window that starts inside the input and overhangs its end:
    out = ceil((n + 2p - k) / s) + 1, which is 1 when the overhang is under a stride."""
    dims = len(in_shape) - 1
    cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d}.get(
        (layer.mode, dims), nn.AvgPool2d if dims == 2 else nn.AvgPool1d
    )
    stride = layer.kernel if layer.stride is None else layer.stride
    real = cls(layer.kernel, stride, layer.padding, ceil_mode=True)(torch.randn(2, *in_shape))
    assert tuple(real.shape[1:]) == torch_out
    assert ir_shape(layer, in_shape) == torch_out


@LIGHT
@given(
    c=st.integers(1, 4),
    size=st.lists(st.integers(1, 9), min_size=1, max_size=2),
    target=st.integers(1, 4),
    mode=st.sampled_from(["avg", "max"]),
)
def test_global_and_adaptive_pool_match_torch(
    c: int, size: list[int], target: int, mode: str
) -> None:
    in_shape = (c, *size)
    x = torch.randn(2, *in_shape)
    two = len(size) == 2
    spatial = tuple(range(2, x.dim()))
    reduce = {"avg": torch.mean, "max": torch.amax}[mode]
    check(GlobalPool(mode=mode), in_shape, lambda: Fn(lambda t: reduce(t, dim=spatial)), x)
    apool = AdaptiveAvgPool(size=target)
    check(
        apool,
        in_shape,
        lambda: nn.AdaptiveAvgPool2d(target) if two else nn.AdaptiveAvgPool1d(target),
        x,
    )


# ---- linear, embedding, normalization --------------------------------------------------------


@LIGHT
@given(n=st.integers(1, 64), units=st.integers(1, 32), bias=st.booleans())
def test_fc_matches_torch(n: int, units: int, bias: bool) -> None:
    layer = Dense(units=units, bias=bias)
    check(layer, (n,), lambda: nn.Linear(n, units, bias=bias), torch.randn(2, n))


@LIGHT
@given(vocab=st.integers(1, 50), dim=st.integers(1, 16), length=st.integers(1, 20))
def test_embedding_matches_torch(vocab: int, dim: int, length: int) -> None:
    layer = Embedding(dim=dim, vocab=vocab)
    tokens = torch.randint(0, vocab, (2, length))

    def make() -> nn.Module:
        emb = nn.Embedding(vocab, dim)
        return Fn(lambda t: emb(t).transpose(1, 2))  # channels-first, as the IR says

    out = layer.output_shape(((length,),))
    assert out == (dim, length)
    _, real = torch_shape(make, tokens)
    assert real == out
    lowered = LOWERINGS["embedding"](layer, ((length,),))
    assert tuple(lowered(tokens).shape[1:]) == out
    assert layer.params(((length,),), out) == count(lowered) == vocab * dim


@LIGHT
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    eps=st.floats(1e-6, 1e-2),
    momentum=st.floats(0.0, 0.9),
)
def test_batchnorm_matches_torch(shape: list[int], eps: float, momentum: float) -> None:
    in_shape = tuple(shape)
    layer = BatchNorm(eps=eps, momentum=momentum)
    cls = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
    check(
        layer,
        in_shape,
        lambda: cls(in_shape[0], eps=eps, momentum=momentum),
        torch.randn(2, *in_shape),
    )
    lowered = LOWERINGS["batchnorm"](layer, (in_shape,))
    assert isinstance(lowered, cls) and lowered.eps == eps and lowered.momentum == momentum


def test_lrn_refuses_a_flat_input_like_torch() -> None:
    layer = LocalResponseNorm(size=3)
    check(layer, (8,), lambda: nn.LocalResponseNorm(3), torch.randn(2, 8))


@LIGHT
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=3), size=st.integers(1, 7))
def test_lrn_matches_torch(shape: list[int], size: int) -> None:
    in_shape = tuple(shape)
    check(
        LocalResponseNorm(size=size),
        in_shape,
        lambda: nn.LocalResponseNorm(size),
        torch.randn(2, *in_shape),
    )


def test_tf_same_pads_reference() -> None:
    """The test's own SAME rule on the textbook cases (so the conv property has a sound oracle)."""
    assert tf_same_pads((8,), (3,), (2,), (1,)) == (0, 1)  # odd total: the extra pixel after
    assert tf_same_pads((7,), (3,), (2,), (1,)) == (1, 1)
    assert tf_same_pads((224, 224), (11, 11), (4, 4), (1, 1)) == (3, 4, 3, 4)
    x = torch.randn(1, 1, 8)
    assert F.pad(x, tf_same_pads((8,), (3,), (2,), (1,))).shape[-1] == 9
