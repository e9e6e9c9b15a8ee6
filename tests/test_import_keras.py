"""`netspec import` of Keras 3 `.keras` files, built here without TensorFlow (a zip of
config.json and an h5py-written model.weights.h5 in Keras 3's layout)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netspec import compile_spec
from netspec.cli import main

h5py = pytest.importorskip("h5py")


def layer(cls: str, name: str, inbound: list[str] | None = None, **cfg) -> dict:
    out = {"module": "keras.layers", "class_name": cls, "config": {"name": name, **cfg}}
    if inbound is not None:
        tensors = [
            {"class_name": "__keras_tensor__", "config": {"keras_history": [n, 0, 0]}}
            for n in inbound
        ]
        out["inbound_nodes"] = [{"args": [tensors] if len(tensors) > 1 else tensors}]
    return out


def write_keras(path: Path, layers: list[dict], weights: dict, functional: bool = False) -> Path:
    kind = "Functional" if functional else "Sequential"
    config = {"module": "keras", "class_name": kind, "config": {"name": "tiny", "layers": layers}}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name, arrays in weights.items():
            group = f.create_group(f"layers/{name}/vars")
            for i, array in enumerate(arrays):
                group.create_dataset(str(i), data=array)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        z.writestr("model.weights.h5", buffer.getvalue())
    return path


def random(*shape: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(sum(shape)).standard_normal(shape)).astype(np.float32)


def sequential(tmp_path: Path, dense_rows: int = 24) -> Path:
    layers = [
        layer("InputLayer", "input_layer", batch_shape=[None, 8, 8, 1]),
        layer(
            "Conv2D",
            "conv",
            filters=4,
            kernel_size=[3, 3],
            strides=[1, 1],
            padding="same",
            activation="relu",
        ),
        layer("BatchNormalization", "bn", epsilon=0.001),
        layer("MaxPooling2D", "pool", pool_size=[2, 2], strides=[2, 2], padding="valid"),
        layer("Conv2D", "conv_1", filters=6, kernel_size=[3, 3], padding="valid", use_bias=False),
        layer("Flatten", "flatten"),
        layer("Dropout", "dropout", rate=0.5),
        layer("Dense", "dense", units=10, activation="softmax"),
    ]
    weights = {
        "conv": [random(3, 3, 1, 4), random(4)],
        "bn": [random(4), random(4), random(4), np.abs(random(4)) + 0.5],
        "conv_1": [random(3, 3, 4, 6)],
        "dense": [random(dense_rows, 10), random(10)],
    }
    return write_keras(tmp_path / "tiny.keras", layers, weights)


def test_a_sequential_keras_file_imports_with_weights_in_torch_layouts(tmp_path: Path) -> None:
    source = sequential(tmp_path)
    out, weights = tmp_path / "tiny.ns", tmp_path / "tiny.safetensors"
    assert main(["import", str(source), "-o", str(out), "--weights", str(weights)]) == 0
    graph = compile_spec(out)
    assert graph.input.shape == (1, 8, 8)  # channels-last [8, 8, 1] as channels-first
    assert [n.kind for n in graph.nodes if n.kind != "input"] == [
        "conv",
        "relu",
        "batchnorm",
        "pool",
        "conv",
        "flatten",
        "fc",
        "softmax",
    ]
    assert graph.totals.params == 4 * 9 + 4 + 8 + 6 * 36 + 24 * 10 + 10
    from safetensors.numpy import load_file

    state = load_file(str(weights))
    conv = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    assert state[conv].shape == (4, 1, 3, 3)  # HWIO -> OIHW


def test_a_functional_keras_file_with_a_residual_add(tmp_path: Path) -> None:
    layers = [
        layer("InputLayer", "x", batch_shape=[None, 6, 6, 4]),
        layer(
            "Conv2D", "c1", ["x"], filters=4, kernel_size=[3, 3], padding="same", activation="relu"
        ),
        layer("Conv2D", "c2", ["c1"], filters=4, kernel_size=[3, 3], padding="same"),
        layer("Add", "add", ["c2", "x"]),
        layer("GlobalAveragePooling2D", "gap", ["add"]),
        layer("Dense", "fc", ["gap"], units=3),
    ]
    weights = {
        "c1": [random(3, 3, 4, 4), random(4)],
        "c2": [random(3, 3, 4, 4), random(4)],
        "fc": [random(4, 3), random(3)],
    }
    source = write_keras(tmp_path / "res.keras", layers, weights, functional=True)
    out = tmp_path / "res.ns"
    assert main(["import", str(source), "-o", str(out)]) == 0
    text = out.read_text()
    assert "residual(" in text
    assert compile_spec(out).output_shape == (3,)


def test_weights_that_do_not_fit_the_layers_are_refused_and_nothing_written(tmp_path: Path) -> None:
    source = sequential(tmp_path, dense_rows=25)  # a Dense kernel one row too many
    out = tmp_path / "bad.ns"
    assert main(["import", str(source), "-o", str(out)]) == 2
    assert not out.exists()


def test_a_zip_that_is_not_keras_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "x.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    assert main(["import", str(path), "-o", str(tmp_path / "x.ns")]) == 2
    assert "not a Keras 3 file" in capsys.readouterr().err
