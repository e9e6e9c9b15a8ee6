"""Tests for netspec.train.augment: the flag parser and each transform's effect."""

from __future__ import annotations

import pytest
import torch

from netspec.errors import NetspecError
from netspec.train.augment import AugmentConfig, augment_batch, parse_augment, warp


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _asymmetric(n: int = 1, c: int = 1, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w) / (n * c * h * w)


# --- parse_augment ---------------------------------------------------------------------------


def test_parse_full_flag() -> None:
    cfg = parse_augment("shift=0.1, flip ,rotate=10,zoom=0.1,contrast=0.2")
    assert cfg == AugmentConfig(shift=0.1, flip=True, rotate=10.0, zoom=0.1, contrast=0.2)
    assert cfg.enabled()


@pytest.mark.parametrize("text", ["none", "NONE", "", "flip=false"])
def test_parse_nothing_enabled(text: str) -> None:
    assert not parse_augment(text).enabled()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("shfit=0.1", "unknown augmentation `shfit`"),
        ("shift", "needs a value"),
        ("rotate=ten", "expected a number"),
        ("zoom=1.5", r"in \[0, 0.99\]"),
        ("shift=-0.1", r"in \[0, 1\]"),
        ("flip,flip", "given twice"),
        ("flip=maybe", "flip=true or flip=false"),
    ],
)
def test_parse_errors(text: str, expected: str) -> None:
    with pytest.raises(NetspecError, match=expected):
        parse_augment(text)


def test_parse_suggests_a_known_key() -> None:
    with pytest.raises(NetspecError) as info:
        parse_augment("rotat=5")
    assert info.value.hint is not None and info.value.hint.startswith("did you mean `rotate`")


# --- augment_batch ---------------------------------------------------------------------------


def test_identity_config_returns_the_same_tensor() -> None:
    x = torch.rand(4, 3, 8, 8)
    assert augment_batch(x, AugmentConfig(), _gen()) is x


def test_token_ids_and_unsupported_1d_transforms_are_untouched() -> None:
    tokens = torch.randint(0, 10, (4, 12))
    assert augment_batch(tokens, AugmentConfig(shift=0.5, flip=True), _gen()) is tokens
    signal = torch.rand(4, 2, 16)
    assert augment_batch(signal, AugmentConfig(flip=True, rotate=10), _gen()) is signal


def test_shapes_and_dtype_are_preserved() -> None:
    cfg = parse_augment("shift=0.1,flip,rotate=10,zoom=0.1,contrast=0.2")
    x = torch.rand(5, 3, 9, 13)
    out = augment_batch(x, cfg, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    signal = torch.rand(5, 2, 20)
    assert augment_batch(signal, cfg, _gen()).shape == signal.shape


def test_flip_flips_about_half_the_images() -> None:
    x = _asymmetric().expand(64, 1, 8, 8).contiguous()
    out = augment_batch(x, AugmentConfig(flip=True), _gen())
    flipped = torch.tensor([torch.equal(o, x[0].flip(-1)) for o in out])
    kept = torch.tensor([torch.equal(o, x[0]) for o in out])
    assert torch.all(flipped | kept)
    assert 16 < int(flipped.sum()) < 48


def test_shift_moves_mass() -> None:
    x = torch.zeros(32, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    out = augment_batch(x, AugmentConfig(shift=0.25), _gen())
    cols = torch.arange(16.0)
    centre = (out.sum(2)[:, 0] * cols).sum(-1) / out.sum((1, 2, 3))
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-4)  # stays in view
    assert float((centre - 7.5).abs().max()) > 1.0
    assert float((centre - 7.5).abs().max()) <= 4.0 + 1e-4


def test_integer_shift_is_an_exact_translation() -> None:
    x = torch.rand(1, 2, 8, 8)
    out = warp(x, torch.zeros(1), torch.ones(1), torch.tensor([[0.25, -0.125]]))
    # Right by 2 pixels, up by 1: out[r, c] = x[r + 1, c - 2].
    assert torch.allclose(out[..., :-1, 2:], x[..., 1:, :-2], atol=1e-5)
    assert float(out[..., :, :2].abs().max()) == 0.0 and float(out[..., -1:, :].abs().max()) == 0.0


def test_rotate_90_matches_rot90() -> None:
    x = torch.rand(3, 2, 10, 10)
    out = warp(x, torch.full((3,), 90.0), torch.ones(3), torch.zeros(3, 2))
    expected = torch.rot90(x, 1, dims=(2, 3))
    assert torch.allclose(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4)


def test_rotate_180_of_a_wide_image_keeps_its_aspect() -> None:
    x = torch.rand(1, 1, 6, 10)
    out = warp(x, torch.full((1,), 180.0), torch.ones(1), torch.zeros(1, 2))
    assert torch.allclose(out, torch.rot90(x, 2, dims=(2, 3)), atol=1e-4)


def test_zoom_in_magnifies_the_centre() -> None:
    x = torch.zeros(1, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    out = warp(x, torch.zeros(1), torch.full((1,), 2.0), torch.zeros(1, 2))
    assert float(out.sum()) == pytest.approx(4 * float(x.sum()), rel=0.1)


def test_contrast_keeps_each_image_mean() -> None:
    x = torch.rand(8, 3, 6, 6)
    out = augment_batch(x, AugmentConfig(contrast=0.5), _gen())
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)
    spread_ratio = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert torch.all((spread_ratio >= 0.5 - 1e-4) & (spread_ratio <= 1.5 + 1e-4))
    assert float((spread_ratio - 1).abs().max()) > 0.05


def test_same_seed_same_output_and_different_seed_differs() -> None:
    cfg = parse_augment("shift=0.1,flip,rotate=15,zoom=0.1,contrast=0.2")
    x = torch.rand(6, 3, 12, 12)
    first = augment_batch(x, cfg, _gen(7))
    assert torch.equal(first, augment_batch(x, cfg, _gen(7)))
    assert not torch.equal(first, augment_batch(x, cfg, _gen(8)))


def test_signal_shift_moves_along_the_length() -> None:
    x = torch.zeros(16, 1, 32)
    x[..., 14:18] = 1.0
    out = augment_batch(x, AugmentConfig(shift=0.25), _gen())
    assert out.shape == x.shape
    centre = (out[:, 0] * torch.arange(32.0)).sum(-1) / out[:, 0].sum(-1)
    assert float((centre - 15.5).abs().max()) > 1.0
    assert torch.allclose(out.sum(-1), x.sum(-1), rtol=1e-4)
