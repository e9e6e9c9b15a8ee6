"""Targets of the tasks other than single-label classes: multi-hot labels and float values.

`netspec.train.data` reads a source's examples; what a label must look like depends on the
task (`netspec.train.tasks`), and the checks for the two float-valued kinds live here:

- **multilabel**: ``y`` of shape ``[N, K]`` holding only 0 and 1 (multi-hot; ``[N]`` when
  K = 1, a binary task), or ``[N]`` text entries listing each example's labels by id,
  ``"0,2"`` (an empty text: no label).
- **regression**: ``y`` of shape ``[N, K]`` (``[N]`` when K = 1) of finite numbers.

Both come back as float32 ``[N, K]``. Nothing here imports torch.
"""

from __future__ import annotations

import numpy as np

from netspec.errors import NetspecError

TARGET_TASKS = ("multilabel", "regression")


def check_targets(origin: str, y: np.ndarray, n: int, task: str, outputs: int) -> np.ndarray:
    """The targets of `n` examples for `task`, checked and shaped ``[n, outputs]`` float32.

    Raises:
        NetspecError: targets of the wrong shape or kind, multi-hot values other than 0/1,
            label ids outside [0, outputs), NaN or infinite values.
    """
    if y.dtype.kind in "US":
        if task != "multilabel":
            raise NetspecError(
                f"data from {origin} has text labels; a {task} task takes numbers",
                hint="regression targets are float arrays [N] or [N, K]",
            )
        return _label_lists(origin, y, n, outputs)
    if y.dtype.kind not in "biuf":
        raise NetspecError(
            f"data from {origin} has {y.dtype} targets; expected numbers for a {task} task"
        )
    values = y.reshape(-1, 1) if y.ndim == 1 else y
    want = f"[{n}, {outputs}]" + (f" or [{n}]" if outputs == 1 else "")
    if values.ndim != 2 or values.shape[1] != outputs:
        hint = (
            "one class id per example trains a classifier: drop `task = multilabel` and end in "
            "SOFTMAX, or save multi-hot labels (one 0/1 column per output)"
            if task == "multilabel" and y.ndim == 1
            else f"the spec's output has {outputs} value(s) per example"
        )
        raise NetspecError(
            f"data from {origin} has {task} targets of shape {list(y.shape)}; expected {want}",
            hint=hint,
        )
    if len(values) != n:
        raise NetspecError(f"data from {origin} has {n} examples but {len(values)} targets")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NetspecError(
            f"data from {origin} has {bad} NaN or infinite target value(s)",
            hint="drop those examples or fill in their targets",
        )
    if task == "multilabel":
        _check_multi_hot(origin, values)
    return values.astype(np.float32)


def _check_multi_hot(origin: str, values: np.ndarray) -> None:
    bad = (values != 0) & (values != 1)
    if bad.any():
        shown = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:6].tolist())
        raise NetspecError(
            f"data from {origin} has multi-hot labels with values {shown} "
            f"({int(bad.sum())} entries); a multi-hot label is 0 or 1",
            hint="for soft or float targets declare `task = regression`",
        )


def _label_lists(origin: str, y: np.ndarray, n: int, outputs: int) -> np.ndarray:
    """Text entries like ``"0,2"`` (ids separated by commas or spaces) to multi-hot rows."""
    if y.ndim != 1 or len(y) != n:
        raise NetspecError(
            f"data from {origin} has label lists of shape {list(y.shape)}; expected [{n}] texts"
        )
    out = np.zeros((n, outputs), np.float32)
    for i, text in enumerate(y.tolist()):
        text = text.decode() if isinstance(text, bytes) else str(text)
        for item in text.replace(",", " ").split():
            if not item.isdigit() or int(item) >= outputs:
                raise NetspecError(
                    f"data from {origin}: example {i} lists the label {item!r}; "
                    f"expected ids in [0, {outputs - 1}] separated by commas",
                    hint='a label list reads like "0,2" (an empty text: no label)',
                )
            out[i, int(item)] = 1.0
    return out


def digits_targets(variant: str, digits: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The built-in variants of `digits`: ``multilabel`` (even, greater than 4, multiple of
    3: three 0/1 labels per image) and ``regression`` (the digit's value as a float)."""
    if variant == "multilabel":
        labels = np.stack([digits % 2 == 0, digits > 4, digits % 3 == 0], axis=1)
        return labels.astype(np.float32), ["even", "greater than 4", "multiple of 3"]
    return digits.astype(np.float32).reshape(-1, 1), ["value"]
