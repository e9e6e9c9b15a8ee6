"""`netspec import` of ONNX files and PyTorch modules: round trips, exactness, bad input."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from netspec import compile_spec
from netspec.cli import main

SKIP = {"dropout", "identity", "drop_path"}


def sequence(graph) -> list:
    return [(n.kind, n.shape) for n in graph.nodes if n.kind not in SKIP]


def export(spec: str, path: Path) -> Path:
    assert main(["export", spec, "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("name", ["mnist_cnn", "lenet5"])
def test_zoo_round_trip_gives_the_same_layers_figures_and_outputs(
    name: str, tmp_path: Path
) -> None:
    source = export(f"zoo:{name}", tmp_path / "m.onnx")
    out, weights = tmp_path / "m.ns", tmp_path / "m.safetensors"
    assert main(["import", str(source), "-o", str(out), "--weights", str(weights)]) == 0
    original, imported = compile_spec(f"zoo:{name}"), compile_spec(out)
    assert sequence(imported) == sequence(original)
    assert imported.totals.params == original.totals.params
    assert imported.totals.macs == original.totals.macs
    from safetensors.numpy import load_file

    state = load_file(str(weights))
    assert sum(a.size for a in state.values()) == imported.totals.params + imported.totals.buffers


@pytest.mark.slow
def test_resnet18_round_trip_recovers_its_blocks(tmp_path: Path) -> None:
    source = export("zoo:resnet18", tmp_path / "r.onnx")
    from netspec.deploy.importer.sources import import_any

    imported = import_any(str(source))
    assert imported.ok, imported.checks
    assert {b.name for b in imported.written.blocks} == {"res", "proj"}
    assert sequence(imported.graph) == sequence(compile_spec("zoo:resnet18"))
    assert len(imported.written.text.splitlines()) <= 30


def test_check_and_draw_read_an_onnx_file_through_the_importer(tmp_path: Path, capsys) -> None:
    source = export("zoo:mnist_cnn", tmp_path / "m.onnx")
    capsys.readouterr()
    assert main(["check", str(source), "--brief"]) == 0
    assert f"{compile_spec('zoo:mnist_cnn').totals.params:,}" in capsys.readouterr().out
    assert main(["draw", str(source), "-o", str(tmp_path / "m.dot")]) == 0
    assert (tmp_path / "m.dot").read_text().count("label=") >= 10


def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def tensor(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def conv_model(dims: list, extra: list | None = None) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1])]
    nodes += extra or []
    last = nodes[-1].output[0]
    return model(nodes, [tensor("x", dims)], [tensor(last, None)], [w])


def refused(tmp_path: Path, m: onnx.ModelProto | bytes, capsys, *args: str) -> str:
    path = tmp_path / "bad.onnx"
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    out = tmp_path / "out.ns"
    capsys.readouterr()
    assert main(["import", str(path), "-o", str(out), *args]) == 2
    assert not out.exists() and not list(tmp_path.glob("*.ns*"))
    return capsys.readouterr().err


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path, capsys) -> None:
    assert "not an ONNX" in refused(tmp_path, b"\x00\x01garbage, not a protobuf" * 5, capsys)


def test_a_truncated_protobuf_is_refused(tmp_path: Path, capsys) -> None:
    data = conv_model(["N", 3, 8, 8]).SerializeToString()
    assert "not an ONNX" in refused(tmp_path, data[: len(data) // 2], capsys)


def test_dynamic_dims_ask_for_input_shape_and_it_works_with_one(tmp_path: Path, capsys) -> None:
    m = conv_model(["N", 3, "h", "w"])
    err = refused(tmp_path, m, capsys)
    assert "`x` has a dynamic dimension 2" in err and "--input-shape" in err
    path = tmp_path / "dyn.onnx"
    path.write_bytes(m.SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "d.ns"), "--input-shape", "3x8x8"]) == 0
    assert compile_spec(tmp_path / "d.ns").output_shape == (4, 8, 8)


def test_a_spatial_mean_reads_as_gap(tmp_path: Path) -> None:
    mean = helper.make_node("ReduceMean", ["y"], ["z"], name="mean", axes=[2, 3], keepdims=0)
    path = tmp_path / "mean.onnx"
    path.write_bytes(conv_model(["N", 3, 8, 8], [mean]).SerializeToString())
    assert main(["import", str(path), "-o", str(tmp_path / "m.ns")]) == 0
    assert compile_spec(tmp_path / "m.ns").nodes[-1].kind == "global_pool"


def test_an_op_without_a_kind_is_named_with_its_position(tmp_path: Path, capsys) -> None:
    m = conv_model(["N", 3, 8, 8], [helper.make_node("Erf", ["y"], ["z"], name="mystery")])
    err = refused(tmp_path, m, capsys)
    assert "`mystery` (Erf, node 2 of 2)" in err


def test_control_flow_is_refused(tmp_path: Path, capsys) -> None:
    branch = helper.make_graph([], "b", [], [tensor("y", None)])
    cond = numpy_helper.from_array(np.array(True), "c")
    node = helper.make_node(
        "If", ["c"], ["z"], name="choose", then_branch=branch, else_branch=branch
    )
    m = conv_model(["N", 3, 8, 8], [node])
    m.graph.initializer.append(cond)
    assert "control flow" in refused(tmp_path, m, capsys)


TINY_NETS = (
    "import torch\n"
    "import torch.nn as nn\n"
    "def net():\n"
    "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),\n"
    "                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))\n"
    "def broken():\n"
    "    raise RuntimeError('no such layer')\n"
    "class Branchy(nn.Module):\n"
    "    def forward(self, x):\n"
    "        return x if x.sum() > 0 else -x\n"
    "def branchy():\n"
    "    return Branchy()\n"
    "class Shuffled(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv = nn.Conv2d(1, 8, 3, padding=1)\n"
    "        self.branch = nn.Conv2d(4, 4, 1)\n"
    "    def forward(self, x):\n"
    "        x1, x2 = self.conv(x).chunk(2, dim=1)\n"
    "        x = torch.cat((x1, nn.functional.gelu(self.branch(x2))), dim=1)\n"
    "        b, c, h, w = x.shape\n"
    "        return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)\n"
    "def shuffled():\n"
    "    return Shuffled()\n"
)


@pytest.mark.slow  # torch.export and its ONNX translation: ~5 s of CPU the first time
def test_a_module_factory_is_imported_by_torch_export_and_checked_against_torch(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "tiny_nets.py").write_text(TINY_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "t.ns"
    args = ["--input-shape", "1x8x8", "-o", str(out)]
    capsys.readouterr()
    assert main(["import", "module:tiny_nets:net", *args]) == 0
    assert "ok   module   702 params + buffers in the module" in capsys.readouterr().err
    graph = compile_spec(out)
    assert [n.kind for n in graph.nodes if n.kind != "input"] == [
        "conv",
        "batchnorm",
        "relu",
        "pool",
        "flatten",
        "fc",
    ]
    out.unlink()
    # torch.export's own spellings: a chunk, GELU's erf, a shuffle whose view follows shape math
    assert main(["import", "module:tiny_nets:shuffled", *args]) == 0
    kinds = [n.kind for n in compile_spec(out).nodes]
    assert {"slice", "gelu", "channel_shuffle"} <= set(kinds)
    out.unlink()
    # A data-dependent branch: torch.export refuses it (tracing would bake one branch in).
    assert main(["import", "module:tiny_nets:branchy", *args]) == 2
    assert "torch.export cannot capture `module:tiny_nets:branchy`" in capsys.readouterr().err
    assert not out.exists()


def test_a_factory_that_raises_is_refused_and_nothing_written(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "tiny_nets.py").write_text(TINY_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "t.ns"
    capsys.readouterr()
    assert (
        main(["import", "module:tiny_nets:broken", "--input-shape", "1x8x8", "-o", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert "the factory `tiny_nets:broken` raised RuntimeError: no such layer" in err
    assert "Traceback" not in err and not out.exists()


def torchvision_models():
    # torchvision's model code runs against this torch once its meta registrations are empty.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("meta"))
    if os.environ.get("NETSPEC_REQUIRE_TORCHVISION") != "1":
        pytest.importorskip("torchvision")
    import torchvision

    return torchvision.models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "densenet121"])
def test_torchvision_models_import_exactly_within_30_lines(name: str, tmp_path: Path) -> None:
    import warnings

    import torch

    models = torchvision_models()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(models, name)(weights=None).eval()
        torch.onnx.export(
            net, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17
        )
    from netspec.deploy.importer.sources import import_any

    imported = import_any(str(path))
    assert imported.ok, imported.checks
    assert len(imported.written.text.splitlines()) <= 30
