"""Dense (per-pixel) outputs (issue 9, item 10): `classes K per pixel` declares that the output
is a map [K, H, W] ending in a SOFTMAX over channels, with no implicit flatten or FC; the class
check reads the channel count; build, export and run work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.backends.lower_torch import build
from netspec.cli import main
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph

SEG = "input [3, 16, 16]\nclasses 3 per pixel\n"
CHAIN = (
    "INPUT -> CONV(8) -> RELU -> POOL -> CONVTRANSPOSE(8, 2, stride=2) -> CONV(3, 1) -> SOFTMAX\n"
)


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


def graph(text: str) -> Graph:
    return load_spec_text(text, "seg.ns").instantiate({})


def refused(text: str):
    with pytest.raises(SpecErrors) as info:
        graph(text)
    return info.value.errors[0]


def test_a_dense_output_keeps_its_map() -> None:
    g = graph(SEG + CHAIN)
    assert g.per_pixel and g.classes == 3
    assert g.output_shape == (3, 16, 16)
    assert not any(n.implicit for n in g.nodes)  # no flatten, no classifier FC
    again = Graph.model_validate_json(g.model_dump_json())
    assert again.per_pixel and again.output_shape == (3, 16, 16)


def test_without_softmax_the_map_is_checked_too() -> None:
    g = graph(SEG + "INPUT -> CONV(8) -> CONV(3, 1)\n")
    assert g.output_shape == (3, 16, 16)
    err = refused(SEG + "INPUT -> CONV(8) -> CONV(4, 1)\n")
    assert "4 maps" in err.message and "3 classes" in err.message


def test_a_flattening_layer_before_a_dense_output_is_named() -> None:
    err = refused(SEG + "INPUT -> CONV(8) -> GAP -> FC(3) -> SOFTMAX\n")
    assert "`gpool1` flattens the map to [8]" in err.message and "per pixel" in err.message
    assert (err.span.line, err.span.col) == (3, 21)  # GAP, where the map was lost
    err = refused(SEG + "INPUT -> CONV(8) -> FC(3) -> SOFTMAX\n")
    assert "`flatten1`" in err.message


def test_the_channel_count_is_the_class_check() -> None:
    err = refused(SEG + "INPUT -> CONV(8) -> CONV(2, 1) -> SOFTMAX\n")
    assert "2 maps" in err.message and "3 classes" in err.message
    assert err.hint is not None and "CONV(3, 1)" in err.hint
    assert (err.span.line, err.span.col) == (3, 21)


def test_per_pixel_parses_as_a_phrase() -> None:
    with pytest.raises(NetspecError) as info:
        load_spec_text("input [3, 8, 8]\nclasses 2 per\nINPUT -> CONV(2, 1)\n", "seg.ns")
    assert info.value.span is not None and info.value.span.line == 3


def test_torch_softmax_over_channels_per_pixel() -> None:
    g = graph(SEG + CHAIN)
    model = build(g).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
        logits = model.logits(x)
    assert tuple(y.shape) == (2, 3, 16, 16)
    assert torch.allclose(y.sum(1), torch.ones(2, 16, 16), atol=1e-5)
    assert torch.allclose(y, logits.softmax(1))
    assert sum(p.numel() for p in model.parameters()) == g.totals.params


def test_export_and_run_print_classes_per_pixel(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "seg.ns"
    spec.write_text(SEG + CHAIN)
    model = tmp_path / "seg.onnx"
    assert main(["export", str(spec), "-o", str(model)]) == 0
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    labels = tmp_path / "labels.txt"
    labels.write_text("sky\nroad\ncar\n")
    capsys.readouterr()
    assert main(["run", str(model), "-i", str(tmp_path / "x.npy"), "--labels", str(labels)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "classes per pixel [16x16]" in line]
    assert len(rows) == 2
    shares = [float(p.split()[-1].rstrip("%")) for p in rows[0].split(": ")[-1].split(", ")]
    assert [p.split()[0] for p in rows[0].split(": ")[-1].split(", ")] == ["sky", "road", "car"]
    assert sum(shares) == pytest.approx(100, abs=0.2)
