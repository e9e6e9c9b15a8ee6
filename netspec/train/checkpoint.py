"""Checkpoints: model weights as safetensors, the resumable training state via torch.save.

Every file is written atomically through `netspec.io.atomic_write`: a run killed at any
instant (even `kill -9`) leaves each file either whole and old or whole and new, never partial.

Weights files hold the model's `state_dict` with its keys as is (`layer2.basic1.conv1.weight`),
so any safetensors reader can use them. The training state (`last.state.pt`) holds the
optimizer, the scheduler, the history and a copy of the weights of the same epoch: resuming
reads that one file, so a kill between writing two files can never pair the weights of one
epoch with the optimizer state of another.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec.errors import NetspecError
from netspec.io import CHECKPOINT_NAMES, atomic_write, checkpoint_file, clean_stale_temps

BEST, WEIGHTS = CHECKPOINT_NAMES  # best.safetensors, last.safetensors
STATE = "last.state.pt"


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    atomic_write(path, text)


def remove_partial_files(folder: Path) -> None:
    """Delete temporary files a killed run left behind (they were never moved into place)."""
    clean_stale_temps(Path(folder), older_than_s=0)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict as standalone, contiguous CPU tensors (safetensors wants that)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_weights(path: Path, tensors: Mapping[str, torch.Tensor], epoch: int | None = None) -> None:
    """Atomically write a state_dict as safetensors, recording the epoch in its metadata."""
    from safetensors.torch import save

    metadata = {"format": "pt", "epoch": str(epoch)} if epoch is not None else {"format": "pt"}
    blob = save(dict(tensors), metadata=metadata)
    atomic_write(path, blob)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, or a run folder's best (else last) weights.

    Raises:
        NetspecError: when the file is missing or is not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = weights_file(path)
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise NetspecError(f"cannot read {file} as safetensors weights: {err}") from None


def weights_file(path: str | Path) -> Path:
    """`path` itself, or for a run folder its best.safetensors (last.safetensors otherwise)."""
    return checkpoint_file(path)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically write the resumable training state."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Read what `save_state` wrote (tensors only, no arbitrary objects)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NetspecError(
            f"cannot read the training state {path}: {first[:300]}",
            hint="it is damaged, or not a file `netspec train` wrote",
        ) from None
    if not isinstance(state, dict):
        raise NetspecError(
            f"cannot read the training state {path}: it holds a {type(state).__name__}, not a dict",
            hint="it is damaged, or not a file `netspec train` wrote",
        )
    return state


@dataclass
class InitReport:
    """What `load_matching` did with each tensor, by state_dict key."""

    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # in the checkpoint, not in the model


def load_matching(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> InitReport:
    """Copy every checkpoint tensor whose key and shape match the model's (transfer learning).

    Args:
        model: the freshly built model; tensors without a match keep their initialization.
        weights: a state_dict, e.g. from `load_weights`.

    Returns:
        Which keys were loaded, which are new, which were skipped for a shape mismatch
        (with the checkpoint's and the model's shapes), and which went unused.
    """
    report = InitReport()
    own = model.state_dict()
    matched = {}
    for key, tensor in own.items():
        if key not in weights:
            report.new.append(key)
        elif tuple(weights[key].shape) != tuple(tensor.shape):
            report.skipped.append((key, tuple(weights[key].shape), tuple(tensor.shape)))
        else:
            matched[key] = weights[key]
            report.loaded.append(key)
    report.unused = [k for k in weights if k not in own]
    model.load_state_dict(matched, strict=False)
    return report


def load_exact(model: nn.Module, weights: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load weights that must fit the model exactly (evaluation), naming every mismatch.

    Raises:
        NetspecError: when a key is missing, unexpected, or of another shape.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [
        f"{k}: checkpoint {list(weights[k].shape)}, model {list(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or extra or shapes:
        notes = (
            [f"missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"]
            if missing
            else []
        )
        notes += (
            [f"unexpected: {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}"]
            if extra
            else []
        )
        notes += shapes[:8]
        raise NetspecError(
            f"the weights in {origin} do not fit this network",
            notes=notes,
            hint="evaluate with the spec (and --set values) the weights were trained with",
        )
    model.load_state_dict(dict(weights))
