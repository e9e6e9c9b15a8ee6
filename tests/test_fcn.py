"""specs/fcn_resnet50.ns against torchvision's fcn_resnet50: 513x513 in, 513x513 out (UPSAMPLE
like=input, not a rounded scale), the parameter counts of torchvision's model built with the
same options (aux_loss=None: the main path; aux_loss=True, the published checkpoint's: the
totals), and in a slow test the same outputs on random weights."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.torchvision_models import models

import netspec
from netspec.backends.lower_torch import build
from netspec.ir.graph import Graph
from netspec.zoo import PUBLISHED

SPEC = Path(__file__).resolve().parents[1] / "specs" / "fcn_resnet50.ns"
MAIN_PARAMS = 32_957_013  # torchvision's fcn_resnet50(aux_loss=None), counted by the slow test


@functools.cache
def graph(size: int = 513) -> Graph:
    return netspec.compile_spec(SPEC, {"size": size})


def test_513_in_gives_513_out() -> None:
    g = graph()
    assert g.input.shape == (3, 513, 513)
    assert g.node(g.output).shape == (21, 513, 513)
    up = g.node("upsample1")
    assert g.node(up.inputs[0]).shape == (21, 65, 65)  # output stride 8: 513 -> 65
    assert up.args["size"] == [513, 513]
    assert g.node("aux.upsample1").shape == (21, 513, 513)
    assert graph(520).node(graph(520).output).shape == (21, 520, 520)


def test_params_main_path_and_with_the_aux_head() -> None:
    g = graph()
    assert g.main_totals is not None
    assert g.main_totals.params == MAIN_PARAMS
    assert g.totals.params == PUBLISHED["fcn_resnet50"].params == 35_322_218


def _torchvision(aux: bool, device: str = "cpu") -> torch.nn.Module:
    with torch.device(device):
        return models().segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, aux_loss=aux or None
        )


@pytest.mark.slow
def test_params_equal_torchvisions() -> None:
    for aux, want in ((False, MAIN_PARAMS), (True, graph().totals.params)):
        ref = _torchvision(aux, "meta")
        assert sum(p.numel() for p in ref.parameters()) == want


@pytest.mark.slow
def test_outputs_equal_torchvisions_on_random_weights() -> None:
    """torchvision's weights (random, BN statistics randomized) loaded tensor by tensor in order
    (the same shapes); eval mode on one 513x513 image: the same scores, main and aux."""
    torch.manual_seed(0)
    ref = _torchvision(aux=True).eval()
    state = ref.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")) or (
            value.ndim == 1 and key.endswith((".weight", ".bias"))
        ):
            value.copy_(torch.rand_like(value) + 0.5 if "var" in key else torch.randn_like(value))
    ours = build(graph()).eval()
    mine = [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
    theirs = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(mine) == len(theirs)
    ours.load_state_dict({m: state[t] for m, t in zip(mine, theirs, strict=True)}, strict=False)
    x = torch.randn(1, 3, 513, 513)
    with torch.no_grad():
        want = ref(x)
        main, aux = ours.all_logits(x)
    for got, expected in ((main, want["out"]), (aux, want["aux"])):
        assert got.shape == expected.shape == (1, 21, 513, 513)
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= 1e-4 * scale, "outputs differ"
    assert np.isfinite(main.numpy()).all()
