"""The IR: a validated, serializable graph of layer nodes with every figure computed.

A `Graph` is one concrete network (every free parameter bound). It round-trips through JSON
to an identical graph, and `Graph.model_json_schema()` is its schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from netspec.errors import Span

Scalar = int | float | bool | str

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "int8": 1}


class Node(BaseModel):
    """One layer instance. `id` is its dotted name (`layer1.basic1.conv1`), unique in the graph."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    args: dict[str, Any]
    inputs: list[str]
    span: Span | None = None
    implicit: bool = False
    shape: tuple[int, ...]
    params: int = 0
    buffers: int = 0
    macs: int = 0
    ops: int = 0
    memory: int = 0  # activation elements this node adds (0 for in-place layers)


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, ...]
    vocab: int | None = None  # token inputs

    @property
    def is_tokens(self) -> bool:
        return self.vocab is not None


class BudgetCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["params", "trainable", "macs", "flops", "memory"]
    op: str
    limit: float
    value: float
    ok: bool
    span: Span | None = None


class Totals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: int
    trainable_params: int
    buffers: int
    macs: int
    flops: int  # 2 x MACs
    ops: int  # the cheap operations MACs leave out
    memory_elements: int
    memory_bytes: int
    dtype: str


class Graph(BaseModel):
    """A concrete network: nodes in execution order, the output node, checks and totals."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    source: str | None = None
    source_hash: str | None = None
    input: InputSpec
    classes: int | None = None
    dtype: str = "fp32"
    bindings: dict[str, Scalar] = {}
    nodes: list[Node]
    output: str
    budgets: list[BudgetCheck] = []
    train: dict[str, Any] = {}
    totals: Totals

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (
            self.nodes[-1].shape
            if self.nodes[-1].id == self.output
            else self.node(self.output).shape
        )

    @property
    def budgets_ok(self) -> bool:
        return all(b.ok for b in self.budgets)


def make_totals(params: int, buffers: int, macs: int, ops: int, memory: int, dtype: str) -> Totals:
    """Totals from summed figures: FLOPs = 2 x MACs, memory in bytes at `dtype`."""
    return Totals(
        params=params,
        trainable_params=params,
        buffers=buffers,
        macs=macs,
        flops=2 * macs,
        ops=ops,
        memory_elements=memory,
        memory_bytes=memory * DTYPE_BYTES[dtype],
        dtype=dtype,
    )


def compute_totals(nodes: list[Node], dtype: str) -> Totals:
    return make_totals(
        sum(n.params for n in nodes),
        sum(n.buffers for n in nodes),
        sum(n.macs for n in nodes),
        sum(n.ops for n in nodes),
        sum(n.memory for n in nodes),
        dtype,
    )
