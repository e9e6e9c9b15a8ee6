"""Training memory, estimated from the IR alone (no torch): what one training step holds.

    weights      params x dtype bytes (+ batch norm's running statistics, the buffers)
    gradients    one per trainable parameter
    optimizer    state per parameter: SGD with momentum 1 (the momentum buffer), SGD without 0,
                 Adam and AdamW 2 (exp_avg, exp_avg_sq); the spec's `train { optimizer = ... }`
                 (netspec's default: adam)
    activations  the tensors autograd keeps for the backward pass, for a batch

Activations kept for backward follow what each kind's backward needs, per example:

- ReLU, tanh, sigmoid and softmax keep their output; additions, concatenations, upsampling,
  flatten, identity and dropout keep nothing of their input (dropout keeps its mask); every
  other kind keeps its input (average pooling down to one value per channel is a mean, which
  keeps nothing);
- ReLU (in place), flatten (a view) and identity share their input's storage, so a tensor
  kept by two layers is counted once; every other layer writes a fresh tensor (dropout too:
  training makes a new tensor and keeps its mask, one element per element at the dtype as
  PyTorch on the CPU does; CUDA's fused dropout keeps 1 byte, so this is the upper figure);
- max pooling keeps int64 indices, one per output element; batch norm keeps a mean and an
  inverse std per channel (fp32, per batch, not per example); layer norm one pair per
  position and group norm one per group (fp32, per example);
- channel shuffle, slices (views, sharing their input's storage) and stochastic depth keep
  nothing of their input (stochastic depth keeps its per-example mask; with p = 0 it is its
  input);
- training runs the scores before the spec's final SOFTMAX into the loss (cross-entropy), which
  keeps its log-probabilities (classes per example) and the int64 targets; token inputs are
  int64 ids.

tests/test_summary.py holds this against the bytes torch saves in one training step: equal to
the byte on the zoo specs it runs. Not modeled: a ReLU that cannot run in place (its input has
another reader) keeps a second tensor; asymmetric `same` padding copies its input before the
conv; framework workspace and the allocator's rounding are not activations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from netspec.ir.graph import DTYPE_BYTES, Graph

# What each kind's backward needs. Every kind not named here keeps its input (conv, transposed
# conv, FC, batch norm, pooling, LRN, embedding, and the activations whose gradient reads their
# input: leaky ReLU, ReLU6, SiLU, GELU, ELU, PReLU, hard swish and hard sigmoid), so a kind
# added to the registry is counted, never silently left out.
KEEPS_OUTPUT = frozenset({"relu", "tanh", "sigmoid", "softmax"})
KEEPS_NOTHING = frozenset(
    {
        "input",
        "add",
        "concat",
        "flatten",
        "identity",
        "dropout",
        "upsample",
        "channel_shuffle",
        "slice",
        "drop_path",
    }
)
SHARES_INPUT = frozenset({"relu", "flatten", "identity", "slice"})  # in place, or a view
# The kinds with something more than their tensors (masks, indices, statistics).
_EXTRAS = frozenset(
    {"dropout", "pool", "global_pool", "batchnorm", "layernorm", "groupnorm", "drop_path"}
)
INDEX_BYTES = 8  # int64: max pooling's indices, token ids
STAT_BYTES = 4  # fp32: batch norm's saved mean and inverse std

# Optimizer state tensors per parameter.
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}


class TrainingMemory(NamedTuple):
    """Bytes one training step holds at `batch`, each part apart (see the module docstring)."""

    batch: int
    optimizer: str
    states: int  # optimizer state tensors per parameter
    weights: int
    buffers: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return (
            self.weights + self.buffers + self.gradients + self.optimizer_state + self.activations
        )


def activations_kept(graph: Graph) -> tuple[int, int]:
    """Bytes autograd keeps for backward: (per example, per batch regardless of its size)."""
    eb = DTYPE_BYTES[graph.dtype]
    root: dict[str, str] = {}  # node id -> the node whose storage its output lives in
    size: dict[str, int] = {}  # storage root -> bytes per example
    kept: set[str] = set()
    extra = INDEX_BYTES  # per example: the loss's target; indices, masks, log-probabilities
    fixed = STAT_BYTES  # per batch: the loss's total weight; batch norm statistics
    last = graph.nodes[-1] if graph.nodes else None
    prod = math.prod
    for node in graph.nodes:
        kind, node_id, shape = node.kind, node.id, node.shape
        if node is last and kind == "softmax" and node_id == graph.output:
            # Training feeds the scores before the final SOFTMAX to the loss (log-softmax).
            extra += prod(shape) * eb
            break
        elements = prod(shape)
        # Stochastic depth with p = 0 returns its input itself.
        passes = kind == "drop_path" and getattr(node.layer, "p", 1) == 0
        if (kind in SHARES_INPUT or passes) and node.inputs:
            at = root[node_id] = root[node.inputs[0]]
        else:
            at = root[node_id] = node_id
            tokens = kind == "input" and graph.input.is_tokens
            size[node_id] = elements * (INDEX_BYTES if tokens else eb)
        if kind in KEEPS_OUTPUT:
            kept.add(at)
        elif kind not in KEEPS_NOTHING and not _is_mean(node):
            inputs = node.inputs
            if len(inputs) == 1:
                kept.add(root[inputs[0]])
            else:
                kept.update(root[i] for i in inputs)
        if kind not in _EXTRAS:  # most layers: nothing more
            continue
        if kind == "dropout":
            extra += elements * eb  # the mask
        if kind in ("pool", "global_pool") and getattr(node.layer, "mode", None) == "max":
            extra += elements * INDEX_BYTES
        if kind == "batchnorm":
            fixed += 2 * shape[0] * STAT_BYTES
        if kind == "layernorm":  # a mean and an inverse std per position
            extra += 2 * (elements // shape[0]) * STAT_BYTES
        if kind == "groupnorm":  # a mean and an inverse std per group
            extra += 2 * getattr(node.layer, "groups", 1) * STAT_BYTES
        if kind == "drop_path" and not passes:
            extra += eb  # the mask: one value per example
    else:
        if last is not None:
            # No final SOFTMAX: the loss still takes log-softmax of the graph's output.
            extra += math.prod(last.shape) * eb
    return sum(size[r] for r in kept) + extra, fixed


def training_memory(graph: Graph, batch: int | None = None) -> TrainingMemory:
    """Estimate one training step's memory: `batch` defaults to the spec's train batch_size,
    the optimizer is the spec's (resolved as `netspec train` does, without its flags)."""
    from netspec.train.settings import resolve_settings

    settings = resolve_settings(graph.train or None)
    batch = batch or settings.batch_size
    states = OPTIMIZER_STATES.get(settings.optimizer, 2)
    if settings.optimizer == "sgd" and not settings.momentum:
        states = 0
    eb = DTYPE_BYTES[graph.dtype]
    t = graph.totals
    per_example, fixed = activations_kept(graph)
    return TrainingMemory(
        batch=batch,
        optimizer=settings.optimizer,
        states=states,
        weights=t.params * eb,
        buffers=t.buffers * eb,
        gradients=t.trainable_params * eb,
        optimizer_state=states * t.trainable_params * eb,
        activations=batch * per_example + fixed,
    )


def _is_mean(node) -> bool:
    """Average pooling to one value per channel: PyTorch computes it as a mean, whose backward
    needs only the input's shape."""
    if node.kind == "global_pool":
        return getattr(node.layer, "mode", None) == "avg"
    return node.kind == "adaptive_avg_pool" and all(d == 1 for d in node.shape[1:])
