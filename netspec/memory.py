"""Training memory, estimated from the IR alone (no torch): what one training step holds.

    weights      params x dtype bytes (+ batch norm's running statistics, the buffers)
    gradients    one per trainable parameter
    optimizer    state per parameter: SGD with momentum 1 (the momentum buffer), SGD without 0,
                 Adam and AdamW 2 (exp_avg, exp_avg_sq); the spec's `train { optimizer = ... }`
                 (netspec's default: adam)
    activations  the tensors autograd keeps for the backward pass, for a batch

Activations kept for backward follow what each kind's backward needs, per example; each layer
class states its own (`Layer.backward_memory` in netspec/layers/), and this module adds them
up:

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
from netspec.layers.base import INDEX_BYTES, STAT_BYTES, BackwardMemory, Layer

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
    """Bytes autograd keeps for backward: (per example, per batch regardless of its size).
    Each layer says what it holds (`Layer.backward_memory`); this adds them up, counting a
    storage that several layers keep once."""
    eb = DTYPE_BYTES[graph.dtype]
    root: dict[str, str] = {}  # node id -> the node whose storage its output lives in
    size: dict[str, int] = {}  # storage root -> bytes per example
    kept: set[str] = set()
    extra = INDEX_BYTES  # per example: the loss's target; indices, masks, log-probabilities
    fixed = STAT_BYTES  # per batch: the loss's total weight; batch norm statistics
    last = graph.nodes[-1] if graph.nodes else None
    facts: dict[int, BackwardMemory] = {}
    by_value: dict[tuple[Layer, tuple[int, ...]], BackwardMemory] = {}
    for node in graph.nodes:
        node_id, shape = node.id, node.shape
        if node is last and node.layer.probabilities and node_id == graph.output:
            # Training feeds the scores before the final SOFTMAX to the loss (log-softmax).
            extra += math.prod(shape) * eb
            break
        # The nodes the builder made from one figures entry share their private part (their
        # layer, on the same input shapes), which the graph keeps alive: keyed by identity
        # first, then (a graph read from JSON) by the layer's and the shape's values.
        memory = facts.get(id(node.__pydantic_private__))
        if memory is None:
            layer = node.layer
            memory = by_value.get((layer, shape))
            if memory is None:
                memory = by_value[(layer, shape)] = layer.backward_memory(shape, eb)
            facts[id(node.__pydantic_private__)] = memory
        shares, keeps, stored, more, per_batch = memory
        if shares and node.inputs:
            at = root[node_id] = root[node.inputs[0]]
        else:
            at = root[node_id] = node_id
            size[node_id] = stored
        if keeps == "output":
            kept.add(at)
        elif keeps == "input":
            kept.update(root[i] for i in node.inputs)
        extra += more
        fixed += per_batch
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
