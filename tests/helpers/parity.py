"""Parity of the ONNX export with the torch build.

ONNX Runtime's output against the torch module's (`eval()`, no_grad) on the same random input,
max abs error <= 1e-4 of the output's scale (max abs of the torch output) in float32, with and
without `fold_bn`; float16 within 1e-2. Batch norms get random running statistics and affine
parameters first, so folding them is really tested.
"""

from __future__ import annotations

import numpy as np
import torch

from netspec import deploy as L
from netspec.backends.lower_torch import build
from netspec.deploy.lower_base import foldable
from netspec.deploy.lowering import for_outputs
from netspec.deploy.runtime import example_input, open_session
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph

FP32_TOL = 1e-4
FP16_TOL = 1e-2


def session(data) -> object:
    return open_session(data, "cpu", threads=1)


def compile_text(text: str, name: str = "t") -> Graph:
    return load_spec_text(text, f"{name}.ns").instantiate()


def randomized(graph: Graph, seed: int = 0) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """The torch module with random batch norm statistics and biases, and its weights."""
    module = build(graph, seed=seed)
    rng = np.random.default_rng(seed)
    state = module.state_dict()
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "running_var" or (leaf == "weight" and value.ndim == 1):
            fresh = rng.uniform(0.5, 1.5, value.shape)
        elif leaf in ("running_mean", "bias"):
            fresh = rng.normal(0.0, 0.2, value.shape)
        else:
            continue
        state[key] = torch.from_numpy(fresh.astype(np.float32))
    module.load_state_dict(state)
    return module.eval(), {k: v.numpy() for k, v in state.items()}


def torch_out(module: torch.nn.Module, x: np.ndarray, logits: bool = False) -> np.ndarray:
    with torch.no_grad():
        t = torch.from_numpy(x)
        return (module.logits(t) if logits else module(t)).numpy()


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(
        np.abs(got.astype(np.float64) - want).max() / max(float(np.abs(want).max()), 1e-12)
    )


def folded_count(graph: Graph) -> int:
    """Initializer elements with batch norms folded: each folded BN's 4 vectors go, and a
    bias-free conv gains a bias."""
    count = graph.totals.params + graph.totals.buffers
    for conv_id, bn in foldable(graph).items():
        count -= 4 * bn.shape[0]
        if not graph.node(conv_id).args["bias"]:
            count += bn.shape[0]
    return count


def check_parity(graph: Graph, module, weights, batches=(1, 2, 7), fp16: bool = False) -> None:
    """Plain export vs forward; fold_bn + logits vs logits; every check passing; exact counts.
    With side heads: the main output (the export's default)."""
    graph, weights = for_outputs(graph, weights, L.LowerOptions())
    tol = FP16_TOL if fp16 else FP32_TOL
    plain = L.lower(graph, weights, L.LowerOptions(fp16=fp16))
    folded = L.lower(graph, weights, L.LowerOptions(fold_bn=True, logits=True, fp16=fp16))
    assert plain.parameters == graph.totals.params + graph.totals.buffers
    assert folded.parameters == folded_count(graph)
    for lowered, logits in ((plain, False), (folded, True)):
        data = lowered.to_bytes()
        assert all(c.ok for c in L.verify(lowered, graph, data, run=False)), L.verify(
            lowered, graph, data, run=False
        )
        session = open_session(data, "cpu", threads=1)
        for batch in batches:
            x = example_input(graph.input.shape, graph.input.vocab, batch, seed=batch)
            err = rel_error(session.run(x), torch_out(module, x, logits))
            assert err <= tol, f"batch {batch}, logits={logits}: relative error {err:.2e} > {tol:g}"
