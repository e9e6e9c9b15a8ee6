"""Static int8 quantization of an fp32 ONNX model with onnxruntime.quantization.

The recipe (chosen by measurement on AVX-512 VNNI CPUs, see tools/bench_quant.py):
- `quant_pre_process` first: shape inference and onnxruntime's basic graph optimizations,
  which fold a batch norm into the convolution before it;
- QDQ format, weights int8 per output channel (symmetric), activations uint8 (asymmetric):
  onnxruntime's CPU kernels for u8 x s8 use VNNI's dot products, s8 x s8 is ~3x slower;
  on x86 CPUs without VNNI the weights use 7 bits, which the kernels there need to not
  saturate (`seven_bit_weights`);
- a final Softmax stays float: its probabilities would round to steps of 1/256.

What really runs in int8 is read from the graph onnxruntime optimizes for the CPU (after it
fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv and the like): a node still
fed by a DequantizeLinear there runs in float, and `Quantized.float_nodes` says why.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import platform
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from netspec.deploy import files
from netspec.errors import NetspecError, did_you_mean
from netspec.io import TEMP_SUFFIX, temp_prefix

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Histogram settings per method. onnxruntime's entropy default (128 bins into 128 quantized
# bins) leaves one candidate threshold, the full range: exactly MinMax. 2048 bins is
# TensorRT's setting for the same KL-divergence search.
HISTOGRAMS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}
CALIB_BATCH = 32  # examples per calibration run
BOUNDARY_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE})


@dataclass(frozen=True)
class FloatNodes:
    """Nodes of one op type that run in float in the quantized model, and why."""

    op: str
    names: list[str]
    why: str


@dataclass(frozen=True)
class Quantized:
    """A quantized model as written (to a staged path) and what runs in int8.

    Attributes:
        path: the int8 model file.
        side: its external-data file, when the weights went to one.
        int8_ops: op type -> the names of the nodes running on int8 tensors (after onnxruntime's
            fusion; a node keeps its layer's name: `conv1`, `gpool1.flatten`).
        float_nodes: the nodes left in float, grouped by op type, with why.
        calibration: examples seen in calibration.
        method: the calibration method.
        weight_bits: 8, or 7 on CPUs whose int8 kernels would saturate (`seven_bit_weights`).
    """

    path: Path
    side: Path | None
    int8_ops: dict[str, list[str]]
    float_nodes: list[FloatNodes]
    calibration: int
    method: str
    weight_bits: int = 8


@dataclass(frozen=True)
class Parity:
    """fp32 against int8 outputs on the same inputs."""

    examples: int
    max_abs: float
    mean_abs: float
    top1_agreement: float


def check_method(method: str) -> str:
    """The calibration method's short name (minmax, entropy, percentile)."""
    key = method.lower()
    if key not in METHODS:
        raise NetspecError(
            f"unknown calibration method `{method}`",
            hint=did_you_mean(key, METHODS) or "one of " + ", ".join(METHODS),
        )
    return key


def check_calibration(
    x: Any,
    input_shape: Sequence[int],
    batch: int = CALIB_BATCH,
    origin: str = "the calibration data",
) -> np.ndarray:
    """Calibration examples as float32 `[N, *input_shape]`, at least one batch of them.

    Raises:
        NetspecError: not an array of numbers, another shape (both shapes named), non-finite
            values, or fewer examples than one batch.
    """
    shape = tuple(int(d) for d in input_shape)
    want = f"[N, {', '.join(map(str, shape))}]"
    if not isinstance(x, np.ndarray):
        raise NetspecError(f"{origin} is a {type(x).__name__}; expected a float32 array {want}")
    if not np.issubdtype(x.dtype, np.floating):
        raise NetspecError(
            f"{origin} holds {x.dtype} values; the model takes float32 {want}",
            hint="scale images to [0, 1] floats, as training does",
        )
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise NetspecError(
            f"{origin} has shape [{', '.join(map(str, x.shape))}]; the model takes {want}"
        )
    if len(x) < batch:
        raise NetspecError(
            f"{origin} has {len(x)} example{'s' * (len(x) != 1)}, fewer than one calibration "
            f"batch of {batch}",
            hint=f"give at least {batch} examples (--calib-size {batch} or more)",
        )
    if not np.isfinite(x).all():
        raise NetspecError(f"{origin} holds NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_classes(y: np.ndarray, class_names: Sequence[str], origin: str) -> None:
    """Refuse a calibration set of a single class: its activation ranges would fit that class
    only, and the int8 model would clip the others."""
    present = np.unique(np.asarray(y))
    if len(present) < 2 and len(class_names) > 1:
        only = class_names[int(present[0])] if len(present) else "none"
        raise NetspecError(
            f"{origin} holds examples of a single class ({only}) of {len(class_names)}",
            hint="calibrate on data covering the classes (a larger --calib-size, or another source)",
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice and warnings on every call: keep them off the
    report (errors still raise)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def quantize(
    fp32: Path,
    output: Path,
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    batch: int = CALIB_BATCH,
    external_threshold: int = files.MAX_PROTO_BYTES,
) -> Quantized:
    """Quantize the fp32 model file `fp32` to `output` (a staged path: see `files.staging`).

    Args:
        calibration: float32 examples `[N, *input_shape]` (see `check_calibration`).
        method: minmax, entropy or percentile.
        batch: examples per calibration run.
        external_threshold: weights past this many bytes go to `files.side_file(output)`.

    Raises:
        NetspecError: bad calibration data, a model onnxruntime cannot prepare or quantize, or
            one where no node runs in int8.
    """
    method = check_method(method)
    name, dims = _float_input(fp32)
    x = check_calibration(calibration, dims, batch)
    big = files.file_bytes(fp32) > external_threshold
    with tempfile.TemporaryDirectory(
        prefix=temp_prefix(output.name), suffix=TEMP_SUFFIX, dir=output.parent
    ) as tmp:
        work = Path(tmp)
        pre = _pre_process(fp32, work / "pre.onnx", big)
        keep = _final_softmax(files.load(pre, weights=False))
        ranges = _calibrate(pre, work, {name: x}, batch, method, big)
        raw = _quantize_static(pre, work / "int8.onnx", ranges, method, keep, big)
        quantized = files.load(raw)
        # onnx would stamp its newest IR version; onnxruntime 1.31 reads up to 13
        quantized.ir_version = onnx.helper.find_min_ir_version_for(
            list(quantized.opset_import), ignore_unknown=True
        )
        side = files.save(quantized, output, external_threshold=external_threshold)
        int8_ops, float_nodes = runtime_nodes(output, work / "optimized.onnx", keep)
    if not int8_ops:
        output.unlink(missing_ok=True)
        files.side_file(output).unlink(missing_ok=True)
        raise NetspecError(
            f"onnxruntime quantized no node of {fp32} to int8: "
            + "; ".join(f"{f.op}: {f.why}" for f in float_nodes),
        )
    bits = 7 if seven_bit_weights() else 8
    return Quantized(output, side, int8_ops, float_nodes, len(x) // batch * batch, method, bits)


def _float_input(path: Path) -> tuple[str, list[int]]:
    """The name and the example shape (past the batch) of a model's single float32 input."""
    model = files.load(path, weights=False)
    if len(model.graph.input) != 1:
        raise NetspecError(
            f"{path} has {len(model.graph.input)} inputs; netspec quantizes models with one"
        )
    inp = model.graph.input[0]
    elem = inp.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise NetspecError(
            f"{path} takes {TensorProto.DataType.Name(elem).lower()} input; int8 quantization "
            "needs a float32 input (token models are not quantized)"
        )
    return inp.name, [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]


def _pre_process(fp32: Path, out: Path, big: bool) -> Path:
    """onnxruntime's pre-processing: shape inference, and its basic optimizations (a batch norm
    after a convolution folded into it)."""
    from onnxruntime.quantization import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(
                str(fp32),
                str(out),
                skip_symbolic_shape=True,  # every shape but the batch is fixed
                save_as_external_data=big,
                all_tensors_to_one_file=True,
            )
    except Exception as err:  # onnxruntime's errors have no common base class
        raise NetspecError(
            f"onnxruntime could not prepare {fp32} for quantization: {_first(err)}"
        ) from None
    return out


def _calibrate(
    model: Path, work: Path, inputs: dict[str, np.ndarray], batch: int, method: str, big: bool
) -> Path:
    """Activation ranges from whole batches of `inputs`, in onnxruntime's calibration-cache
    file (what `quantize_static` reads instead of calibrating with its own settings)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ((name, x),) = inputs.items()

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start + batch > len(x):  # whole batches only: the last partial one is left
                return None
            chunk = x[self.start : self.start + batch]
            self.start += batch
            return {name: chunk}

        def rewind(self) -> None:
            self.start = 0

    ranges = work / "calibration.json"
    try:
        with _quiet():
            calibrator = create_calibrator(
                model,
                sorted(set(QDQRegistry) | set(QLinearOpsRegistry)),
                augmented_model_path=str(work / "augmented.onnx"),
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                use_external_data_format=big,
                providers=["CPUExecutionProvider"],
                extra_options={"symmetric": False, **HISTOGRAMS[method]},
            )
            calibrator.collect_data(Batches())
            save_tensors_data(calibrator.compute_data(), ranges)
            del calibrator
    except Exception as err:  # onnxruntime's errors have no common base class
        raise NetspecError(f"onnxruntime could not calibrate {model.name}: {_first(err)}") from None
    return ranges


def _quantize_static(
    model: Path, out: Path, ranges: Path, method: str, keep: list[str], big: bool
) -> Path:
    """QDQ int8 with the ranges of `_calibrate`: weights int8 symmetric per output channel,
    activations uint8 asymmetric, the nodes named in `keep` left float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    try:
        with _quiet():
            quantize_static(
                str(model),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                nodes_to_exclude=keep,
                use_external_data_format=big,
                reduce_range=seven_bit_weights(),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                calibration_cache_path=ranges,
            )
    except Exception as err:  # onnxruntime's errors have no common base class
        raise NetspecError(f"onnxruntime could not quantize the model: {_first(err)}") from None
    return out


def seven_bit_weights() -> bool:
    """Whether to quantize weights to 7 bits (onnxruntime's `reduce_range`): on an x86 CPU
    without VNNI, onnxruntime's u8 x s8 kernels add pairs of products in 16-bit lanes
    (`vpmaddubsw`), which saturate with full 8-bit weights. Measured on an AVX2-only AMD EPYC:
    mnist_cnn's int8 model lost 3.6 points of accuracy (88.86% against 92.48% fp32) and
    differed from fp32 by up to 0.53; with 7-bit weights it stays within one point. VNNI
    (and AMX, and ARM) sum in 32 bits: full 8 bits there."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not (_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset({"avx512_vnni"})  # unknown (not Linux): assume a current CPU
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _final_softmax(model: onnx.ModelProto) -> list[str]:
    """The name of the Softmax producing the model's output, if one does."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type == "Softmax" and set(n.output) & outputs]


def runtime_nodes(
    path: Path, optimized: Path, kept: Sequence[str] = ()
) -> tuple[dict[str, list[str]], list[FloatNodes]]:
    """What onnxruntime's CPU provider runs in int8 and in float, from the graph it optimizes.

    Returns:
        op type -> the names of its nodes on int8 tensors, and the float nodes grouped by op
        type.
    """
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from netspec.deploy.runtime import save_optimized

    save_optimized(path, optimized)
    graph = onnx.load(str(optimized), load_external_data=False).graph
    floating = {i.name for i in graph.input if i.type.tensor_type.elem_type in FLOAT_TYPES}
    int8_ops: dict[str, list[str]] = {}
    float_by_op: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            floating.update(node.output)
            continue
        if node.op_type == "QuantizeLinear":
            continue
        if any(i in floating for i in node.input):  # an activation in float (scales are not)
            floating.update(node.output)
            float_by_op.setdefault(node.op_type, []).append(node.name or node.op_type)
        else:
            int8_ops.setdefault(node.op_type, []).append(node.name or node.op_type)
    kept_set = set(kept)
    float_nodes = []
    for op, names in float_by_op.items():
        if names and set(names) <= kept_set:
            why = "kept float on purpose: the output's probabilities (int8 would round them to steps of 1/256)"
        elif op in QDQRegistry or op in QLinearOpsRegistry:
            why = "onnxruntime's CPU provider has no int8 kernel for it here: it runs in float between DequantizeLinear and QuantizeLinear"
        else:
            why = f"onnxruntime.quantization has no int8 form of {op}"
        float_nodes.append(FloatNodes(op, names, why))
    return int8_ops, float_nodes


def compare(fp32: Any, int8: Any, x: np.ndarray, batch: int = 64) -> Parity:
    """fp32 and int8 outputs (two `runtime.Session`s) on the same examples, batch by batch."""
    diffs, agree, count = [], 0, 0
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        a, b = fp32.run(chunk).astype(np.float64), int8.run(chunk).astype(np.float64)
        diffs.append(np.abs(a - b).reshape(len(chunk), -1))
        if a.ndim == 2:
            agree += int((a.argmax(1) == b.argmax(1)).sum())
        count += len(chunk)
    d = np.concatenate(diffs) if diffs else np.zeros((0, 1))
    return Parity(
        count,
        float(d.max()) if d.size else 0.0,
        float(d.mean()) if d.size else 0.0,
        agree / count if count else float("nan"),
    )


__all__ = [
    "CALIB_BATCH",
    "METHODS",
    "FloatNodes",
    "Parity",
    "Quantized",
    "check_calibration",
    "check_classes",
    "check_method",
    "compare",
    "quantize",
    "runtime_nodes",
]
