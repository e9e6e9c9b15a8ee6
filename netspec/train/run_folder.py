"""A training run's folder, read back: its settings.json and spec copy, checked before use.

A run folder may be damaged (a half-copied folder, a hand-edited file, another program's
files): each reader here names the file and what is wrong with it, never a traceback.
Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError
from netspec.io import SPEC_MAX_BYTES, read_text

SPEC_COPY, SETTINGS = "spec.ns", "settings.json"
SETTINGS_MAX_BYTES = 16 << 20


def read_settings(folder: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's settings.json as a dict holding at least `required` keys.

    Raises:
        NetspecError: the file is unreadable, not JSON, not an object, or lacks a key.
    """
    path = Path(folder) / SETTINGS
    text = read_text(path, "run settings file", SETTINGS_MAX_BYTES)
    try:
        saved = json.loads(text)
    except ValueError as err:
        raise NetspecError(
            f"{path} is damaged: it is not JSON ({err})",
            hint="it is written by `netspec train`; restore it or start a new run",
        ) from None
    if not isinstance(saved, dict):
        raise NetspecError(f"{path} is damaged: it holds a {type(saved).__name__}, not an object")
    missing = [k for k in required if k not in saved]
    if missing:
        raise NetspecError(
            f"{path} is damaged: it has no {', '.join(f'`{k}`' for k in missing)}",
            hint="it is written by `netspec train`; restore it or start a new run",
        )
    for key in ("bindings", "settings", "data"):
        if key in saved and not isinstance(saved[key], dict):
            raise NetspecError(f"{path} is damaged: `{key}` is not an object")
    scalars = (str, int, float, bool)
    if any(not isinstance(v, scalars) for v in saved.get("bindings", {}).values()):
        raise NetspecError(f"{path} is damaged: `bindings` holds values other than numbers or text")
    return saved


def read_spec_copy(folder: Path) -> str:
    """The run's own copy of its spec (UTF-8 text, a regular file of at most 1 MiB)."""
    return read_text(Path(folder) / SPEC_COPY, "run's spec copy", SPEC_MAX_BYTES)


def class_names(weights: str | Path, classes: int) -> list[str] | None:
    """The class names of the run that `weights` (a run folder, or a file inside one) came
    from, when its settings.json records `classes` of them; None otherwise."""
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    if not (folder / SETTINGS).is_file():
        return None
    try:
        names = read_settings(folder).get("data", {}).get("classes")
    except NetspecError:
        return None
    if isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names):
        return names
    return None
