"""Everything ONNX: lowering the IR to an ONNX graph, writing and checking model files, int8
quantization, onnxruntime sessions, and running, evaluating and timing model files. No module
outside this package imports `onnx` or `onnxruntime` (a test walks the imports).

The library API, which the CLI (`netspec export`, `run`, `eval`, `bench`) and the playground
server call as a Python user would:

    from netspec import deploy
    from netspec.ir.build import load_spec

    graph = load_spec("specs/mnist_cnn.ns").instantiate({})
    report = deploy.export(graph, "m.onnx")                        # seeded initial weights
    report = deploy.export(graph, "m.onnx", "runs/mnist", fp16=True)
    report = deploy.export(
        graph, "m8.onnx", "runs/mnist", int8=deploy.Calibration("digits", size=64)
    )
    report.int8.quantized.calibration                                 # examples used: 64
    deploy.predict("m.onnx", ["digit.png"]).outputs
    deploy.evaluate_model("m8.onnx", "digits").result.accuracy

Modules: `lowering` (IR -> ONNX; the per-kind functions by family in `lower_conv`, `lower_pool`,
`lower_linear`, `lower_norm`, `lower_activation`, `lower_structure`, their frame in
`lower_base`), `writer` (streaming protobuf writer, external data), `checks` (the checks before writing),
`weights` (checkpoints, seeded init), `exporter` (`export`), `int8` and `quantize` (int8),
`files` (model files on disk), `runtime` (sessions, providers), `predictions`, `evaluate`, `bench`.
"""

from netspec.deploy.checks import Check, ExportCheckFailed, verify
from netspec.deploy.evaluate import ModelEvaluation, evaluate_model
from netspec.deploy.exporter import ExportReport, export
from netspec.deploy.int8 import Calibration, Int8Result
from netspec.deploy.lower_base import (
    DEFAULT_OPSET,
    LOWERINGS,
    MAX_OPSET,
    MIN_OPSET,
    LowerOptions,
)
from netspec.deploy.lowering import lower, missing_lowerings
from netspec.deploy.predictions import Predictions, predict
from netspec.deploy.runtime import Session, open_session
from netspec.deploy.weights import initial_weights, load_checkpoint
from netspec.deploy.writer import Lowered

__all__ = [
    "DEFAULT_OPSET",
    "LOWERINGS",
    "MAX_OPSET",
    "MIN_OPSET",
    "Calibration",
    "Check",
    "ExportCheckFailed",
    "ExportReport",
    "Int8Result",
    "LowerOptions",
    "Lowered",
    "ModelEvaluation",
    "Predictions",
    "Session",
    "evaluate_model",
    "export",
    "initial_weights",
    "load_checkpoint",
    "lower",
    "missing_lowerings",
    "open_session",
    "predict",
    "verify",
]
