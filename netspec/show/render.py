"""Figures of the arrays in `pictures` (matplotlib's Agg canvas, no pyplot state), written as
PNG atomically: a failed render leaves no file, a file is whole.

Each layer's tiles are laid out as one mosaic image (one `imshow` per layer, not one per
tile), so that 512 feature maps render as fast as 8.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from netspec.io import atomic_write
from netspec.layers import fmt_shape
from netspec.show.pictures import Grid, Saliency
from netspec.units import plain

GAP = 1  # pixels between tiles
FRAME = (0.45, 0.6, 0.85)  # the gaps' colour: neither black nor white, which tiles use


def mosaic(tiles: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tiles `[N, h, w]` or `[N, h, w, 3]` laid out in rows, `GAP` pixels apart, as one RGB
    image `[H, W, 3]` (gray tiles repeated on the 3 channels; the gaps in `FRAME`)."""
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[..., None], 3, axis=3)
    n, h, w = tiles.shape[:3]
    cols = columns or max(1, math.ceil(math.sqrt(n * h / w)))
    rows = math.ceil(n / cols)
    out = np.empty((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), dtype=np.float32)
    out[:] = FRAME
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = tile
    return out


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    gray = image.ndim == 2
    ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def filters_figure(grid: Grid) -> Any:
    """The kernels as a grid, the layer's name, weight shape and how tiles were made above."""
    image = mosaic(grid.tiles)
    fig = _figure(6, 6 * min(image.shape[0] / image.shape[1], 2) + 0.6)
    ax = fig.add_subplot()
    _show(ax, image, "")
    fig.suptitle(
        f"{plain(grid.layer)}: {len(grid.tiles)} kernels, weight [{fmt_shape(grid.shape)}]\n"
        f"{plain(grid.note)}; each normalised on its own",
        fontsize=10,
    )
    return fig


def maps_figure(grids: list[Grid], caption: str) -> Any:
    """The input, then one mosaic per layer, side by side."""
    fig = _figure(3.2 * len(grids), 3.8)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid in zip(axes, grids, strict=True):
        if grid.layer == "input" and grid.tiles.shape[0] == 3:
            image = grid.tiles.transpose(1, 2, 0)  # the RGB image itself
        else:
            image = mosaic(grid.tiles)
        size = "x".join(map(str, grid.shape[1:]))
        _show(ax, image, f"{grid.layer}\n{grid.shape[0]} x {size}")
    fig.suptitle(f"feature maps of {plain(caption)}; each map normalised on its own", fontsize=10)
    return fig


def saliency_figure(s: Saliency, caption: str) -> Any:
    """The input, the gradient saliency over it, and Grad-CAM over it."""
    from matplotlib import colormaps

    fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 3)
    base = s.image if s.image.ndim == 3 else np.repeat(s.image[..., None], 3, axis=2)
    _show(axes[0], base, "input")
    jet = colormaps["jet"]
    for ax, heat, title in (
        (axes[1], s.gradient, "gradient |d score / d pixel|"),
        (axes[2], s.gradcam, f"Grad-CAM at {plain(s.layer)}"),
    ):
        overlay = 0.5 * base + 0.5 * jet(heat)[..., :3]
        _show(ax, overlay.clip(0, 1), title)
    fig.suptitle(
        f"{plain(caption)}: predicted {plain(s.name)} (p = {s.probability:.3f})",
        fontsize=10,
    )
    return fig


def save(figure: Any, path: str | Path) -> Path:
    """Render to PNG in memory, then write the file atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, buffer.getvalue())


__all__ = ["filters_figure", "maps_figure", "mosaic", "saliency_figure", "save"]
