"""The arrays behind the pictures: a conv layer's kernels, the feature maps an input produces,
and saliency (vanilla gradients, Grad-CAM). Each tile is normalised on its own to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netspec.errors import NetspecError
from netspec.ir.graph import Graph, Node
from netspec.ir.receptive import receptive_fields
from netspec.layers import fmt_shape
from netspec.show.source import Loaded, find_layer, kernel_layer, map_layers


@dataclass
class Grid:
    """One layer's tiles: `[N, h, w]` (gray) or `[N, h, w, 3]` (colour), each in [0, 1].

    Attributes:
        layer: the node id.
        shape: the weight's shape (filters) or the output's `[C, H, W]` (maps).
        tiles: one tile per output channel (filters: per kernel; maps: per feature map).
        note: how the tiles were made ("mean over the 16 input channels").
    """

    layer: str
    shape: tuple[int, ...]
    tiles: np.ndarray
    note: str = ""


@dataclass
class Saliency:
    """Where the prediction looks, over an input image.

    Attributes:
        image: the input as `[H, W]` (gray) or `[H, W, 3]`, in [0, 1].
        gradient: |d score / d pixel|, max over channels, `[H, W]` in [0, 1].
        gradcam: Grad-CAM of `layer`, resized (bilinear) to `[H, W]`, in [0, 1].
        layer: the layer Grad-CAM weighs (by default `gradcam_layer`).
        predicted: the predicted class id; name: its name; probability: its softmax score.
    """

    image: np.ndarray
    gradient: np.ndarray
    gradcam: np.ndarray
    layer: str
    predicted: int
    name: str
    probability: float


def normalise(tiles: np.ndarray) -> np.ndarray:
    """Each tile (first axis) scaled to [0, 1] on its own; a constant tile becomes 0 (all
    zeros) or 0.5."""
    flat = tiles.reshape(len(tiles), -1).astype(np.float64)
    lo = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - lo
    # a constant tile: black when it is all zeros (a ReLU map with nothing on), else mid-gray
    still = np.where(lo == 0, 0.0, 0.5)
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), still)
    return out.reshape(tiles.shape).astype(np.float32)


def filters(loaded: Loaded, layer: str | None = None) -> Grid:
    """The kernels of a convolution (the first one by default), one tile per output channel:
    in colour when the layer reads 3 channels (the RGB input), else the mean over its input
    channels. A 1-D kernel is a 1-pixel-high tile."""
    node = kernel_layer(loaded.graph, layer)
    weight = loaded.model.get_submodule(node.id).weight.detach().double()
    if node.kind == "conv_transpose":  # [in, out / groups, k...]: one tile per input channel
        weight = weight.transpose(0, 1)
    shape = tuple(loaded.model.get_submodule(node.id).weight.shape)
    w = weight.numpy()
    if w.ndim == 3:
        w = w[:, :, None, :]
    if w.shape[1] == 3:
        tiles, note = w.transpose(0, 2, 3, 1), "colour: the 3 input channels as RGB"
    else:
        tiles = w.mean(axis=1)
        note = "one channel" if w.shape[1] == 1 else f"mean over the {w.shape[1]} input channels"
    return Grid(node.id, shape, normalise(tiles), note)


def _image_input(graph: Graph) -> None:
    if len(graph.input.shape) != 3:
        raise NetspecError(
            f"{graph.name} takes [{fmt_shape(graph.input.shape)}]: `show maps` and `show "
            "saliency` look at image inputs [C, H, W]"
        )


def _check_input(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    if tuple(x.shape) != graph.input.shape:
        raise NetspecError(
            f"the input is [{fmt_shape(tuple(x.shape))}]; {graph.name} expects "
            f"[{fmt_shape(graph.input.shape)}]"
        )
    return x.detach().float()[None]


def _capture(loaded: Loaded, ids: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the nodes `ids` for the batch `x` (one forward pass, hooks)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for node_id in ids:
        module = loaded.model.get_submodule(node_id)
        handles.append(
            module.register_forward_hook(lambda m, i, o, key=node_id: seen.__setitem__(key, o))
        )
    try:
        logits = loaded.model.logits(x)
    finally:
        for h in handles:
            h.remove()
    seen["logits"] = logits
    return seen


GRADCAM_MIN = 7  # the coarsest map Grad-CAM's paper weighs (ResNet's last stage at 224)


def gradcam_layer(graph: Graph) -> Node:
    """The last conv stage with a usable map: the last stage output at least 7x7 (coarser
    maps, like a 28x28 digit's 3x3, paint a few cells over the whole image), else the last."""
    stages = map_layers(graph, None)
    if not stages:
        raise NetspecError(f"{graph.name} has no feature map for Grad-CAM")
    usable = [n for n in stages if min(n.shape[1:]) >= GRADCAM_MIN]
    return (usable or stages)[-1]


def place(cam: np.ndarray, graph: Graph, node_id: str) -> np.ndarray:
    """A map of `node_id` over the input pixels: each position sits at the centre of its
    receptive field (start + i * jump + (size - 1) / 2), linear in between and constant past
    the outermost centres. (A plain resize would put a 3x3 map's corners at the image's.)"""
    field = next(f for f in receptive_fields(graph) if f.node == node_id)
    centres = [
        [field.start[axis] + i * field.jump[axis] + (field.size[axis] - 1) / 2 for i in range(m)]
        for axis, m in enumerate(cam.shape)
    ]
    h, w = graph.input.shape[1:]
    rows = np.stack([np.interp(np.arange(h), centres[0], col) for col in cam.T], axis=1)
    out = np.stack([np.interp(np.arange(w), centres[1], row) for row in rows], axis=0)
    return out


def feature_maps(loaded: Loaded, x: torch.Tensor, layers: list[str] | None = None) -> list[Grid]:
    """The input, then the feature maps of each layer (by default the output of each stage:
    the last layer at each spatial size), one tile per channel."""
    graph = loaded.graph
    _image_input(graph)
    nodes = map_layers(graph, layers)
    batch = _check_input(graph, x)
    with torch.no_grad():
        seen = _capture(loaded, [n.id for n in nodes], batch)
    grids = [Grid("input", graph.input.shape, normalise(batch[0].numpy()), "each channel")]
    for node in nodes:
        out = seen[node.id][0].numpy()
        grids.append(Grid(node.id, node.shape, normalise(out), "one tile per channel"))
    return grids


def saliency(loaded: Loaded, x: torch.Tensor, layer: str | None = None) -> Saliency:
    """Vanilla gradient saliency and Grad-CAM (Selvaraju et al. 2017) of the predicted class:
    Grad-CAM weighs each channel of `layer` (default: `gradcam_layer`, the last conv stage)
    by its mean gradient, sums, keeps the positive part and places it over the input by the
    receptive fields (`place`)."""
    graph = loaded.graph
    _image_input(graph)
    if graph.per_pixel or len(graph.output_shape) != 1:
        raise NetspecError(
            f"{graph.name} outputs [{fmt_shape(graph.output_shape)}]: saliency explains one "
            "class score per input (a classifier)"
        )
    node = find_layer(graph, layer) if layer else gradcam_layer(graph)
    if len(node.shape) != 3:
        raise NetspecError(f"`{node.id}` outputs [{fmt_shape(node.shape)}]: Grad-CAM needs a map")
    batch = _check_input(graph, x).requires_grad_(True)
    seen = _capture(loaded, [node.id], batch)
    logits = seen["logits"][0]
    predicted = int(logits.argmax())
    probability = float(torch.softmax(logits.detach().double(), 0)[predicted])
    act = seen[node.id]
    grad_x, grad_a = torch.autograd.grad(logits[predicted], [batch, act])
    weights = grad_a[0].mean(dim=(1, 2), keepdim=True)
    cam = F.relu((weights * act[0]).sum(0)).detach().double().numpy()
    image = batch[0].detach().numpy()
    names = loaded.class_names
    return Saliency(
        image=image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0).clip(0, 1),
        gradient=normalise(grad_x[0].abs().amax(0)[None].numpy())[0],
        gradcam=normalise(place(cam, graph, node.id)[None])[0],
        layer=node.id,
        predicted=predicted,
        name=names[predicted] if names and predicted < len(names) else str(predicted),
        probability=probability,
    )


__all__ = ["Grid", "Saliency", "feature_maps", "filters", "normalise", "saliency"]
