"""Receptive fields (netspec/ir/receptive.py) against published values and against a brute
force: perturb one input pixel of the built torch module and see which outputs change."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cpu import HANG_S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netspec
from netspec.errors import NetspecError
from netspec.ir.graph import Graph, ReceptiveField
from netspec.ir.receptive import notes, receptive_fields, seen

ROOT = Path(__file__).resolve().parent.parent


def fields(graph: Graph) -> dict[str, ReceptiveField]:
    return {f.node: f for f in receptive_fields(graph)}


def last_of_kind(graph: Graph, kind: str) -> str:
    return [n.id for n in graph.nodes if n.kind == kind][-1]


# ---- published values -------------------------------------------------------------------------


def test_alexnet_195_at_the_last_pool() -> None:
    # Araujo, Norris & Sim (Distill 2019), alexnet_v2: 195, effective stride 32.
    g = netspec.compile_spec("zoo:alexnet")
    f = fields(g)[last_of_kind(g, "pool")]
    assert f.size == (195, 195) and f.jump == (32, 32)


def test_vgg16_212_at_the_last_pool() -> None:
    # Distill's vgg_16: 212, stride 32, effective padding 90.
    g = netspec.compile_spec("zoo:vgg16")
    f = fields(g)[last_of_kind(g, "pool")]
    assert f.size == (212, 212) and f.jump == (32, 32) and f.start == (-90, -90)


# TF-Slim's resnet_v1_50, the variant Distill's table measures: a block's stride sits in the
# 3x3 conv of its LAST unit (torchvision's V1.5 puts it in its first unit), the max pool pads
# SAME (0 before, 1 after), block4 does not stride.
SLIM_RESNET50 = """network slim_resnet_v1_50
input [3, 224, 224]
classes 1000
block bottleneck(w, stride=1) =
  residual(CONV(w, 1) -> RELU -> CONV(w, 3, stride=stride, padding=1) -> RELU -> CONV(4 * w, 1),
           project=auto) -> RELU
INPUT
  -> CONV(64, 7, stride=2, padding=3) -> RELU -> POOL(3, stride=2, padding=same)
  -> [bottleneck(64)*2] -> bottleneck(64, 2)
  -> [bottleneck(128)*3] -> bottleneck(128, 2)
  -> [bottleneck(256)*5] -> bottleneck(256, 2)
  -> [bottleneck(512)*3] as block4
  -> GAP -> FC(1000)
"""


def test_resnet50_as_tf_slim_lays_it_out_483() -> None:
    # Distill's resnet_v1_50: 483, stride 32, effective padding 239.
    g = netspec.compile_spec(SLIM_RESNET50)
    f = fields(g)["block4.bottleneck3.relu3"]
    assert (f.size, f.jump, f.start) == ((483, 483), (32, 32), (-239, -239))


def test_resnet50_zoo_v1_is_distills_and_v15_is_smaller() -> None:
    """The zoo's ResNet-50 with V1=on (stride in a block's first 1x1 conv) has Slim's 483:
    either way every 3x3 conv after a block boundary runs at the coarser step. torchvision's
    V1.5 (the zoo's default) strides in the first unit's 3x3 instead, which then widens the
    field at the finer step: 2 x (4 + 8 + 16) = 56 pixels less, 427."""
    end = "layer4.bottleneck3.relu3"
    v1 = netspec.compile_spec("zoo:resnet50", {"V1": True})
    assert fields(v1)[end].size == (483, 483) and fields(v1)[end].jump == (32, 32)
    v15 = netspec.compile_spec("zoo:resnet50")
    assert fields(v15)[end].size == (483 - 56, 483 - 56)


# TF-Slim's inception_v3 up to Mixed_7c (the zoo has no Inception v3; GoogLeNet is v1, which
# Distill's table does not list): VALID stem, factorised 1x7 / 7x1 convs, nested concats.
SLIM_INCEPTION_V3 = """network slim_inception_v3
input [3, 299, 299]

defaults CONV(padding=same)
block a(p) = concat(CONV(64, 1), CONV(48, 1) -> CONV(64, 5), CONV(64, 1) -> CONV(96, 3) -> CONV(96, 3),
                    AVGPOOL(3, stride=1, padding=same) -> CONV(p, 1))
block b() = concat(CONV(384, 3, stride=2, padding=valid),
                   CONV(64, 1) -> CONV(96, 3) -> CONV(96, 3, stride=2, padding=valid),
                   MAXPOOL(3, stride=2))
block c(w) = concat(CONV(192, 1), CONV(w, 1) -> CONV(w, (1, 7)) -> CONV(192, (7, 1)),
                    CONV(w, 1) -> CONV(w, (7, 1)) -> CONV(w, (1, 7)) -> CONV(w, (7, 1)) -> CONV(192, (1, 7)),
                    AVGPOOL(3, stride=1, padding=same) -> CONV(192, 1))
block d() = concat(CONV(192, 1) -> CONV(320, 3, stride=2, padding=valid),
                   CONV(192, 1) -> CONV(192, (1, 7)) -> CONV(192, (7, 1)) -> CONV(192, 3, stride=2, padding=valid),
                   MAXPOOL(3, stride=2))
block e() = concat(CONV(320, 1), CONV(384, 1) -> concat(CONV(384, (1, 3)), CONV(384, (3, 1))),
                   CONV(448, 1) -> CONV(384, 3) -> concat(CONV(384, (1, 3)), CONV(384, (3, 1))),
                   AVGPOOL(3, stride=1, padding=same) -> CONV(192, 1))
INPUT
  -> CONV(32, 3, stride=2, padding=valid) -> CONV(32, 3, padding=valid) -> CONV(64, 3)
  -> MAXPOOL(3, stride=2) -> CONV(80, 1, padding=valid) -> CONV(192, 3, padding=valid)
  -> MAXPOOL(3, stride=2)                                    : [192, 35, 35]
  -> a(32) -> a(64) -> a(64) -> b() -> c(128) -> c(160) -> c(160) -> c(192) -> d() -> e() -> e() : [2048, 8, 8]
"""


def test_inception_v3_as_tf_slim_lays_it_out_1311() -> None:
    # Distill's inception_v3: 1311, stride 32, effective padding 618 - through concats of
    # branches whose fields differ per dim (1x7 then 7x1), the union of which is square.
    g = netspec.compile_spec(SLIM_INCEPTION_V3)
    f = fields(g)[g.output]
    assert (f.size, f.jump, f.start) == ((1311, 1311), (32, 32), (-618, -618))


def test_dilated_spec_matches_its_comments() -> None:
    # specs/dilated.ns works it out by hand: 3 -> 7 -> 15 -> 31, then GAP covers all 32x32.
    g = netspec.compile_spec("zoo:dilated")
    f = fields(g)
    assert [f[f"conv{i}"].size[0] for i in (1, 2, 3, 4)] == [3, 7, 15, 31]
    assert all(f[f"conv{i}"].jump == (1, 1) for i in (1, 2, 3, 4))
    assert not f["conv4"].covers and f["gpool1"].covers


def test_unet_contracting_path_and_up_convolution() -> None:
    # Two 3x3 convs per level and a 2x2 pool between: 5, 14, 32, 68, then 140 at the bottom,
    # the figure usually quoted for U-Net; the 2x2 stride-2 up-convolution reads one input
    # pixel per output (size kept) and halves the jump.
    g = netspec.compile_spec("zoo:unet")
    f = fields(g)
    # One recursive block: each level's encoder `enc`, a level deeper under `down`.
    ends = [f"unet.{'branch2.down.' * depth}enc.relu2" for depth in range(5)]
    assert [f[e].size[0] for e in ends] == [5, 14, 32, 68, 140]
    assert [f[e].jump[0] for e in ends] == [1, 2, 4, 8, 16]
    up = [n for n in g.nodes if n.kind == "conv_transpose"][0].id
    assert f[up].size == (140, 140) and f[up].jump == (8, 8)
    # Each decoder 3x3 conv adds 2 steps of its level; the concat's skip is inside the union.
    assert f[g.output].size == (200, 200) and f[g.output].jump == (1, 1)


def test_upsampling_halves_the_jump() -> None:
    g = netspec.compile_spec(
        "input [1, 16, 16]\nINPUT -> POOL -> UPSAMPLE -> CONV(2, 3) -> UPSAMPLE(2, bilinear)"
    )
    f = fields(g)
    assert f["upsample1"].size == (2, 2) and f["upsample1"].jump == (1, 1)
    assert f["conv1"].size == (4, 4)  # 3 taps one pixel apart
    assert f["upsample2"].jump == (0.5, 0.5) and f["upsample2"].size == (5, 5)


def test_the_course_example_loses_pixels_and_says_so() -> None:
    g = netspec.compile_spec("input [3, 30, 30]\nINPUT -> POOL -> POOL -> POOL")
    text = "\n".join(notes(g, receptive_fields(g)))
    assert "pool2: input rows 28-29 and columns 28-29 reach no output" in text
    assert "pool3: input rows 24-29 and columns 24-29 reach no output" in text
    assert "pool1" not in text


def test_a_stride_shortcut_beside_a_3x3_path_is_not_noted() -> None:
    g = netspec.compile_spec("zoo:resnet18")
    assert not any("shortcut" in n for n in notes(g, receptive_fields(g)))


def test_check_columns_rf_keeps_the_default_table(capsys) -> None:
    from netspec.cli import main

    assert main(["check", "zoo:mnist_cnn"]) == 0
    plain = capsys.readouterr().out
    assert main(["check", "zoo:mnist_cnn", "--columns", "rf"]) == 0
    wide = capsys.readouterr().out
    assert "RF" not in plain.splitlines()[2] and "RF  jump  start" in wide.splitlines()[2]
    assert "pool2: input rows 26-27" in wide
    assert main(["check", "zoo:mnist_cnn", "--json", "--columns", "rf"]) == 0
    graph = Graph.model_validate_json(capsys.readouterr().out)
    assert graph.receptive_fields is not None
    assert graph.receptive_fields[-1].size == (26, 26)
    assert "receptive_fields" in Graph.model_json_schema()["properties"]


def test_receptive_fields_do_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys, netspec\n"
        "g = netspec.compile_spec('zoo:resnet50')\n"
        "print(g.summary(rf=True)[:10])\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=HANG_S
    )
    assert proc.returncode == 0, proc.stderr


# ---- brute force --------------------------------------------------------------------------------


@st.composite
def chains(draw: st.DrawFn) -> str:
    """A small 1-D spec: convs (stride, padding, dilation), pools, residual adds, concats."""
    channels = 2
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        what = draw(st.sampled_from(["conv", "pool", "add", "concat"]))
        k = draw(st.integers(1, 4))
        if what == "conv":
            channels = draw(st.integers(1, 3))
            s, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            pad = draw(st.sampled_from(["valid", "same", "0", "1", "2"]))
            parts.append(f"CONV1D({channels}, {k}, stride={s}, padding={pad}, dilation={d})")
        elif what == "pool":
            mode = draw(st.sampled_from(["MAXPOOL1D", "AVGPOOL1D"]))
            s = draw(st.integers(1, 3))
            parts.append(f"{mode}({k}, stride={s}, padding={draw(st.integers(0, k // 2))})")
        elif what == "add":
            d = draw(st.integers(1, 3))
            parts.append(f"add(CONV1D({channels}, {k}, padding=same, dilation={d}), IDENTITY)")
        else:
            parts.append(f"concat(CONV1D(2, {k}, padding=same), MAXPOOL1D(3, stride=1, padding=1))")
            channels += 2
    return "input [2, LEN]\nINPUT -> " + " -> ".join(parts)


def dependence(graph: Graph) -> list[tuple[int, int] | None]:
    """For each output position, the first and last input position whose change changes it
    (None: no input position does). Positive weights and inputs, and a huge perturbation, so
    that nothing cancels and a max pool picks the perturbed value."""
    import torch

    model = netspec.build(graph).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.1, 1.0)
        c, n = graph.input.shape
        base = torch.rand(1, c, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        base += 1.0
        batch = base.repeat(n + 1, 1, 1)
        for i in range(n):
            batch[i + 1, :, i] += 1e6
        out = model(batch)
        changed = ((out[1:] - out[:1]).abs() > 1e-3).any(dim=1)  # [input, output position]
    result: list[tuple[int, int] | None] = []
    for o in range(changed.shape[1]):
        rows = changed[:, o].nonzero().flatten().tolist()
        result.append((rows[0], rows[-1]) if rows else None)
    return result


@pytest.mark.parametrize("length", [23, 40])
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=chains())
def test_receptive_field_matches_brute_force(text: str, length: int) -> None:
    pytest.importorskip("torch")
    try:
        graph = netspec.compile_spec(text.replace("LEN", str(length)))
    except NetspecError:
        return  # a chain that does not fit the input (a size collapsing to 0)
    if len(graph.output_shape) != 2:
        return
    f = fields(graph)[graph.output]
    n = length
    # Exact where no layer loses input pixels: every tap of an interior position is real.
    exact = all(not any(seen(x, graph.node(x.node).shape, (2, n))) for x in fields(graph).values())
    for o, got in enumerate(dependence(graph)):
        lo = f.start[0] + o * f.jump[0]
        hi = lo + f.size[0] - 1
        clipped = (max(int(lo), 0), min(int(hi), n - 1))
        if got is not None:  # the field is an upper bound on what one output sees
            assert clipped[0] <= got[0] and got[1] <= clipped[1], (text, o, got, (lo, hi))
        if exact and lo >= 0 and hi <= n - 1:  # interior: no padding anywhere in the field
            assert got == (lo, hi), (text, o, got, (lo, hi))


def test_brute_force_2d_dilated_centre() -> None:
    """The zoo's dilated stack, 2-D: the centre output of conv4 depends on exactly 31x31
    input pixels (gradients of that output, positive weights so every ReLU passes)."""
    torch = pytest.importorskip("torch")
    g = netspec.compile_spec("zoo:dilated")
    model = netspec.build(g).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.1, 1.0)
    seen_maps = {}
    model.get_submodule("conv4").register_forward_hook(lambda m, i, o: seen_maps.update(o=o))
    x = (torch.rand(1, 3, 32, 32, dtype=torch.float64) + 1).requires_grad_()
    model(x)
    seen_maps["o"][0, :, 1, 1].sum().backward()
    assert x.grad is not None
    rows = x.grad[0].abs().sum(0).nonzero()
    extent = (rows.max(0).values - rows.min(0).values + 1).tolist()
    f = fields(g)["conv4"]
    assert extent == list(f.size) and rows.min(0).values.tolist() == [1, 1]


# ---- every kind ---------------------------------------------------------------------------------

# Statistics over the positions, which receptive fields leave out (as the literature does): a
# group norm's output depends on the whole map through its mean and variance.
STATISTICS = {"groupnorm"}


def kind_cases() -> list[tuple[str, str, str]]:
    from netspec.layers import KINDS

    cases = []
    for kind, cls in sorted(KINDS.items()):
        for where, chain in cls.examples or (("image", next(iter(cls.spellings), "")),):
            if where in ("image", "signal") and chain and kind not in STATISTICS:
                cases.append((kind, "[3, 9, 9]" if where == "image" else "[3, 12]", chain))
    return cases


@pytest.mark.parametrize(("kind", "shape", "chain"), kind_cases())
def test_every_kind_states_its_window_and_holds_it(kind: str, shape: str, chain: str) -> None:
    """A kind that changes the positions (its output map is another size) states its window;
    and on each of its checklist examples, what a brute force finds each output depends on lies
    inside its field (perturb each input position by 10^6, positive weights and inputs)."""
    torch = pytest.importorskip("torch")
    from netspec.layers.base import Layer

    graph = netspec.compile_spec(f"input {shape}\nINPUT -> {chain}")
    shapes = {n.id: n.shape for n in graph.nodes}
    for node in graph.nodes:
        if node.kind == kind and node.inputs:
            before = shapes[node.inputs[0]]
            if len(before) == len(node.shape) and before[1:] != node.shape[1:]:
                assert type(node.layer).window is not Layer.window, f"`{kind}` has no window()"
    out = graph.node(graph.output)
    if len(out.shape) != len(graph.input.shape):
        return
    f = fields(graph)[graph.output]
    model = netspec.build(graph).double().eval()
    spatial = graph.input.shape[1:]
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.1, 1.0)
        base = torch.rand(1, *graph.input.shape, dtype=torch.float64) + 1
        positions = list(np.ndindex(*spatial))
        batch = base.repeat(len(positions) + 1, *([1] * len(graph.input.shape)))
        for i, pos in enumerate(positions):
            batch[(i + 1, slice(None), *pos)] += 1e6
        result = model(batch)
        # a change, not a rounding leak of the 10^6 through a blocked convolution algorithm
        changed = ((result[1:] - result[:1]).abs() > 1e-3).any(dim=1)  # [position, *out]
    for o in np.ndindex(*out.shape[1:]):
        hit = changed[(slice(None), *o)].nonzero().flatten().tolist()
        for axis in range(len(spatial)):
            lo = f.start[axis] + o[axis] * f.jump[axis]
            hi = lo + f.size[axis] - 1
            got = [positions[i][axis] for i in hit]
            if got:
                assert math.floor(lo) <= min(got) and max(got) <= math.ceil(hi), (chain, o, axis)
