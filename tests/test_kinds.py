"""The layer kinds of issue 9 beyond the registry's checklist (tests/test_registry.py): their
counting conventions against the reference MAC counter (tests/modern_refs.py), the rules they
refuse, and behaviour the checklist's shapes and counts cannot see."""

from __future__ import annotations

import modern_refs as R
import pytest
import torch
from test_onnx import FP32_TOL, compile_text, randomized, rel_error, session, torch_out

from netspec.backends import lower_onnx as L
from netspec.backends.lower_torch import build
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.runtime import example_input


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
