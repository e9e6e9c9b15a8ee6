"""ONNX model files: written whole or not at all, with the weights in a side file when they pass
what one protobuf file holds (2 GiB), and read back with what they are (fp32, fp16 or int8).

A model with external data is two files: `NAME.onnx` (the graph) and `NAME.onnx.data` (every
initializer's bytes, back to back, each at the offset its tensor names). Both are staged in a
hidden folder beside the target, checked there, then moved into place, the side file first:
the model's name never points at a partial model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto

from netspec.errors import NetspecError
from netspec.io import TEMP_SUFFIX, atomic_path, check_output_folder, temp_prefix

# protobuf's limit for one serialized message: past it, the weights go to a side file
MAX_PROTO_BYTES = 2**31 - 1
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger"}
)


def side_file(path: str | Path) -> Path:
    """The external-data file of a model: `model.onnx` -> `model.onnx.data`."""
    path = Path(path)
    return path.with_name(path.name + ".data")


@contextlib.contextmanager
def staging(path: str | Path) -> Iterator[Path]:
    """A hidden folder beside `path` for a model's files while they are written and checked;
    removed when the block ends, whatever happens (`publish` moves the files out first)."""
    path = Path(path)
    check_output_folder(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        stage = Path(
            tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=folder)
        )
    except OSError as e:
        raise NetspecError(f"cannot write {path}: {e.strerror}") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(staged: Path, path: str | Path) -> list[Path]:
    """Move a staged model (and its side file, if any) to `path`, the side file first, each
    through `netspec.io.atomic_path`. Returns the files written, the model first."""
    path = Path(path)
    written = []
    staged_side = side_file(staged)
    if staged_side.exists():
        with atomic_path(side_file(path)) as tmp:
            os.replace(staged_side, tmp)
        written.append(side_file(path))
    with atomic_path(path) as tmp:
        os.replace(staged, tmp)
    return [path, *written]


def initializer_bytes(model: onnx.ModelProto) -> int:
    """The bytes of every initializer's data held in the model (external data not counted)."""
    return sum(
        len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer
    )


def save(
    model: onnx.ModelProto, path: Path, *, external_threshold: int = MAX_PROTO_BYTES
) -> Path | None:
    """Write `model` (weights in memory) to `path`, plainly or, when its weights pass
    `external_threshold` bytes, with them in `side_file(path)`. Returns the side file or None.

    `path` should be a staged path (see `staging`): this writes in place.
    """
    if initializer_bytes(model) <= external_threshold:
        path.write_bytes(model.SerializeToString())
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=side_file(path).name,
        size_threshold=0,
    )
    return side_file(path)


def load(path: str | Path, *, weights: bool = True) -> onnx.ModelProto:
    """An ONNX model file (its side file's weights too, unless `weights` is False).

    Raises:
        NetspecError: a missing file, or one that is not an ONNX model.
    """
    path = Path(path)
    if not path.is_file():
        raise NetspecError(
            f"no model at {path}" + (" (it is a folder)" if path.is_dir() else ""),
            hint="export one with `netspec export SPEC -o MODEL.onnx`",
        )
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as err:  # DecodeError, OSError, ValidationError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NetspecError(
            f"{path} is not an ONNX model: {first}",
            hint="give a .onnx file written by `netspec export`",
        ) from None
    if not model.graph.node:
        raise NetspecError(
            f"{path} is not an ONNX model (it holds no graph)",
            hint="give a .onnx file written by `netspec export`",
        )
    return model


def precision(model: onnx.ModelProto) -> str:
    """`int8` (quantize/dequantize or integer nodes), `fp16` (float16 weights) or `fp32`."""
    if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def file_bytes(path: str | Path) -> int:
    """A model's size on disk, its side file included."""
    path = Path(path)
    side = side_file(path)
    return path.stat().st_size + (side.stat().st_size if side.is_file() else 0)


__all__ = [
    "MAX_PROTO_BYTES",
    "file_bytes",
    "initializer_bytes",
    "load",
    "precision",
    "publish",
    "save",
    "side_file",
    "staging",
]
