"""UPSAMPLE by sizes, not only scales: `size=`, `like=` a named node, non-integer scales, and the
interpolation modes, each held equal between torch and ONNX Runtime (within 1e-5), with the
IR's shape rule held to torch's (floor(input * scale), in float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.parity import compile_text, randomized, session, torch_out

from netspec import deploy as L
from netspec.deploy.runtime import example_input
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text

TOL = 1e-5

MODES = ["mode=nearest", "mode=bilinear", "mode=bilinear, align_corners=on", "mode=bicubic"]
RESIZES = ["scale=2", "scale=1.5", "scale=(2.5, 1.25)", "size=(13, 10)", "size=5", "like=input"]


def _parity(text: str) -> None:
    """At the oldest and the default opset (tests/test_registry.py runs the newest)."""
    graph = compile_text(text)
    module, weights = randomized(graph)
    for opset in (L.MIN_OPSET, L.DEFAULT_OPSET):
        lowered = L.lower(graph, weights, L.LowerOptions(opset=opset))
        data = lowered.to_bytes()
        assert all(c.ok for c in L.verify(lowered, graph, data, run=False)), text
        x = example_input(graph.input.shape, None, 2, seed=opset)
        got, want = session(data).run(x), torch_out(module, x)
        assert got.shape == want.shape == (2, *graph.nodes[-1].shape), text
        assert float(np.abs(got - want).max()) <= TOL, (text, opset)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("resize", RESIZES)
def test_torch_and_onnx_runtime_agree_on_every_mode_and_resize(mode: str, resize: str) -> None:
    _parity(f"input [2, 7, 9]\nINPUT -> MAXPOOL -> UPSAMPLE({resize}, {mode})")


@pytest.mark.parametrize(
    "mode", ["mode=nearest", "mode=bilinear", "mode=bilinear, align_corners=on"]
)
def test_signals_resize_alike(mode: str) -> None:
    _parity(f"input [2, 11]\nINPUT -> UPSAMPLE(1.7, {mode}) -> UPSAMPLE(size=6, {mode})")


@pytest.mark.parametrize("scale", [1.1, 1.4, 0.7, 2.3, 1.5, 3.0, 7.9])
def test_the_shape_rule_is_torchs_floor(scale: float) -> None:
    """floor(n * scale) in float64, as torch computes it: 5 x 1.4 is 7.000000000000001 -> 7,
    where float32 would give 6; ONNX Runtime gets the same size from the exported scale
    (out / in, as a float32 it computes that size from)."""
    for n in range(3, 40):
        graph = compile_text(f"input [1, {n}, 4]\nINPUT -> UPSAMPLE(({scale}, 1))")
        x = torch.zeros(1, 1, n, 4)
        want = F.interpolate(x, scale_factor=(scale, 1.0)).shape[2]
        assert graph.nodes[-1].shape == (1, want, 4) == (1, math.floor(n * scale), 4), n
    _parity(f"input [1, 33, 5]\nINPUT -> UPSAMPLE(({scale}, 1), bilinear)")


@pytest.mark.parametrize(
    "text",
    [
        # 10 -> 14: torch reads column floor(7 * 0.71428573) = 5, Resize floor(7 / 1.4) = 4
        "input [2, 8, 10]\nINPUT -> UPSAMPLE(size=(33, 14))",
        "input [2, 6]\nINPUT -> UPSAMPLE(size=10)",
    ],
)
def test_nearest_where_resize_rounds_otherwise_gathers_torchs_pixels(text: str) -> None:
    graph = compile_text(text)
    _, weights = randomized(graph)
    assert "Gather" in {n.op_type for n in L.lower(graph, weights).model.graph.node}
    _parity(text)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_a_dim_that_keeps_its_size_is_copied(mode: str) -> None:
    """2.695 x 1.02 on 3x20 gives 8x20: the width is read at 20 / 20, a copy, in both."""
    _parity(f"input [1, 3, 20]\nINPUT -> UPSAMPLE((2.695, 1.02), {mode})")


def test_fcn_upsamples_65_to_513_exactly() -> None:
    """FCN's head: a 65x65 map resized to the 513x513 input, not 520 from a rounded scale."""
    graph = compile_text(
        "input [3, 513, 513]\nINPUT -> CONV(4, 3, stride=8, padding=1) -> "
        "UPSAMPLE(like=input, mode=bilinear)"
    )
    assert [n.shape for n in graph.nodes[1:]] == [(4, 65, 65), (4, 513, 513)]
    assert graph.nodes[-1].args["size"] == [513, 513] and graph.nodes[-1].args["like"] is None


def test_like_takes_a_named_layer_a_dotted_name_and_a_named_group() -> None:
    graph = compile_text(
        "input [3, 12, 12]\n"
        "INPUT -> CONV(4, stride=2) as stem -> [CONV(4, stride=2) -> CONV(4)] as down -> "
        'UPSAMPLE(like=stem) -> UPSAMPLE(like="down.conv1", mode=bilinear) -> UPSAMPLE(like=input)'
    )
    assert [n.shape[1:] for n in graph.nodes if n.kind == "upsample"] == [(6, 6), (3, 3), (12, 12)]


def test_like_works_in_a_light_build_as_in_a_full_one() -> None:
    """explore builds members without nodes: the named outputs are kept all the same."""
    spec = load_spec_text(
        "input [3, 16, 16]\nw in {4, 8}\n"
        "INPUT -> CONV(w, stride=2) as stem -> POOL -> CONV(w) -> UPSAMPLE(like=stem) -> "
        "UPSAMPLE(like=input, mode=bilinear)"
    )
    for w in (4, 8):
        full = spec.instantiate({"w": w})
        light = spec.instantiate({"w": w}, light=True)
        assert light.totals == full.totals
        assert full.nodes[-1].shape == (w, 16, 16)


@pytest.mark.parametrize(
    ("call", "message", "underlined", "hint"),
    [
        ("UPSAMPLE(like=stme)", "`stme` names no layer or group built before", "stme", "`stem`"),
        ("UPSAMPLE(like=later) -> CONV as later", "`later` names no layer", "later", "quotes"),
        (
            "UPSAMPLE(like=stem, scale=2)",
            "takes one of scale, size and like; received like=stem and scale=2",
            "stem",
            "drop scale=",
        ),
        ("UPSAMPLE(size=4, scale=1.5)", "takes a scale or a size, not both", None, "drop one"),
        ("UPSAMPLE(size=(0, 3))", "argument `size` of UPSAMPLE", "(0, 3)", None),
        ("UPSAMPLE(-2)", "argument `scale` of UPSAMPLE", "-2", None),
        ("UPSAMPLE(0.1)", "expected at least 1; received 0x0", None, "larger scale"),
        ("UPSAMPLE(2, align_corners=on)", "needs mode=bilinear or bicubic", None, "drop"),
        ("GAP -> UPSAMPLE(2)", "expected a feature map", None, "before FC"),
        ("UPSAMPLE(sise=3)", "has no argument `sise`", "sise=3", "`size`"),
        ("UPSAMPLE(like=3)", "argument `like` of UPSAMPLE: expected a node's name", "3", None),
        ("FC(4) as f -> UPSAMPLE(like=f)", "like=f: expected a feature map", "f", None),
    ],
)
def test_bad_combinations_are_located_errors(
    call: str, message: str, underlined: str | None, hint: str | None
) -> None:
    line = f"INPUT -> CONV(4, stride=2) as stem -> {call}"
    with pytest.raises((NetspecError, SpecErrors)) as info:
        compile_text(f"input [3, 8, 8]\n{line}")
    err = info.value.errors[0] if isinstance(info.value, SpecErrors) else info.value
    assert message in err.message, err.message
    assert err.span is not None and err.span.line == 2
    if underlined is not None:
        assert line[err.span.col - 1 :].startswith(underlined), (err.span, line)
    if hint is not None:
        assert err.hint is not None and hint in err.hint, err.hint


def test_bicubic_needs_a_map() -> None:
    with pytest.raises(NetspecError, match="mode=bicubic needs a"):
        compile_text("input [2, 11]\nINPUT -> UPSAMPLE(2, bicubic)")
