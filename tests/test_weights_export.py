"""A fine-tuned run's input normalization (its --init weights' preprocessing) travels into the
exported model's metadata, and `netspec run` / `netspec.deploy.predict` apply it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from netspec import deploy
from netspec.deploy.runtime import open_session
from netspec.deploy.weights import PREPROCESSING_KEY
from netspec.ir.build import load_spec_text
from netspec.train.data import load_data
from netspec.train.launch import train
from netspec.train.settings import resolve_settings
from netspec.train.trainer import Job

TINY = """network tiny "a tiny CNN"
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> RELU -> POOL -> FC(4) -> SOFTMAX
"""
PREP = {"resize": 8, "crop": 8, "mean": [0.5], "std": [0.25]}


def test_the_runs_preprocessing_is_in_the_model_and_applied_by_run(tmp_path: Path) -> None:
    graph = load_spec_text(TINY, "tiny.ns").instantiate({})
    s = resolve_settings(graph.train, {"epochs": 1, "batch_size": 8, "data": "synthetic:32"})
    data = load_data("synthetic:32", graph.input.shape, 4, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    train(Job(graph, s, data, run, device="cpu", quiet=True, threads=1))
    (run / "settings.json").write_text(json.dumps({"preprocessing": PREP}))

    report = deploy.export(graph, tmp_path / "m.onnx", weights=run)
    assert report is not None
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert json.loads(meta[PREPROCESSING_KEY])["std"] == [0.25]

    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    got = deploy.predict(tmp_path / "m.onnx", [str(tmp_path / "x.npy")], provider="cpu")
    assert any("preprocessing (from the model)" in note for note in got.notes)
    want = open_session(tmp_path / "m.onnx", "cpu").run((x - 0.5) / 0.25)
    assert np.allclose(got.outputs, want, atol=1e-6)
    raw = open_session(tmp_path / "m.onnx", "cpu").run(x)
    assert not np.allclose(got.outputs, raw, atol=1e-3)  # normalization changed the answer
