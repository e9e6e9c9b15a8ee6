"""Running an ONNX model file on images and .npy arrays (`netspec run`): the inputs read as the
model takes them, one batch run in onnxruntime, and the class names it knows.

    result = predict("m.onnx", ["cat.png", "batch.npy"])
    result.outputs        # [N, classes] (or a per-pixel map), one row per input
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec import io
from netspec.deploy.runtime import open_session, provider_line
from netspec.deploy.weights import CLASSES_KEY, model_preprocessing
from netspec.errors import NetspecError
from netspec.layers import fmt_shape

LABELS_MAX_BYTES = 16 << 20
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Predictions:
    """A model's outputs for a batch of inputs.

    Attributes:
        outputs: the main output, one row per input.
        names: a name per row (`x.npy[3]` for the rows of a batch file).
        provider: which onnxruntime provider ran, and why the better ones did not.
        per_pixel: the model classifies each pixel (`outputs` is `[N, classes, H, W]`).
        kind: what the model says it outputs (`probabilities`, `scores`), if it says.
        labels: class names (the labels file's, else those the model carries), if known.
        notes: what was converted on the way (channels-last arrays).
    """

    outputs: np.ndarray
    names: list[str]
    provider: str
    per_pixel: bool
    kind: str | None
    labels: list[str] | None
    notes: list[str] = field(default_factory=list)


def predict(
    model: str | Path, inputs: list[str], *, provider: str = "auto", labels: str | None = None
) -> Predictions:
    """Run `model` on image and .npy files as one batch.

    Images are converted to the model's channels (gray or RGB), resized to its height and width
    and scaled to [0, 1], as in training. A .npy file holds one example or a batch of them.

    Raises:
        NetspecError: no inputs, unreadable ones, a provider that does not work here, a model
            that fails on them or outputs NaN, or a labels file naming another count of classes.
    """
    if not inputs:
        raise NetspecError(
            "no inputs", hint=f"netspec run {model} --input image.png [more.png ...]"
        )
    session = open_session(model, provider)
    notes: list[str] = []
    prep = model_preprocessing(session.metadata)
    resize = prep.resize_for(session.example_shape) if prep is not None else None
    batch, names = read_inputs(
        inputs, session.example_shape, "int" in session.input_type, notes, resize
    )
    if prep is not None and batch.ndim == 4:  # what the model's weights were trained on
        batch = prep.apply(batch).astype(batch.dtype)
        notes.append(f"preprocessing (from the model): {prep.describe()}")
    try:
        out = session.run(batch)
    except Exception as err:  # onnxruntime's errors have no common base class
        raise NetspecError(
            f"{model} failed on these inputs: {str(err).strip().splitlines()[0]}"
        ) from None
    bad = [n for n, row in zip(names, out, strict=True) if not np.isfinite(row).all()]
    if bad:
        raise NetspecError(
            f"{model} outputs NaN or infinite values for {', '.join(bad[:4])}"
            + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""),
            hint="its weights may hold NaN or infinite values (did the training diverge?)",
        )
    per_pixel = session.metadata.get("netspec.per_pixel") == "true" and out.ndim >= 3
    if per_pixel:
        names_of = read_labels(labels, out.shape[1]) if labels else None
    elif labels:
        names_of = read_labels(labels, out.shape[-1])
    else:
        names_of = metadata_classes(session.metadata, out.shape[-1]) if out.ndim == 2 else None
    return Predictions(
        out,
        names,
        provider_line(session),
        per_pixel,
        session.metadata.get("netspec.output"),
        names_of,
        notes,
    )


def read_inputs(
    files: list[str],
    shape: tuple[int, ...],
    tokens: bool = False,
    notes: list[str] | None = None,
    resize: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """One batch from images and .npy files for a model taking `[batch, *shape]`; with
    `resize` (the model's weights' preprocessing), images are scaled to that short side and
    their centre cut out (`netspec.io.read_image`); arrays are taken as they are.

    Returns the batch and a name per row (`x.npy[3]` for the rows of a batch file); what was
    converted on the way (channels-last arrays) is added to `notes`.

    Raises:
        NetspecError: a missing or unreadable file, or an array of the wrong shape (both shapes
            in the message).
    """
    rows: list[np.ndarray] = []
    names: list[str] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise NetspecError(
                f"no input file {name}" + (" (it is a folder)" if path.is_dir() else "")
            )
        if path.suffix.lower() == ".npy":
            array = _read_npy(path, shape, tokens, notes)
            rows.extend(array)
            names.extend([name] if len(array) == 1 else [f"{name}[{i}]" for i in range(len(array))])
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            rows.append(read_image(path, shape, resize))
            names.append(name)
        else:
            raise NetspecError(
                f"cannot read {name}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a .npy array"
            )
    return np.stack(rows), names


def _read_npy(
    path: Path, shape: tuple[int, ...], tokens: bool, notes: list[str] | None
) -> np.ndarray:
    """A .npy file as a batch of model inputs: loaded, fitted to `shape`, its values checked."""
    array = _fit_to_shape(_load_npy(path), path, shape, notes)
    return _token_ids(array, path) if tokens else _float_values(array, path)


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise NetspecError(
            f"cannot read {path} as a .npy array: {err or 'the file is empty'}"
        ) from None
    if not isinstance(array, np.ndarray):  # np.load opens a zip archive (.npz) as well
        array.close()
        raise NetspecError(
            f"{path} is an .npz archive, not a .npy array",
            hint="save one array with np.save(path, x)",
        )
    return array


def _fit_to_shape(
    array: np.ndarray, path: Path, shape: tuple[int, ...], notes: list[str] | None
) -> np.ndarray:
    """`array` as `[N, *shape]`: one example gains a batch axis, gray images their channel
    axis, channels-last arrays are moved to channels-first (with a note)."""
    if array.shape == shape:
        array = array[None]
    elif (
        len(shape) == 3 and shape[0] == 1 and array.shape[-2:] == shape[1:] and array.ndim in (2, 3)
    ):
        array = array.reshape(-1, *shape)  # gray images without their channel axis
    elif len(shape) >= 2 and array.shape[-len(shape) :] == (*shape[1:], shape[0]):
        was = array.shape
        array = np.moveaxis(array if array.ndim > len(shape) else array[None], -1, 1)
        if notes is not None:
            notes.append(
                f"{path} is channels-last [{fmt_shape(was)}]; converted to channels-first "
                f"[{fmt_shape(array.shape)}]"
            )
    if array.shape[1:] != shape or array.ndim != len(shape) + 1:
        raise NetspecError(
            f"{path} holds an array of shape [{fmt_shape(array.shape)}]; the model takes [{fmt_shape(shape)}] "
            f"(one example) or [N, {fmt_shape(shape)}] (a batch)",
            hint="arrays are channels-first or channels-last, without or with a batch axis",
        )
    if len(array) == 0:
        raise NetspecError(f"{path} holds no examples (shape [{fmt_shape(array.shape)}])")
    if np.iscomplexobj(array):
        raise NetspecError(
            f"{path} holds complex numbers ({array.dtype}); the model takes real values",
            hint="pass the real part (x.real) or the magnitude (abs(x)) if that is what you mean",
        )
    return array


def _token_ids(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        raise NetspecError(f"{path} holds {array.dtype} values; the model takes integer token ids")
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise NetspecError(
            f"{path} holds token ids in [{low}, {high}]; token ids are never negative",
            hint="onnxruntime would read -1 as the vocabulary's last id, silently",
        )
    return array.astype(np.int64)


def _float_values(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise NetspecError(f"{path} holds {array.dtype} values; the model takes numbers")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NetspecError(
            f"{path} holds {bad} NaN or infinite value(s) (or values past float32's range)",
            hint="clean the input first: the model's scores would be NaN",
        )
    return values


def read_image(path: Path, shape: tuple[int, ...], resize: int | None = None) -> np.ndarray:
    """An image as the model's `[C, H, W]` float32 input in [0, 1] (gray for C=1, RGB for C=3);
    `resize`: scaled to that short side, then its centre cut out."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise NetspecError(
            f"{path} is an image, but the model takes [{fmt_shape(shape)}], not [1 or 3, H, W]",
            hint="give it .npy arrays instead",
        )
    channels, height, width = shape
    array = io.read_image(path, channels, height, width, resize).astype(np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_labels(path: str, classes: int) -> list[str]:
    text = io.read_text(path, "labels file", LABELS_MAX_BYTES)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != classes:
        raise NetspecError(f"{path} names {len(names)} classes; the model has {classes}")
    return names


def metadata_classes(metadata: dict[str, str], classes: int) -> list[str] | None:
    """The class names an exported model carries (`netspec.classes`), when they fit."""
    try:
        names = json.loads(metadata.get(CLASSES_KEY, "null"))
    except ValueError:
        return None
    if isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names):
        return names
    return None


__all__ = ["Predictions", "predict", "read_image", "read_inputs", "read_labels"]
