"""The PyTorch lowering against the IR: every spec in specs/, every layer kind, the contract.

For each spec the built module must have exactly the IR's parameter and buffer counts (node
by node), and a forward pass must give every node the IR's output shape (checked with forward
hooks). Small specs also run backward in training mode, which catches an unsafe in-place op.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.graphs import file_graph, spec_graph, text_graph
from helpers.lowering import check_counts, check_shapes, example_input
from torch import nn

from netspec.backends.lower_torch import (
    LOWERINGS,
    LoweringError,
    MissingLowering,
    NetspecModule,
    PaddedConv1d,
    PaddedConv2d,
    build,
)
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers import KINDS

SPECS = Path(__file__).resolve().parent.parent / "specs"
# Above this many multiply-adds a spec runs forward only, in eval mode without autograd.
HEAVY_MACS = 1_000_000_000
# Above this many nodes (ResNet-101 and deeper: more of the blocks ResNet-50 already checks)
# the forward pass with a hook per node is left to the slow run; counts are checked for all.
DEEP_NODES = 300
# Above this many multiply-adds too (FCN at 513x513, 143 GMACs: some 20 s on two cores).
DEEP_MACS = 20_000_000_000

# Small specs that together use every layer kind, whatever specs/ holds.
IMAGE_SINK = """
network image_sink "every image layer kind"
input [3, 16, 16]
classes 5
INPUT
  -> CONV(8, 3, stride=2) -> BN -> LEAKYRELU(0.2)
  -> [concat(CONV(4, 1) -> TANH,
             CONV(4, (3, 5), dilation=2, groups=2) -> SIGMOID,
             AVGPOOL(3, stride=1, padding=1, ceil=on) -> IDENTITY)] as mix
  -> LRN(3)
  -> [add(CONV(16, 1, bias=off), IDENTITY, CONV(16, 3, padding=1))] as sum
  -> residual(RELU -> CONV(16) -> BN)
  -> MAXPOOL(3, stride=2, ceil=on) -> ADAPTIVEAVGPOOL(2) -> DROPOUT(0.25)
  -> FC(12) -> RELU -> BN -> FC(5) -> SOFTMAX
"""
TOKEN_SINK = """
network token_sink "every sequence layer kind"
input tokens(length=30, vocab=50)
classes 3
INPUT
  -> EMBEDDING(8) -> CONV1D(6, 4, stride=3) -> BN -> RELU
  -> POOL1D(2, ceil=on) -> AVGPOOL1D(2, padding=1)
  -> concat(GAP, GMP) -> FC(3)
"""


# ---- every spec ------------------------------------------------------------------------------


def is_deep(path: Path) -> bool:
    try:
        graph = spec_graph(path)
    except Exception:  # a broken spec fails in the test itself, not at collection
        return False
    return graph is not None and (len(graph.nodes) > DEEP_NODES or graph.totals.macs > DEEP_MACS)


ALL_SPECS = sorted(SPECS.glob("*.ns"))
DEEP_SPECS = [p for p in ALL_SPECS if is_deep(p)]


def graph_or_skip(path: Path) -> Graph:
    graph = spec_graph(path)
    if graph is None:
        pytest.skip(f"{path.name} does not compile to a graph (by design: a family or an error)")
    return graph


# Specs added once the default run had reached its time budget: their lowering (over 2 s each,
# the same layer kinds as specs already checked here) runs with the slow tests.
LATE_SPECS = {"efficientnet_b0"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=[pytest.mark.slow] if p.stem in LATE_SPECS else [], id=p.stem)
        for p in ALL_SPECS
    ],
)
def test_spec_lowers_to_the_ir(path: Path) -> None:
    graph = graph_or_skip(path)
    model = build(graph)
    check_counts(model, graph)
    if path not in DEEP_SPECS:
        check_shapes(model, graph, train=graph.totals.macs < HEAVY_MACS)


@pytest.mark.slow
@pytest.mark.parametrize("path", DEEP_SPECS, ids=lambda p: p.stem)
def test_deep_spec_shapes_match_the_ir(path: Path) -> None:
    graph = graph_or_skip(path)
    check_shapes(build(graph), graph, train=False)


@pytest.mark.parametrize("text", [IMAGE_SINK, TOKEN_SINK], ids=["image", "tokens"])
def test_every_kind_lowers_to_the_ir(text: str) -> None:
    graph = text_graph(text)
    model = build(graph)
    check_counts(model, graph)
    check_shapes(model, graph, train=True)


# ---- IR bugs found by lowering (fixed in the IR; these hold them fixed) -----------------------


def test_a_projected_residual_keeps_its_own_args() -> None:
    graph = text_graph("input [4, 8, 8]\nINPUT -> BN -> residual(CONV(4) -> BN, project=on)")
    assert graph.node("add1").args == {}
    check_counts(build(graph), graph)


@pytest.mark.parametrize(
    "chain",
    [
        "concat(CONV(2), CONV(2)) -> concat(CONV(2), CONV(2))",
        "residual(CONV(4), project=on) -> residual(CONV(4), project=on)",
    ],
)
def test_two_branching_groups_in_one_scope(chain: str) -> None:
    graph = text_graph(f"input [4, 8, 8]\nINPUT -> {chain}")
    check_shapes(build(graph), graph, train=True)


@pytest.mark.parametrize("chain", ["FC(3)", "BN -> FC(3)", "FC(8) -> EMBEDDING(4) -> GAP -> FC(3)"])
def test_only_an_embedding_reads_token_ids(chain: str) -> None:
    """torch refuses float ops on token ids and an embedding of floats; the IR says so first."""
    with pytest.raises(NetspecError, match="EMBEDDING"):
        text_graph(f"input tokens(length=6, vocab=20)\nINPUT -> {chain}")


# ---- the registry ----------------------------------------------------------------------------


def test_every_kind_has_a_lowering() -> None:
    missing = sorted(set(KINDS) - set(LOWERINGS))
    assert not missing, f"layer kinds without a torch lowering: {missing}"


def test_a_missing_lowering_fails_naming_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(LOWERINGS, "relu")
    with pytest.raises(MissingLowering, match="no torch lowering for layer kind\\(s\\): relu"):
        build(file_graph("mnist_cnn.ns"))


# ---- module tree and state -------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18() -> tuple[Graph, NetspecModule]:
    graph = file_graph("resnet18.ns")
    return graph, build(graph)


@pytest.fixture(scope="module")
def mnist() -> Graph:
    return file_graph("mnist_cnn.ns")


def test_state_dict_keys_are_the_node_ids(resnet18: tuple[Graph, NetspecModule]) -> None:
    graph, model = resnet18
    keys = model.state_dict().keys()
    for key in (
        "layer2.basic1.conv1.weight",
        "layer2.basic1.bn1.weight",
        "layer2.basic1.bn1.bias",
        "layer2.basic1.bn1.running_mean",
        "layer2.basic1.bn1.running_var",
        "layer2.basic1.bn1.num_batches_tracked",
        "layer2.basic1.shortcut.conv1.weight",
        "fc1.weight",
        "fc1.bias",
    ):
        assert key in keys
    assert "layer2.basic1.conv1.bias" not in keys  # the spec says bias=false
    ids = {n.id for n in graph.nodes}
    assert {key.rsplit(".", 1)[0] for key in keys} <= ids
    assert type(model.get_submodule("layer2.basic1.conv1")) is nn.Conv2d
    assert type(model.get_submodule("layer2.basic1.bn1")) is nn.BatchNorm2d
    assert type(model.get_submodule("fc1")) is nn.Linear


def test_parameter_free_nodes_hold_no_state(resnet18: tuple[Graph, NetspecModule]) -> None:
    graph, model = resnet18
    for node in graph.nodes:
        if node.params == 0 and node.buffers == 0:
            module = model.get_submodule(node.id)
            assert not list(module.parameters()) and not list(module.buffers()), node.id


def test_same_seed_same_weights_other_seed_other_weights(mnist: Graph) -> None:
    before = torch.get_rng_state()
    a, b, c = (
        build(mnist, seed=7).state_dict(),
        build(mnist, seed=7).state_dict(),
        build(mnist, seed=8).state_dict(),
    )
    assert torch.equal(torch.get_rng_state(), before), "build disturbed the global RNG"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_logits_are_the_scores_before_the_softmax(mnist: Graph) -> None:
    model = build(mnist).eval()
    x = example_input(mnist, 4)
    logits, probs = model.logits(x), model(x)
    assert logits.shape == probs.shape == (4, 10)
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs)
    assert not torch.allclose(logits, probs)


def test_logits_is_forward_without_a_final_softmax() -> None:
    graph = text_graph("input [6]\nINPUT -> FC(4) -> RELU -> FC(3)")
    model = build(graph)
    x = torch.randn(2, 6)
    assert torch.equal(model.logits(x), model(x))


@pytest.mark.parametrize(
    ("chain", "culprit"),
    [
        ("CONV(4) as blk -> [CONV(4)] as blk", "blk"),
        ("CONV(4) as train", "train"),
        ("CONV(4) as logits", "logits"),
    ],
)
def test_a_node_id_torch_cannot_name_is_refused(chain: str, culprit: str) -> None:
    """The IR refuses these names with the spec's position; the lowering still guards itself
    against a graph built some other way (here: edited after compiling)."""
    with pytest.raises(NetspecError, match=f"`{culprit}`"):
        text_graph(f"input [1, 4, 4]\nINPUT -> {chain}")
    graph = text_graph("input [1, 4, 4]\nINPUT -> CONV(4) as c")
    graph.nodes[1].id = graph.output = "train"
    with pytest.raises(LoweringError, match="`train`"):
        build(graph)


def test_copies_run_their_own_modules(mnist: Graph) -> None:
    model = build(mnist).eval()
    x = example_input(mnist)
    copied = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (copied, loaded):
        torch.testing.assert_close(other(x), model(x))
        with torch.no_grad():
            other.get_submodule("conv1").weight.mul_(2.0)
        assert not torch.allclose(other(x), model(x))


# ---- semantics -------------------------------------------------------------------------------


def test_asymmetric_same_padding_puts_the_extra_pixel_after() -> None:
    graph = text_graph("input [2, 8, 8]\nINPUT -> CONV(3, 3, stride=2)")  # total pad 1: (0, 1)
    model = build(graph)
    conv = model.get_submodule("conv1")
    assert isinstance(conv, PaddedConv2d) and isinstance(conv, nn.Conv2d)
    x = torch.randn(2, 2, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(model(x), expected)
    assert set(conv.state_dict()) == {"weight", "bias"}

    graph = text_graph("input [2, 9]\nINPUT -> CONV(3, 4)")  # stride 1, even kernel: (1, 2)
    conv = build(graph).get_submodule("conv1")
    assert isinstance(conv, PaddedConv1d) and conv.pad == (1, 2)


def test_relu_overwrites_only_what_no_other_node_reads() -> None:
    # conv1 feeds both the residual's RELU and the skip: that RELU must not be in place.
    graph = text_graph(
        "input [3, 8, 8]\nINPUT -> CONV(4) -> residual(RELU -> CONV(4) -> BN) -> RELU -> GAP -> FC(2)"
    )
    model = build(graph)
    inplace = {
        n.id: model.get_submodule(n.id).inplace for n in graph.nodes if n.kind in ("relu", "add")
    }
    assert inplace == {"relu1": False, "add1": True, "relu2": True}
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    x = torch.randn(2, 3, 8, 8)
    for m in (model, reference):
        m.logits(x).square().sum().backward()
    torch.testing.assert_close(model(x), reference(x))
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_the_input_is_never_overwritten() -> None:
    model = build(text_graph("input [5]\nINPUT -> RELU -> FC(2)"))
    x = torch.randn(3, 5)
    saved = x.clone()
    model(x)
    assert torch.equal(x, saved)


# ---- torch.compile and memory format ---------------------------------------------------------


def test_torch_compile_traces_the_whole_graph(mnist: Graph) -> None:
    """One graph, no breaks (aot_eager: dynamo and autograd tracing, without a C++ build)."""
    model = build(mnist)
    x = example_input(mnist, 4)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    logits = torch.compile(model.logits, backend="aot_eager", fullgraph=True)
    logits(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # inside inductor
def test_torch_compile_with_inductor(mnist: Graph) -> None:
    model = build(mnist)
    x = example_input(mnist, 4)
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_channels_last_gives_the_same_outputs(resnet18: tuple[Graph, NetspecModule]) -> None:
    _, model = resnet18
    model = copy.deepcopy(model).eval()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.logits(x)
        got = last.logits(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_channels_last_trains_the_same() -> None:
    """Training mode, asymmetric padding, concat, in-place addition: channels_last parity."""
    graph = text_graph(IMAGE_SINK)
    model = build(graph)
    model.get_submodule("dropout1").p = 0.0  # masks are drawn in memory order
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = example_input(graph)
    outs = []
    for m, xx in ((model, x), (last, x.to(memory_format=torch.channels_last))):
        outs.append(m.logits(xx))
        outs[-1].square().sum().backward()
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(model.named_parameters(), last.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=name)
