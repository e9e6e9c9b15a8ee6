"""Weights mapped by structure (issue 21): any names, the order layers run in, kinds and shapes
checked for every tensor; and bad input refused with both sides named, nothing written."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import netspec
from netspec.errors import NetspecError
from netspec.weights import pretrained
from netspec.weights.mapper import map_weights
from netspec.weights.sources import from_state_dict, read_source

ROOT = Path(__file__).resolve().parents[1]
TINY = """network tiny
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> BN -> RELU -> POOL -> FC(8) -> RELU -> FC(classes) -> SOFTMAX
"""
SCALED = """network scaled
input [4, 6, 6]
classes 3
INPUT -> residual(DWCONV(3) -> LAYERNORM -> CONV(8, 1) -> GELU -> CONV(4, 1) -> LAYERSCALE(0.5))
  -> GAP -> FC(classes) -> SOFTMAX
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "netspec", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors under names that share nothing with the spec's (`m0.weight`, ...)."""
    prefixes: dict[str, str] = {}
    out = {}
    for key, value in state.items():
        prefix, _, suffix = key.rpartition(".")
        prefixes.setdefault(prefix, f"features.m{len(prefixes)}")
        out[f"{prefixes[prefix]}.{suffix}"] = value.clone()
    return out


def test_names_do_not_matter_structure_does() -> None:
    graph = netspec.compile_spec(TINY)
    source = netspec.build(graph, seed=3).eval()
    mapping = map_weights(graph, from_state_dict(_renamed(source.state_dict())))
    assert [e.source.name for e in mapping.entries] == [f"features.m{i}" for i in range(4)]
    model = netspec.build(graph, seed=0).eval()
    mapping.apply(model)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), source(x))


def test_a_parent_parameter_stored_first_still_maps_to_the_layer_that_runs_last() -> None:
    """torchvision's ConvNeXt block stores `layer_scale` before the layers it scales; and a
    per-position Linear ([out, in]) fits a 1x1 convolution."""
    graph = netspec.compile_spec(SCALED)
    ref = netspec.build(graph, seed=5).eval()
    sd = ref.state_dict()
    foreign = {"block.layer_scale": sd["scale1.weight"].clone()}
    for key, value in sd.items():
        if "scale1" in key:
            continue
        if key in ("conv1.weight", "conv2.weight"):
            value = value.flatten(1)  # nn.Linear's layout
        foreign[f"block.inner.{key}"] = value.clone()
    mapping = map_weights(graph, from_state_dict(foreign))
    taken = {e.slot.id: e.source.name for e in mapping.entries}
    assert taken["scale1"] == "block" and taken["conv2"] == "block.inner.conv2"
    model = netspec.build(graph, seed=0).eval()
    mapping.apply(model)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(model(x), ref(x), atol=1e-6)


def test_a_new_classifier_is_reinitialised_and_named() -> None:
    graph = netspec.compile_spec(TINY)
    six = netspec.compile_spec(TINY.replace("classes 4", "classes 6"))
    mapping = map_weights(graph, from_state_dict(netspec.build(six, seed=1).state_dict()))
    (entry,) = mapping.reinitialised
    assert entry.slot.id == "fc2" and "4 classes here, 6 in the source" in entry.note
    assert "fc2.weight" not in mapping.tensors() and "fc1.weight" in mapping.tensors()


def test_a_conv_where_the_spec_has_a_linear_is_refused() -> None:
    graph = netspec.compile_spec(TINY)
    sd = _renamed(netspec.build(graph, seed=1).state_dict())
    sd["features.m2.weight"] = sd["features.m2.weight"][:, :, None, None]  # fc1 as a 1x1 conv
    with pytest.raises(NetspecError) as info:
        map_weights(graph, from_state_dict(sd))
    text = info.value.render()
    assert "spec `fc1` (fc: weight [8, 64], bias [8])  <->  source `features.m2` (conv: " in text


def test_classes_given_but_no_classifier_in_the_source() -> None:
    graph = netspec.compile_spec(TINY)
    sd = {k: v for k, v in netspec.build(graph, seed=1).state_dict().items() if "fc2" not in k}
    with pytest.raises(NetspecError, match="has 4 classes but .* no classifier for `fc2`"):
        map_weights(graph, from_state_dict(sd))
    partial = map_weights(graph, from_state_dict(sd), partial=True)
    assert [e.slot.id for e in partial.missing] == ["fc2"]


def test_the_onnx_initializers_of_an_exported_model_map_back(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.ns"
    spec.write_text(TINY)
    out = tmp_path / "tiny.onnx"
    assert _cli("export", str(spec), "-o", str(out), "--seed", "4").returncode == 0
    graph = netspec.compile_spec(TINY)
    mapping = map_weights(graph, read_source(str(out)))
    want = netspec.build(graph, seed=4).state_dict()
    for key, tensor in mapping.tensors().items():
        assert torch.allclose(tensor.float(), want[key].float()), key


def test_bad_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    graph = netspec.compile_spec(TINY)
    good = tmp_path / "good.pth"
    torch.save(netspec.build(graph, seed=1).state_dict(), good)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[:300])
    module = tmp_path / "module.pth"
    torch.save(netspec.build(graph, seed=1), module)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    cases = [
        (truncated, "cannot read the weights in"),
        (module, "is a pickle that needs code to load, which netspec never runs"),
        (broken, "cannot read the weights in"),
    ]
    for path, needle in cases:
        with pytest.raises(NetspecError) as info:
            read_source(str(path))
        assert needle in info.value.message and str(path) in info.value.message


def test_another_architecture_is_refused_and_nothing_written(tmp_path: Path) -> None:
    r34 = netspec.build(netspec.compile_spec(ROOT / "specs" / "resnet34.ns"), seed=0)
    weights = tmp_path / "resnet34.pth"
    torch.save(_renamed(r34.state_dict()), weights)
    out = tmp_path / "mapped.safetensors"
    done = _cli("weights", "zoo:resnet50", str(weights), "-o", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the weights in {weights} do not fit resnet50" in done.stderr
    assert (
        "spec `layer1.bottleneck1.conv1` (conv: weight [64, 64, 1, 1])  <->  source " in done.stderr
    )
    assert "(conv: weight [64, 64, 3, 3])" in done.stderr
    assert not out.exists()


def test_pretrained_offline_says_which_file_goes_where(tmp_path: Path) -> None:
    done = _cli("weights", "zoo:resnet50", "pretrained", env={"TORCH_HOME": str(tmp_path)})
    assert done.returncode == 2
    place = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert f"no {place}" in done.stderr
    assert "download https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in done.stderr
    done = _cli("weights", "zoo:unet", "pretrained", env={"TORCH_HOME": str(tmp_path)})
    assert "`unet` has no torchvision twin" in done.stderr


def test_pretrained_from_the_hub_cache_checks_the_hash(tmp_path: Path, monkeypatch) -> None:
    graph = netspec.compile_spec(TINY)
    blob = tmp_path / "blob.pth"
    torch.save(netspec.build(graph, seed=2).state_dict(), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    fake = pretrained.Weights(
        "tiny", "V1", f"https://example.org/tiny-{digest[:8]}.pth",
        pretrained.Preprocessing(36, 32, (0.5,), (0.25,)), 99.0, True, 4,
    )  # fmt: skip
    monkeypatch.setattr(pretrained, "WEIGHTS", (fake,))
    monkeypatch.setitem(pretrained.TWINS, "tiny", "tiny")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / fake.file).write_bytes(blob.read_bytes())
    source = read_source("pretrained", "tiny")
    assert source.published == fake and source.preprocessing == fake.preprocessing
    assert len(map_weights(graph, source).tensors()) == 11  # conv, fc x2: 6; bn: 5
    (cache / fake.file).write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(NetspecError, match=f"the file's name says {digest[:8]}"):
        read_source("torchvision:tiny.V1")


def test_every_twin_names_published_weights_and_preprocessing() -> None:
    for spec, model in pretrained.TWINS.items():
        assert (ROOT / "specs" / f"{spec}.ns").is_file()
        options = pretrained.weights_of(model)
        assert options and options[0].default
        for w in options:
            assert w.url.startswith("https://download.pytorch.org/models/")
            assert len(w.hash_prefix) == 8 and int(w.hash_prefix, 16) >= 0
            crop = 299 if model == "inception_v3" else 224
            assert w.preprocessing.crop == crop and len(w.preprocessing.mean) == 3


def test_set_classes_replaces_the_declared_count() -> None:
    graph = netspec.compile_spec("zoo:resnet18", bindings={"classes": 7})
    assert graph.classes == 7 and graph.output_shape == (7,)
    assert graph.node("fc1").params == 512 * 7 + 7
    with pytest.raises(NetspecError, match="expected a positive integer. Received: classes=0"):
        netspec.compile_spec("zoo:resnet18", bindings={"classes": 0})


def test_preprocessing_normalizes_torch_and_numpy_alike_and_round_trips() -> None:
    prep = pretrained.lookup("torchvision:googlenet", "").preprocessing
    assert prep.mean == (0.5, 0.5, 0.5)  # torchvision's transform_input folded in
    x = torch.rand(2, 3, 4, 4)
    got = prep.apply(x)
    assert torch.allclose(got, (x - 0.5) / 0.5)
    assert torch.allclose(torch.from_numpy(prep.apply(x.numpy())), got)
    assert pretrained.Preprocessing.from_json(prep.to_json()) == prep
    with pytest.raises(NetspecError, match="expect images of 3 channels"):
        prep.apply(torch.rand(2, 1, 4, 4))
