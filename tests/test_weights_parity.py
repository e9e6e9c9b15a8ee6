"""Every zoo spec with a torchvision twin takes the twin's weights, mapped by structure, and
gives the same logits: in PyTorch within 1e-5 (relative to the largest logit), and through
`netspec export` in ONNX Runtime within 1e-4; also from an ONNX file `torch.onnx.export` wrote.

torchvision is a test-only dependency (installed with --no-deps; its model code runs once its
compiled-op registrations are stubbed out). Without it these tests skip, except under
NETSPEC_REQUIRE_TORCHVISION=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest
import torch
from helpers.twins import (
    float32_floor,
    logits,
    mapped,
    onnx_logits,
    relative,
    sample,
    spec_graph,
    torchvision_models,
)
from helpers.twins import twin as make_twin

import netspec
from netspec.weights.mapper import map_weights
from netspec.weights.pretrained import TWINS
from netspec.weights.sources import from_module, read_source

ROOT = Path(__file__).resolve().parents[1]
# The default run (2 cores, loaded) keeps the small twins and the ones whose order is special
# (GoogLeNet's aux heads stored before its classifier); the rest are marked slow.
LIGHT = ("resnet18", "mobilenet_v3_small", "googlenet_aux")


def _torchvision() -> types.ModuleType:
    """torchvision's models, or a skip (a failure under NETSPEC_REQUIRE_TORCHVISION=1)."""
    models = torchvision_models()
    if models is None:
        if os.environ.get("NETSPEC_REQUIRE_TORCHVISION") == "1":
            pytest.fail("torchvision is required here (NETSPEC_REQUIRE_TORCHVISION=1)")
        pytest.skip("torchvision is not installed")
    return models


def _twin(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    return make_twin(_torchvision(), name, shape)


def _params(names):
    return [n if n in LIGHT else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _params(sorted(TWINS)))
def test_twin_weights_give_the_same_logits(name: str) -> None:
    graph = spec_graph(name)
    ref = _twin(name, graph.input.shape)
    model = mapped(graph, ref)
    x = sample(graph)
    with torch.no_grad():
        got = model.logits(x)
    rel = relative(logits(ref, x).numpy(), got.numpy())
    print(f"parity {name}: torch {rel:.1e}")
    assert rel <= 1e-5, rel


# googlenet_aux's main path is googlenet's (exported alike).
@pytest.mark.parametrize("name", _params([n for n in sorted(TWINS) if n != "googlenet_aux"]))
def test_twin_weights_exported_run_the_same_in_onnx_runtime(name: str, tmp_path: Path) -> None:
    graph = spec_graph(name)
    ref = _twin(name, graph.input.shape)
    x = sample(graph)
    got = onnx_logits(name, mapped(graph, ref), x, tmp_path)
    rel = relative(logits(ref, x).numpy(), got)
    print(f"parity {name}: onnxruntime {rel:.1e}")
    if rel > 1e-4:  # deep nets: float32's own rounding (torch's, against float64) is that large
        floor = float32_floor(ref, x)
        print(f"parity {name}: torch float32 against float64 {floor:.1e}")
        assert rel <= 2 * floor, (rel, floor)


def test_a_traced_module_maps_in_execution_order() -> None:
    """GoogLeNet registers its auxiliary heads before its classifier; traced, the main path's
    layers come in the order they run, and the heads after (they do not run in eval)."""
    ref = _twin("googlenet_aux", (3, 224, 224))
    graph = netspec.compile_spec(ROOT / "specs" / "googlenet_aux.ns")
    source = from_module(ref, graph.input.shape)
    names = [layer.name for layer in source.layers]
    assert names.index("fc") < names.index("aux1.conv.conv")  # fc runs; aux1 does not
    mapping = map_weights(graph, source)
    assert {e.slot.id: e.source.name for e in mapping.entries}["fc"] == "fc"


def test_an_onnx_file_from_torch_onnx_export_maps_back(tmp_path: Path) -> None:
    """The TorchScript exporter, batch norms kept (`do_constant_folding=False`): a file
    exported with them folded into the convolutions has another structure (see
    netspec.deploy.onnx_weights)."""
    ref = _twin("resnet18", (3, 224, 224))
    path = tmp_path / "r18.onnx"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(ref, (x,), str(path), dynamo=False, do_constant_folding=False)
    graph = netspec.compile_spec(ROOT / "specs" / "resnet18.ns")
    source = read_source(str(path))
    assert source.order == "graph"
    mapping = map_weights(graph, source)
    model = netspec.build(graph, seed=1).eval()
    mapping.apply(model)
    with torch.no_grad():
        rel = relative(ref(x).numpy(), model.logits(x).numpy())
    print(f"parity resnet18 from torch.onnx.export: {rel:.1e}")
    assert rel <= 1e-5
