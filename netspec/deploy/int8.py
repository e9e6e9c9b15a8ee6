"""int8 export: calibration settings, and quantizing a checked fp32 model calibrated on a data
source's training part (read and preprocessed as `netspec train` reads it), compared with fp32
on the calibration examples and, for accuracy, on the validation part.

`export(..., int8=Calibration("digits", size=64))` is the way in (see `netspec.deploy.exporter`);
the quantization itself is `netspec.deploy.quantize`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from netspec.deploy import files
from netspec.deploy import quantize as q
from netspec.deploy.lower_base import LowerOptions
from netspec.deploy.runtime import open_session
from netspec.errors import NetspecError
from netspec.ir.graph import Graph

DEFAULT_VAL_SPLIT = 0.2


@dataclass(frozen=True)
class Calibration:
    """How to calibrate an int8 export.

    Attributes:
        source: the data, as `netspec train --data` reads it (digits, npz:PATH, ...).
        size: calibration examples, from the training part (whole batches of
            `quantize.CALIB_BATCH`; the report says how many were used).
        method: minmax, entropy or percentile.
        val_split, seed, val_data: how the data splits into training and validation parts;
            None: the training run's own split when the weights are a run's folder trained
            on `source`, else 0.2, the initialization's seed (or 0) and none.
    """

    source: str
    size: int = 256
    method: str = "minmax"
    val_split: float | None = None
    seed: int | None = None
    val_data: str | None = None

    def for_run(self, run: Path | None, seed: int | None = None) -> Calibration:
        """These settings with what they leave open filled in: the run's split (so that
        accuracy is measured on examples it never trained on), else the defaults."""
        split = run_split(run, self.source)
        return dataclasses.replace(
            self,
            val_split=_first(self.val_split, split.get("val_split"), DEFAULT_VAL_SPLIT),
            seed=_first(self.seed, split.get("seed"), seed or 0),
            val_data=_first(self.val_data, split.get("val_data")),
        )

    def check(self, graph: Graph, options: LowerOptions) -> None:
        """Refuse what int8 cannot do, before any work.

        Raises:
            NetspecError: fp16 too, side heads, a per-pixel or token model, an unknown method,
                or fewer examples than one calibration batch.
        """
        if options.fp16:
            raise NetspecError("--int8 and --fp16 are two precisions: give one")
        if options.all_outputs:
            raise NetspecError(
                "--int8 quantizes the main output only; leave out --outputs all",
                hint="export the side heads in fp32: --outputs all without --int8",
            )
        if graph.per_pixel:  # its checks and accuracy count top-1 per example
            raise NetspecError(
                f"{graph.name} has a per-pixel output; --int8 does not quantize dense outputs yet",
                hint="export it in fp32 (without --int8), or with --fp16",
            )
        if graph.input.is_tokens:
            raise NetspecError(
                f"{graph.name} takes token ids; --int8 quantizes models with a float input"
            )
        q.check_method(self.method)
        if self.size < q.CALIB_BATCH:
            raise NetspecError(
                f"--calib-size {self.size} is fewer than one calibration batch of {q.CALIB_BATCH}",
                hint=f"use --calib-size {q.CALIB_BATCH} or more",
            )


@dataclass(frozen=True)
class Int8Result:
    """What an int8 export measured.

    Attributes:
        fp32_bytes: the fp32 model's size, for the comparison.
        quantized: what runs in int8 and in float, and the calibration examples used
            (`quantized.calibration`).
        parity: int8 against fp32 on the calibration examples.
        accuracy: fp32 and int8 top-1 on the validation part (None when it is empty).
        val_examples: examples in the validation part.
        source: the calibration data source.
    """

    fp32_bytes: int
    quantized: q.Quantized
    parity: q.Parity
    accuracy: tuple[float, float] | None
    val_examples: int
    source: str


def run_split(run: str | Path | None, source: str) -> dict[str, Any]:
    """How the training run in the folder `run` split `source`: its val_split, seed and
    val_data. Empty when `run` is not a run folder or the run trained on other data."""
    if run is None or not Path(run).is_dir():
        return {}
    try:
        saved = json.loads((Path(run) / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    settings = saved.get("settings", {})
    if settings.get("data") != source:
        return {}
    return {k: settings[k] for k in ("val_split", "seed", "val_data") if k in settings}


def quantize_lowered(
    graph: Graph, fp32: Path, output: Path, calibration: Calibration, external_threshold: int
) -> Int8Result:
    """Quantize the checked fp32 model file `fp32` to `output` (both staged, see
    `files.staging`), calibrated on `calibration.size` examples of its source's training part.

    Raises:
        NetspecError: bad data, or a model onnxruntime cannot quantize.
    """
    from netspec.train.data import load_data  # torch: only for an int8 export

    data = load_data(
        calibration.source,
        graph.input.shape,
        _classes(graph),
        val_split=_first(calibration.val_split, DEFAULT_VAL_SPLIT),
        seed=calibration.seed or 0,
        val_source=calibration.val_data,
        vocab=graph.input.vocab,
    )
    train = data.train
    n = min(calibration.size, len(train))
    origin = f"the calibration data ({calibration.source}, training part)"
    q.check_classes(train.y[:n].numpy(), train.class_names, origin)
    x = q.check_calibration(train.x[:n].numpy(), graph.input.shape, origin=origin)
    quantized = q.quantize(
        fp32, output, x, method=calibration.method, external_threshold=external_threshold
    )
    s32, s8 = open_session(fp32, "cpu"), open_session(output, "cpu")
    parity = q.compare(s32, s8, x)
    accuracy = None
    if len(data.val):
        vx, vy = data.val.x.numpy(), data.val.y.numpy()
        accuracy = (_accuracy(s32, vx, vy), _accuracy(s8, vx, vy))
    return Int8Result(
        files.file_bytes(fp32), quantized, parity, accuracy, len(data.val), calibration.source
    )


def _accuracy(session: Any, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    hits = 0
    for start in range(0, len(y), batch):
        out = session.run(np.ascontiguousarray(x[start : start + batch], dtype=np.float32))
        hits += int((out.argmax(1) == y[start : start + batch]).sum())
    return hits / len(y)


def _classes(graph: Graph) -> int:
    """The classes the data must have (an int8 model is a classifier: `Calibration.check`
    refuses the others)."""
    return graph.class_count("int8 calibration")


def _first(*values: Any) -> Any:
    """The first value that is not None (None when all are)."""
    return next((v for v in values if v is not None), None)


__all__ = ["Calibration", "Int8Result", "quantize_lowered", "run_split"]
