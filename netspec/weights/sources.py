"""Where weights come from: files and names, read into layers in the order they run.

A source is read into `SourceLayer`s: the tensors of a state dict grouped by their module
prefix (`layer1.0.conv1.weight` -> layer `layer1.0.conv1`, suffix `weight`), in execution order
where the source knows it (an ONNX graph, a traced module) and in the file's order otherwise
(a module's registration order, which is its execution order for torchvision's CNNs; the
mapper tolerates the local reorders a parameter of a parent module makes, see `mapper`).

Sources (`read_source`):
- `pretrained`, `pretrained:NAME`, `torchvision:MODEL[.NAME]`: published weights from torch's
  hub cache (`netspec.weights.pretrained`);
- a `.pth`/`.pt`/`.bin` state dict, read with `torch.load(weights_only=True)`: tensors only,
  never code (a checkpoint wrapping the state dict in `state_dict` or `model` is unwrapped);
- a `.safetensors` file, or a training run's folder (its best, else last, weights);
- an `.onnx` model's initializers, node by node in graph order (`netspec.deploy.onnx_weights`);
- (library) an `nn.Module`, traced with forward hooks for its execution order.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError
from netspec.weights.pretrained import (
    EXTRA_LAYERS,
    TORCHVISION,
    Preprocessing,
    Weights,
    cached_file,
    lookup,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

IGNORED = ("num_batches_tracked",)
_ROLES = (
    "weight",
    "bias",
    "running_mean",
    "running_var",
)  # batch norm's step counter: no weight of the network's


@dataclass
class SourceLayer:
    """One parameterised layer of a source: its module name and tensors by torch suffix."""

    name: str
    tensors: dict[str, torch.Tensor]

    @property
    def category(self) -> str:
        """What it is, from its structure alone: batchnorm, conv, matrix, norm, vector, scale."""
        t = {k: v for k, v in self.tensors.items() if k not in IGNORED}
        if "running_mean" in t:
            return "batchnorm"
        if len(t) == 1 and not set(t) & {"weight", "bias"}:
            return "scale"
        weight = t.get("weight")
        if weight is None:
            return "other"
        if weight.dim() >= 3:
            return "conv"
        if weight.dim() == 2:
            return "matrix"
        return "norm" if "bias" in t else "vector"

    def describe(self) -> str:
        """Its tensors and shapes, weight first (safetensors keeps them sorted by name)."""
        keys = sorted(
            (k for k in self.tensors if k not in IGNORED),
            key=lambda k: _ROLES.index(k) if k in _ROLES else len(_ROLES),
        )
        return ", ".join(f"{k} [{', '.join(map(str, self.tensors[k].shape))}]" for k in keys)


@dataclass
class Source:
    """Weights read from somewhere, as layers in execution order.

    Attributes:
        origin: what the user named (`pretrained`, a path), for messages.
        layers: the parameterised layers, in order.
        file: the file read, when there is one.
        published: the published weights this is, for `pretrained` and `torchvision:` sources.
        extra: name prefixes of layers the source may hold beyond the spec's (unused, not an
            error): the twin's documented extras (GoogLeNet's auxiliary classifiers).
        order: how the layers were ordered: "file", "graph" (ONNX) or "trace" (a module).
        preprocessing: what the weights expect of the input, when known (published weights,
            a run folder that recorded it).
    """

    origin: str
    layers: list[SourceLayer]
    file: Path | None = None
    published: Weights | None = None
    extra: tuple[str, ...] = field(default=())
    order: str = "file"
    preprocessing: Preprocessing | None = None


def read_source(text: str, network: str = "", ids: list[str] | None = None) -> Source:
    """Read the weights named by `text` (see the module's docstring).

    Args:
        text: a path, or `pretrained[:NAME]`, or `torchvision:MODEL[.NAME]`.
        network: the spec's name, for `pretrained` (its zoo twin).
        ids: the spec's node ids in execution order. A safetensors file stores its tensors
            sorted by name, losing their order: its layers named like the spec's nodes
            (netspec's own checkpoints) are put in the spec's order, the others in natural
            name order (`layer1.2` before `layer1.10`).

    Raises:
        NetspecError: for a missing, truncated or damaged file, a pickle that needs code, or
            weights not in the hub cache.
    """
    if text == "pretrained" or text.startswith(("pretrained:", TORCHVISION)):
        published = lookup(text, network)
        file = cached_file(published)
        source = _state_dict_source(text, file, _torch_load(file))
        source.published = published
        source.preprocessing = published.preprocessing
        source.extra = EXTRA_LAYERS.get(published.model, ())
        return source
    from netspec.io import checkpoint_file

    file = checkpoint_file(text)
    suffix = file.suffix.lower()
    if suffix == ".onnx":
        import torch

        from netspec.deploy.onnx_weights import read_onnx_layers

        layers = [
            SourceLayer(name, {k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
            for name, tensors in read_onnx_layers(file).items()
        ]
        return Source(text, layers, file, order="graph")
    if suffix == ".safetensors":
        source = _state_dict_source(text, file, _safetensors(file))
        source.layers.sort(key=_sorted_order(ids or []))
        source.order = "names"
        source.preprocessing = run_preprocessing(file.parent)
        return source
    return _state_dict_source(text, file, _torch_load(file))


def from_state_dict(state: Mapping[str, Any], origin: str = "state dict") -> Source:
    """A source from an in-memory state dict (its order is the mapping's)."""
    return _state_dict_source(origin, None, state)


def from_module(module: nn.Module, input_shape: tuple[int, ...], origin: str = "") -> Source:
    """A source from a module, its layers in the order one forward pass runs them (forward
    hooks on a zero input of `input_shape`, batch of 2, eval mode); layers the pass does not
    reach (a training-only auxiliary head) follow in registration order."""
    import torch

    ran: list[str] = []
    hooks = []
    for name, sub in module.named_modules():
        own = [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]
        if own:
            hooks.append(sub.register_forward_hook(lambda m, i, o, name=name: ran.append(name)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(2, *input_shape))
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    grouped = _grouped(module.state_dict())
    order = list(dict.fromkeys([n for n in ran if n in grouped] + list(grouped)))
    layers = [SourceLayer(n, grouped[n]) for n in order]
    return Source(origin or type(module).__name__, layers, order="trace")


def _state_dict_source(origin: str, file: Path | None, state: Any) -> Source:
    where = file or origin
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            inner = state.get(wrapper)
            if isinstance(inner, Mapping) and _tensors(inner):
                state = inner
                break
    if not isinstance(state, Mapping) or not _tensors(state):
        raise NetspecError(
            f"{where} holds no state dict (a mapping of names to tensors)"
            + (f": it holds a {type(state).__name__}" if not isinstance(state, Mapping) else ""),
            hint="save the weights with torch.save(model.state_dict(), FILE)",
        )
    grouped = _grouped(state)
    return Source(origin, [SourceLayer(n, t) for n, t in grouped.items()], file)


def _tensors(state: Mapping[str, Any]) -> bool:
    import torch

    return any(isinstance(v, torch.Tensor) for v in state.values())


def _grouped(state: Mapping[str, Any]) -> OrderedDict[str, dict[str, torch.Tensor]]:
    """Tensors grouped by module prefix, in first-appearance order."""
    import torch

    groups: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        prefix, _, suffix = key.rpartition(".")
        groups.setdefault(prefix, {})[suffix] = value
    return groups


def _sorted_order(ids: list[str]) -> Any:
    position = {node: i for i, node in enumerate(ids)}

    def key(layer: SourceLayer) -> tuple[int, int, list[Any]]:
        if layer.name in position:
            return (0, position[layer.name], [])
        parts = re.split(r"(\d+)", layer.name)
        return (1, 0, [(int(p), "") if p.isdigit() else (-1, p) for p in parts])

    return key


def run_preprocessing(folder: Path) -> Preprocessing | None:
    """The preprocessing a training run recorded in its settings.json (it fine-tuned
    published weights), or None."""
    import json

    try:
        saved = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Preprocessing.from_json(saved.get("preprocessing")) if isinstance(saved, dict) else None


def _torch_load(file: Path) -> Any:
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only load failed" in str(err).lower() or "unsupported global" in str(err):
            raise NetspecError(
                f"{file} is a pickle that needs code to load, which netspec never runs",
                notes=[first[:300]] if first else [],
                hint="save only the tensors: torch.save(model.state_dict(), FILE), "
                "or convert it to .safetensors",
            ) from None
        raise _damaged(file, err) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError) as err:
        raise _damaged(file, err) from None


def _safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _damaged(file, err) from None


def _damaged(file: Path, err: BaseException) -> NetspecError:
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    return NetspecError(
        f"cannot read the weights in {file}: {text}",
        hint="the file is truncated or damaged, or not a weights file "
        "(.pth/.pt state dict, .safetensors, .onnx, or a run folder)",
    )
