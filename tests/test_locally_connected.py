"""LOCALLYCONNECTED: a convolution without weight sharing (deck 004's step from fully connected
to convolutional). Its counts are Keras' LocallyConnected2D's; the torch lowering is checked
against a loop over positions and against a convolution when every position holds the same
filters; the ONNX lowering against torch (within 1e-5), with a graph whose size grows with the
kernel's taps, not with the positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.parity import compile_text, randomized, session, torch_out

from netspec import deploy as L
from netspec.deploy.runtime import example_input
from netspec.errors import NetspecError, SpecErrors

TOL = 1e-5


def test_params_and_macs_are_keras_counts() -> None:
    """Keras: weights out_h * out_w * k * k * c_in * filters, bias out_h * out_w * filters."""
    graph = compile_text("input [3, 8, 10]\nINPUT -> LOCALLYCONNECTED(4, 3, stride=(1, 2))")
    node = graph.nodes[-1]
    out_h, out_w = 6, 4
    assert node.shape == (4, out_h, out_w)
    assert node.params == out_h * out_w * 3 * 3 * 3 * 4 + out_h * out_w * 4
    assert node.macs == out_h * out_w * 3 * 3 * 3 * 4
    assert node.layer.state((graph.input.shape,), node.shape) == {
        "weight": (out_h, out_w, 4, 3, 3, 3),
        "bias": (4, out_h, out_w),
    }
    signal = compile_text("input [2, 11]\nINPUT -> LOCALLYCONNECTED1D(5, 3, stride=2)").nodes[-1]
    assert signal.shape == (5, 5) and signal.params == 5 * 3 * 2 * 5 + 5 * 5


def test_each_position_has_its_own_filters() -> None:
    graph = compile_text("input [2, 6, 5]\nINPUT -> LOCALLYCONNECTED(3, (3, 2), stride=(2, 1))")
    module, weights = randomized(graph)
    x = torch.randn(2, 2, 6, 5)
    w, b = weights["local1.weight"], weights["local1.bias"]  # [oh, ow, F, C, kh, kw], [F, oh, ow]
    want = np.zeros((2, 3, 2, 4), np.float64)
    for i in range(2):
        for j in range(4):
            patch = x[:, :, 2 * i : 2 * i + 3, j : j + 2].double().numpy()
            want[:, :, i, j] = np.einsum("bckl,fckl->bf", patch, w[i, j]) + b[:, i, j]
    got = module(x).detach().double().numpy()
    assert np.abs(got - want).max() < 1e-5


def test_shared_filters_make_it_a_convolution() -> None:
    graph = compile_text("input [3, 7, 7]\nINPUT -> LOCALLYCONNECTED(4, 3, stride=2)")
    module, _ = randomized(graph)
    conv_w, conv_b = torch.randn(4, 3, 3, 3), torch.randn(4)
    with torch.no_grad():
        module.local1.weight.copy_(conv_w.expand(3, 3, 4, 3, 3, 3))
        module.local1.bias.copy_(conv_b.reshape(4, 1, 1).expand(4, 3, 3))
        x = torch.randn(2, 3, 7, 7)
        assert torch.allclose(module(x), F.conv2d(x, conv_w, conv_b, stride=2), atol=1e-5)


@pytest.mark.parametrize(
    ("decl", "chain"),
    [
        ("[3, 9, 8]", "LOCALLYCONNECTED(4, 3)"),
        ("[3, 9, 8]", "LOCALLYCONNECTED(5, (2, 3), stride=(3, 2), bias=off) -> RELU"),
        ("[2, 13]", "LOCALLYCONNECTED1D(4, 4, stride=3)"),
    ],
)
def test_onnx_runtime_matches_torch(decl: str, chain: str) -> None:
    graph = compile_text(f"input {decl}\nINPUT -> {chain}")
    module, weights = randomized(graph)
    for opset in (L.MIN_OPSET, L.DEFAULT_OPSET, L.MAX_OPSET):
        lowered = L.lower(graph, weights, L.LowerOptions(opset=opset))
        data = lowered.to_bytes()
        assert all(c.ok for c in L.verify(lowered, graph, data, run=False))
        x = example_input(graph.input.shape, None, 3, seed=opset)
        assert float(np.abs(session(data).run(x) - torch_out(module, x)).max()) <= TOL


def test_the_onnx_graph_grows_with_the_taps_not_the_positions() -> None:
    small = compile_text("input [2, 6, 6]\nINPUT -> LOCALLYCONNECTED(2, 3)")
    large = compile_text("input [2, 40, 40]\nINPUT -> LOCALLYCONNECTED(2, 3)")
    counts = []
    for graph in (small, large):
        _, weights = randomized(graph)
        counts.append(len(L.lower(graph, weights).model.graph.node))
    assert counts[0] == counts[1] <= 4 * 9 + 20


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("LOCALLYCONNECTED(4, 9)", "the 9x9 kernel does not fit the 8x8 input"),
        ("LOCALLYCONNECTED", "LOCALLYCONNECTED needs argument `filters`"),
        ("LOCALLYCONNECTED1D(4)", "LOCALLYCONNECTED1D needs a 2-D input"),
        ("LOCALLYCONNECTED(4, (3, 3, 3))", "kernel has 3 values"),
        ("LOCALLYCONNECTED(4, padding=1)", "has no argument `padding`"),
    ],
)
def test_errors_are_located(chain: str, message: str) -> None:
    with pytest.raises((NetspecError, SpecErrors)) as info:
        compile_text(f"input [3, 8, 8]\nINPUT -> {chain}")
    err = info.value.errors[0] if isinstance(info.value, SpecErrors) else info.value
    assert message in err.message, err.message
    assert err.span is not None and err.span.line == 2
