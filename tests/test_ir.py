"""The IR on its own: language features, counting rules, JSON round trips, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cpu import HANG_S

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import Builder, load_spec, load_spec_text
from netspec.ir.graph import Graph

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.ns"))


def compile_text(text: str, **bindings):
    return load_spec_text(text, "t.ns").instantiate(bindings)


def shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    return {n.id: n.shape for n in graph.nodes}


HEAD = "input [3, 32, 32]\nclasses 10\n"


def test_conv_same_valid_explicit_and_dilation() -> None:
    g = compile_text(
        HEAD
        + "INPUT -> CONV(8, 3, stride=2) -> CONV(8, 5, padding=valid) -> CONV(8, 3, dilation=2, padding=2) -> GAP -> FC(10) -> SOFTMAX"
    )
    s = shapes(g)
    assert s["conv1"] == (8, 16, 16)  # same: ceil(32 / 2)
    assert s["conv2"] == (8, 12, 12)  # valid: 16 - 5 + 1
    assert s["conv3"] == (8, 12, 12)  # reach 5, padding 2
    assert g.node("conv1").params == 8 * 3 * 9 + 8


def test_one_by_one_reduction_and_groups() -> None:
    g = compile_text(
        HEAD
        + "INPUT -> CONV(64) -> CONV(16, 1) -> CONV(32, 3, groups=4) -> GAP -> FC(10) -> SOFTMAX"
    )
    assert g.node("conv2").params == 64 * 16 + 16
    assert g.node("conv3").params == 32 * (16 // 4) * 9 + 32
    assert g.node("conv2").macs == 32 * 32 * 16 * 64


def test_pool_defaults_and_ceil_mode() -> None:
    g = compile_text(
        "input [3, 15, 15]\nclasses 10\nINPUT -> POOL -> POOL(3, stride=2, ceil=on) -> AVGPOOL(2, stride=1) -> FC(10) -> SOFTMAX"
    )
    s = shapes(g)
    assert s["pool1"] == (3, 7, 7)  # bare POOL: 2x2 max, stride 2
    assert s["pool2"] == (3, 3, 3)  # ceil((7 - 3) / 2) + 1
    assert s["pool3"] == (3, 2, 2)
    assert g.node("pool3").args["mode"] == "avg"


def test_repetition_nested_and_index_variable() -> None:
    g = compile_text(
        HEAD + "INPUT -> [[CONV(8 * 2**i) -> RELU]*2 -> POOL]*3 for i -> GAP -> FC(10) -> SOFTMAX"
    )
    convs = [n for n in g.nodes if n.kind == "conv"]
    assert [c.shape[0] for c in convs] == [8, 8, 16, 16, 32, 32]
    assert convs[-1].shape == (32, 8, 8)


def test_optional_switch_and_condition() -> None:
    text = (
        HEAD
        + "INPUT -> [CONV(8) -> POOL?]*2 -> [CONV(8) -> POOL?(i < 1)]*2 for i -> GAP -> FC(10) -> SOFTMAX"
    )
    spec = load_spec_text(text, "t.ns")
    assert spec.free["pool"].switch
    on = spec.instantiate({"pool": "on"})
    off = spec.instantiate({"pool": "off"})
    assert sum(n.kind == "pool" for n in on.nodes) == 3
    assert sum(n.kind == "pool" for n in off.nodes) == 1


def test_defaults_override_bare_layers() -> None:
    g = compile_text(
        HEAD + "defaults CONV(16, padding=valid), FC(64)\nINPUT -> CONV -> FC -> FC(10) -> SOFTMAX"
    )
    assert g.node("conv1").shape == (16, 30, 30)
    assert g.node("fc1").shape == (64,)


def test_constants_expressions_and_si_suffixes() -> None:
    g = compile_text(
        HEAD
        + "budget params <= 1.5M, memory <= 2MiB\nc = 64\nINPUT -> CONV(c // 4) -> CONV(2*c - 1) -> GAP -> FC(10) -> SOFTMAX"
    )
    assert [n.shape[0] for n in g.nodes if n.kind == "conv"] == [16, 127]
    assert g.budgets[0].limit == 1_500_000
    assert g.budgets[1].limit == 2 * 2**20


def test_conditional_expression() -> None:
    spec = load_spec_text(
        HEAD
        + "v1 = off\nINPUT -> CONV(8, 1, stride=(2 if v1 else 1)) -> CONV(8, stride=(1 if v1 else 2)) -> GAP -> FC(10) -> SOFTMAX",
        "t.ns",
    )
    assert spec.instantiate().node("conv2").shape == (8, 16, 16)
    assert spec.instantiate({"v1": "on"}).node("conv1").shape == (8, 16, 16)


def test_blocks_scopes_and_labels() -> None:
    text = HEAD + (
        "block unit(c, s=1) = CONV(c, stride=s) -> BN -> RELU\n"
        "INPUT -> unit(16) -> [unit(32, 2) -> unit(32)] as stage2 -> unit(8) as head -> GAP as gap -> FC(10) -> SOFTMAX"
    )
    g = compile_text(text)
    ids = [n.id for n in g.nodes]
    assert "unit1.conv1" in ids and "stage2.unit1.conv1" in ids and "stage2.unit2.bn1" in ids
    assert "head.conv1" in ids and "gap" in ids
    assert g.node("stage2.unit1.conv1").shape == (32, 16, 16)


def test_concat_and_residual_projection() -> None:
    text = HEAD + (
        "INPUT -> concat(CONV(8, 1), CONV(16, 3), POOL(3, stride=1, padding=1) -> CONV(4, 1)) : [28, 32, 32]\n"
        "  -> residual(CONV(32, stride=2) -> BN, project=auto) -> GAP -> FC(10) -> SOFTMAX"
    )
    g = compile_text(text)
    assert g.node("concat1").inputs == ["branch1.conv1", "branch2.conv1", "branch3.conv1"]
    proj = g.node("shortcut.conv1")
    assert proj.shape == (32, 16, 16) and proj.params == 28 * 32  # 1x1, no bias
    assert g.node("shortcut.bn1").params == 64 and g.node("shortcut.bn1").buffers == 64
    assert g.node("add1").inputs == ["bn1", "shortcut.bn1"]


def test_residual_identity_when_shapes_match() -> None:
    g = compile_text(
        HEAD
        + "INPUT -> CONV(8) -> residual(CONV(8) -> BN -> RELU -> CONV(8) -> BN, project=auto) -> GAP -> FC(10) -> SOFTMAX"
    )
    assert g.node("add1").inputs == ["bn2", "conv1"]
    assert not any(n.id.startswith("shortcut") for n in g.nodes)


def test_implicit_flatten_and_classifier_are_marked() -> None:
    g = compile_text(HEAD + "INPUT -> CONV(8) -> POOL -> SOFTMAX")
    implicit = [(n.kind, n.shape) for n in g.nodes if n.implicit]
    assert implicit == [("flatten", (8 * 16 * 16,)), ("fc", (10,))]
    g2 = compile_text(HEAD + "INPUT -> CONV(8) -> FC(10) -> SOFTMAX")
    assert [n.kind for n in g2.nodes if n.implicit] == ["flatten"]


def test_text_embedding_conv1d() -> None:
    g = compile_text(
        "input tokens(length=21, vocab=10000)\nclasses 2\nINPUT -> EMBEDDING(128) -> CONV1D(32, 5, padding=valid) -> RELU -> MAXPOOL1D(3) -> GMP -> FC(2) -> SOFTMAX"
    )
    s = shapes(g)
    assert s["embedding1"] == (128, 21)
    assert s["conv1"] == (32, 17) and s["pool1"] == (32, 5) and s["gpool1"] == (32,)
    assert g.node("embedding1").params == 1_280_000
    assert g.input.vocab == 10000


def test_memory_counts_outputs_not_inplace_layers() -> None:
    g = compile_text(
        "input [1, 4, 4]\nclasses 2\nINPUT -> CONV(2) -> RELU -> DROPOUT -> FLATTEN -> FC(2) -> SOFTMAX"
    )
    assert [n.memory for n in g.nodes] == [16, 32, 0, 0, 0, 2, 0]
    assert g.totals.memory_elements == 50 and g.totals.memory_bytes == 200


def test_dtype_sets_bytes() -> None:
    g = compile_text("input [1, 4, 4]\nclasses 2\ndtype bf16\nINPUT -> FC(2) -> SOFTMAX")
    assert g.totals.memory_bytes == g.totals.memory_elements * 2


def test_batchnorm_buffers_are_not_params() -> None:
    g = compile_text(HEAD + "INPUT -> CONV(8, bias=off) -> BN -> GAP -> FC(10) -> SOFTMAX")
    bn = g.node("bn1")
    assert (bn.params, bn.buffers) == (16, 16)
    assert g.totals.params == 3 * 8 * 9 + 16 + 8 * 10 + 10
    assert g.totals.buffers == 16


def test_set_overrides_constants_and_checks_domains() -> None:
    spec = load_spec_text(
        HEAD + "N in 1..3\nw = 8\nINPUT -> [CONV(w) -> RELU]*N -> GAP -> FC(10) -> SOFTMAX", "t.ns"
    )
    g = spec.instantiate({"N": "2", "w": "16"})
    assert sum(n.kind == "conv" for n in g.nodes) == 2 and g.node("conv1").shape[0] == 16
    with pytest.raises(SpecErrors, match=r"N=7 is outside its domain 1\.\.3"):
        spec.instantiate({"N": 7})


def test_light_instances_agree_with_full_ones() -> None:
    spec = load_spec_text(
        HEAD
        + "N in 1..2\nM in 1..4\nINPUT -> [[CONV(8 * 2**i) -> RELU]*N -> POOL?]*M for i -> SOFTMAX",
        "t.ns",
    )
    for N in (1, 2):
        for M in (1, 2, 3, 4):
            for pool in (True, False):
                b = {"N": N, "M": M, "pool": pool}
                full, _ = spec.instantiate(b, collect=True)
                light, _ = spec.instantiate(b, collect=True, light=True)
                assert full.totals == light.totals


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_json_round_trip(path: Path) -> None:
    spec = load_spec(path)
    bindings = {name: d.values[0] for name, d in spec.free.items()} if spec.is_family else {}
    graph, _ = spec.instantiate(bindings, collect=True)
    assert graph is not None
    text = graph.model_dump_json()
    again = Graph.model_validate_json(text)
    assert again == graph
    assert again.model_dump_json() == text


def test_json_schema_describes_the_graph() -> None:
    schema = Graph.model_json_schema()
    assert {"nodes", "totals", "input", "output"} <= set(schema["properties"])
    assert "Node" in schema["$defs"]


def test_check_json_cli_round_trips(capsys) -> None:
    from netspec.cli import main

    assert main(["check", str(ROOT / "specs" / "mnist_cnn.ns"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    graph = Graph.model_validate(data)
    assert graph.totals.params == 7135


def test_check_does_not_import_torch_or_onnxruntime() -> None:
    code = (
        "import sys\n"
        "from netspec.cli import main\n"
        "rc = main(['check', 'specs/resnet50.ns'])\n"
        "bad = [m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S
    )
    assert proc.returncode == 0, proc.stderr


def test_errors_render_with_span() -> None:
    with pytest.raises(NetspecError) as info:
        compile_text(HEAD + "INPUT -> CONV(8, strides=2) -> FC(10) -> SOFTMAX")
    text = info.value.render()
    assert text.startswith("t.ns:3:18: error: CONV has no argument `strides`")
    assert "did you mean `stride`?" in text


# ---- typed nodes, O(1) lookups, locations kept in the IR ------------------------------------


def test_a_node_holds_its_validated_layer_and_json_rebuilds_it_once() -> None:
    graph = load_spec_text("input [3, 8, 8]\nINPUT -> CONV(4, 3, stride=2) -> RELU").instantiate()
    conv = graph.node("conv1")
    assert conv.layer.kind == "conv" and conv.layer.stride == 2  # type: ignore[attr-defined]
    again = Graph.model_validate_json(graph.model_dump_json())
    assert again.node("conv1").layer == conv.layer
    bad = graph.model_dump(mode="json")
    bad["nodes"][1]["kind"] = "convolution"
    with pytest.raises(ValueError, match="unknown layer kind `convolution`"):
        Graph.model_validate(bad)
    bad["nodes"][1]["kind"] = "conv"
    bad["nodes"][1]["args"]["stride"] = 0
    with pytest.raises(ValueError, match="stride"):
        Graph.model_validate(bad)


def test_node_lookup_follows_changes_to_the_node_list() -> None:
    graph = load_spec_text("input [4]\nINPUT -> FC(3) -> RELU -> FC(2)").instantiate()
    assert graph.node("fc2").shape == (2,)
    fc2 = graph.nodes.pop()
    with pytest.raises(KeyError):
        graph.node("fc2")
    graph.nodes.insert(0, fc2)
    assert graph.node("fc2") is fc2 and graph.node("relu1").shape == (3,)


def test_train_settings_keep_their_key_spans_in_the_ir() -> None:
    text = "input [4]\ntrain {\n  epochs = 3,\n  lr = 0.1\n}\nINPUT -> FC(2)\n"
    graph = load_spec_text(text, "t.ns").instantiate()
    spans = graph.train_spans
    assert {k: (s.line, s.col, s.end_col) for k, s in spans.items()} == {
        "epochs": (3, 3, 9),
        "lr": (4, 3, 5),
    }
    assert Graph.model_validate_json(graph.model_dump_json()) == graph  # spans stay out of JSON


def test_a_full_build_error_names_its_node_and_loop_indices() -> None:
    spec = load_spec_text("input [1, 8, 8]\nINPUT -> [CONV(2) -> POOL]*5 for i")
    with pytest.raises(NetspecError) as info:
        Builder(spec, {}).build()
    assert (info.value.node, info.value.indices) == ("pool4", {"i": 3})
    with pytest.raises(NetspecError) as info:
        Builder(spec, {}, light=True).build()  # light builds share errors among members
    assert (info.value.node, info.value.indices) == (None, None)


CALL_CACHE_SPEC = """network calls "one call, several values"
input [3, 8, 8]
classes 10
block unit(c, s=1, q=0.5, b=on) = CONV(c, 3, stride=s, bias=b) -> LEAKYRELU(q) -> DROPOUT(0.1)
INPUT -> unit(8) -> unit(16, 2) -> unit(8) -> unit(8, q=1) -> unit(8, q=1.0)
  -> unit(8, b=off) -> [unit(8)]*3 -> [CONV(8 + i) -> RELU]*3 for i -> GAP -> FC(10) -> SOFTMAX
"""


@pytest.mark.parametrize(
    "name",
    ["resnet18", "googlenet_aux", "mobilenet_v3_large", "convnext_tiny", "unet", "text_cnn", None],
)
def test_layers_resolved_once_per_call_equal_a_fresh_resolution(name, monkeypatch) -> None:
    """A call resolves its layer once per input channels and values of the names it reads
    (the 100,000-layer MLP's speed): the graph equals one built resolving every call afresh."""
    import netspec.ir.build as build

    def graph() -> Graph:
        if name is None:
            return load_spec_text(CALL_CACHE_SPEC, "calls.ns").instantiate()
        path = Path(__file__).parents[1] / "specs" / f"{name}.ns"
        if not path.exists():
            pytest.skip(f"{name} is not bundled")
        return load_spec(path).instantiate()

    cached = graph()
    monkeypatch.setattr(build, "_CALL_CACHE", 0)
    fresh = graph()
    assert cached.model_dump_json() == fresh.model_dump_json()
    assert [n.layer for n in cached.nodes] == [n.layer for n in fresh.nodes]
    if name is None:  # the same call with other values made other layers
        convs = [n for n in cached.nodes if n.kind == "conv"]
        assert [n.args["channels"] for n in convs][:3] == [8, 16, 8]
        assert [n.args.get("bias") for n in convs][5] is False
