"""The layer kinds of issue 9 beyond the registry's checklist (tests/test_registry.py): their
counting conventions against the reference MAC counter (tests/helpers/modern_refs.py), the rules they
refuse, and behaviour the checklist's shapes and counts cannot see."""

from __future__ import annotations

import helpers.modern_refs as R
import pytest
import torch
from helpers.parity import FP32_TOL, compile_text, randomized, rel_error, session, torch_out

from netspec import deploy as L
from netspec.backends.lower_torch import build
from netspec.deploy.runtime import example_input
from netspec.errors import NetspecError
from netspec.ir.graph import Graph


def macs_by_reference_counter(graph: Graph) -> int:
    module = build(graph).eval()
    with torch.no_grad(), R.count_macs(module) as counter:
        module(torch.from_numpy(example_input(graph.input.shape, None, 2)))
    return counter.macs


def refused(text: str) -> NetspecError:
    with pytest.raises(NetspecError) as info:
        compile_text(text)
    return info.value


# ---- CONVTRANSPOSE --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        "CONVTRANSPOSE(6, 3, stride=2, groups=3)",  # overlapping windows
        "CONVTRANSPOSE(4)",  # U-Net's 2x2, stride 2
        "CONVTRANSPOSE(6, (3, 1), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=2)",
    ],
)
def test_conv_transpose_macs_follow_the_reference_counter(chain: str) -> None:
    graph = compile_text(f"input [6, 5, 7]\nINPUT -> {chain}")
    node = graph.nodes[-1]
    assert node.macs == macs_by_reference_counter(graph)
    module = build(graph).get_submodule(node.id)
    assert isinstance(module, torch.nn.ConvTranspose2d)
    assert node.params == sum(p.numel() for p in module.parameters())


def test_conv_transpose_output_size_is_pytorchs() -> None:
    # out = (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    graph = compile_text(
        "input [2, 9, 4]\nINPUT -> CONVTRANSPOSE(3, (4, 3), stride=(3, 2), padding=(2, 1),"
        " output_padding=(2, 1), dilation=(1, 2))"
    )
    assert graph.output_shape == (3, (9 - 1) * 3 - 4 + 3 + 2 + 1, (4 - 1) * 2 - 2 + 4 + 1 + 1)


def test_conv_transpose_refuses_output_padding_past_stride_and_dilation() -> None:
    err = refused("input [2, 8, 8]\nINPUT -> CONVTRANSPOSE(3, 3, stride=2, output_padding=2)")
    assert "output_padding: expected less than the stride (2x2) or the dilation (1x1)" in str(err)
    assert "received 2x2" in str(err) and err.span is not None


def test_conv_transpose_refuses_groups_that_do_not_divide() -> None:
    err = refused("input [6, 8, 8]\nINPUT -> CONVTRANSPOSE(4, groups=3)")
    assert "expected a divisor of both the 6 input and the 4 output channels" in str(err)


# ---- UPSAMPLE -------------------------------------------------------------------------------------


def test_upsample_refuses_a_flat_vector() -> None:
    err = refused("input [3, 8, 8]\nINPUT -> GAP -> UPSAMPLE(2)")
    assert "UPSAMPLE expected a feature map [C, H, W] or [C, L]; received [3]" in str(err)
    assert err.hint and "before FC/FLATTEN/GAP" in err.hint


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("opset", [L.MIN_OPSET, 18, L.MAX_OPSET])
def test_upsample_matches_torch_in_fp16_and_mid_graph(mode: str, opset: int) -> None:
    graph = compile_text(f"input [3, 5, 6]\nINPUT -> UPSAMPLE((3, 2), {mode}) -> CONV(4) -> GAP")
    module, weights = randomized(graph)
    for fp16, tol in ((False, FP32_TOL), (True, 1e-2)):
        lowered = L.lower(graph, weights, L.LowerOptions(opset=opset, fp16=fp16))
        assert all(c.ok for c in L.verify(lowered, graph)), L.verify(lowered, graph)
        x = example_input(graph.input.shape, None, 3)
        assert rel_error(session(lowered.to_bytes()).run(x), torch_out(module, x)) <= tol


# ---- CHANNELSHUFFLE and SLICE ---------------------------------------------------------------------


def test_channel_shuffle_is_shufflenets_permutation() -> None:
    graph = compile_text("input [6, 2, 3]\nINPUT -> CHANNELSHUFFLE(3)")
    x = torch.arange(2 * 6 * 2 * 3, dtype=torch.float32).reshape(2, 6, 2, 3)
    with torch.no_grad():
        got = build(graph).eval()(x)
    assert torch.equal(got, torch.nn.ChannelShuffle(3)(x))  # torch's own: [0, 2, 4, 1, 3, 5]
    assert torch.equal(got[:, 1], x[:, 2])
    lowered = L.lower(graph, {})
    assert (session(lowered.to_bytes()).run(x.numpy()) == got.numpy()).all()


def test_shuffle_and_groupnorm_refuse_groups_that_do_not_divide() -> None:
    err = refused("input [6, 8, 8]\nINPUT -> CHANNELSHUFFLE(4)")
    assert "expected a divisor of the 6 input channels; received groups=4" in str(err)
    assert err.hint == "the divisors of 6: 1, 2, 3, 6"
    err = refused("input [6, 8, 8]\nINPUT -> GROUPNORM(4)")
    assert "GROUPNORM groups: expected a divisor of the 6 input channels" in str(err)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "SLICE(6, 8)",
            "SLICE start: expected 0 to 5 (the input has 6 channels); received start=6",
        ),
        (
            "SLICE(2, 7)",
            "SLICE stop: expected at most 6 (the input has 6 channels); received stop=7",
        ),
        ("SLICE(3, 2)", "SLICE is empty: expected stop > start; received start=3, stop=2"),
    ],
)
def test_slice_refuses_ranges_outside_the_channels(call: str, message: str) -> None:
    err = refused(f"input [6, 8, 8]\nINPUT -> {call}")
    assert message in str(err) and err.span is not None and err.hint


def test_a_channel_split_takes_each_slice_once() -> None:
    graph = compile_text("input [6, 4, 4]\nINPUT -> concat(SLICE(3, 6), SLICE(0, 3))")
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        got = build(graph).eval()(x)
    assert torch.equal(got, torch.cat([x[:, 3:], x[:, :3]], 1))
    memory = {n.kind: n.memory for n in graph.nodes}
    assert memory["slice"] == 0 and memory["concat"] == 6 * 16  # slices are views


# ---- LAYERNORM, GROUPNORM, LAYERSCALE, DROPPATH ----------------------------------------------------


def test_layernorm_on_a_map_is_convnexts_layernorm2d() -> None:
    graph = compile_text("input [5, 3, 4]\nINPUT -> LAYERNORM")
    module, weights = randomized(graph)
    ref = R.LayerNorm2d(5, eps=1e-6)
    ref.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in weights.items()})
    x = torch.randn(2, 5, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x))
    assert graph.totals.params == 10 and graph.nodes[-1].args["eps"] == 1e-6


def test_layer_scale_holds_its_initial_value_per_channel() -> None:
    graph = compile_text("input [4, 3, 3]\nINPUT -> LAYERSCALE(1e-6)")
    state = build(graph).state_dict()
    assert list(state) == ["scale1.weight"] and state["scale1.weight"].shape == (4, 1, 1)
    assert torch.all(state["scale1.weight"] == torch.tensor(1e-6))


def test_prelu_learns_one_slope_per_channel() -> None:
    graph = compile_text("input [7, 3, 3]\nINPUT -> PRELU(0.1)")
    assert graph.totals.params == 7
    slope = build(graph).state_dict()["prelu1.weight"]
    assert slope.shape == (7,) and torch.all(slope == torch.tensor(0.1))


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    graph = compile_text("input [3, 4, 4]\nINPUT -> DROPPATH(0.5)")
    assert graph.totals.params == 0 and graph.nodes[-1].memory == 0
    module = build(graph)
    x = torch.ones(400, 3, 4, 4)
    torch.manual_seed(0)
    y = module.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.min(1).values.tolist()) == {0.0, 2.0}  # dropped, or kept and rescaled
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)
    assert 120 < int((per_sample[:, 0] == 0).sum()) < 280
    assert torch.equal(module.eval()(x), x)
    assert [n.op_type for n in L.lower(graph, {}).model.graph.node] == ["Identity"]


def test_a_rate_past_its_range_gets_no_integer_division_hint() -> None:
    # DROPPATH's p takes numbers: "use // for integer division" would mislead.
    err = refused("input [4, 8, 8]\nINPUT -> DROPPATH(1.0)")
    assert "argument `p` of DROPPATH: expected a number in [0, 1); received 1.0" in str(err)
    assert err.hint is None


# ---- a design space over widths -------------------------------------------------------------------

WIDTH_FAMILY = """
input [3, 16, 16]
classes 4
budget params <= 100K
m in {1, 2, 3}
g in {2, 4, 5}
INPUT -> CONV(8 * m, 3, stride=2) -> GROUPNORM(g) -> HARDSWISH -> CONVTRANSPOSE(8 * m) -> PRELU
  -> residual(CONV(8 * m, 3, groups=8 * m) -> LAYERNORM -> CONV(16 * m, 1) -> GELU -> CONV(8 * m, 1)
              -> LAYERSCALE(0.1) -> DROPPATH(0.1))
  -> CHANNELSHUFFLE(g) -> concat(SLICE(0, 4 * m), SLICE(4 * m, 8 * m) -> RELU6)
  -> UPSAMPLE(2, bilinear) -> GAP -> FC(4) -> SOFTMAX
"""


def test_explore_a_width_family_of_the_new_kinds(tmp_path) -> None:
    from netspec import explore as ex
    from netspec.ir.build import load_spec

    path = tmp_path / "widths.ns"
    path.write_text(WIDTH_FAMILY)
    result = ex.explore(load_spec(path))
    members = {(m.bindings["m"], m.bindings["g"]): m for m in result.members}
    assert len(members) == 9
    for (m, g), member in members.items():
        if g == 5:  # divides none of 8, 16, 24
            assert not member.valid and "GROUPNORM groups: expected a divisor" in member.reason()
            continue
        assert member.fits, member.reason()
        graph = compile_text(
            WIDTH_FAMILY.replace("m in {1, 2, 3}", f"m = {m}").replace("g in {2, 4, 5}", f"g = {g}")
        )
        assert (
            member.params
            == graph.totals.params
            == sum(p.numel() for p in build(graph).parameters())
        )
        assert member.macs == graph.totals.macs


@pytest.mark.parametrize(
    ("call", "hint"),
    [
        ("CONVTRANSPOSE(8, 3, stride=2, padding=1)", "output_padding=1 gives 16"),
        ("CONVTRANSPOSE(8, 5, stride=2, padding=0)", "output_padding reaches 19 to 20 from 8"),
    ],
)
def test_a_failed_size_assertion_after_conv_transpose_says_why(call: str, hint: str) -> None:
    err = refused(f"input [4, 8, 8]\nINPUT -> {call} : [8, 16, 16]")
    assert "output_padding 0 + 1 =" in str(err.notes) and err.hint.startswith(hint)
