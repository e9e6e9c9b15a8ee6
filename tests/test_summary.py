"""The summary's columns and figures against hand-computed values (mnist_cnn, resnet18), and
the estimate of activations kept for backward against what torch really keeps.

The hand computations are written out in the comments; none is copied from netspec's output.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

import netspec
from netspec.commands.options import load_graph
from netspec.ir.graph import Graph
from netspec.memory import activations_kept, training_memory
from netspec.summary import kernel_shape, layer_columns, summary, totals_rows

ROOT = Path(__file__).resolve().parents[1]


def column(graph: Graph, header: str, **options) -> dict[str, str]:
    cols = layer_columns(graph, **options)
    names = cols[0].text
    (col,) = [c for c in cols if c.header == header]
    return dict(zip(names, col.text, strict=True))


def totals(graph: Graph, **options) -> dict[str, tuple[str, str]]:
    return {label.strip(): (value, note) for label, value, note in totals_rows(graph, **options)}


# ---- mnist_cnn: the course's Keras CNN (1x28x28, three valid 3x3 convs of 16, FC 15, FC 10)


def test_mnist_cnn_kernel_shapes() -> None:
    g = netspec.compile_spec("zoo:mnist_cnn")
    kernels = {k: v for k, v in column(g, "kernel").items() if v}
    assert kernels == {
        "conv1": "16x1x3x3",  # 16 maps over 1 channel
        "pool1": "2x2",
        "conv2": "16x16x3x3",
        "pool2": "2x2",
        "conv3": "16x16x3x3",
        "fc1": "15x144",  # 16 x 3 x 3 = 144 inputs
        "fc2": "10x15",
    }
    shapes = {n.id: n.shape for n in g.nodes}
    conv2 = g.node("conv2")
    assert kernel_shape(conv2, tuple(shapes[i] for i in conv2.inputs)) == "16x16x3x3"


def test_mnist_cnn_shares() -> None:
    g = netspec.compile_spec("zoo:mnist_cnn")
    # params: 160 + 2,320 + 2,320 + 2,175 + 160 = 7,135.
    assert column(g, "params %") == {
        **dict.fromkeys((n.id for n in g.nodes), "-"),
        "conv1": "2.2%",  # 160 / 7,135 = 2.24%
        "conv2": "32.5%",  # 2,320 / 7,135 = 32.52%
        "conv3": "32.5%",
        "fc1": "30.5%",  # 2,175 / 7,135 = 30.48%
        "fc2": "2.2%",
    }
    # MACs: 26*26*16*9 = 97,344; 11*11*16*144 = 278,784; 3*3*16*144 = 20,736; 144*15 = 2,160;
    # 15*10 = 150; total 399,174.
    macs = column(g, "MACs %")
    assert (macs["conv1"], macs["conv2"], macs["conv3"]) == ("24.4%", "69.8%", "5.2%")
    assert (macs["fc1"], macs["fc2"]) == ("0.5%", "<0.1%")  # 150 / 399,174 = 0.04%


def test_mnist_cnn_weights_and_training_memory() -> None:
    g = netspec.compile_spec("zoo:mnist_cnn")
    t = totals(g)
    assert t["weights at fp32"][0] == "28,540"  # 7,135 x 4 bytes
    # The spec's train section: adam, batch_size 16.
    m = training_memory(g)
    assert (m.batch, m.optimizer, m.states) == (16, "adam", 2)
    assert (m.weights, m.gradients, m.optimizer_state) == (28_540, 28_540, 2 * 28_540)
    # Kept for backward, per example, in elements at 4 bytes: the input 784 (conv1), conv1's
    # output 10,816 (relu1 in place, pool1), pool1's 2,704 (conv2), conv2's 1,936, pool2's 400,
    # conv3's 144 (relu3, flatten, fc1), fc1's 15 (relu4, fc2) = 16,799; the max pools' int64
    # indices, 2,704 + 400 = 3,104 x 8 bytes; the loss's 10 log-probabilities and its int64
    # target; per batch the loss's 4-byte total weight.
    per_example = 16_799 * 4 + 3_104 * 8 + 10 * 4 + 8
    assert per_example == 92_076
    assert activations_kept(g) == (per_example, 4)
    assert m.activations == 16 * per_example + 4
    assert m.total == 28_540 * 4 + 16 * per_example + 4
    assert training_memory(g, batch=64).activations == 64 * per_example + 4
    assert t["activations for backward"][0] == f"{16 * per_example + 4:,}"
    assert t["training, batch 16"][1].startswith("adam")


# ---- resnet18 (torchvision layout)


def test_resnet18_kernels_and_shares() -> None:
    g = netspec.compile_spec("zoo:resnet18")
    kernels = column(g, "kernel")
    assert kernels["conv1"] == "64x3x7x7"
    assert kernels["pool1"] == "3x3"
    assert kernels["layer2.basic1.conv1"] == "128x64x3x3"
    assert kernels["layer2.basic1.shortcut.conv1"] == "128x64x1x1"
    assert kernels["fc1"] == "1000x512"
    assert kernels["layer1.basic1.bn1"] == ""
    params = column(g, "params %")
    # fc: 512 x 1000 + 1000 = 513,000 of 11,689,512 = 4.39%;
    # layer4.basic2.conv2: 512 x 512 x 9 = 2,359,296 = 20.18%.
    assert (params["fc1"], params["layer4.basic2.conv2"]) == ("4.4%", "20.2%")
    # conv1: 112 x 112 x 64 x 3 x 49 = 118,013,952 MACs of 1,814,083,944 (torchvision 1.81G).
    assert column(g, "MACs")["conv1"] == "118,013,952"
    assert column(g, "MACs %")["conv1"] == "6.5%"


def test_resnet18_depth_subtotals() -> None:
    g = netspec.compile_spec("zoo:resnet18")
    rows = column(g, "params", depth=1)
    stem = ["input", "conv1", "bn1", "relu1", "pool1"]
    assert list(rows) == [
        *stem,
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "gpool1",
        "fc1",
        "softmax1",
    ]
    # layer1: 4 convs of 64 x 64 x 9 = 36,864 and 4 BNs of 128: 147,456 + 512 = 147,968.
    assert rows["layer1"] == "147,968"
    # layer4: 256 x 512 x 9 + 3 x 512 x 512 x 9 + 256 x 512 (shortcut) + 5 BNs x 1,024 =
    # 1,179,648 + 7,077,888 + 131,072 + 5,120 = 8,393,728 (torchvision's layer4).
    assert rows["layer4"] == "8,393,728"
    assert column(g, "MACs", depth=1)["layer1"] == f"{4 * 115_605_504:,}"  # 56 x 56 x 64 x 576
    # 2 blocks x (conv, bn, relu, conv, bn, add, relu).
    assert column(g, "kind", depth=1)["layer1"] == "14 layers"
    assert column(g, "output", depth=1)["layer4"] == "512x7x7"
    # depth 2: one row per block, the shortcut inside its block.
    rows2 = column(g, "params", depth=2)
    assert rows2["layer2.basic1"] == f"{64 * 128 * 9 + 128 * 128 * 9 + 64 * 128 + 3 * 256:,}"
    # Subtotals add up to the totals.
    for depth in (1, 2):
        cols = layer_columns(g, depth=depth)
        (params,) = [c for c in cols if c.header == "params"]
        assert sum(params.raw) == g.totals.params


def test_resnet18_weights_and_training_memory() -> None:
    g = netspec.compile_spec("zoo:resnet18")
    # No train section: netspec's defaults, adam and batch 32.
    m = training_memory(g, batch=64)
    assert (m.batch, m.optimizer, m.states) == (64, "adam", 2)
    assert m.weights == 11_689_512 * 4 == 46_758_048
    # BN channels: 64 + 4 x 64 + (4 + 1) x 128 + (4 + 1) x 256 + (4 + 1) x 512 = 4,800; two
    # running statistics each.
    assert m.buffers == 2 * 4_800 * 4
    assert m.gradients == 46_758_048 and m.optimizer_state == 2 * 46_758_048
    assert totals(g)["weights at fp32"][0] == "46,758,048"


def test_sgd_momentum_keeps_one_state_and_plain_sgd_none() -> None:
    text = (
        "input [1, 28, 28]\nclasses 10\ntrain {{ optimizer = {opt} }}\nINPUT -> FC(10) -> SOFTMAX"
    )
    for opt, states in (
        ("sgd(lr=0.1, momentum=0.9)", 1),
        ("sgd(lr=0.1, momentum=0)", 0),
        ("adamw", 2),
    ):
        m = training_memory(netspec.compile_spec(text.format(opt=opt)))
        assert m.states == states, opt
        assert m.optimizer_state == states * 7_850 * 4  # 784 x 10 + 10 params


def test_input_override() -> None:
    # mnist_dense at 1x32x32: flatten 1,024 -> FC 10 (10,250) -> FC 10 (110) = 10,360 params.
    g, errors = load_graph(str(ROOT / "specs/mnist_dense.ns"), (), (), True, (1, 32, 32))
    assert g.input.shape == (1, 32, 32) and g.totals.params == 10_360
    assert [e.message.split(":")[0] for e in errors] == ["budget exceeded"]  # 10K; no assertion
    assert "[input=1x32x32]" in summary(g).splitlines()[0]


def test_summary_formats_agree() -> None:
    g = netspec.compile_spec("zoo:mnist_cnn")
    rows = list(csv.DictReader(io.StringIO(summary(g, "csv"))))
    assert [int(r["memory"]) for r in rows] == [n.memory for n in g.nodes]
    brief = list(csv.reader(io.StringIO(summary(g, "csv", rows=False))))
    assert brief[0] == ["figure", "value", "note"]
    assert ["params", "7135", "7.13K"] in brief
    assert summary(g, "json") == g.model_dump_json(indent=2) + "\n"
    assert g._repr_markdown_() == summary(g, "markdown")
    with pytest.raises(ValueError, match="format"):
        summary(g, "html")


def test_api_takes_spec_text_a_path_and_a_zoo_name() -> None:
    text = (ROOT / "specs/mnist_cnn.ns").read_text()
    by_text = netspec.compile_spec(text)
    by_path = netspec.compile_spec(ROOT / "specs/mnist_cnn.ns")
    by_name = netspec.compile_spec("zoo:mnist_cnn")
    assert by_text.totals == by_path.totals == by_name.totals
    assert [(n.id, n.shape, n.params) for n in by_text.nodes] == [
        (n.id, n.shape, n.params) for n in by_path.nodes
    ]
    one_line = netspec.compile_spec("input [4]\nINPUT -> FC(2)")
    assert one_line.totals.params == 10


# ---- activations kept for backward vs torch ------------------------------------------------

# The estimate follows each kind's backward rule (netspec/memory.py). The tolerance stated
# and held here is zero: on these specs (chains, dropout, tanh and average pooling, 1-D convs
# over embeddings, dilation, ResNet blocks, Inception branches), in fp32 on the CPU, the
# estimate equals the bytes torch saves, to the byte, at two batch sizes (so both the
# per-example and the per-batch parts are right). What the rules do not model is named in
# netspec/memory.py (a ReLU torch cannot run in place, asymmetric `same` padding's copy,
# CUDA's 1-byte dropout masks); those would show here as a difference, not pass unseen.
TORCH_SPECS = [
    "mnist_cnn",
    "resnet18",
    "lenet5",
    "cifar_vgg_dropout",
    "text_cnn",
    "dilated",
    "googlenet",
]


def saved_by_torch(graph: Graph, batch: int) -> int:
    """Bytes of the distinct storages autograd saves in one training step (forward + loss),
    parameters and buffers excluded: they are the weights, counted apart."""
    import torch
    import torch.nn.functional as F

    model = netspec.build(graph, seed=0).train()
    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in state:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    gen = torch.Generator().manual_seed(0)
    shape = (batch, *graph.input.shape)
    if graph.input.is_tokens:
        x = torch.randint(0, graph.input.vocab, shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
    y = torch.randint(0, graph.classes, (batch,), generator=gen)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model.logits(x), y)
    loss.backward()
    return sum(saved.values())


# The registry's newer kinds, in one chain: each activation between two convs, so that what it
# keeps is not also kept by its neighbours.
KINDS_CHAIN = """input [3, 16, 16]
classes 10
INPUT -> CONV(8) -> RELU6 -> CONV(8) -> HARDSWISH -> CONV(8) -> GELU -> POOL
  -> CONV(8) -> ELU -> CONV(8) -> PRELU -> CONVTRANSPOSE(8) -> SILU -> UPSAMPLE(2)
  -> CONV(8) -> HARDSIGMOID -> CONV(8) -> LEAKYRELU -> GAP -> FC(10) -> SOFTMAX
"""


# The normalization, channel and regularization kinds, likewise.
KINDS_CHAIN_2 = """input [3, 16, 16]
classes 10
INPUT -> CONV(8) -> LAYERNORM -> CONV(8) -> GROUPNORM(2) -> CONV(8) -> LAYERSCALE(0.5)
  -> CHANNELSHUFFLE(2) -> CONV(8) -> SLICE(2, 6) -> CONV(8) -> DROPPATH(0.2) -> CONV(8)
  -> DROPPATH(0) -> CONV(8) -> residual(CONV(8) -> DROPPATH(0.3)) -> GAP -> LAYERNORM -> FC(10)
  -> SOFTMAX
"""
CHAINS = {"kinds_chain": KINDS_CHAIN, "kinds_chain_2": KINDS_CHAIN_2}


@pytest.mark.parametrize("name", [*TORCH_SPECS, *CHAINS])
def test_activations_kept_match_what_torch_saves(name: str) -> None:
    g = netspec.compile_spec(CHAINS.get(name, f"zoo:{name}"))
    per_example, fixed = activations_kept(g)
    for batch in (2, 3):
        measured = saved_by_torch(g, batch)
        estimate = batch * per_example + fixed
        assert estimate == measured, f"{estimate:,} vs {measured:,}: {estimate / measured - 1:+.2%}"


def test_forward_memory_is_not_what_backward_keeps() -> None:
    # The forward activation memory (every output once) and what backward keeps differ: in a
    # ResNet block the BN before the addition is read only by the addition, which keeps
    # nothing, while max pooling keeps int64 indices the forward figure never counts.
    g = netspec.compile_spec("zoo:resnet18")
    per_example, _ = activations_kept(g)
    assert per_example != g.totals.memory_bytes
