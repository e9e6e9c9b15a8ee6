"""`export`: an IR graph to a checked ONNX model file, the one path the CLI, the server and a
Python caller share.

    report = export(graph, "m.onnx")                                  # seeded initial weights
    report = export(graph, "m.onnx", "runs/mnist_cnn", fold_bn=True)  # a run's best checkpoint
    report = export(graph, "m8.onnx", "runs/mnist_cnn", int8=Calibration("digits", size=64))

The model is lowered, written to a hidden staging folder beside `path`, checked there (onnx's
full checker, the IR's shapes, a batch in onnxruntime) and only then moved into place: nothing
is written when any step fails. Weights past what one protobuf file holds (2 GiB) go to a side
file `path.data` by themselves; `external_data=True` asks for one at any size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec.deploy import files
from netspec.deploy.checks import Check, require_passed, verify
from netspec.deploy.int8 import Calibration, Int8Result, quantize_lowered
from netspec.deploy.lower_base import DEFAULT_OPSET, LowerOptions
from netspec.deploy.lowering import for_outputs, lower
from netspec.deploy.weights import resolve_weights
from netspec.deploy.writer import Lowered, staged, write_external
from netspec.io import check_output_folder
from netspec.ir.graph import Graph


@dataclass
class ExportReport:
    """What `export` wrote and checked.

    Attributes:
        path: the model file.
        bytes: its size on disk, the side file included.
        opset, ir_version: the model's.
        parameters: elements in the (fp32 or fp16) initializers.
        onnx_nodes: nodes in the lowered (fp32 or fp16) graph.
        folded: the batch norms folded into their convolutions.
        checks: the checks the lowered model passed (for int8, the fp32 model's).
        side: the external-data file, when the weights went to one.
        origin: where the weights came from (`seed 0`, a checkpoint's path).
        int8: the quantization's report, for an int8 export.
    """

    path: Path
    bytes: int
    opset: int
    ir_version: int
    parameters: int
    onnx_nodes: int
    folded: list[str]
    checks: list[Check] = field(default_factory=list)
    side: Path | None = None
    origin: str = ""
    int8: Int8Result | None = None

    @classmethod
    def of(cls, lowered: Lowered, path: str | Path, size: int, checks: list[Check]) -> ExportReport:
        """The report of `lowered`, written to `path` (`size` bytes) and checked by `checks`."""
        return cls(
            path=Path(path),
            bytes=size,
            opset=lowered.model.opset_import[0].version,
            ir_version=lowered.model.ir_version,
            parameters=lowered.parameters,
            onnx_nodes=len(lowered.model.graph.node),
            folded=lowered.folded,
            checks=checks,
        )


def export(
    graph: Graph,
    path: str | Path,
    weights: Mapping[str, np.ndarray] | str | Path | None = None,
    *,
    seed: int | None = None,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = False,
    fp16: bool = False,
    logits: bool = False,
    all_outputs: bool = False,
    int8: Calibration | None = None,
    external_data: bool | None = None,
    origin: str | None = None,
    note: str | None = None,
    metadata: Mapping[str, str] | None = None,
    check: bool = True,
    run: bool = True,
) -> ExportReport:
    """Lower `graph` to ONNX, check it and write it to `path` atomically.

    Args:
        graph: the IR (`netspec.ir.build.load_spec(...).instantiate(...)`).
        path: the .onnx file to write.
        weights: state_dict name -> array, a safetensors checkpoint, or a training run's
            folder (its best.safetensors, and its class names as metadata); None: the seeded
            initialization of the PyTorch lowering.
        seed: the initialization's seed when `weights` is None (0 by default).
        opset, fold_bn, fp16, logits, all_outputs: how to lower (see `LowerOptions`).
        int8: quantize to int8, calibrated as this says; the report's `int8` tells how.
        external_data: weights in the side file `path.data`; None: only when they pass
            2 GiB, what one protobuf file holds.
        origin, note: how messages and the metadata name the weights (default: from them).
        metadata: more metadata entries.
        check: run the checks (False only for timing the export itself; not with int8).
        run: include onnxruntime's check.

    Raises:
        NetspecError: the user's mistake (weights that do not fit, a layer ONNX cannot
            express, a folder that does not exist, bad int8 settings).
        ExportCheckFailed: the model failed a check (a bug in netspec; a NetspecError too).
    """
    options = LowerOptions(
        opset=opset, fold_bn=fold_bn, fp16=fp16, logits=logits, all_outputs=all_outputs
    )
    path = Path(path)
    check_output_folder(path)  # before the work, not after it
    source = resolve_weights(graph, weights, seed=seed, fp16=fp16)
    if int8 is not None:
        int8 = int8.for_run(source.run, seed)
        int8.check(graph, options)
    graph, arrays = for_outputs(graph, source.arrays, options)
    lowered = lower(
        graph,
        arrays,
        options,
        origin=origin or source.origin,
        note=source.note if note is None else note,
        metadata=source.metadata | dict(metadata or {}),
    )
    side = bool(external_data) or (external_data is None and lowered.nbytes > files.MAX_PROTO_BYTES)
    if int8 is not None:
        report = _write_int8(lowered, graph, path, int8, side, external_data is True)
    elif side:
        report = _write_external(lowered, graph, path, check and run)
    else:
        report = _write_single(lowered, graph, path, check, run)
    report.origin = origin or source.origin
    return report


def _write_single(
    lowered: Lowered, graph: Graph, path: Path, check: bool, run: bool
) -> ExportReport:
    """One file, streamed from the arrays, checked beside `path` before it replaces it."""
    checks: list[Check] = []
    with staged(path) as tmp:
        with tmp.open("wb") as f:
            lowered.write(f)
        if check:
            checks = verify(lowered, graph, tmp, run=run)
            require_passed(checks)
        size = tmp.stat().st_size
    return ExportReport.of(lowered, path, size, checks)


def _write_external(lowered: Lowered, graph: Graph, path: Path, run: bool) -> ExportReport:
    """The model and its side file, both staged and checked before either appears."""
    with files.staging(path) as stage:
        model = stage / path.name
        write_external(lowered, model)
        checks = verify(lowered, graph, str(model), run=run)
        require_passed(checks)
        size = files.file_bytes(model)
        files.publish(model, path)
    report = ExportReport.of(lowered, path, size, checks)
    report.side = files.side_file(path)
    return report


def _write_int8(
    lowered: Lowered, graph: Graph, path: Path, calibration: Calibration, side: bool, asked: bool
) -> ExportReport:
    """The fp32 model checked, then quantized; only the int8 model (and side file) written.
    The int8 weights go to a side file when `asked`, or when they pass 2 GiB themselves."""
    with files.staging(path) as stage:
        fp32 = stage / "fp32.onnx"
        if side:
            write_external(lowered, fp32)
        else:
            fp32.write_bytes(lowered.to_bytes())
        checks = verify(lowered, graph, str(fp32))
        require_passed(checks)
        result = quantize_lowered(
            graph, fp32, stage / path.name, calibration, 0 if asked else files.MAX_PROTO_BYTES
        )
        size = files.file_bytes(stage / path.name)
        files.publish(stage / path.name, path)
    report = ExportReport.of(lowered, path, size, checks)
    report.side = files.side_file(path) if result.quantized.side else None
    report.int8 = result
    return report


__all__ = ["ExportReport", "export"]
