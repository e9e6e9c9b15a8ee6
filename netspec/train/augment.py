"""Random data augmentation on batches, in plain torch (there is no torchvision here).

The geometric part (rotation, zoom, shift) is one affine matrix per image applied with a
single `F.affine_grid` + `F.grid_sample` call; flip and contrast are elementwise. Every
random draw comes from the caller's `torch.Generator`, so a seeded run is reproducible.

Per-pixel labels (a dense output's) move with their images (`augment_pair`): the same warp,
sampled nearest so that a label stays a class, and the same flip; pixels moved in from outside
the image are labelled `IGNORE`. That needs the label map to have the image's size; for an
output map of another size, `check_dense_augment` refuses the geometric transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from netspec.errors import NetspecError, did_you_mean
from netspec.io import BOOL_WORDS, parse_bool
from netspec.train.data import IGNORE

# Largest accepted value of each numeric option, with what it means, for error messages.
_LIMITS = {
    "shift": (1.0, "a fraction of the width/height"),
    "rotate": (180.0, "degrees"),
    "zoom": (0.99, "a scale deviation"),
    "contrast": (1.0, "a contrast deviation"),
}
_EXAMPLE = "shift=0.1,flip,rotate=10,zoom=0.1,contrast=0.2"


@dataclass(frozen=True)
class AugmentConfig:
    """Which random transforms to apply to each training image, and how strongly.

    Attributes:
        shift: max fraction of width/height to translate (Keras ``width_shift_range`` style).
        flip: random horizontal flip with probability 0.5.
        rotate: max degrees; each image turns by an angle uniform in [-rotate, rotate].
        zoom: each image is scaled by a factor uniform in [1 - zoom, 1 + zoom].
        contrast: factor uniform in [1 - contrast, 1 + contrast] around each image's mean.
    """

    shift: float = 0.0
    flip: bool = False
    rotate: float = 0.0
    zoom: float = 0.0
    contrast: float = 0.0

    def enabled(self) -> bool:
        """Whether any transform is switched on."""
        return bool(self.shift or self.flip or self.rotate or self.zoom or self.contrast)

    def geometric(self) -> bool:
        """Whether the affine warp (rotation, zoom, shift) has anything to do."""
        return bool(self.shift or self.rotate or self.zoom)


def parse_augment(text: str) -> AugmentConfig:
    """Parse the ``--augment`` flag, e.g. ``shift=0.1,flip,rotate=10,zoom=0.1,contrast=0.2``.

    Args:
        text: comma-separated ``key=value`` items (``flip`` may stand alone), or ``none``.

    Returns:
        The configuration; ``none`` or an empty text gives one with nothing enabled.

    Raises:
        NetspecError: for an unknown key (with a "did you mean"), a repeated key, a value
            that is not a number, or a value out of range.
    """
    if text.strip().lower() in ("", "none"):
        return AugmentConfig()
    values: dict[str, float | bool] = {}
    for item in text.split(","):
        key, value = _parse_item(item.strip(), text)
        if key in values:
            raise NetspecError(f"`{key}` is given twice in --augment {text!r}")
        values[key] = value
    return AugmentConfig(**values)  # type: ignore[arg-type]


def _parse_item(item: str, text: str) -> tuple[str, float | bool]:
    key, has_value, raw = (part.strip() for part in item.partition("="))
    key = key.lower()
    known = [f.name for f in fields(AugmentConfig)]
    if key not in known:
        raise NetspecError(
            f"unknown augmentation `{key or item}` in --augment {text!r}",
            hint=did_you_mean(key, known) or f"known: {', '.join(known)}; e.g. {_EXAMPLE}",
        )
    if key == "flip":
        return key, _parse_flag(raw) if has_value else True
    if not has_value or not raw:
        raise NetspecError(f"`{key}` needs a value in --augment, e.g. {key}=0.1")
    return key, _parse_amount(key, raw)


def _parse_flag(raw: str) -> bool:
    value = parse_bool(raw)
    if value is None:
        raise NetspecError(
            f"expected flip=true or flip=false (or {', '.join(BOOL_WORDS)}). Received: flip={raw}"
        )
    return value


def _parse_amount(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise NetspecError(f"expected a number for `{key}`. Received: {key}={raw}") from None
    top, meaning = _LIMITS[key]
    if not 0.0 <= value <= top:
        raise NetspecError(
            f"expected `{key}` ({meaning}) in [0, {top:g}]. Received: {key}={raw}",
        )
    return value


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply random augmentation to a batch, each example drawing its own parameters.

    Images ``(N, C, H, W)`` get the affine warp (rotation, zoom, shift), then the flip, then
    the contrast change. Signals ``(N, C, L)`` get the shift only; token ids (an integer
    tensor) are returned unchanged. Pixels moved in from outside the image are zero.

    Args:
        x: a float batch ``(N, C, H, W)`` or ``(N, C, L)``, or integer token ids.
        cfg: which transforms to apply.
        generator: the source of every random draw; the same state gives the same output.

    Returns:
        A new tensor of the same shape, or `x` itself when there is nothing to do.
    """
    return _augment(x, None, cfg, generator)[0]


def augment_pair(
    x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`augment_batch` for images with per-pixel labels ``(N, H, W)`` (or signals with
    labels ``(N, L)``) of the same size: each label map gets its image's warp (sampled
    nearest) and flip; labels moved in from outside the image are `IGNORE`. The images get
    exactly what `augment_batch` would give them with the same generator state.

    Raises:
        ValueError: for labels whose map is not the images' size when pixels move (see
            `check_dense_augment`); contrast alone leaves labels of any size as they are.
    """
    moves = cfg.geometric() or cfg.flip
    if moves and (y.shape[0] != x.shape[0] or tuple(y.shape[1:]) != tuple(x.shape[2:])):
        raise ValueError(
            f"labels {list(y.shape)} do not match the images {list(x.shape)} pixel for pixel"
        )
    x, moved = _augment(x, y, cfg, generator)
    assert moved is not None
    return x, moved


def check_dense_augment(
    cfg: AugmentConfig, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
) -> None:
    """Refuse geometric augmentation for a dense output whose map is not the input's size
    (its labels could not follow the warp pixel for pixel); contrast is always allowed.

    Raises:
        NetspecError: naming both sizes and the transforms that are refused.
    """
    moving = [k for k in ("shift", "flip", "rotate", "zoom") if getattr(cfg, k)]
    if not moving or tuple(input_shape[1:]) == tuple(output_shape[1:]):
        return
    size = "x".join(map(str, input_shape[1:])) or "none"
    out = "x".join(map(str, output_shape[1:]))
    raise NetspecError(
        f"--augment {', '.join(moving)} moves pixels, but this dense output's map ({out}) is not "
        f"the input's size ({size}), so its labels cannot move with the image",
        hint="leave out shift, flip, rotate and zoom (contrast is fine), or give the output "
        "the input's size (padded convs)",
    )


def _augment(
    x: torch.Tensor, y: torch.Tensor | None, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images augmented, and their label maps moved with them (None without labels)."""
    if not cfg.enabled() or not x.is_floating_point():
        return x, y
    if x.dim() == 3:
        if not cfg.shift:
            return x, y
        return _shift_signal(x, y, cfg.shift, generator)
    if x.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W) or (N, C, L), got shape {list(x.shape)}")
    n = x.shape[0]
    if cfg.geometric():
        degrees = _uniform(n, cfg.rotate, 0.0, x, generator)
        scale = _uniform(n, cfg.zoom, 1.0, x, generator)
        shift = _uniform(2 * n, cfg.shift, 0.0, x, generator).view(n, 2)
        if y is not None:
            y = _warp_labels(y, degrees, scale, shift)
        x = warp(x, degrees, scale, shift)
    if cfg.flip:
        flipped = _rand(n, x, generator) < 0.5
        x = torch.where(flipped.view(n, 1, 1, 1), x.flip(-1), x)
        if y is not None:
            y = torch.where(flipped.view(n, 1, 1), y.flip(-1), y)
    if cfg.contrast:
        factor = _uniform(n, cfg.contrast, 1.0, x, generator).view(n, 1, 1, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * factor + mean
    return x, y


def _warp_labels(
    y: torch.Tensor, degrees: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """`warp` for label maps ``(N, H, W)``: nearest sampling (a label stays a class), and
    `IGNORE` where the pixel came from outside the image. Labels travel as ``label + 1`` so
    that the zeros `grid_sample` pads with mark the outside."""
    height, width = y.shape[-2], y.shape[-1]
    theta = _inverse_affine(degrees.float(), scale.float(), shift.float(), height, width)
    plus = (y + 1).unsqueeze(1).float()
    grid = F.affine_grid(theta, list(plus.shape), align_corners=False)
    moved = F.grid_sample(plus, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    moved = moved.squeeze(1).round().long()
    return torch.where(moved == 0, torch.full_like(moved, IGNORE), moved - 1)


def warp(
    x: torch.Tensor, degrees: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate, scale and translate each image of a batch about its center, in one resampling.

    The content is rotated counterclockwise as displayed (rows run downward, so
    ``degrees=90`` matches ``torch.rot90(x, 1, dims=(2, 3))`` on a square image), scaled
    by `scale` (above 1 zooms in), then moved by `shift` fractions of the width and height.
    Sampling is bilinear with zeros outside the image.

    Args:
        x: float images ``(N, C, H, W)``.
        degrees: rotation angle per image ``(N,)``.
        scale: zoom factor per image ``(N,)``.
        shift: ``(N, 2)`` translation per image as ``(dx, dy)`` fractions of width, height.

    Returns:
        The warped images, same shape and dtype as `x`.
    """
    theta = _inverse_affine(degrees, scale, shift, x.shape[-2], x.shape[-1])
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inverse_affine(
    degrees: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """The ``(N, 2, 3)`` matrices mapping output to input in grid coordinates ([-1, 1]).

    The forward map in pixel units is ``p_out = scale * R @ p_in + t``; `affine_grid` wants
    its inverse, ``R.T @ (p_out - t) / scale``, moved into normalized coordinates where the
    x and y axes have different pixel lengths (hence the ``height / width`` factors).
    """
    angle = torch.deg2rad(degrees)
    # Rows run downward, so a counterclockwise turn on screen is clockwise in (x, y).
    cos, sin = torch.cos(angle), -torch.sin(angle)
    aspect = height / width
    linear = torch.stack(
        [
            torch.stack([cos, sin * aspect], dim=-1),
            torch.stack([-sin / aspect, cos], dim=-1),
        ],
        dim=-2,
    ) / scale.view(-1, 1, 1)
    offset = -(linear @ (2.0 * shift).unsqueeze(-1))
    return torch.cat([linear, offset], dim=-1)


def _shift_signal(
    x: torch.Tensor, y: torch.Tensor | None, shift: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Translate each signal ``(N, C, L)`` by up to `shift` of its length, zeros filling in
    (and its per-position labels ``(N, L)`` with it, `IGNORE` filling in)."""
    n = x.shape[0]
    offsets = torch.zeros(n, 2, dtype=x.dtype, device=x.device)
    offsets[:, 0] = _uniform(n, shift, 0.0, x, generator)
    zeros = torch.zeros(n, dtype=x.dtype, device=x.device)
    if y is not None:
        y = _warp_labels(y.unsqueeze(1), zeros, zeros + 1.0, offsets).squeeze(1)
    return warp(x.unsqueeze(2), zeros, zeros + 1.0, offsets).squeeze(2), y


def _rand(n: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) draws made on the generator's device, then moved next to `like`."""
    draws = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float32)
    return draws.to(device=like.device, dtype=like.dtype)


def _uniform(
    n: int, radius: float, center: float, like: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``n`` draws uniform in [center - radius, center + radius] (no draw when radius is 0)."""
    if not radius:
        return torch.full((n,), center, dtype=like.dtype, device=like.device)
    return center + radius * (2.0 * _rand(n, like, generator) - 1.0)
