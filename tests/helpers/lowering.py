"""The torch build held to the IR: parameter and buffer counts node by node, every node's
output shape in a forward (and backward) pass."""

from __future__ import annotations

import torch
from torch import nn

from netspec.backends.lower_torch import NetspecModule
from netspec.ir.graph import Graph


def example_input(graph: Graph, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if graph.input.is_tokens:
        assert graph.input.vocab is not None
        return torch.randint(0, graph.input.vocab, (batch, *graph.input.shape), generator=gen)
    return torch.randn(batch, *graph.input.shape, generator=gen)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def n_buffers(module: nn.Module) -> int:
    return sum(
        b.numel() for name, b in module.named_buffers() if not name.endswith("num_batches_tracked")
    )


def check_counts(model: NetspecModule, graph: Graph) -> None:
    """Parameter and buffer counts equal the IR's, in total and node by node."""
    wrong = [
        f"{n.id} ({n.kind}): IR {n.params} params/{n.buffers} buffers, torch {n_params(m)}/{n_buffers(m)}"
        for n in graph.nodes
        if (n_params(m := model.get_submodule(n.id)), n_buffers(m)) != (n.params, n.buffers)
    ]
    assert not wrong, "\n".join(wrong)
    assert n_params(model) == graph.totals.params
    assert n_buffers(model) == graph.totals.buffers


def check_shapes(model: NetspecModule, graph: Graph, *, train: bool, batch: int = 2) -> None:
    """Every node's output shape is (batch, *node.shape); in training, backward runs too. Side
    heads run in training only: in eval, only the main path's nodes run."""
    seen: dict[str, tuple[int, ...]] = {}

    def record(node_id: str):
        return lambda module, args, out: seen.__setitem__(node_id, tuple(out.shape))

    handles = [model.get_submodule(n.id).register_forward_hook(record(n.id)) for n in graph.nodes]
    x = example_input(graph, batch)
    try:
        if train:
            model.train()
            # as training does; forward adds only the final softmax (and with side heads,
            # all_logits is what training reads)
            ys = model.all_logits(x) if graph.heads else (model.logits(x),)
            sum((y * torch.randn_like(y)).sum() for y in ys).backward()
            with torch.no_grad():
                model(x)
        else:
            model.eval()
            with torch.no_grad():
                model(x)
    finally:
        for h in handles:
            h.remove()
    expected = {n.id: (batch, *n.shape) for n in (graph if train else graph.main_path()).nodes}
    wrong = {k: (expected[k], seen.get(k)) for k in expected if seen.get(k) != expected[k]}
    assert not wrong, "node: (IR, torch) shapes\n" + "\n".join(
        f"{k}: {v}" for k, v in wrong.items()
    )
