"""Training data: read a user's data source into in-memory tensors shaped for the spec's input.

A source is the string a user types after ``--data``:

- ``digits``: scikit-learn's bundled 8x8 handwritten digits, resized to fit the spec's input;
  ``digits:multilabel`` (even, greater than 4, multiple of 3) and ``digits:regression`` (the
  digit's value) are the same images with the targets of the other tasks.
- ``synthetic`` or ``synthetic:N``: seeded random data of the right shape (N=256 by default).
- ``npz:PATH``: a NumPy archive with ``x``/``y`` (or ``x_train``/``y_train``/``x_test``/``y_test``:
  the ``_test`` pair is the test set).
- ``idx:PATH``: MNIST's raw IDX files, a directory or the images file itself, ``.gz`` or not
  (``t10k`` files beside the training files: the test set).
- ``folder:PATH``: one sub-folder of images per class (``train/`` beside ``val/``: the
  validation set; beside ``test/``: the test set).

The labels depend on the task: class ids (single-label), multi-hot rows or label lists
(multilabel) and float values (regression), see `netspec.train.targets`.

A spec with a per-pixel output (``classes K per pixel``, a map ``[K, H, W]``) takes per-pixel
labels: ``y`` of shape ``[N, H, W]`` (the output map's size), each value a class in [0, K) or
`IGNORE` (255, Pascal VOC's "void": the pixel counts in no loss and no metric). Only ``npz``
and ``synthetic`` hold such labels.

Data that does not fit the spec's input is refused here, before any training starts, with
a `NetspecError` naming both shapes. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from netspec.errors import NetspecError, did_you_mean
from netspec.io import fmt_bytes, read_image, read_input
from netspec.train.targets import TARGET_TASKS, check_targets, digits_targets

SOURCES = ("digits", "synthetic", "npz", "idx", "folder")
_USAGE = (
    "known sources: digits[:multilabel|:regression], synthetic[:N], npz:PATH, idx:PATH, folder:PATH"
)
_NEEDS_PATH = ("npz", "idx", "folder")
_SYNTHETIC_SIZE = 256
_SYNTHETIC_MAX_BYTES = 4 << 30  # 4 GiB of generated examples
_IDX_MAX_BYTES = 4 << 30  # an IDX file, unpacked (MNIST's largest is 45 MiB)
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# IDX type codes (third byte of the magic number) to big-endian numpy dtypes.
# A per-pixel label that marks a pixel to leave out of the loss and the metrics (VOC's void).
IGNORE = 255
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Dataset:
    """Examples held in memory.

    Attributes:
        x: float32 ``(N, *input_shape)`` channels-first with values roughly in [0, 1], or
            int64 token ids ``(N, L)`` for text specs.
        y: int64 class ids ``(N,)``, or ``(N, H, W)`` per pixel for a dense output (values in
            [0, classes) or `IGNORE`); float32 ``(N, K)`` for multilabel (multi-hot) and
            regression targets.
        class_names: one name per class, indexed by class id.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def per_pixel(self) -> bool:
        """Whether the labels are a class per pixel (a dense output's)."""
        return self.y.dim() > 1 and not self.y.is_floating_point()


@dataclass(frozen=True)
class DataSplit:
    """The training set, the validation set and the test set (when there is one), sharing
    class names."""

    train: Dataset
    val: Dataset
    notes: tuple[str, ...] = ()  # what was converted on the way (channels-last -> first)
    test: Dataset | None = None  # never looked at in training: scored once, with the best weights


@dataclass(frozen=True)
class _Target:
    """What the spec expects: its input shape (channels-first), class count and vocabulary,
    and for a dense output the size of its map (`label_map`: one label per position)."""

    shape: tuple[int, ...]
    classes: int
    vocab: int | None = None
    label_map: tuple[int, ...] | None = None
    task: str = "classify"  # multilabel and regression: `classes` counts the outputs
    resize: int | None = None  # image files: short side scaled to this, then centre-cropped

    @property
    def kind(self) -> str:
        return {1: "tokens", 2: "signal", 3: "image"}[len(self.shape)]

    @property
    def noun(self) -> str:
        return {"tokens": "sequences", "signal": "signals", "image": "images"}[self.kind]


@dataclass(frozen=True)
class _Part:
    """Examples in a source's own layout, before conversion to tensors."""

    x: np.ndarray
    y: np.ndarray
    note: str | None = None  # what was converted, said to the user


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


@dataclass(frozen=True)
class _Raw:
    """A source as read: its training part, an optional held-out part, and the conversion.

    `fit` turns a subset of `x` into the final tensor; it is applied after the split so that
    an expensive conversion (digits resized to 224x224) only touches the examples kept.
    """

    train: _Part
    test: _Part | None
    class_names: list[str]
    fit: Callable[[np.ndarray], torch.Tensor] = field(default=_as_tensor)
    held: str = "test"  # what `test` is: the test set, or (a folder's val/) the validation set

    def take(self, part: _Part, index: np.ndarray | None = None) -> Dataset:
        x, y = (part.x, part.y) if index is None else (part.x[index], part.y[index])
        labels = y.astype(np.float32 if y.dtype == np.float32 else np.int64)
        return Dataset(self.fit(x), torch.from_numpy(labels), self.class_names)

    @property
    def val_part(self) -> _Part | None:
        return self.test if self.held == "val" else None

    @property
    def test_part(self) -> _Part | None:
        return self.test if self.held == "test" else None


def load_data(
    source: str,
    input_shape: tuple[int, ...],
    classes: int,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    val_source: str | None = None,
    limit: int | None = None,
    vocab: int | None = None,
    label_map: tuple[int, ...] | None = None,
    task: str = "classify",
    test_source: str | None = None,
    resize: int | None = None,
) -> DataSplit:
    """Load a data source and split it into training, validation and test sets.

    The validation set is, in order of preference: all of `val_source` (its own held-out part
    when it has one, e.g. ``x_test`` or ``t10k``), the source's own validation part (a
    folder's ``val/``), or a seeded stratified `val_split` fraction of each class (per-pixel
    labels, multilabel and regression targets: a seeded `val_split` fraction of the examples).
    The test set is all of `test_source` (its held-out part when it has one), else the
    source's own held-out part (``x_test``/``y_test``, ``t10k``, a folder's ``test/``), else
    none.

    Args:
        source: what the user typed after ``--data``, e.g. ``digits`` or ``npz:data.npz``.
        input_shape: the spec's input shape, channels-first: ``(C, H, W)`` for images,
            ``(C, L)`` for 1-D signals, ``(L,)`` for token sequences.
        classes: the number of classes the spec declares.
        val_split: fraction of each class held out for validation, in [0, 1).
        seed: seed for the split, the training order and synthetic data.
        val_source: a second source used as the validation set instead of a split.
        limit: keep at most this many training examples (after the split).
        vocab: vocabulary size of a token input; token ids must lie in [0, vocab).
        label_map: for a dense output ``[classes, H, W]``, its map size ``(H, W)``: the labels
            are then a class per pixel, ``[N, H, W]``; None for one class per example.
        task: ``classify`` (class ids), ``multilabel`` or ``regression`` (float targets
            ``[N, classes]``, see `netspec.train.targets`); a dense output is ``classify``
            with a `label_map`.
        test_source: a source used as the test set.
        resize: image files (``folder:``) are scaled to this short side and their centre
            ``H x W`` cut out, as pretrained weights expect (`Preprocessing.resize_for`);
            None: resized to ``H x W`` directly. Arrays are always resized to the input.

    Returns:
        The training and validation sets; the training set is in a seeded shuffled order.

    Raises:
        NetspecError: for an unknown source, a missing or malformed file, data that does not
            fit `input_shape`, labels outside [0, classes) (per pixel: besides `IGNORE`),
            or labels of the wrong kind (per example vs per pixel).
    """
    target = _make_target(input_shape, classes, vocab, label_map, task, resize)
    _check_options(val_split, limit)
    raw = _read_source(source, target, seed)
    rng = np.random.default_rng(seed)
    others: list[_Raw] = []
    if val_source is not None:
        held = _read_source(val_source, target, seed + 1)
        _check_same_classes(raw.class_names, held.class_names, source, val_source)
        others.append(held)
        val = held.take(held.test or held.train)
        train_index = rng.permutation(len(raw.train.y))
    elif raw.val_part is not None:
        val = raw.take(raw.val_part)
        train_index = rng.permutation(len(raw.train.y))
    else:
        single = target.label_map is None and target.task == "classify"
        split = stratified_split if single else random_split
        train_index, val_index = split(raw.train.y, val_split, rng)
        val = raw.take(raw.train, val_index)
    test = None
    if test_source is not None:
        tested = _read_source(test_source, target, seed + 2)
        _check_same_classes(raw.class_names, tested.class_names, source, test_source, "test")
        others.append(tested)
        test = tested.take(tested.test or tested.train)
    elif raw.test_part is not None:
        test = raw.take(raw.test_part)
    if limit is not None:
        train_index = train_index[:limit]
    if len(train_index) == 0:
        raise NetspecError(
            f"no training examples in {source}"
            + (
                f" (it holds {len(raw.train.y)}, all held out for validation)"
                if len(raw.train.y)
                else ""
            ),
            hint="training needs data: check the file, or lower --val-split",
        )
    parts = [raw.train, raw.test, *(p for r in others for p in (r.train, r.test))]
    notes = [p.note for p in parts if p is not None and p.note]
    train = raw.take(raw.train, train_index)
    if target.label_map is not None and not bool((train.y != IGNORE).any()):
        raise NetspecError(
            f"every training pixel from {source} is labelled {IGNORE} (ignored): nothing to learn"
        )
    if test is not None and target.task == "classify" and target.label_map is None:
        notes += _absent_classes(train, test)
    return DataSplit(train=train, val=val, notes=tuple(dict.fromkeys(notes)), test=test)


def _absent_classes(train: Dataset, test: Dataset) -> list[str]:
    """A notice when the test set holds classes the training set never shows."""
    absent = sorted(set(test.y.tolist()) - set(train.y.tolist()))
    if not absent:
        return []
    names = ", ".join(train.class_names[i] for i in absent[:8])
    count = int(sum((test.y == i).sum() for i in absent))
    return [
        f"the test set holds {len(absent)} class(es) absent from the training set ({names}): "
        f"its {count} example(s) of them cannot be classified right"
    ]


def stratified_split(
    y: np.ndarray, val_split: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `val_split` of each class, rounded, keeping at least one training example.

    Args:
        y: class ids, shape ``(N,)``.
        val_split: fraction of each class to hold out, in [0, 1).
        rng: the source of randomness; the same seed gives the same split.

    Returns:
        ``(train_index, val_index)``: training indices shuffled, validation indices sorted.
    """
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = min(round(len(members) * val_split), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    empty = np.zeros(0, dtype=np.int64)
    train_index = rng.permutation(np.concatenate(train or [empty]))
    return train_index, np.sort(np.concatenate(val or [empty]))


def random_split(
    y: np.ndarray, val_split: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `val_split` of the examples, rounded, keeping at least one training example
    (for per-pixel labels, which have no single class to stratify by); as `stratified_split`."""
    order = rng.permutation(len(y))
    n_val = min(round(len(y) * val_split), max(len(y) - 1, 0))
    return order[n_val:], np.sort(order[:n_val])


def _make_target(
    input_shape: tuple[int, ...],
    classes: int,
    vocab: int | None,
    label_map: tuple[int, ...] | None = None,
    task: str = "classify",
    resize: int | None = None,
) -> _Target:
    shape = tuple(int(d) for d in input_shape)
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise NetspecError(
            f"cannot load data for the input shape {list(shape)}",
            hint="expected [C, H, W] for images, [C, L] for 1-D signals or [L] for token ids",
        )
    if classes < 1:
        raise NetspecError(f"expected a positive number of classes. Received: classes={classes}")
    if label_map is not None and classes > IGNORE:
        raise NetspecError(
            f"training per-pixel labels takes at most {IGNORE} classes (the label {IGNORE} marks "
            f"a pixel to ignore). Received: classes={classes}"
        )
    label_map = None if label_map is None else tuple(label_map)
    return _Target(shape, classes, vocab, label_map, task, resize)


def _check_options(val_split: float, limit: int | None) -> None:
    if not 0.0 <= val_split < 1.0:
        raise NetspecError(
            f"expected a validation fraction in [0, 1). Received: val_split={val_split}"
        )
    if limit is not None and limit < 1:
        raise NetspecError(f"expected a positive example limit. Received: limit={limit}")


def _check_same_classes(
    names: list[str], val_names: list[str], source: str, val: str, what: str = "validation"
) -> None:
    if names != val_names:
        raise NetspecError(
            f"the {what} data {val} has different classes from the training data {source}",
            notes=[f"training classes: {names}", f"{what} classes: {val_names}"],
        )


# --- sources ---------------------------------------------------------------------------------


def _read_source(source: str, target: _Target, seed: int) -> _Raw:
    prefix, arg = _parse_source(source)
    if target.task in TARGET_TASKS and prefix not in ("digits", "npz"):
        raise NetspecError(
            f"`{source}` holds class labels, not {target.task} targets",
            hint=f"{target.task} targets come from npz:PATH (see docs/tasks.md) or "
            f"digits:{target.task}",
        )
    if prefix == "digits":
        return _read_digits(source, arg, target)
    if prefix == "synthetic":
        return _read_synthetic(source, arg, target, seed)
    if prefix == "npz":
        return _read_npz(source, _existing(arg, source), target)
    if prefix == "idx":
        return _read_idx_source(source, _existing(arg, source), target)
    return _read_folder(source, _existing(arg, source), target)


def _parse_source(source: str) -> tuple[str, str]:
    """Split ``prefix:arg``, refusing unknown prefixes with a "did you mean"."""
    head, _, arg = source.strip().partition(":")
    prefix = head.strip().lower()
    if prefix not in SOURCES:
        raise NetspecError(
            f"unknown data source `{head}` in {source!r}",
            hint=_prefix_hint(source) or did_you_mean(prefix, SOURCES) or _mnist_hint(prefix),
            notes=[_USAGE],
        )
    if prefix in _NEEDS_PATH and not arg.strip():
        raise NetspecError(f"the data source `{prefix}` needs a path: {prefix}:PATH")
    if prefix == "digits" and arg.strip() not in ("", *TARGET_TASKS):
        raise NetspecError(
            f"unknown variant of `digits` in {source!r}",
            hint=did_you_mean(arg.strip(), TARGET_TASKS)
            or "digits, digits:multilabel or digits:regression",
        )
    return prefix, arg.strip()


def _prefix_hint(source: str) -> str | None:
    """For a bare path that exists, suggest the prefix it probably needs."""
    path = Path(source).expanduser()
    if not path.exists():
        return None
    if path.suffix == ".npz":
        prefix = "npz"
    elif "idx" in path.name or (path.is_dir() and any("idx" in p.name for p in path.iterdir())):
        prefix = "idx"
    elif path.is_dir():
        prefix = "folder"
    else:
        return None
    return f"name the format of the data: `{prefix}:{source}`"


def _mnist_hint(prefix: str) -> str | None:
    if "mnist" not in prefix:
        return None
    return "netspec never downloads data: for MNIST, point idx:DIR at its IDX files"


def _existing(text: str, origin: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise NetspecError(
            f"data file not found: {text}",
            hint=f"check the path in `{origin}` (relative paths start from {Path.cwd()})",
        )
    return path


def _read_digits(origin: str, variant: str, target: _Target) -> _Raw:
    from sklearn.datasets import load_digits

    _refuse_dense(origin, target, "holds one label per image, not per pixel")
    if target.kind != "image":
        raise NetspecError(
            f"the `digits` data set holds images but the spec's input {list(target.shape)} "
            f"is not an image",
            hint="digits fits an input of shape [C, H, W], e.g. [1, 28, 28]",
        )
    task = variant or "classify"
    if task != target.task:
        shown = f"digits:{target.task}" if target.task in TARGET_TASKS else "digits"
        raise NetspecError(
            f"`{origin}` holds {_TARGET_WORDS[task]}, but the spec trains a {target.task} task",
            hint=f"use --data {shown}, or declare `train {{ task = {task} }}`",
        )
    outputs = {"classify": 10, "multilabel": 3, "regression": 1}[task]
    if target.classes != outputs:
        what = "classes" if task == "classify" else "outputs"
        raise NetspecError(
            f"the spec declares {target.classes} {what} but {origin} has {outputs}",
            hint=f"give the network's last layer {outputs} output(s)",
        )
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    if task == "classify":
        part, names = _Part(images, bunch.target.astype(np.int64)), [str(i) for i in range(10)]
    else:
        y, names = digits_targets(task, bunch.target)
        part = _Part(images, y)
    return _Raw(part, None, names, fit=lambda x: fit_image(_as_tensor(x), target.shape))


_TARGET_WORDS = {
    "classify": "one class per image",
    "multilabel": "three 0/1 labels per image (even, greater than 4, multiple of 3)",
    "regression": "each digit's value as a float target",
}


def fit_image(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize single-channel images to fit ``(C, H, W)``: scale, center-pad, repeat channels.

    The image is scaled by ``min(H, W) / side`` with bilinear interpolation (aspect kept),
    then padded with zeros to exactly ``H x W`` and its channel repeated ``C`` times.

    Args:
        images: float tensor ``(N, S, S)`` of square images.
        shape: the target ``(C, H, W)``.

    Returns:
        A contiguous float32 tensor ``(N, C, H, W)``.
    """
    channels, height, width = shape
    x = images.float().unsqueeze(1)
    side = min(height, width)
    if side != x.shape[-1]:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    top, left = (height - side) // 2, (width - side) // 2
    x = F.pad(x, (left, width - side - left, top, height - side - top))
    return x.repeat(1, channels, 1, 1).contiguous()


def _refuse_dense(origin: str, target: _Target, why: str) -> None:
    """A source without per-pixel labels cannot train a dense output: say so."""
    if target.label_map is not None:
        raise NetspecError(
            f"the spec's output is a class per pixel {_map_text(target)}, but `{origin}` {why}",
            hint=f"per-pixel labels come from npz:PATH with `y` of shape "
            f"[N, {', '.join(map(str, target.label_map))}], or synthetic[:N]",
        )


def _map_text(target: _Target) -> str:
    return "[" + ", ".join(map(str, (target.classes, *(target.label_map or ())))) + "]"


def _read_synthetic(origin: str, arg: str, target: _Target, seed: int) -> _Raw:
    n = _synthetic_size(arg, origin, target)
    rng = np.random.default_rng(seed)
    if target.label_map is not None:
        if target.kind == "tokens":
            _refuse_dense(origin, target, "makes per-pixel labels for images and signals only")
        return _synthetic_dense(n, target, rng)
    y = rng.permutation(np.arange(n) % target.classes)
    if target.kind == "tokens":
        x = _synthetic_tokens(y, target, rng)
    else:
        # A per-class template under noise, so that a smoke-test run can actually learn.
        templates = rng.random((target.classes, *target.shape), dtype=np.float32)
        noise = rng.random((n, *target.shape), dtype=np.float32)
        x = 0.5 * noise + 0.5 * templates[y]
    names = [str(i) for i in range(target.classes)]
    return _Raw(_Part(x, y), None, names)


def _synthetic_dense(n: int, target: _Target, rng: np.random.Generator) -> _Raw:
    """Per-pixel labels as coarse random blocks, each class a colour under noise: a dense
    smoke test that can learn (a 1x1 conv separates the colours)."""
    label_map = target.label_map or ()
    coarse = rng.integers(0, target.classes, size=(n, *(-(-d // 4) for d in label_map)))
    y = coarse
    for axis in range(1, coarse.ndim):  # upsample by 4, then cut to the map
        y = y.repeat(4, axis=axis)
    y = y[(slice(None), *(slice(0, d) for d in label_map))]
    colours = rng.random((target.classes, target.shape[0]), dtype=np.float32)
    spatial = target.shape[1:]
    pixels = _resize_nearest(y, spatial)  # labels at the input's size
    x = colours[pixels]  # [N, *spatial, C]
    x = np.moveaxis(x, -1, 1)
    x = 0.5 * x + 0.5 * rng.random(x.shape, dtype=np.float32)
    names = [str(i) for i in range(target.classes)]
    return _Raw(_Part(x.astype(np.float32), y.astype(np.int64)), None, names)


def _resize_nearest(y: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of label maps `(N, *map)` to `(N, *size)`."""
    index = [np.arange(out) * d // out for out, d in zip(size, y.shape[1:], strict=True)]
    return y[np.ix_(np.arange(len(y)), *index)]


def _synthetic_size(arg: str, origin: str, target: _Target) -> int:
    if not arg:
        return _SYNTHETIC_SIZE
    if not arg.isdigit() or int(arg) < 1:
        raise NetspecError(
            f"expected a positive example count in `synthetic:N`. Received: {origin!r}"
        )
    n = int(arg)
    per_example = math.prod(target.shape) * 8  # float32 noise plus the mixed copy
    if target.label_map is not None:  # int64 labels, at the map's and the input's size
        per_example += 8 * (math.prod(target.label_map) + math.prod(target.shape[1:]))
    if len(arg) > 18 or n * per_example > _SYNTHETIC_MAX_BYTES:
        most = _SYNTHETIC_MAX_BYTES // per_example
        raise NetspecError(
            f"`{origin}` asks for {n:,} examples of {list(target.shape)}, over netspec's "
            f"{fmt_bytes(_SYNTHETIC_MAX_BYTES)} for synthetic data",
            hint=f"at most synthetic:{most} for this input",
        )
    return n


def _synthetic_tokens(y: np.ndarray, target: _Target, rng: np.random.Generator) -> np.ndarray:
    if target.vocab is None or target.vocab < 1:
        raise NetspecError(
            "synthetic token data needs the vocabulary size of the spec's input",
            hint="pass vocab=... (the embedding's vocabulary size) to load_data",
        )
    x = rng.integers(0, target.vocab, size=(len(y), *target.shape), dtype=np.int64)
    # Plant a class marker token in about a third of the positions: learnable, still random.
    markers = np.arange(target.classes) % target.vocab
    planted = rng.random(x.shape) < 0.3
    return np.where(planted, markers[y][:, None], x)


# --- npz -----------------------------------------------------------------------------------


def _read_npz(origin: str, path: Path, target: _Target) -> _Raw:
    arrays = _load_npz_arrays(origin, path)
    if "x_train" in arrays and "y_train" in arrays:
        train = _checked_part(origin, arrays["x_train"], arrays["y_train"], target)
        test = None
        if "x_test" in arrays and "y_test" in arrays:
            test = _checked_part(origin, arrays["x_test"], arrays["y_test"], target)
    elif "x" in arrays and "y" in arrays:
        train, test = _checked_part(origin, arrays["x"], arrays["y"], target), None
    else:
        raise NetspecError(
            f"{path} has no arrays named `x` and `y`. Found: {sorted(arrays) or 'none'}",
            hint="save with np.savez(path, x=images, y=labels) "
            "(or x_train, y_train, x_test, y_test)",
        )
    return _Raw(train, test, _class_names(arrays.get("class_names"), target.classes))


def _load_npz_arrays(origin: str, path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        raise NetspecError(f"`{origin}` names a directory, not an .npz file")
    if not path.is_file():
        raise NetspecError(f"`{origin}` is not a regular file, so not an .npz archive")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise NetspecError(
                f"{path} holds a single array (a .npy file), not an .npz archive",
                hint="save with np.savez(path, x=images, y=labels)",
            )
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise NetspecError(
            f"cannot read {path} as an .npz archive: {err or 'the file is empty'}"
        ) from None


def _class_names(names: np.ndarray | None, classes: int) -> list[str]:
    if names is not None and names.ndim == 1 and len(names) == classes:
        return [str(n) for n in names.tolist()]
    return [str(i) for i in range(classes)]


# --- idx -----------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (MNIST's raw format), gzipped when its name ends in ``.gz``.

    The header is two zero bytes, a type code, the number of dimensions, then each
    dimension as a big-endian 32-bit integer; the data follows, big-endian.

    Args:
        path: the IDX file.

    Returns:
        The array in native byte order, shaped by the header's dimensions.

    Raises:
        NetspecError: when the file is not a well-formed IDX file.
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise NetspecError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'})"
        )
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise NetspecError(f"{path} is truncated: its IDX header is incomplete")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise NetspecError(
            f"{path} holds {len(data) - header} data bytes but its header {list(dims)} "
            f"needs {count * dtype.itemsize}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return read_input(path, "IDX file", _IDX_MAX_BYTES)
    if not path.is_file():
        read_input(path, "IDX file")  # raises: a folder, a pipe, a device
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read(_IDX_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise NetspecError(f"cannot read {path}: {err or 'the file is empty'}") from None
    if len(data) > _IDX_MAX_BYTES:
        raise NetspecError(
            f"{path} unpacks to more than {fmt_bytes(_IDX_MAX_BYTES)}, over netspec's limit"
        )
    return data


def _read_idx_source(origin: str, path: Path, target: _Target) -> _Raw:
    if path.is_dir():
        pairs = [_idx_pair(origin, path, "train", required=True)]
        pairs += [_idx_pair(origin, path, "t10k", required=False)]
    else:
        pairs = [(path, _labels_beside(origin, path))]
    parts = [_checked_part(origin, read_idx(x), read_idx(y), target) for x, y in pairs if x and y]
    names = [str(i) for i in range(target.classes)]
    return _Raw(parts[0], parts[1] if len(parts) > 1 else None, names)


def _idx_file(directory: Path, stem: str, what: str) -> Path | None:
    dims = 3 if what == "images" else 1
    for name in (f"{stem}-{what}-idx{dims}-ubyte", f"{stem}-{what}.idx{dims}-ubyte"):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_pair(
    origin: str, directory: Path, stem: str, *, required: bool
) -> tuple[Path, Path] | tuple[None, None]:
    images = _idx_file(directory, stem, "images")
    labels = _idx_file(directory, stem, "labels")
    if images and labels:
        return images, labels
    if required or images or labels:
        missing = f"{stem}-images-idx3-ubyte" if not images else f"{stem}-labels-idx1-ubyte"
        found = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))[:8]
        raise NetspecError(
            f"`{origin}` has no {missing} (or {missing}.gz) in {directory}",
            hint="point idx: at a directory holding MNIST's train-images-idx3-ubyte and "
            "train-labels-idx1-ubyte",
            notes=[f"found: {', '.join(found) or 'nothing'}"],
        )
    return None, None


def _labels_beside(origin: str, images: Path) -> Path:
    """The labels file next to an images file: ``images`` -> ``labels``, ``idx3`` -> ``idx1``."""
    name = images.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1")
    for candidate in (images.with_name(name), images.with_name(name + ".gz")):
        if candidate != images and candidate.is_file():
            return candidate
    raise NetspecError(
        f"`{origin}` names an images file but no labels file {name} lies beside it",
        hint="point idx: at the directory holding both files",
    )


# --- folder --------------------------------------------------------------------------------


def _read_folder(origin: str, path: Path, target: _Target) -> _Raw:
    if not path.is_dir():
        raise NetspecError(f"`{origin}` is not a directory", hint=_USAGE)
    _refuse_dense(origin, target, "holds one label per image (its sub-folder), not per pixel")
    if target.kind != "image" or target.shape[0] not in (1, 3):
        raise NetspecError(
            f"a folder of images needs an image input with 1 or 3 channels, "
            f"but the spec's input is {list(target.shape)}"
        )
    splits = {d.name: d for d in _subfolders(path)}
    held_name = "val" if "val" in splits else "test"
    if set(splits) == {"train", held_name} and _subfolders(splits["train"]):
        train, names = _read_class_folders(origin, splits["train"], target)
        test, test_names = _read_class_folders(origin, splits[held_name], target)
        _check_same_classes(names, test_names, str(splits["train"]), str(splits[held_name]))
        return _Raw(train, test, names, held=held_name)
    train, names = _read_class_folders(origin, path, target)
    return _Raw(train, None, names)


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _read_class_folders(origin: str, root: Path, target: _Target) -> tuple[_Part, list[str]]:
    folders = _subfolders(root)
    if not folders:
        loose = " (its images lie directly in it)" if _image_files(root) else ""
        raise NetspecError(
            f"the folder {root} has no class sub-folders{loose}",
            hint="put the images of each class in their own sub-folder, e.g. cats/, dogs/",
        )
    if len(folders) != target.classes:
        raise NetspecError(
            f"the spec declares {target.classes} classes but {root} has {len(folders)} "
            f"class folders",
            notes=[f"class folders: {', '.join(f.name for f in folders)}"],
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = _image_files(folder)
        if not files:
            raise NetspecError(f"the class folder {folder} has no images")
        images.extend(_read_image(f, target.shape, target.resize) for f in files)
        labels.extend([label] * len(files))
    x = np.stack(images).astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return _Part(x, np.asarray(labels, dtype=np.int64)), [f.name for f in folders]


def _read_image(path: Path, shape: tuple[int, ...], resize: int | None = None) -> np.ndarray:
    channels, height, width = shape
    return read_image(path, channels, height, width, resize)


# --- fitting arrays to the spec ------------------------------------------------------------


def _checked_part(origin: str, x: np.ndarray, y: np.ndarray, target: _Target) -> _Part:
    """Check labels and layout, and convert `x` to the spec's channels-first layout."""
    for name, array in (("examples", x), ("labels", y)):
        if array.ndim == 0:
            raise NetspecError(
                f"data from {origin} has {name} that are a single value (a 0-d array), "
                "not one per example"
            )
        if np.iscomplexobj(array):
            raise NetspecError(f"data from {origin} has complex {name}; expected real numbers")
    if target.task in TARGET_TASKS:
        labels = check_targets(origin, y, len(x), target.task, target.classes)
    elif target.label_map is not None:
        labels = _checked_pixel_labels(origin, y, len(x), target)
    else:
        labels = _checked_labels(origin, y, len(x), target.classes)
    if target.kind == "tokens":
        return _Part(_fit_tokens(origin, x, target), labels)
    fitted = _fit_layout(origin, x, target)
    note = None
    if fitted.shape[1:] == target.shape and x.shape[1:] != target.shape and x.ndim == fitted.ndim:
        note = (
            f"{origin} holds channels-last {target.noun} {list(x.shape[1:])}; "
            f"converted to channels-first {list(target.shape)}"
        )
    return _Part(_scaled(origin, fitted), labels, note)


def _checked_labels(origin: str, y: np.ndarray, n: int, classes: int) -> np.ndarray:
    labels = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if labels.ndim != 1:
        raise NetspecError(
            f"data from {origin} has labels of shape {list(y.shape)}; expected one class id "
            f"per example, shape [{n}]",
            hint="labels with a class per pixel need a dense output: declare "
            "`classes K per pixel` and end in a map [K, H, W]"
            if labels.ndim >= 3
            else "a row of labels per example trains a multi-label task: declare "
            "`train { task = multilabel }` and end in SIGMOID",
        )
    if len(labels) != n:
        raise NetspecError(f"data from {origin} has {n} examples but {len(labels)} labels")
    if not (np.issubdtype(labels.dtype, np.integer) or _integral(labels)):
        raise NetspecError(
            f"data from {origin} has labels that are not integer class ids",
            hint="float targets train a regression: declare `train { task = regression }`",
        )
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise NetspecError(
            f"data from {origin} has labels in [{labels.min()}, {labels.max()}] but the spec "
            f"declares {classes} classes, so labels must lie in [0, {classes - 1}]",
            hint="check the spec's number of classes, or relabel the data from 0",
        )
    return labels.astype(np.int64)


def _checked_pixel_labels(origin: str, y: np.ndarray, n: int, target: _Target) -> np.ndarray:
    """Per-pixel labels `(N, *map)` (a singleton channel axis, first or last, is dropped),
    each a class in [0, classes) or `IGNORE`."""
    label_map = target.label_map or ()
    want = f"[{n}, {', '.join(map(str, label_map))}]"
    labels = y
    if y.ndim == len(label_map) + 2 and y.shape[1] == 1 and y.shape[2:] == label_map:
        labels = y[:, 0]
    elif y.ndim == len(label_map) + 2 and y.shape[-1] == 1 and y.shape[1:-1] == label_map:
        labels = y[..., 0]
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1 and label_map != (1,)):
        raise NetspecError(
            f"data from {origin} has one class id per example (labels {list(y.shape)}) but "
            f"the spec's output is a class per pixel {_map_text(target)}: expected labels "
            f"of shape {want}",
            hint="save a label map per example (np.savez(path, x=images, y=masks)), or train "
            "a classifier: `classes K` without `per pixel`",
        )
    if len(labels) != n:
        raise NetspecError(f"data from {origin} has {n} examples but {len(labels)} label maps")
    if labels.shape[1:] != label_map:
        raise NetspecError(
            f"data from {origin} has per-pixel labels of shape {list(y.shape)} but the spec's "
            f"output map is {_map_text(target)}: expected labels of shape {want}",
            hint="a label map has the size of the output map, one class per output pixel "
            "(resize masks with nearest-neighbour sampling, never bilinear)",
        )
    if not (np.issubdtype(labels.dtype, np.integer) or _integral(labels)):
        raise NetspecError(
            f"data from {origin} has per-pixel labels that are not integer class ids "
            f"({labels.dtype})",
            hint=f"a mask holds class ids in [0, {target.classes - 1}] ({IGNORE}: ignored)",
        )
    bad = (labels < 0) | ((labels >= target.classes) & (labels != IGNORE))
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:6].tolist()) + (
            ", ..." if len(values) > 6 else ""
        )
        raise NetspecError(
            f"data from {origin} has per-pixel labels {shown} ({int(bad.sum()):,} pixels) but "
            f"the spec declares {target.classes} classes per pixel, so labels must lie in "
            f"[0, {target.classes - 1}], or be {IGNORE} (a pixel to ignore)",
            hint="check the spec's number of classes, or map the extra values to "
            f"{IGNORE} to leave those pixels out",
        )
    return labels.astype(np.int64)


def _integral(values: np.ndarray) -> bool:
    return bool(
        np.issubdtype(values.dtype, np.floating)
        and np.isfinite(values).all()
        and (values == np.round(values)).all()
    )


def _fit_tokens(origin: str, x: np.ndarray, target: _Target) -> np.ndarray:
    if x.shape[1:] != target.shape:
        _refuse_shape(origin, x.shape[1:], target)
    if not (np.issubdtype(x.dtype, np.integer) or _integral(x)):
        raise NetspecError(f"data from {origin} has token ids that are not integers")
    if x.size and (x.min() < 0 or (target.vocab is not None and x.max() >= target.vocab)):
        raise NetspecError(
            f"data from {origin} has token ids in [{x.min()}, {x.max()}] but the spec's "
            f"vocabulary is [0, {target.vocab})"
        )
    return x.astype(np.int64)


def _fit_layout(origin: str, x: np.ndarray, target: _Target) -> np.ndarray:
    """Accept channels-first, channels-last, or no channel axis when the spec has one channel."""
    shape, example = target.shape, x.shape[1:]
    if example == shape:
        return x
    channels_last = (*shape[1:], shape[0])
    if example == channels_last:
        return np.moveaxis(x, -1, 1)
    if shape[0] == 1 and example == shape[1:]:
        return x[:, None]
    _refuse_shape(origin, example, target)


def _scaled(origin: str, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.number):
        raise NetspecError(f"data from {origin} holds {x.dtype} values; expected numbers")
    values = x.astype(np.float32)
    if not np.isfinite(values).all():
        raise NetspecError(f"data from {origin} holds NaN or infinite values")
    return values


def _refuse_shape(origin: str, example: tuple[int, ...], target: _Target) -> NoReturn:
    shown = list(example)
    looks_channels_last = len(example) == 3 and example[-1] in (1, 3, 4) and example[0] > 4
    if target.kind == "image" and looks_channels_last:
        shown = [example[-1], *example[:-1]]  # show channels-last data channels-first
    layouts = {
        "image": "[C, H, W] or [H, W, C]",
        "signal": "[C, L] or [L, C]",
        "tokens": "[L]",
    }[target.kind]
    raise NetspecError(
        f"data from {origin} has {target.noun} of shape {shown} but the spec's input is "
        f"{list(target.shape)}",
        hint=f"convert the data to {list(target.shape)} (accepted layouts: {layouts}), "
        f"or change the spec's input to {shown}",
    )
