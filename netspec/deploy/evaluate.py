"""Evaluating an ONNX model file (fp32, fp16 or int8) on data, as `netspec eval` evaluates a
checkpoint: the same data loading, split and measures, the model run in onnxruntime.

    report = evaluate_model("m8.onnx", "digits", seed=1)
    report.result.accuracy
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspec.deploy import files
from netspec.deploy.runtime import open_session, provider_line
from netspec.deploy.weights import model_preprocessing
from netspec.errors import NetspecError

if TYPE_CHECKING:
    from netspec.train.evaluate import Evaluation


@dataclass(frozen=True)
class ModelEvaluation:
    """What `evaluate_model` measured.

    Attributes:
        result: accuracy, loss, the confusion matrix (as for a checkpoint).
        title: the model's name, precision and file, the data and the part evaluated.
        provider: which onnxruntime provider ran, and why the better ones did not.
    """

    result: Evaluation
    title: str
    provider: str


def evaluate_model(
    model: str | Path,
    data: str | None,
    *,
    val_data: str | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    split: str = "val",
    batch_size: int = 256,
    provider: str = "cpu",
    test_data: str | None = None,
) -> ModelEvaluation:
    """Evaluate the model file `model` on the `split` part (val or train) of `data`.

    Args:
        val_split, seed, val_data: how `data` splits (0.2 and 0 by default), as in training.
        test_data: the test set for `split="test"` (else `data`'s own x_test/y_test).
        provider: onnxruntime's provider (auto, tensorrt, cuda, cpu).

    Raises:
        NetspecError: no data, a file that is not a classifier model, an empty part, or a
            provider that does not work here.
    """
    from netspec.train.data import load_data
    from netspec.train.device import pick_runtime
    from netspec.train.evaluate import evaluate, onnx_logits

    if data is None:
        raise NetspecError(
            f"no data to evaluate {model} on: pass --data SOURCE",
            hint="sources: digits, synthetic[:N], npz:PATH, idx:PATH, folder:PATH",
        )
    header = files.load(model, weights=False)
    kind = files.precision(header)
    session = open_session(model, provider)
    out_shape = session.session.get_outputs()[0].shape
    if len(out_shape) != 2 or not isinstance(out_shape[1], int):
        raise NetspecError(f"{model} outputs {out_shape}, not class scores [batch, classes]")
    tokens = "int" in session.input_type
    prep = None if tokens else model_preprocessing(session.metadata)
    split_data = load_data(
        data,
        session.example_shape,
        out_shape[1],
        val_split=0.2 if val_split is None else val_split,
        seed=seed or 0,
        val_source=val_data,
        vocab=_vocab(header) if tokens else None,
        test_source=test_data,
        resize=prep.resize_for(session.example_shape) if prep is not None else None,
    )
    if prep is not None:  # the resize and crop above, now the normalization the weights expect
        split_data = prep.apply_split(split_data)
    dataset = {"val": split_data.val, "train": split_data.train, "test": split_data.test}[split]
    if dataset is None:
        raise NetspecError(f"{data} has no test set", hint="save x_test/y_test in the npz")
    if len(dataset) == 0:
        raise NetspecError(
            f"the {split} part of {data} is empty", hint="use --val-split above 0, or --val-data"
        )
    probabilities = session.metadata.get("netspec.output", "probabilities") == "probabilities"
    logits = onnx_logits(session.run, probabilities)
    result = evaluate(
        logits, dataset.x, dataset.y, dataset.class_names, pick_runtime("cpu"), batch_size
    )
    name = session.metadata.get("netspec.name") or Path(model).name
    title = f"{name} ({kind}, {Path(model).name}) on {data} ({split})"
    return ModelEvaluation(result, title, provider_line(session))


def _vocab(model: Any) -> int | None:
    """A token model's vocabulary: the rows of the table its first Gather reads."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return None


__all__ = ["ModelEvaluation", "evaluate_model"]
