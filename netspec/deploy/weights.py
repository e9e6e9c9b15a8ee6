"""The weights an exported model holds: which the graph needs, read from a safetensors
checkpoint (or a training run's folder) or drawn as the PyTorch lowering's seeded
initialization, and checked (names, shapes, finite values) before any lowering.

torch is imported only to draw the seeded initial weights (`initial_weights`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netspec.errors import NetspecError
from netspec.io import checkpoint_file as io_checkpoint_file
from netspec.ir.graph import Graph
from netspec.layers import fmt_shape

# PyTorch's state_dict keeps this counter beside the running statistics; inference ignores it.
IGNORED_WEIGHTS = ("num_batches_tracked",)


def expected_weights(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Every weight the graph needs, by state_dict name, with its shape (PyTorch's layouts)."""
    out: dict[str, tuple[int, ...]] = {}
    shapes = {n.id: n.shape for n in graph.nodes}
    for node in graph.nodes:
        ins = tuple(shapes[i] for i in node.inputs)
        for name, shape in node.layer.state(ins, node.shape).items():
            out[f"{node.id}.{name}"] = shape
    return out


def check_weights(
    graph: Graph, weights: Mapping[str, np.ndarray], origin: str
) -> dict[str, np.ndarray]:
    """The graph's weights from `weights` as float32 arrays, refusing missing, extra or misshapen ones."""
    want = expected_weights(graph)
    extra = sorted(
        k for k in weights if k not in want and k.rsplit(".", 1)[-1] not in IGNORED_WEIGHTS
    )
    missing = [k for k in want if k not in weights]
    if missing or extra:
        notes = []
        if missing:
            notes.append(f"missing ({len(missing)}): " + _listing(missing))
        if extra:
            notes.append(f"not in the spec ({len(extra)}): " + _listing(extra))
        raise NetspecError(
            f"the weights in {origin} do not match the spec",
            notes=notes,
            hint="was the checkpoint trained from another spec or other --set values?",
        )
    out: dict[str, np.ndarray] = {}
    for name, shape in want.items():
        array = np.asarray(weights[name])
        if tuple(array.shape) != shape:
            raise NetspecError(
                f"the weight `{name}` in {origin} has shape [{fmt_shape(array.shape)}]; "
                f"the spec needs [{fmt_shape(shape)}]",
                hint="was the checkpoint trained from another spec or other --set values?",
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise NetspecError(
                f"the weight `{name}` in {origin} is {array.dtype}, not floating point"
            )
        out[name] = array.astype(np.float32, copy=False)
    return out


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself, or for a training run's folder its best.safetensors (else last.safetensors)."""
    return io_checkpoint_file(path)


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a safetensors checkpoint (or a run folder's, see `checkpoint_file`) as float32 numpy
    arrays; bfloat16 goes through torch when numpy lacks it."""
    path = checkpoint_file(path)
    try:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    except TypeError:  # a dtype this numpy lacks (bfloat16 without ml_dtypes)
        from safetensors.torch import load_file as load_torch

        return {
            k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in load_torch(str(path)).items()
        }
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header
        raise NetspecError(
            f"cannot read the checkpoint {path}: {err}", hint="is it a .safetensors file?"
        ) from None
    # float16, bfloat16 (numpy's through ml_dtypes) and float64 checkpoints: float32, as exported
    return {
        k: v.astype(np.float32) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v
        for k, v in arrays.items()
    }


def initial_weights(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded initialization of the PyTorch lowering, so both backends hold the same weights."""
    from netspec.backends.lower_torch import LoweringError, build

    try:
        module = build(graph, seed=seed)
    except LoweringError as err:  # a node id torch cannot name: the user renames it with `as`
        raise NetspecError(str(err)) from None
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


CLASSES_KEY = "netspec.classes"  # ONNX metadata: the class names of a trained run, as JSON
# ONNX metadata: the input normalization a run trained with (its --init weights'), as JSON;
# `netspec run` and `netspec eval MODEL.onnx` apply it (netspec.weights.Preprocessing)
PREPROCESSING_KEY = "netspec.preprocessing"


@dataclass(frozen=True)
class Weights:
    """The weights to export and where they came from.

    Attributes:
        arrays: state_dict name -> array.
        origin: how messages name them (`seed 0`, a checkpoint's path).
        note: the model's `netspec.weights` metadata (`seed=0`, `checkpoint sha256:...`).
        metadata: more metadata entries (a trained run's class names).
        run: the training run's folder, when the weights are one's.
    """

    arrays: Mapping[str, np.ndarray]
    origin: str
    note: str
    metadata: dict[str, str] = field(default_factory=dict)
    run: Path | None = None


def resolve_weights(
    graph: Graph,
    weights: Mapping[str, np.ndarray] | str | Path | None,
    *,
    seed: int | None = None,
    fp16: bool = False,
) -> Weights:
    """The weights `export` takes, resolved: arrays as given, a safetensors file or a run
    folder read (with the run's class names as metadata), or, for None, the seeded
    initialization of the PyTorch lowering (`seed`, 0 by default).

    Raises:
        NetspecError: both weights and a seed, an unreadable checkpoint, or weights holding
            NaN or infinity (or values past float16's range, with `fp16`).
    """
    if weights is not None and seed is not None:
        raise NetspecError(
            "--seed draws random initial weights and --weights loads trained ones: give one"
        )
    if weights is None:
        seed = seed or 0
        return Weights(initial_weights(graph, seed), f"seed {seed}", f"seed={seed}")
    if isinstance(weights, Mapping):
        check_finite(weights, "the weights", fp16)
        return Weights(weights, "the weights", "")
    from netspec.train.run_folder import class_names

    file = checkpoint_file(weights)
    arrays = load_checkpoint(file)
    check_finite(arrays, str(file), fp16)
    metadata: dict[str, str] = {}
    classes = graph.classes or (graph.output_shape[0] if len(graph.output_shape) == 1 else 0)
    names = class_names(weights, classes) if classes else None
    if names is not None:
        metadata[CLASSES_KEY] = json.dumps(names)
    run = Path(weights) if Path(weights).is_dir() else None
    if run is not None and (prep := _run_preprocessing(run)) is not None:
        metadata[PREPROCESSING_KEY] = json.dumps(prep)
    return Weights(arrays, str(file), "checkpoint sha256:" + _digest(file), metadata, run)


def _run_preprocessing(run: Path) -> dict | None:
    """The preprocessing a run folder's settings.json recorded (None when it has none)."""
    from netspec.train.run_folder import read_settings
    from netspec.weights.pretrained import Preprocessing

    try:
        saved = read_settings(run)
    except NetspecError:
        return None
    prep = Preprocessing.from_json(saved.get("preprocessing"))
    return prep.to_json() if prep is not None else None


def model_preprocessing(metadata: Mapping[str, str]) -> Any:
    """The `Preprocessing` an exported model's metadata carries, or None."""
    from netspec.weights.pretrained import Preprocessing

    try:
        return Preprocessing.from_json(json.loads(metadata.get(PREPROCESSING_KEY, "null")))
    except ValueError:
        return None


def check_finite(arrays: Mapping[str, np.ndarray], origin: str, fp16: bool = False) -> None:
    """Refuse weights holding NaN or infinity (or, for fp16, values past float16's range):
    the model would output NaN, and that is the weights' fault, not a bug in netspec."""
    top = float(np.finfo(np.float16).max) if fp16 else np.inf
    bad = [
        f"{name} ({int((~(np.abs(a) < top)).sum()):,} of {a.size:,})"
        for name, a in arrays.items()
        if np.issubdtype(a.dtype, np.floating) and not (np.abs(a) < top).all()
    ]
    if bad:
        what = "NaN, infinite or past float16's range" if fp16 else "NaN or infinite"
        raise NetspecError(
            f"the weights in {origin} hold {what} values, so nothing was written",
            notes=[
                f"in {', '.join(bad[:6])}" + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
            ],
            hint="did the training diverge? export an earlier checkpoint (best.safetensors)",
        )


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


__all__ = [
    "CLASSES_KEY",
    "Weights",
    "check_finite",
    "check_weights",
    "checkpoint_file",
    "expected_weights",
    "initial_weights",
    "load_checkpoint",
    "resolve_weights",
]
