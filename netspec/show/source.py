"""What `netspec show` looks at: a network with its weights, a layer by name, an input.

A target is a training run's folder (its spec copy, bindings and best weights), a
.safetensors file (with the spec it was trained from), or a spec alone (its initial weights
at a seed: what training starts from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netspec.errors import NetspecError, did_you_mean
from netspec.ir.graph import Graph, Node
from netspec.layers import fmt_shape

KERNEL_KINDS = ("conv", "dwconv", "conv_transpose")


@dataclass
class Loaded:
    """A network ready to look at: eval mode, no in-place layers (so activations stay as they
    were computed), on the CPU.

    Attributes:
        graph: its IR graph.
        model: the torch module (a `NetspecModule`).
        origin: where the weights came from, for titles ("runs/x/best.safetensors", or
            "initial weights, seed 0").
        class_names: one per class when the run recorded them; None otherwise.
        data: the run's data source (for `--input INDEX`), when there is one.
        seed: the run's split seed.
        val_split: the run's validation fraction.
    """

    graph: Graph
    model: Any
    origin: str
    class_names: list[str] | None = None
    data: str | None = None
    seed: int = 0
    val_split: float = 0.2


def load(
    target: str | Path,
    spec: str | Path | None = None,
    bindings: dict[str, Any] | None = None,
    seed: int = 0,
) -> Loaded:
    """A run folder, a weights file (with `spec`, unless it sits in a run folder) or a spec.

    Raises:
        NetspecError: no spec for a weights file, or weights that do not fit the spec (every
            missing, unexpected and mis-shaped tensor named).
    """
    from netspec import load_graph
    from netspec.backends.lower_torch import build
    from netspec.ir.build import load_spec
    from netspec.train.checkpoint import load_exact, load_weights, weights_file
    from netspec.train.run_folder import SETTINGS, SPEC_COPY, class_names, read_settings

    path = Path(target)
    is_weights = path.is_dir() or path.suffix == ".safetensors"
    if not is_weights:
        graph = load_graph(target, bindings)
        return _ready(graph, build(graph, seed=seed), f"initial weights, seed {seed}")
    folder = path if path.is_dir() else path.parent
    saved = read_settings(folder) if (folder / SETTINGS).is_file() else {}
    if spec is not None:
        graph = load_graph(spec, bindings)
    elif (folder / SPEC_COPY).is_file():
        graph = load_spec(folder / SPEC_COPY).instantiate(
            dict(saved.get("bindings") or {}) | dict(bindings or {})
        )
    else:
        raise NetspecError(
            f"{target} holds weights but no spec: give the spec they were trained from",
            hint="netspec show filters WEIGHTS.safetensors --spec SPEC",
        )
    file = weights_file(path)
    model = build(graph, seed=0)
    load_exact(model, load_weights(file), str(file))
    run = saved.get("settings") or {}
    loaded = _ready(graph, model, str(file))
    loaded.class_names = class_names(file, graph.classes) if graph.classes else None
    loaded.data = run.get("data")
    loaded.seed = int(run.get("seed", 0))
    loaded.val_split = float(run.get("val_split", 0.2))
    return loaded


def _ready(graph: Graph, model: Any, origin: str) -> Loaded:
    model.eval()
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return Loaded(graph, model, origin)


def find_layer(graph: Graph, name: str) -> Node:
    """The node named `name`, or an error naming the closest layer names."""
    try:
        return graph.node(name)
    except KeyError:
        pass
    ids = [n.id for n in graph.nodes]
    hint = did_you_mean(name, ids) or "`netspec check SPEC` lists the layer names"
    raise NetspecError(f"no layer `{name}` in {graph.name}", hint=hint)


def kernel_layer(graph: Graph, name: str | None) -> Node:
    """The named convolution (the first one when `name` is None)."""
    convs = [n for n in graph.nodes if n.kind in KERNEL_KINDS]
    if name is None:
        if not convs:
            raise NetspecError(f"{graph.name} has no convolution: no kernels to show")
        return convs[0]
    node = find_layer(graph, name)
    if node.kind not in KERNEL_KINDS:
        listing = ", ".join(n.id for n in convs[:8]) + (" ..." if len(convs) > 8 else "")
        raise NetspecError(
            f"`{name}` is {node.layer.text()}: it has no kernels to show",
            hint=f"layers with kernels: {listing}" if convs else "this network has no convolution",
        )
    return node


def map_layers(graph: Graph, names: list[str] | None) -> list[Node]:
    """The named layers (each must output a map), or by default the output of each stage:
    the last layer at each spatial size, in order, on the main path."""
    rank = len(graph.input.shape)
    if names:
        nodes = [find_layer(graph, n) for n in names]
        for node in nodes:
            if len(node.shape) != rank or node.id == "input":
                raise NetspecError(
                    f"`{node.id}` outputs [{fmt_shape(node.shape)}], not a map like the input's "
                    f"[{fmt_shape(graph.input.shape)}]: it has no feature maps to show"
                )
        return nodes
    main = [n for n in graph.nodes if graph.head_of(n.id) is None and n.inputs]
    last: dict[tuple[int, ...], Node] = {}
    for node in main:
        if len(node.shape) == rank:
            last.pop(node.shape[1:], None)  # re-inserted: ordered by its last appearance
            last[node.shape[1:]] = node
    return list(last.values())


def read_input(
    loaded: Loaded, spec: str, data: str | None = None, resize: bool = False
) -> tuple[torch.Tensor, str, int | None]:
    """The input `spec` names: an index into the validation part of the run's data (or
    `data`, default digits), or an image file. Returns the [C, H, W] tensor, a caption, and
    its label when known.

    Raises:
        NetspecError: an index out of range; an image whose size or channels differ from the
            spec's input (unless `resize`), or a network that does not take images.
    """
    graph = loaded.graph
    if spec.isdigit():
        from netspec.train.data import load_data

        source = data or loaded.data or "digits"
        split = load_data(
            source,
            graph.input.shape,
            graph.classes or 1,
            val_split=loaded.val_split,
            seed=loaded.seed,
            vocab=graph.input.vocab,
        )
        index = int(spec)
        if index >= len(split.val):
            raise NetspecError(
                f"--input {index}: the validation part of {source} holds {len(split.val)} "
                f"examples (0 to {len(split.val) - 1})"
            )
        label = int(split.val.y[index]) if split.val.y.ndim == 1 else None
        if loaded.class_names is None:
            loaded.class_names = list(split.val.class_names)
        return split.val.x[index].float(), f"{source} validation example {index}", label
    x, note = _image(graph, Path(spec), resize)
    return x, Path(spec).name + (f" ({note})" if note else ""), None


def _image(graph: Graph, path: Path, resize: bool) -> tuple[torch.Tensor, str | None]:
    from PIL import Image, UnidentifiedImageError

    from netspec.io import read_image

    shape = graph.input.shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise NetspecError(
            f"{path} is an image, but {graph.name} takes [{fmt_shape(shape)}], not [1 or 3, H, W]"
        )
    c, h, w = shape
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
    except (UnidentifiedImageError, OSError) as err:
        raise NetspecError(f"cannot read the image {path}: {err}") from None
    channels = 1 if mode in ("L", "1", "I", "F", "I;16") else 3
    if (size != (w, h) or channels != c) and not resize:
        raise NetspecError(
            f"{path} is {size[0]}x{size[1]} with {channels} channel{'s' * (channels > 1)}; "
            f"{graph.name} expects {w}x{h} with {c} ([{fmt_shape(shape)}]); nothing was resized",
            hint="pass --resize to resize it (bilinear) and convert its colours",
        )
    array = read_image(path, c, h, w).astype(np.float32) / 255.0
    tensor = torch.from_numpy(array[None] if c == 1 else array.transpose(2, 0, 1).copy())
    changes = [f"resized from {size[0]}x{size[1]}"] if size != (w, h) else []
    if channels != c:
        changes.append(f"{('gray', 'colour')[channels == 3]} made {('gray', 'colour')[c == 3]}")
    return tensor, ", ".join(changes) or None


__all__ = ["Loaded", "find_layer", "kernel_layer", "load", "map_layers", "read_input"]
