"""The language features of issue 9: gates (`mul`), shape-aware blocks (`in.c`), the
conditional skip (`residual(..., when=...)`), projections on any size, POOL `padding=same`
and side heads (`head NAME at LAYER: chain`), each checked in the IR, against torch and in
ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import helpers.modern_refs as R
import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers.graphs import file_graph, text_graph
from helpers.lowering import check_counts, check_shapes
from hypothesis import given, settings
from hypothesis import strategies as st

from netspec import deploy as L
from netspec.backends.lower_torch import build
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec, load_spec_text
from netspec.ir.expand import projection_stride
from netspec.layers.structure import broadcast

ROOT = Path(__file__).resolve().parents[1]

SE = """
input [C, H, W]
classes 10
C = 8
H = 6
W = 5
block se(r=4) = mul(IDENTITY, ADAPTIVEAVGPOOL(1) -> CONV(in.c // r, 1) -> RELU
                              -> CONV(in.c, 1) -> SIGMOID)
INPUT -> CONV(16) -> se -> GAP -> FC(10) -> SOFTMAX
"""


def errors_of(text: str) -> str:
    with pytest.raises((SpecErrors, NetspecError)) as info:
        text_graph(text)
    return info.value.render()


# ---- gates -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 4), min_size=3, max_size=3), min_size=2, max_size=3))
def test_broadcast_is_numpys_on_one_rank(shapes: list[list[int]]) -> None:
    arrays = [np.zeros(s) for s in shapes]
    try:
        want: tuple[int, ...] | None = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        want = None
    assert broadcast(tuple(tuple(s) for s in shapes)) == want


def test_broadcast_refuses_another_rank() -> None:
    assert broadcast(((4, 1, 1), (4,))) is None  # numpy would align [4] with W


def test_squeeze_excitation_as_a_block() -> None:
    graph = text_graph(SE)
    gate = next(n for n in graph.nodes if n.kind == "mul")
    assert gate.shape == (16, 6, 5)
    assert [graph.node(i).shape for i in gate.inputs] == [(16, 6, 5), (16, 1, 1)]
    squeeze = graph.node("se1.branch2.conv1")
    assert squeeze.shape == (4, 1, 1) and squeeze.params == 16 * 4 + 4
    assert gate.macs == 0  # a rescale costs no MACs
    model = build(graph)
    check_counts(model, graph)
    check_shapes(model, graph, train=True)
    x = torch.randn(2, 8, 6, 5)
    model.eval()
    with torch.no_grad():
        conv = model.conv1(x)
        s = model.se1.branch2
        g = torch.sigmoid(s.conv2(torch.relu(s.conv1(conv.mean((2, 3), keepdim=True)))))
        want = torch.softmax(model.fc1((conv * g).mean((2, 3))), 1)
        assert torch.allclose(model(x), want, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_gate_onnx_parity(batch: int) -> None:
    graph = text_graph(SE)
    model = build(graph).eval()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    data = L.lower(graph, weights).to_bytes()
    x = np.random.default_rng(0).standard_normal((batch, 8, 6, 5)).astype(np.float32)
    (y,) = ort.InferenceSession(data).run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_gates_that_do_not_broadcast_show_both_shapes() -> None:
    msg = errors_of("input [3, 8, 8]\nINPUT -> CONV(8) -> mul(IDENTITY, CONV(4, 1))")
    assert "[8x8x8] * [4x8x8]" in msg and "channels: 8 vs 4" in msg
    msg = errors_of("input [3, 8, 8]\nINPUT -> CONV(8) -> mul(IDENTITY, GAP)")
    assert "[8x8x8] * [8]" in msg and "ADAPTIVEAVGPOOL(1)" in msg


# ---- shape-aware blocks ------------------------------------------------------------------


def test_in_names_the_block_input_shape() -> None:
    graph = text_graph(
        """input [3, 12, 10]
        block dw(k=3, s=1) = CONV(in.c, k, stride=s, groups=in.c)
        block probe() = CONV(in.h + in.w, 1) -> CONV(in.c, 1)
        INPUT -> CONV(24) -> dw(5, 2) -> probe"""
    )
    dw = graph.node("dw1.conv1")
    assert dw.shape == (24, 6, 5) and dw.layer.groups == 24  # type: ignore[attr-defined]
    assert dw.params == 24 * 25 + 24  # depthwise: one 5x5 filter per channel
    assert graph.node("probe1.conv1").shape[0] == 6 + 5
    assert graph.node("probe1.conv2").shape[0] == 24  # the block's input, not the conv's
    check_counts(build(graph), graph)


def test_in_defaults_a_block_parameter_and_reads_a_signal() -> None:
    graph = text_graph(
        """input [4, 20]
        block widen(c=2 * in.c) = CONV1D(c, 3) -> CONV1D(in.l, 1)
        INPUT -> widen -> widen(5)"""
    )
    assert graph.node("widen1.conv1").shape == (8, 20)
    assert graph.node("widen1.conv2").shape == (20, 20)
    assert graph.node("widen2.conv1").shape == (5, 20)


def test_in_outside_a_block_or_undefined_is_located() -> None:
    msg = errors_of("input [3, 8, 8]\nINPUT -> CONV(in.c)")
    assert "`in.c` is used outside a block" in msg and ":2:15" in msg
    msg = errors_of("input [3, 8, 8]\nblock b() = CONV(in.l)\nINPUT -> b")
    assert "`in.l` is not defined for this block's input [3x8x8]" in msg
    assert "in.c" in msg and "in.h" in msg


# ---- conditional skip --------------------------------------------------------------------

BNECK = """
input [16, 8, 8]
block bneck(c, s=1) = residual(CONV(c, 3, stride=s) -> BN, when=(s == 1 and in.c == c))
INPUT -> bneck(16) -> bneck(24) -> bneck(24, 2) -> bneck(24)
"""


def test_the_skip_exists_only_when_the_condition_holds() -> None:
    graph = text_graph(BNECK)
    adds = [n.id for n in graph.nodes if n.kind == "add"]
    assert adds == ["bneck1.add1", "bneck4.add1"]
    assert graph.node("bneck3.bn1").shape == (24, 4, 4)
    assert not any("shortcut" in n.id for n in graph.nodes)
    model = build(graph)
    check_shapes(model, graph, train=False)


def test_when_must_be_a_condition() -> None:
    msg = errors_of("input [4, 8, 8]\nINPUT -> residual(CONV(4), when=(2, 3))")
    assert "when=" in msg and "true or false" in msg
    msg = errors_of("input [4, 8, 8]\nINPUT -> residual(CONV(4), whn=(1 == 1))")
    assert "did you mean `when`" in msg


# ---- projections on any size -------------------------------------------------------------


@given(st.integers(1, 400), st.integers(1, 401))
def test_projection_stride_is_the_smallest_that_fits(size: int, target: int) -> None:
    fits = [s for s in range(1, size + 2) if (size - 1) // s + 1 == target]
    assert projection_stride(size, target) == (min(fits) if fits else None)


def test_resnet50_at_299_compiles_and_matches_torch() -> None:
    graph = load_spec(ROOT / "specs" / "resnet50.ns").instantiate({"size": 299})
    shortcut = graph.node("layer2.bottleneck1.shortcut.conv1")
    assert shortcut.shape == (512, 38, 38) and shortcut.layer.stride == 2  # type: ignore[attr-defined]
    assert graph.output_shape == (1000,)
    ref = R.resnet50().eval()
    assert graph.totals.params == R.n_params(ref) == 25_557_032
    with torch.no_grad(), R.count_macs(ref) as counter:
        ref(torch.zeros(1, 3, 299, 299))
    assert graph.totals.macs == counter.macs
    model = build(graph)
    check_counts(model, graph)
    check_shapes(model, graph, train=False, batch=1)


# ---- side heads --------------------------------------------------------------------------

HEADS = """
input [3, 16, 16]
classes 5
train { aux_weight = 0.3 }
block unit(c) = CONV(c) -> BN -> RELU
head aux1 at stage1: ADAPTIVEAVGPOOL(2) -> FC(7) -> RELU -> FC(classes)
head aux2 at stage2.unit1.conv1: GAP -> FC(classes)
INPUT -> [unit(8) -> POOL] as stage1 -> [unit(16) -> POOL] as stage2 -> GAP -> FC(5) -> SOFTMAX
"""


def test_heads_are_counted_apart_and_in_the_totals() -> None:
    graph = text_graph(HEADS)
    assert [(h.name, h.at, h.output) for h in graph.heads] == [
        ("aux1", "stage1.pool1", "aux1.fc2"),
        ("aux2", "stage2.unit1.conv1", "aux2.fc1"),
    ]
    head = sum(n.params for n in graph.nodes if graph.head_of(n.id))
    assert head == (32 * 7 + 7) + (7 * 5 + 5) + (16 * 5 + 5)
    assert graph.main_totals is not None
    assert graph.totals.params == graph.main_totals.params + head
    assert graph.main_totals.macs == sum(n.macs for n in graph.nodes if not graph.head_of(n.id))
    main = graph.main_path()
    assert main.heads == [] and all(not n.id.startswith("aux") for n in main.nodes)
    assert main.totals == graph.main_totals


def test_heads_in_torch_train_mode_and_not_in_eval() -> None:
    graph = text_graph(HEADS)
    model = build(graph)
    check_counts(model, graph)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    out = model(x)
    assert out._fields == ("output", "aux1", "aux2")
    assert [tuple(t.shape) for t in out] == [(2, 5)] * 3
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert isinstance(y, torch.Tensor) and y.shape == (2, 5)
        logits = model.all_logits(x)
        assert torch.allclose(torch.softmax(logits.logits, 1), y, atol=1e-6)
        assert torch.allclose(model.logits(x), logits.logits)
        # the head is the tapped layer's output through the head's own modules
        tapped = model.stage1.pool1(
            model.stage1.unit1.relu1(model.stage1.unit1.bn1(model.stage1.unit1.conv1(x)))
        )
        a = model.aux1
        want = a.fc2(a.relu1(a.fc1(torch.flatten(a.apool1(tapped), 1))))
        assert torch.allclose(logits.aux1, want, atol=1e-6)


@pytest.mark.parametrize("outputs", ["main", "all"])
def test_heads_in_onnx_only_when_asked(outputs: str) -> None:
    graph = text_graph(HEADS)
    model = build(graph).eval()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    lowered = L.lower(graph, weights, L.LowerOptions(all_outputs=outputs == "all"))
    session = ort.InferenceSession(lowered.to_bytes())
    names = [o.name for o in session.get_outputs()]
    assert names == (["output", "aux1", "aux2"] if outputs == "all" else ["output"])
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ys = session.run(None, {"input": x})
    with torch.no_grad():
        want = model.all_logits(torch.from_numpy(x))
        np.testing.assert_allclose(ys[0], model(torch.from_numpy(x)).numpy(), atol=1e-5)
        for name, y in zip(names[1:], ys[1:], strict=True):
            np.testing.assert_allclose(y, getattr(want, name).numpy(), atol=1e-5)
    heads = sum(n.params for n in graph.nodes if graph.head_of(n.id))
    assert lowered.parameters - graph.totals.buffers == graph.totals.params - (
        0 if outputs == "all" else heads
    )


def test_head_errors_are_located() -> None:
    msg = errors_of(HEADS.replace("at stage1:", "at stage3:"))
    assert "taps `stage3`" in msg and "did you mean" in msg
    msg = errors_of(HEADS.replace("head aux2", "head stage1"))
    assert "head `stage1` has the name of a layer or group" in msg


def test_a_family_with_heads_explores_like_its_members() -> None:
    text = HEADS.replace("unit(8)", "unit(w)").replace("classes 5", "classes 5\nw in {4, 8}")
    family = load_spec_text(text, "family.ns")
    for w in (4, 8):
        light = family.instantiate({"w": w}, light=True)
        full = family.instantiate({"w": w})
        assert light.totals == full.totals and light.main_totals == full.main_totals


def test_resnet50_file_graph_unchanged_at_224() -> None:
    graph = file_graph("resnet50.ns")
    assert graph.totals.params == 25_557_032 and graph.totals.macs == 4_089_184_256


def test_train_weights_the_head_losses(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss of a step is the main head's plus aux_weight times each side head's: with the
    per-head loss replaced by constants (1 for the main head, 10 for each side head), the
    recorded train loss is exactly 1 + 0.25 * 10 * 2."""
    import csv

    from click.testing import CliRunner

    from netspec.cli import cli
    from netspec.train import trainer

    calls: list[int] = []

    def constant(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(logits.shape[1])
        value = 1.0 if len(calls) % 3 == 1 else 10.0
        return logits.float().sum() * 0 + value

    monkeypatch.setattr(trainer, "loss_function", lambda task: constant)
    spec = tmp_path / "heads.ns"
    spec.write_text(HEADS.replace("aux_weight = 0.3", "aux_weight = 0.25, epochs = 1"))
    out = tmp_path / "run"
    args = ["train", str(spec), "--data", "synthetic:64", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert calls and len(calls) % 3 == 0  # main, aux1, aux2 per step
    (row,) = list(csv.DictReader((out / "metrics.csv").open()))
    assert float(row["train_loss"]) == pytest.approx(1 + 0.25 * 10 * 2)


# ---- POOL padding=same -------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 13), st.integers(1, 4), st.integers(1, 3), st.sampled_from(["max", "avg"]))
def test_pool_same_padding_is_tensorflows(n: int, k: int, s: int, mode: str) -> None:
    graph = text_graph(
        f"input [2, {n}, {n + 1}]\nINPUT -> {mode.upper()}POOL({k}, stride={s}, padding=same)"
    )
    pool = graph.nodes[-1]
    assert pool.shape == (2, -(-n // s), -(-(n + 1) // s))
    x = torch.randn(1, 2, n, n + 1)
    with torch.no_grad():
        y = build(graph).eval()(x)
    # TensorFlow's rule, by hand: total padding max((out - 1) * s + k - n, 0), the odd pixel after
    pads = []
    for size in (n + 1, n):  # F.pad order: last dim first
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    padded = torch.nn.functional.pad(x, pads, value=-float("inf") if mode == "max" else 0.0)
    pool_fn = torch.nn.functional.max_pool2d if mode == "max" else torch.nn.functional.avg_pool2d
    assert torch.equal(y, pool_fn(padded, k, s))


def test_pool_same_refuses_ceil() -> None:
    assert "ceil=on and padding=same" in errors_of(
        "input [2, 8, 8]\nINPUT -> POOL(3, stride=2, padding=same, ceil=on)"
    )


def test_a_graph_with_heads_round_trips_through_json() -> None:
    from netspec.ir.graph import Graph

    graph = text_graph(HEADS)
    again = Graph.model_validate_json(graph.model_dump_json())
    assert again == graph and again.main_path().totals == graph.main_totals


def test_export_cli_writes_the_heads_only_with_outputs_all(tmp_path) -> None:
    from click.testing import CliRunner

    from netspec.cli import cli

    spec = tmp_path / "heads.ns"
    spec.write_text(HEADS)
    for flag, names in (([], ["output"]), (["--outputs", "all"], ["output", "aux1", "aux2"])):
        out = tmp_path / f"m{len(names)}.onnx"
        result = CliRunner().invoke(cli, ["export", str(spec), "-o", str(out), *flag])
        assert result.exit_code == 0, result.output
        assert [o.name for o in ort.InferenceSession(str(out)).get_outputs()] == names


# ---- DWCONV ------------------------------------------------------------------------------


def test_dwconv_is_conv_with_in_c_channels_and_groups() -> None:
    short = text_graph("input [3, 16, 16]\nINPUT -> CONV(8) -> DWCONV(5, 2, bias=off)")
    long = text_graph(
        "input [3, 16, 16]\nblock dw() = CONV(in.c, 5, stride=2, groups=in.c, bias=off)\n"
        "INPUT -> CONV(8) -> dw"
    )
    a, b = short.nodes[-1], long.nodes[-1]
    assert a.kind == "dwconv" and a.id == "dwconv1"
    assert (a.shape, a.params, a.macs) == (b.shape, b.params, b.macs) == ((8, 8, 8), 200, 12_800)
    multiplier = text_graph("input [4, 8, 8]\nINPUT -> DWCONV(3, channels=8)").nodes[-1]
    assert multiplier.shape == (8, 8, 8) and multiplier.params == 8 * 9 + 8
    msg = errors_of("input [4, 8, 8]\nINPUT -> DWCONV(3, channels=6)")
    assert "groups=4 must divide both the 4 input and 6 output channels" in msg


def test_the_documented_bottleneck_compiles() -> None:
    page = (ROOT / "docs" / "language.md").read_text()
    start = page.index("    block se(sq) = mul(")
    snippet = "\n".join(line[4:] for line in page[start:].split("\n\n")[0].splitlines())
    graph = text_graph(
        f"input [16, 8, 8]\n{snippet}\nINPUT -> bneck(3, 64, 16) -> bneck(5, 64, 24, 2)"
    )
    assert [n.id for n in graph.nodes if n.kind == "add"] == ["bneck1.add1"]
    assert graph.output_shape == (24, 4, 4)
