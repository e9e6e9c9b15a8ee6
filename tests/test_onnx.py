"""The ONNX lowering: every kind against PyTorch, every spec in specs/ against PyTorch, the
model's form (names, metadata, opsets, dynamic batch, shapes), weights, determinism and writes.

Parity: ONNX Runtime's output against the torch module's (`eval()`, no_grad) on the same
random input, max abs error <= 1e-4 of the output's scale (max abs of the torch output) in
float32, with and without `fold_bn`; float16 within 1e-2. Batch norms get random running
statistics and affine parameters first, so folding them is really tested.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.graphs import spec_graph
from helpers.parity import (
    FP32_TOL,
    check_parity,
    compile_text,
    randomized,
    rel_error,
    session,
    torch_out,
)

from netspec import deploy as L
from netspec.backends import MissingLowering
from netspec.backends.lower_torch import build
from netspec.deploy import checks
from netspec.deploy.runtime import example_input
from netspec.deploy.weights import expected_weights
from netspec.deploy.writer import write_atomic
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers import KINDS

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.ns"))


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread each for torch and onnxruntime: on a small shared machine, parallel regions
    stall whenever a thread is descheduled; the parity checks need no speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the registry ------------------------------------------------------------------------------


def test_every_registered_kind_has_an_onnx_lowering() -> None:
    assert L.missing_lowerings() == []
    assert set(KINDS) <= set(L.LOWERINGS)


def test_a_kind_without_a_lowering_fails_naming_it(monkeypatch) -> None:
    graph = compile_text("input [4]\nINPUT -> FC(3) -> TANH")
    monkeypatch.delitem(L.LOWERINGS, "tanh")
    with pytest.raises(MissingLowering, match="no onnx lowering for layer kind\\(s\\): tanh"):
        L.lower(graph, L.initial_weights(graph))


# --- kinds in combination against PyTorch ---------------------------------------------------------
# (Each registered kind alone, by name, is tests/test_registry.py's checklist; these are the
# combinations and edge cases worth keeping: asymmetric padding, groups, 1-D, branches.)

KIND_SPECS = {
    "conv_same_asymmetric": "input [3, 10, 9]\nINPUT -> CONV(8, 4, stride=3) -> CONV(6, (2, 3), stride=(2, 1)) -> RELU",
    "conv_valid_tuple_dilation_groups": (
        "input [4, 15, 15]\nINPUT -> CONV(8, 3, padding=valid, dilation=2) -> CONV(8, 3, padding=(2, 1), groups=4)"
        " -> CONV(4, 5, padding=2, bias=off) -> LEAKYRELU(0.2)"
    ),
    "conv1d_bn_pool1d": "input [3, 17]\nINPUT -> CONV1D(8, 4, stride=3) -> BN -> AVGPOOL1D(3, stride=2, padding=1, ceil=on) -> SIGMOID -> GLOBALAVGPOOL1D",
    "pools_2d": "input [4, 13, 10]\nINPUT -> MAXPOOL(3, stride=2, padding=1, ceil=on) -> AVGPOOL(2, stride=1, padding=1) -> TANH -> GMP",
    "adaptive_and_flat": "input [4, 12, 12]\nINPUT -> ADAPTIVEAVGPOOL(3) -> ADAPTIVEAVGPOOL((1, 3)) -> FLATTEN -> DROPOUT(0.3) -> IDENTITY",
    "bn_on_vectors": "input [20]\nINPUT -> FC(12) -> BN -> RELU -> FC(5, bias=off) -> BN(eps=0.001) -> SOFTMAX",
    "lrn_odd_even_1d": "input [6, 9, 9]\nINPUT -> LRN(5, alpha=0.01, beta=0.6, k=1.5) -> LRN(4, alpha=0.5) -> CONV(6, 1) -> GAP",
    "lrn_1d": "input [6, 11]\nINPUT -> LRN(3, alpha=0.1) -> LRN(4, alpha=0.3)",
    "branches": (
        "input [4, 8, 8]\nINPUT -> CONV(6) -> [add(CONV(6) -> BN, IDENTITY, CONV(6, 1))] as a"
        " -> [concat(CONV(3, 1), RELU, MAXPOOL(3, stride=1, padding=1))] as b"
        " -> residual(CONV(20, stride=2) -> BN(eps=0.001), project=auto) -> GAP"
    ),
    "embedding": "input tokens(length=9, vocab=50)\nINPUT -> EMBEDDING(16) -> CONV(8, 2) -> BN -> RELU -> GAP -> FC(3) -> SOFTMAX",
    "modern_kinds": (
        "input [4, 6, 6]\nINPUT -> CONV(8) -> BN -> HARDSWISH -> CONVTRANSPOSE(6, 3, stride=2) -> BN"
        " -> GELU -> residual(CONV(6, 3, groups=6) -> LAYERNORM -> CONV(12, 1) -> PRELU -> CONV(6, 1)"
        " -> LAYERSCALE(0.5) -> DROPPATH(0.2)) -> GROUPNORM(3) -> RELU6"
        " -> concat(SLICE(0, 2), SLICE(2, 6) -> CHANNELSHUFFLE(2) -> ELU) -> UPSAMPLE(2, bilinear)"
        " -> CONV(4, stride=2) -> UPSAMPLE -> HARDSIGMOID -> GAP -> FC(5) -> LAYERNORM -> GELU(tanh)"
    ),
    "dropout_only": "input [5]\nINPUT -> DROPOUT(0.1)",
    "ends_in_identity": "input [5]\nINPUT -> FC(4) -> IDENTITY -> DROPOUT",
}


@pytest.mark.parametrize("name", KIND_SPECS)
def test_kind_parity_with_torch(name: str) -> None:
    graph = compile_text(KIND_SPECS[name], name)
    module, weights = randomized(graph)
    check_parity(graph, module, weights)


@pytest.mark.parametrize(
    "name", ["conv1d_bn_pool1d", "branches", "embedding", "lrn_odd_even_1d", "modern_kinds"]
)
def test_kind_parity_in_fp16(name: str) -> None:
    graph = compile_text(KIND_SPECS[name], name)
    module, weights = randomized(graph)
    check_parity(graph, module, weights, batches=(2,), fp16=True)


def test_pooling_rounding_matches_torch_and_shape_inference() -> None:
    """ceil=on where ONNX's rounding and PyTorch's differ (a last window starting in the
    padding), square and not, max and avg: the IR's sizes, onnx's and onnxruntime's agree."""
    cases = []
    for n, k, s, p, mode in itertools.product(
        (4, 5, 7, 8), (2, 3), (2, 3), (0, 1), ("MAXPOOL", "AVGPOOL")
    ):
        if 2 * p <= k and n + 2 * p >= k:
            cases.append(f"{mode}({k}, stride={s}, padding={p}, ceil=on)")
    for i, pool in enumerate(cases):
        for shape in ("[2, 7, 7]", "[2, 5, 8]"):
            graph = compile_text(f"input {shape}\nINPUT -> {pool}", f"pool{i}")
            module, weights = randomized(graph)
            try:
                lowered = L.lower(graph, weights)
            except NetspecError as err:  # avg pools that round differently per dim
                assert "ceil=on" in err.message and shape == "[2, 5, 8]"
                continue
            assert checks.shape_mismatches(lowered, graph) == [], pool
            x = example_input(graph.input.shape, None, 2)
            assert (
                rel_error(session(lowered.to_bytes()).run(x), torch_out(module, x)) <= FP32_TOL
            ), pool


def test_adaptive_pool_that_onnx_cannot_express_is_a_clear_error() -> None:
    graph = compile_text("input [4, 7, 7]\nINPUT -> ADAPTIVEAVGPOOL(3) as head")
    with pytest.raises(NetspecError, match=r"7x7 to 3x3.*not a multiple") as info:
        L.lower(graph, L.initial_weights(graph))
    assert info.value.span is not None


def test_token_ids_go_through_embedding_only() -> None:
    """The IR refuses both mistakes; the lowering refuses them too, for graphs read from JSON."""
    for text in (
        "input tokens(length=9, vocab=50)\nINPUT -> FC(3)",
        "input [9]\nINPUT -> EMBEDDING(4, vocab=10) -> GAP",
    ):
        with pytest.raises(NetspecError, match="token|EMBEDDING"):
            compile_text(text)
    graph = compile_text(
        "input tokens(length=9, vocab=50)\nINPUT -> EMBEDDING(4) -> CONV(3, 1) -> GAP"
    )
    weights = L.initial_weights(graph)
    rewired = graph.model_copy(deep=True)
    rewired.node("conv1").inputs = ["input"]
    with pytest.raises(NetspecError, match="`conv1` reads token ids; only EMBEDDING can"):
        L.lower(rewired, weights)
    rewired = graph.model_copy(deep=True)
    rewired.node("embedding1").inputs = ["conv1"]
    with pytest.raises(
        NetspecError, match="EMBEDDING `embedding1` must read the input's token ids"
    ):
        L.lower(rewired, weights)


def test_ops_used() -> None:
    graph = compile_text(KIND_SPECS["branches"])
    ops = {n.op_type for n in L.lower(graph, L.initial_weights(graph)).model.graph.node}
    assert ops == {
        "Conv",
        "BatchNormalization",
        "Sum",
        "Concat",
        "Relu",
        "MaxPool",
        "Add",
        "GlobalAveragePool",
        "Flatten",
    }
    graph = compile_text(KIND_SPECS["embedding"])
    model = L.lower(graph, L.initial_weights(graph)).model
    assert [n.op_type for n in model.graph.node][:2] == ["Gather", "Transpose"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


# --- every spec in specs/ ----------------------------------------------------------------------


def _zoo_graph(path: Path) -> Graph | None:
    return spec_graph(path)  # shape-assertion failures keep the graph; families: first member


def _weight_class(path: Path) -> str:
    graph = _zoo_graph(path)
    if graph is None:
        return "skip"
    t = graph.totals
    if t.macs > 5e9 or t.params > 100e6 or len(graph.nodes) > 1000:
        return "heavy"
    return "big" if t.macs > 1e9 or t.params > 20e6 else "small"


ZOO = [
    pytest.param(p, marks=[pytest.mark.slow] if _weight_class(p) == "heavy" else [], id=p.stem)
    for p in SPECS
]


@pytest.mark.parametrize("path", ZOO)
def test_zoo_parity_with_torch(path: Path) -> None:
    """fp32 at batch 1, 2, 7 (big specs: 1, 2), plain and with fold_bn; heavy ones are slow-marked."""
    graph = _zoo_graph(path)
    assert graph is not None
    module, weights = randomized(graph)
    batches = (1, 2, 7) if _weight_class(path) == "small" else (1, 2)
    check_parity(graph, module, weights, batches=batches)


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar_vgg_bn", "text_cnn", "resnet18"])
def test_zoo_parity_in_fp16(name: str) -> None:
    graph = _zoo_graph(ROOT / "specs" / f"{name}.ns")
    module, weights = randomized(graph)
    check_parity(graph, module, weights, batches=(2,), fp16=True)


# --- the model's form ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18() -> tuple[Graph, dict[str, np.ndarray]]:
    graph = _zoo_graph(ROOT / "specs" / "resnet18.ns")
    return graph, L.initial_weights(graph, seed=0)


def test_names_metadata_batch_and_versions(resnet18) -> None:
    graph, weights = resnet18
    model = L.lower(graph, weights, note="seed=0").model
    nodes = {n.name for n in model.graph.node}
    inits = {i.name for i in model.graph.initializer}
    assert "layer2.basic1.conv1" in nodes and "layer2.basic1.shortcut.conv1" in nodes
    assert {"layer2.basic1.conv1.weight", "layer2.basic1.bn1.running_var", "fc1.bias"} <= inits
    assert inits == set(expected_weights(graph))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["netspec.name"] == "resnet18"
    assert meta["netspec.source_hash"] == graph.source_hash and graph.source_hash
    assert meta["netspec.version"] and meta["netspec.weights"] == "seed=0"
    assert meta["netspec.output"] == "probabilities"
    assert model.opset_import[0].version == L.DEFAULT_OPSET and model.ir_version == 10


@pytest.mark.parametrize("opset", range(L.MIN_OPSET, L.MAX_OPSET + 1))
def test_every_accepted_opset_checks_and_runs(opset: int) -> None:
    graph = compile_text(KIND_SPECS["lrn_odd_even_1d"] + " -> FC(3) -> BN -> SOFTMAX")
    lowered = L.lower(
        graph, L.initial_weights(graph), L.LowerOptions(opset=opset, fp16=opset % 2 == 0)
    )
    assert lowered.model.ir_version <= 13  # what onnxruntime 1.31 reads
    assert all(c.ok for c in L.verify(lowered, graph)), L.verify(lowered, graph)


# Kinds whose ONNX form depends on the opset (an op added late, an input that was an attribute).
OPSET_SENSITIVE = (
    "input [4, 6, 6]\nINPUT -> CONV(6) -> RELU6 -> HARDSWISH -> CONV(6) -> HARDSIGMOID -> GELU"
    " -> CONV(6) -> GELU(approximate=tanh) -> ELU(0.7) -> PRELU -> UPSAMPLE(2, bilinear)"
    " -> CONVTRANSPOSE(4, 3, stride=2, padding=1, output_padding=1) -> UPSAMPLE((1, 3))"
    " -> MAXPOOL(2) -> LAYERNORM -> GROUPNORM(2) -> CHANNELSHUFFLE(2) -> SLICE(1, 4) -> GAP"
    " -> FC(6) -> LAYERNORM"
)


@pytest.mark.parametrize("opset", range(L.MIN_OPSET, L.MAX_OPSET + 1))
def test_opset_sensitive_kinds_match_torch_at_every_opset(opset: int) -> None:
    graph = compile_text(OPSET_SENSITIVE)
    module, weights = randomized(graph)
    lowered = L.lower(graph, weights, L.LowerOptions(opset=opset))
    assert all(c.ok for c in L.verify(lowered, graph, run=False)), L.verify(lowered, graph)
    ops = {n.op_type for n in lowered.model.graph.node}
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
    assert ("HardSwish" in ops) == (opset >= 14) and {"Clip", "HardSigmoid", "PRelu"} <= ops
    x = example_input(graph.input.shape, None, 2)
    assert rel_error(session(lowered.to_bytes()).run(x), torch_out(module, x)) <= FP32_TOL


@pytest.mark.parametrize("opset", [12, 27])
def test_opsets_outside_the_range_are_refused(opset: int) -> None:
    with pytest.raises(NetspecError, match="--opset must be in"):
        L.LowerOptions(opset=opset)


def test_fp16_keeps_float32_at_the_edges() -> None:
    graph = compile_text(KIND_SPECS["bn_on_vectors"])
    model = L.lower(graph, L.initial_weights(graph), L.LowerOptions(fp16=True)).model
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    ops = [n.op_type for n in model.graph.node]
    assert ops[0] == "Cast" and ops[-1] == "Cast"


def test_fold_bn_removes_only_the_batch_norms_after_a_conv() -> None:
    graph = compile_text(KIND_SPECS["branches"])
    lowered = L.lower(graph, L.initial_weights(graph), L.LowerOptions(fold_bn=True))
    assert lowered.folded == ["a.branch1.bn1", "bn1", "shortcut.bn1"]
    assert not any(n.op_type == "BatchNormalization" for n in lowered.model.graph.node)
    graph = compile_text(KIND_SPECS["bn_on_vectors"])  # BN after FC stays
    lowered = L.lower(graph, L.initial_weights(graph), L.LowerOptions(fold_bn=True))
    assert (
        lowered.folded == []
        and sum(n.op_type == "BatchNormalization" for n in lowered.model.graph.node) == 2
    )


# --- weights -----------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    graph = compile_text(KIND_SPECS["branches"])
    module, _ = randomized(graph, seed=3)
    ckpt = tmp_path / "ckpt.safetensors"
    save_file(module.state_dict(), str(ckpt))  # num_batches_tracked included, as training writes it
    weights = L.load_checkpoint(ckpt)
    report = L.export(graph, tmp_path / "m.onnx", weights, fold_bn=True, origin=str(ckpt))
    x = example_input(graph.input.shape, None, 3)
    assert rel_error(session(report.path).run(x), torch_out(module, x)) <= FP32_TOL


def test_bfloat16_checkpoint_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    graph = compile_text(KIND_SPECS["bn_on_vectors"])
    module = build(graph)
    ckpt = tmp_path / "bf16.safetensors"
    save_file(
        {
            k: v.to(torch.bfloat16) if v.is_floating_point() else v
            for k, v in module.state_dict().items()
        },
        str(ckpt),
    )
    weights = L.load_checkpoint(ckpt)
    assert weights["fc1.weight"].dtype == np.float32
    L.lower(graph, weights)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    graph = compile_text(KIND_SPECS["bn_on_vectors"])
    other = L.initial_weights(compile_text("input [20]\nINPUT -> FC(7) -> FC(5)"))
    with pytest.raises(NetspecError, match="do not match the spec") as info:
        L.lower(graph, other, origin="ckpt.safetensors")
    assert any("missing" in n and "bn1.running_mean" in n for n in info.value.notes)
    wrong = dict(L.initial_weights(graph))
    wrong["fc1.weight"] = np.zeros((12, 21), np.float32)
    with pytest.raises(
        NetspecError, match=r"`fc1.weight` in x has shape \[12x21\]; the spec needs \[12x20\]"
    ):
        L.lower(graph, wrong, origin="x")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(NetspecError, match="cannot read the checkpoint"):
        L.load_checkpoint(bad)
    with pytest.raises(NetspecError, match="no checkpoint at"):
        L.load_checkpoint(tmp_path / "none.safetensors")


def test_lower_onnx_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, netspec.deploy, netspec.commands.export, netspec.commands.run\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- determinism and atomic writes ---------------------------------------------------------------


def test_export_is_byte_for_byte_deterministic(tmp_path: Path, resnet18) -> None:
    graph, weights = resnet18
    (tmp_path / "a").mkdir()
    a = L.export(
        graph,
        tmp_path / "a" / "m.onnx",
        weights,
        fold_bn=True,
        note="seed=0",
        run=False,
    )
    b = L.export(
        graph,
        tmp_path / "b.onnx",
        dict(weights),
        fold_bn=True,
        note="seed=0",
        run=False,
    )
    assert a.path.read_bytes() == b.path.read_bytes()
    again = L.initial_weights(graph, seed=0)  # the seeded initialization is itself reproducible
    c = L.export(graph, tmp_path / "c.onnx", again, fold_bn=True, note="seed=0", run=False)
    assert c.path.read_bytes() == a.path.read_bytes()
    other = L.export(graph, tmp_path / "d.onnx", weights, note="seed=0", run=False)
    assert other.path.read_bytes() != a.path.read_bytes()


@pytest.mark.parametrize("fp16", [False, True])
def test_streamed_bytes_are_protobufs_own(fp16: bool) -> None:
    """`Lowered.write` streams the weights; the bytes are what protobuf itself would write."""
    graph = compile_text(KIND_SPECS["embedding"])
    lowered = L.lower(graph, L.initial_weights(graph), L.LowerOptions(fp16=fp16))
    full = onnx.ModelProto()
    full.CopyFrom(lowered.model)
    for tensor in full.graph.initializer:
        tensor.raw_data = lowered.arrays[tensor.name].tobytes()
    assert lowered.to_bytes() == full.SerializeToString()
    assert lowered.to_proto() == full


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(NetspecError, match="disk full"):  # netspec.io says the OS error clearly
        write_atomic(target, b"new model")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    graph = compile_text(KIND_SPECS["bn_on_vectors"])
    monkeypatch.setattr(
        checks, "shape_mismatches", lambda lowered, graph: ["fc1: IR [batch, 12], ONNX [batch, 13]"]
    )
    with pytest.raises(L.ExportCheckFailed, match="shape inference"):
        L.export(graph, tmp_path / "m.onnx", L.initial_weights(graph))
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_missing_folders_and_folders(tmp_path: Path) -> None:
    with pytest.raises(NetspecError, match="does not exist"):
        write_atomic(tmp_path / "nope" / "m.onnx", b"x")
    with pytest.raises(NetspecError, match="it is a folder"):
        write_atomic(tmp_path, b"x")
    written = write_atomic(tmp_path / "m.onnx", b"x")
    assert written.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
