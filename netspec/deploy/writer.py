"""Writing a lowered model: `Lowered` streams its protobuf bytes straight from the weight arrays
(no copy of the whole model in memory), into one file or, past what one protobuf file holds
(2 GiB), with every weight in a side file `MODEL.onnx.data`; always atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto

from netspec.deploy.files import MAX_PROTO_BYTES, side_file
from netspec.errors import NetspecError
from netspec.io import atomic_path


@dataclass
class Lowered:
    """A lowered model and how the IR maps onto it.

    The weights stay numpy arrays until written: `model` holds each initializer's name, type
    and dims but not its data, which is in `arrays`. `write` streams the complete model with
    every weight copied once, straight from its array; `to_proto` builds it in memory.

    Attributes:
        model: the ONNX model, initializers without their data.
        arrays: each initializer's data (little-endian, in the model's dtype), in model order.
        tensors: IR node id -> the ONNX tensor holding that node's output (identity, dropout
            and folded batch norms share their input's tensor).
        folded: ids of the batch norms folded into their convolution.
        parameters: elements in all initializers.
    """

    model: onnx.ModelProto
    arrays: dict[str, np.ndarray]
    tensors: dict[str, str]
    folded: list[str]
    parameters: int

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def write(self, f: BinaryIO) -> None:
        """Write the model's protobuf bytes, exactly `to_proto().SerializeToString()`, without
        building them in memory: the fields before the initializers, then each initializer's
        header and its array's buffer, then the fields after (protobuf's field order)."""
        if self.nbytes > MAX_PROTO_BYTES:
            raise NetspecError(
                f"the weights take {self.nbytes / 2**30:.1f} GiB, past the 2 GiB a single ONNX file holds",
                hint="export with --fp16 to halve them",
            )
        graph = self.model.graph
        head_g = onnx.GraphProto(
            node=graph.node, name=graph.name
        ).SerializeToString()  # fields 1, 2
        tail_g = onnx.GraphProto()  # fields 10 and on
        tail_g.CopyFrom(graph)
        tail_g.ClearField("node")
        tail_g.ClearField("name")
        tail_g.ClearField("initializer")
        tail_g_bytes = tail_g.SerializeToString()
        inits = []
        for tensor in graph.initializer:
            data = self.arrays[tensor.name]
            header = tensor.SerializeToString() + _key_len(9, data.nbytes)  # raw_data is field 9
            inits.append((_key_len(5, len(header) + data.nbytes) + header, data))  # initializer: 5
        graph_len = len(head_g) + sum(len(h) + d.nbytes for h, d in inits) + len(tail_g_bytes)
        head_m, tail_m = onnx.ModelProto(), onnx.ModelProto()
        head_m.CopyFrom(self.model)
        head_m.ClearField("graph")
        tail_m.opset_import.extend(head_m.opset_import)  # fields 8 and on
        tail_m.metadata_props.extend(head_m.metadata_props)
        head_m.ClearField("opset_import")
        head_m.ClearField("metadata_props")
        f.write(head_m.SerializeToString() + _key_len(7, graph_len) + head_g)  # graph is field 7
        for header, data in inits:
            f.write(header)
            f.write(data.data)
        f.write(tail_g_bytes + tail_m.SerializeToString())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue()

    def to_proto(self) -> onnx.ModelProto:
        """The complete model in memory (every weight in its initializer's raw_data)."""
        return onnx.ModelProto.FromString(self.to_bytes())


def _key_len(field_number: int, length: int) -> bytes:
    """A protobuf key for a length-delimited field, then the length, both as varints."""
    return _varint(field_number << 3 | 2) + _varint(length)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` that replaces it when the block ends normally, and is
    removed when it raises (see `netspec.io.atomic_path`, which does the work)."""
    with atomic_path(path) as tmp:
        yield tmp


def write_atomic(path: str | Path, data: bytes | Lowered) -> Path:
    """Write bytes, or a lowered model, to `path` atomically (see `staged`), synced to disk."""
    with staged(path) as tmp:
        _write(tmp, data)
    return Path(path)


def _write(tmp: Path, data: bytes | Lowered) -> None:
    with tmp.open("wb") as f:
        if isinstance(data, Lowered):
            data.write(f)
        else:
            f.write(data)


def write_external(lowered: Lowered, path: Path) -> Path:
    """Write `lowered` with every weight in `side_file(path)`, streamed from its arrays (no
    copy of the whole model in memory). Returns the side file. `path` should be a staged path
    (see `files.staging`): this writes in place."""
    model = onnx.ModelProto()
    model.CopyFrom(lowered.model)
    side = side_file(path)
    offset = 0
    with side.open("wb") as f:
        for tensor in model.graph.initializer:
            data = lowered.arrays[tensor.name]
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (
                ("location", side.name),
                ("offset", offset),
                ("length", data.nbytes),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            f.write(data.data)
            offset += data.nbytes
        f.flush()
        os.fsync(f.fileno())
    path.write_bytes(model.SerializeToString())
    return side


__all__ = ["Lowered", "staged", "write_atomic", "write_external"]
