"""The zoo's torchvision twins, for tests/test_weights_parity.py and tools/bench_weights.py.

torchvision is a test-only dependency (installed with --no-deps; its model code runs once its
compiled-op registrations are stubbed out). `torchvision_models` returns None without it.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

import netspec
from netspec.ir.graph import Graph
from netspec.weights.mapper import map_weights
from netspec.weights.sources import from_state_dict

ROOT = Path(__file__).resolve().parents[2]


def torchvision_models() -> types.ModuleType | None:
    """`torchvision.models`, its compiled-op registration module replaced by an empty one (no
    CPU build of torchvision exists on the index); None when torchvision is not installed."""
    sys.modules.setdefault(
        "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
    )
    try:
        import torchvision.models
    except ImportError:
        return None
    return torchvision.models


def twin(models: types.ModuleType, name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """The zoo spec `name`'s torchvision twin, randomly initialised (seed 0), its batch norms'
    running statistics set from one training-mode batch, in eval mode.

    Without that calibration a twin's eval-mode activations can vanish: GoogLeNet's
    `init_weights` draws every weight from N(0, 0.01) and running statistics (0, 1) rescale
    nothing, so its features reach the classifier at about 1e-11 and its logits are `fc.bias`
    alone (the 1.8e-12 "parity" once measured compared the biases, nothing else). Calibrated,
    every layer's output is of order one and the logits depend on every weight mapped.
    """
    from netspec.weights.pretrained import TWINS

    torch.manual_seed(0)
    if name.startswith("googlenet"):
        model = models.googlenet(aux_logits=name == "googlenet_aux", init_weights=True)
    elif name == "inception_v3":
        model = models.inception_v3(aux_logits=True, init_weights=True)
    else:
        model = getattr(models, TWINS[name])()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one batch's statistics exactly
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *shape, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def spec_graph(name: str) -> Graph:
    return netspec.compile_spec(ROOT / "specs" / f"{name}.ns")


def mapped(graph: Graph, ref: torch.nn.Module) -> torch.nn.Module:
    """netspec's module of `graph` holding `ref`'s weights, mapped by structure (all of them:
    nothing missing, unused or re-initialised), in eval mode."""
    mapping = map_weights(graph, from_state_dict(ref.state_dict()))
    assert not mapping.missing and not mapping.unused and not mapping.reinitialised
    model = netspec.build(graph, seed=1).eval()
    mapping.apply(model)
    return model


def logits(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The twin's main logits (GoogLeNet and Inception return a tuple with their heads')."""
    with torch.no_grad():
        out = ref(x)
    return out[0] if isinstance(out, tuple) else out


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference relative to the largest logit."""
    return float(np.abs(a - b).max() / np.abs(a).max())


def sample(graph: Graph) -> torch.Tensor:
    return torch.randn(2, *graph.input.shape, generator=torch.Generator().manual_seed(1))


def onnx_logits(name: str, model: torch.nn.Module, x: torch.Tensor, folder: Path) -> np.ndarray:
    """The logits of `netspec export zoo spec --weights (model's) --logits` in ONNX Runtime."""
    from netspec.cli import main
    from netspec.deploy.runtime import open_session
    from netspec.train.checkpoint import cpu_state, save_weights

    weights, out = folder / f"{name}.safetensors", folder / f"{name}.onnx"
    save_weights(weights, cpu_state(model))
    argv = ["export", str(ROOT / "specs" / f"{name}.ns"), "-o", str(out), "--weights",
            str(weights), "--logits"]  # fmt: skip
    if main(argv) != 0:
        raise RuntimeError(f"netspec {' '.join(argv)} failed")
    session = open_session(out, "cpu", threads=1)
    return session.run(x.numpy())


def float32_floor(ref: torch.nn.Module, x: torch.Tensor) -> float:
    """How far the twin's own float32 logits lie from the same network's in float64 (relative
    to the largest logit): the rounding floor any float32 implementation shares. Deep twins with
    calibrated batch norms reach about 1e-4 (ResNet-101: 9e-5), so two float32 runtimes can
    differ by twice that without either being wrong."""
    import copy

    exact = logits(copy.deepcopy(ref).double(), x.double()).numpy()
    return relative(exact, logits(ref, x).numpy())
