"""The trainer refuses what `netspec train` refuses, with the same words: a Python caller of
`netspec.train.launch.train` gets the library's checks (netspec.train.validate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text
from netspec.train.data import load_data
from netspec.train.launch import train
from netspec.train.settings import resolve_settings
from netspec.train.trainer import Job

BN = """input [1, 8, 8]
classes 3
INPUT -> CONV(4) -> BN -> RELU -> GAP -> FC(3) -> SOFTMAX
"""


def job(tmp_path: Path, text: str, **flags: object) -> Job:
    graph = load_spec_text(text, "validate.ns").instantiate()
    settings = resolve_settings({}, {"data": "synthetic:16", "epochs": 1, **flags})
    data = load_data(settings.data, graph.input.shape, graph.classes, seed=0, val_split=0.25)
    return Job(graph, settings, data, tmp_path, device="cpu", quiet=True, threads=1)


def test_batch_norm_on_batches_of_one_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(NetspecError) as info:
        train(job(tmp_path, BN, batch_size=1))
    assert info.value.message == (
        "validate has batch norm, which needs at least 2 examples per batch: "
        "--batch-size 1 over 1 process(es) gives 1 example(s) each"
    )
    assert list(tmp_path.iterdir()) == []  # refused before any checkpoint or metric


def test_a_head_of_another_shape_is_refused_before_training(tmp_path: Path) -> None:
    text = "input [1, 8, 8]\nclasses 3\nINPUT -> CONV(4) as c1 -> GAP -> FC(3) -> SOFTMAX\n"
    text += "head aux at c1: GAP -> FC(5)\n"
    with pytest.raises(NetspecError, match=r"side head `aux` outputs \[5\]"):
        train(job(tmp_path, text, batch_size=4))
    assert list(tmp_path.iterdir()) == []
