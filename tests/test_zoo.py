"""The zoo: every spec in specs/ held to its published figures.

The expected numbers are the published ones (the course's tables and Keras listings,
torchvision's model table, the papers), never values copied from netspec's own output.
Parameters must match exactly; MACs must round to the published figure at its published
precision and lie within 0.5% of it. Each spec is compiled once (a module-level cache).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cpu import HANG_S

import netspec
from netspec.errors import SpecErrors
from netspec.ir.build import load_spec
from netspec.ir.graph import Graph, Node
from netspec.zoo import PUBLISHED

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "specs"
SPECS = sorted(SPEC_DIR.glob("*.ns"))

# Specs written to fail `netspec check` (the test below says how).
DESIGNED_TO_FAIL = {"alexnet_table"}


@functools.cache
def _graph(name: str, bindings: tuple[tuple[str, object], ...] = ()) -> Graph:
    return netspec.compile_spec(SPEC_DIR / f"{name}.ns", dict(bindings))


def graph(name: str, **bindings: object) -> Graph:
    return _graph(name, tuple(sorted(bindings.items())))


def weighted(g: Graph, kind: str | None = None) -> list[Node]:
    """The nodes that carry parameters (optionally of one kind), in execution order."""
    return [n for n in g.nodes if n.params and (kind is None or n.kind == kind)]


# --- published totals --------------------------------------------------------------------------

# PUBLISHED: name -> (params, GMACs as published or None, source). The table lives in
# netspec/zoo.py, once, so that `netspec zoo` prints the figures these tests hold every spec to.


def assert_gmacs(macs: int, published: str) -> None:
    """Rounds to the figure at its precision; within 0.5%, or the figure's own rounding
    interval where that is wider (mobilenet_v3_small's 0.057: +-0.88%)."""
    decimals = len(published.split(".")[1]) if "." in published else 0
    assert round(macs / 1e9, decimals) == float(published), f"{macs:,} MACs is not {published} G"
    band = max(0.005, 0.5 * 10**-decimals / float(published))
    assert macs == pytest.approx(float(published) * 1e9, rel=band)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_macs(name: str) -> None:
    params, gmacs, source, _ = PUBLISHED[name]
    g = graph(name)
    assert g.totals.params == params, source
    if gmacs is not None:
        assert_gmacs(g.totals.macs, gmacs)


# --- every spec --------------------------------------------------------------------------------


def _bindings_for(path: Path) -> dict[str, object]:
    """A design space (free parameters) is checked at its first point, as test_ir does."""
    spec = load_spec(path)
    return {name: d.values[0] for name, d in spec.free.items()} if spec.is_family else {}


@pytest.mark.parametrize(
    "path", [p for p in SPECS if p.stem not in DESIGNED_TO_FAIL], ids=lambda p: p.stem
)
def test_spec_compiles_within_its_budget(path: Path) -> None:
    bindings = _bindings_for(path)
    g = graph(path.stem, **bindings)
    assert g.name == path.stem
    assert g.description, 'every spec has `network NAME "description"`'
    assert path.read_text().lstrip().startswith("#"), (
        "every spec opens with a comment citing its source"
    )
    task = (g.train or {}).get("task")
    task = task.get("name") if isinstance(task, dict) else task
    if task in ("regression", "multilabel"):  # no classes to declare: targets or labels per output
        assert len(g.output_shape) == 1
    elif g.per_pixel:  # a dense output: one map per class
        assert g.classes is not None
        assert len(g.output_shape) == 3 and g.output_shape[0] == g.classes
    else:
        assert g.classes is not None and g.output_shape == (g.classes,)
    assert g.budgets, "every spec declares a budget"
    assert g.budgets_ok, [b for b in g.budgets if not b.ok]


def test_the_designed_failures_are_the_only_failures() -> None:
    for name in DESIGNED_TO_FAIL:
        with pytest.raises(SpecErrors):
            netspec.compile_spec(SPEC_DIR / f"{name}.ns")


# --- per-layer checks --------------------------------------------------------------------------


def test_lenet5_follows_the_course_table() -> None:
    # The course's table (deck 001): maps and size per row, C1 to Out.
    table = {
        "c1": (6, 28, 28),
        "s2": (6, 14, 14),
        "c3": (16, 10, 10),
        "s4": (16, 5, 5),
        "c5": (120, 1, 1),
        "f6": (84,),
        "out": (10,),
    }
    g = graph("lenet5")
    assert {k: g.node(k).shape for k in table} == table
    assert {n.kind for n in g.nodes if n.kind in ("tanh", "relu", "sigmoid")} == {"tanh"}
    assert {g.node(k).args["mode"] for k in ("s2", "s4")} == {"avg"}


def test_mnist_cnn_matches_the_keras_summary() -> None:
    # The course's model.summary() (deck 003): (output shape HWC, params) per Keras layer.
    keras = [
        ((26, 26, 16), 160),
        ((13, 13, 16), 0),
        ((11, 11, 16), 2320),
        ((5, 5, 16), 0),
        ((3, 3, 16), 2320),
        ((144,), 0),
        ((15,), 2175),
        ((10,), 160),
    ]
    g = graph("mnist_cnn")
    rows = [n for n in g.nodes if n.kind in ("conv", "pool", "flatten", "fc")]
    chw = [(s[2], s[0], s[1]) if len(s) == 3 else s for s, _ in keras]
    assert [(n.shape, n.params) for n in rows] == [
        (s, p) for s, (_, p) in zip(chw, keras, strict=True)
    ]


@pytest.mark.parametrize(("name", "hidden"), [("mnist_dense", [10]), ("mnist_dense3", [15, 15])])
def test_dense_mnist_layers(name: str, hidden: list[int]) -> None:
    g = graph(name)
    assert [n.shape[0] for n in weighted(g)] == [*hidden, 10]
    assert g.node("flatten1").shape == (784,)


def test_cifar_vgg_listing_shapes_and_dropout_rates() -> None:
    # "Flatten final 3x3x128 output matrix into a 1152-length vector" (deck 003).
    for name in ("cifar_vgg", "cifar_vgg_dropout", "cifar_vgg_bn"):
        assert graph(name).node("flatten1").shape == (1152,)
    rates = [n.args["p"] for n in graph("cifar_vgg_dropout").nodes if n.kind == "dropout"]
    assert rates == [0.2, 0.3, 0.4, 0.4]


def test_cifar_vgg_bn_adds_two_params_per_channel() -> None:
    # The course's batch-norm listing: BN after each of the six convs (32, 32, 64, 64, 128, 128
    # maps) and after the FC(128); each BN learns a scale and a shift per channel.
    bn_channels = [32, 32, 64, 64, 128, 128, 128]
    g = graph("cifar_vgg_bn")
    assert [n.shape[0] for n in g.nodes if n.kind == "batchnorm"] == bn_channels
    assert g.totals.params == 435_882 + 2 * sum(bn_channels)
    # Running mean and variance: buffers, Keras' "non-trainable params".
    assert g.totals.buffers == 2 * sum(bn_channels)


def test_alexnet_torchvision_feature_map() -> None:
    g = graph("alexnet")
    assert [n.shape for n in weighted(g, "conv")][0] == (64, 55, 55)
    assert g.node("apool1").shape == (256, 6, 6)
    assert [n.shape[0] for n in weighted(g, "fc")] == [4096, 4096, 1000]


def test_alexnet_table_fails_its_shape_assertion_via_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netspec", "check", str(SPEC_DIR / "alexnet_table.ns")],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "Traceback" not in out
    assert "shape assertion failed" in out
    assert "declared [96, 55, 55], computed [96, 56, 56]" in out
    assert "ceil(224 / 4) = 56" in out
    assert "227" in out and "valid" in out
    assert out.count("error:") == 1  # only C1 is wrong: every later row of the table holds


def test_zfnet_feature_maps_follow_the_paper() -> None:
    # Zeiler & Fergus 2013, Fig. 3: 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 13 -> 6, 9216 into FC.
    fig3 = {
        "conv1": (96, 110, 110),
        "pool1": (96, 55, 55),
        "conv2": (256, 26, 26),
        "pool2": (256, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "pool3": (256, 6, 6),
        "flatten1": (9216,),
    }
    g = graph("zfnet")
    assert {k: g.node(k).shape for k in fig3} == fig3
    assert g.node("conv1").args["kernel"] == 7 and g.node("conv1").args["stride"] == 2
    assert sum(n.kind == "lrn" for n in g.nodes) == 2


# fmt: off
# The course's "VGGNet in detail" (deck 002, from CS231n): the memory column, row by row.
COURSE_VGG16_MEMORY = [
    224 * 224 * 3,                                   # INPUT
    224 * 224 * 64, 224 * 224 * 64, 112 * 112 * 64,  # CONV3-64 x2, POOL2
    112 * 112 * 128, 112 * 112 * 128, 56 * 56 * 128,
    56 * 56 * 256, 56 * 56 * 256, 56 * 56 * 256, 28 * 28 * 256,
    28 * 28 * 512, 28 * 28 * 512, 28 * 28 * 512, 14 * 14 * 512,
    14 * 14 * 512, 14 * 14 * 512, 14 * 14 * 512, 7 * 7 * 512,
    4096, 4096, 1000,                                # FC, FC, FC
]
# Its weights column (no biases): (3*3*3)*64, (3*3*64)*64, ..., 7*7*512*4096, 4096*4096, 4096*1000.
COURSE_VGG16_WEIGHTS = [
    (3 * 3 * 3) * 64, (3 * 3 * 64) * 64, (3 * 3 * 64) * 128, (3 * 3 * 128) * 128,
    (3 * 3 * 128) * 256, (3 * 3 * 256) * 256, (3 * 3 * 256) * 256,
    (3 * 3 * 256) * 512, (3 * 3 * 512) * 512, (3 * 3 * 512) * 512,
    (3 * 3 * 512) * 512, (3 * 3 * 512) * 512, (3 * 3 * 512) * 512,
    7 * 7 * 512 * 4096, 4096 * 4096, 4096 * 1000,
]
# fmt: on


def test_vgg16_activation_memory_matches_the_course_rows() -> None:
    g = graph("vgg16")
    assert [n.memory for n in g.nodes if n.memory] == COURSE_VGG16_MEMORY
    assert g.node("conv1").memory == 224 * 224 * 64
    # The true sum of the course's rows (its "24M" total is an arithmetic slip).
    assert g.totals.memory_elements == sum(COURSE_VGG16_MEMORY) == 15_237_608
    assert g.totals.memory_bytes == 4 * 15_237_608


def test_vgg16_weights_match_the_course_rows() -> None:
    g = graph("vgg16")
    assert [n.params - n.shape[0] for n in weighted(g)] == COURSE_VGG16_WEIGHTS  # minus biases
    assert round(g.totals.params / 1e6) == 138  # "TOTAL params: 138M parameters"


def test_vgg19_is_vgg16_plus_three_convs() -> None:
    assert len(weighted(graph("vgg19"), "conv")) == len(weighted(graph("vgg16"), "conv")) + 3 == 16


# Szegedy et al. 2014, Table 1: the output depth of every inception module.
GOOGLENET_TABLE1 = {
    "inception3a": 256,
    "inception3b": 480,
    "inception4a": 512,
    "inception4b": 512,
    "inception4c": 512,
    "inception4d": 528,
    "inception4e": 832,
    "inception5a": 832,
    "inception5b": 1024,
}


def test_googlenet_inception_depths_and_torchvision_details() -> None:
    g = graph("googlenet")
    concats = {n.id.split(".")[0]: n.shape[0] for n in g.nodes if n.kind == "concat"}
    assert concats == GOOGLENET_TABLE1
    convs = [n for n in g.nodes if n.kind == "conv"]
    assert all(not c.args["bias"] for c in convs)
    assert {n.args["eps"] for n in g.nodes if n.kind == "batchnorm"} == {0.001}
    # torchvision's quirk: the "5x5" branch (branch3) convolves 3x3.
    assert {c.args["kernel"] for c in convs if ".branch3." in c.id} == {1, 3}
    assert all(n.args["ceil"] for n in g.nodes if n.kind == "pool")
    assert [n.args["p"] for n in g.nodes if n.kind == "dropout"] == [0.2]
    assert not any("aux" in n.id for n in g.nodes)


def test_resnet50_v1_and_v15() -> None:
    v15, v1 = graph("resnet50"), graph("resnet50", V1=True)
    # Moving the stride changes no weight, only where the 3x3 convs run at full resolution.
    assert v1.totals.params == v15.totals.params == 25_557_032
    assert_gmacs(v15.totals.macs, "4.09")
    assert_gmacs(v1.totals.macs, "3.86")
    # The first block of layer2 downsamples: V1 in its 1x1 conv1, V1.5 in its 3x3 conv2.
    for g, strides in ((v1, [2, 1, 1]), (v15, [1, 2, 1])):
        assert [g.node(f"layer2.bottleneck1.conv{i}").args["stride"] for i in (1, 2, 3)] == strides


# He et al. 2015, Table 1: blocks per stage and convs per block (basic: 2, bottleneck: 3).
RESNET_TABLE1 = {
    "resnet18": ([2, 2, 2, 2], 2),
    "resnet34": ([3, 4, 6, 3], 2),
    "resnet50": ([3, 4, 6, 3], 3),
    "resnet101": ([3, 4, 23, 3], 3),
    "resnet152": ([3, 8, 36, 3], 3),
}


@pytest.mark.parametrize("name", sorted(RESNET_TABLE1))
def test_resnet_stages_and_depth(name: str) -> None:
    blocks, per_block = RESNET_TABLE1[name]
    g = graph(name)
    adds = [n.id.split(".")[0] for n in g.nodes if n.kind == "add"]
    assert [adds.count(f"layer{i}") for i in (1, 2, 3, 4)] == blocks
    # The name counts the weighted layers: the stem conv, the blocks' convs and the FC.
    main = [n for n in g.nodes if n.kind in ("conv", "fc") and ".shortcut." not in n.id]
    assert len(main) == 1 + per_block * sum(blocks) + 1 == int(name.removeprefix("resnet"))
    assert [n.shape[1:] for n in g.nodes if n.kind == "add"][-1] == (7, 7)


# He et al. 2015, Table 6 (CIFAR-10): n -> published params. The paper uses option A
# (parameter-free shortcuts); the spec uses option B, whose two 1x1 conv + BN projections add
# (16*32 + 2*32) + (32*64 + 2*64) params.
RESNET_CIFAR_TABLE6 = {3: "0.27", 5: "0.46", 7: "0.66", 9: "0.85", 18: "1.7", 200: "19.4"}
OPTION_B_EXTRA = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize("n", sorted(RESNET_CIFAR_TABLE6))
def test_resnet_cifar_table6(n: int) -> None:
    g = graph("resnet1202_cifar", n=n)
    published = RESNET_CIFAR_TABLE6[n]
    decimals = len(published.split(".")[1])
    assert round((g.totals.params - OPTION_B_EXTRA) / 1e6, decimals) == float(published)
    assert sum(x.params for x in g.nodes if ".shortcut." in x.id) == OPTION_B_EXTRA
    layers = [x for x in weighted(g) if x.kind in ("conv", "fc") and ".shortcut." not in x.id]
    assert len(layers) == 6 * n + 2
    assert [x.shape for x in g.nodes if x.kind == "add"][-1] == (64, 8, 8)


def test_resnet1202_is_about_19_4_million() -> None:
    g = graph("resnet1202_cifar")
    assert round(g.totals.params / 1e6, 1) == 19.4
    assert g.bindings == {}  # n = 200 is the spec's own value


def test_text_cnn_embedding_and_conv() -> None:
    g = graph("text_cnn")
    (emb,) = [n for n in g.nodes if n.kind == "embedding"]
    (conv,) = [n for n in g.nodes if n.kind == "conv"]
    assert emb.params == 10_000 * 128 == 1_280_000  # Embedding(input_dim=10000, output_dim=128)
    assert conv.params == 5 * 128 * 32 + 32 == 20_512  # Conv1D(filters=32, kernel_size=5)
    assert emb.shape == (128, 21) and conv.shape == (32, 17)
    assert g.node("pool1").shape == (32, 5) and g.node("gpool1").shape == (32,)


def test_dilated_receptive_field_grows_exponentially() -> None:
    g = graph("dilated")
    convs = [n for n in g.nodes if n.kind == "conv"]
    dilations = [c.args["dilation"] for c in convs]
    rf, fields = 1, []
    for d in dilations:
        rf += (3 - 1) * d
        fields.append(rf)
    assert dilations == [1, 2, 4, 8] and fields == [3, 7, 15, 31]
    # Valid padding, stride 1: the output size is the input size minus the receptive field + 1.
    assert [32 - c.shape[1] + 1 for c in convs] == fields


def test_cs231n_pattern_implicit_rows() -> None:
    g = graph("cs231n_pattern")
    implicit = [n for n in g.nodes if n.implicit]
    assert [n.kind for n in implicit] == ["flatten", "fc"]
    assert implicit[-1].shape == (10,) and implicit[-1].args["units"] == 10
    assert g.nodes[-2] is implicit[-1] and g.nodes[-1].kind == "softmax"
    # N=2, M=3, K=1 with pooling: 6 convs, 3 pools, 1 hidden FC.
    assert [sum(n.kind == k for n in g.nodes) for k in ("conv", "pool")] == [6, 3]
    assert len([n for n in g.nodes if n.kind == "fc" and not n.implicit]) == 1


@pytest.mark.parametrize(
    ("bindings", "convs", "pools", "fcs", "within_budget"),
    [
        ({"N": 3}, 9, 3, 2, True),
        ({"pool": False}, 6, 0, 2, False),  # the FC then sees 32x32x32 maps: 4.2M params, over 1M
        ({"K": 0}, 6, 3, 1, True),
        ({"M": 2, "K": 2}, 4, 2, 3, True),
    ],
)
def test_cs231n_pattern_bindings(
    bindings: dict[str, object], convs: int, pools: int, fcs: int, within_budget: bool
) -> None:
    g, errors = load_spec(SPEC_DIR / "cs231n_pattern.ns").instantiate(bindings, collect=True)
    counts = [sum(n.kind == k for n in g.nodes) for k in ("conv", "pool", "fc")]
    assert counts == [convs, pools, fcs]
    assert g.output_shape == (g.classes,) == (10,)
    assert g.budgets_ok == within_budget
    failed = [e.message.split(" =")[0] for e in errors]
    assert failed == ([] if within_budget else ["budget exceeded: params"])
