"""The IR: a validated, serializable graph of layer nodes with every figure computed.

A `Graph` is one concrete network (every free parameter bound). It round-trips through JSON
to an identical graph, and `Graph.model_json_schema()` is its schema.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from netspec.errors import NetspecError, Span
from netspec.layers import KINDS, Layer

Scalar = int | float | bool | str

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "int8": 1}
BUDGET_METRICS = ("params", "trainable", "macs", "flops", "memory")

# The function drawing a graph as the `netspec check` table (see `Graph.summary`).
_RENDERER: Callable[..., str] | None = None


def set_renderer(render: Callable[..., str]) -> None:
    """Register the table renderer: `netspec.summary` calls this when imported."""
    global _RENDERER
    _RENDERER = render


class Node(BaseModel):
    """One layer instance. `id` is its dotted name (`layer1.basic1.conv1`), unique in the graph.

    `layer` is the validated layer; `kind` and `args` are its serialized form (the JSON). The
    builder hands the layer in (see `Node.of`); a node read from JSON validates its arguments
    once, on reading, and an unknown kind or a bad argument refuses the JSON.
    """

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

    _layer: Layer = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        cls = KINDS.get(self.kind)
        if cls is None:
            raise ValueError(f"unknown layer kind `{self.kind}`")
        self._layer = cls.model_validate(self.args, strict=False)

    @property
    def layer(self) -> Layer:
        # Read straight from the private dict: pydantic's attribute fallback costs some 2 us,
        # once per row of a 220,000-row table.
        return self.__pydantic_private__["_layer"]  # type: ignore[index]

    @classmethod
    def of(cls, layer: Layer | dict[str, Any], fields: dict[str, Any]) -> Node:
        """A node for `layer` whose every figure the builder computed and checked itself, built
        without pydantic's validation: this runs once per layer of a 4,000-layer network (and
        up to 220,000 times for the largest spec), and a few times per member of a design
        space. `fields` are every field, in their declared order (the JSON's order), `kind` and
        `args` (`layer.model_dump(mode="json")`) included.

        Every node shares one set of set fields (all of them: adding one already there changes
        nothing) and, when the builder hands in `{"_layer": layer}` instead of the layer, that
        dict with every node of the same layer (nothing assigns `_layer` after construction):
        some 800 bytes a node less than a set and a dict each."""
        node = cls.__new__(cls)
        object.__setattr__(node, "__dict__", fields)
        object.__setattr__(node, "__pydantic_fields_set__", _NODE_FIELDS)
        object.__setattr__(node, "__pydantic_extra__", None)
        object.__setattr__(
            node, "__pydantic_private__", layer if isinstance(layer, dict) else {"_layer": layer}
        )
        return node


_NODE_FIELDS = set(Node.model_fields)


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


class Head(BaseModel):
    """A side output (`head aux1 at inception4a: ...`): its nodes' ids start with `name.`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    at: str  # the main-chain node it branches off
    output: str  # its last node
    span: Span | None = None


class ReceptiveField(BaseModel):
    """A node's receptive field on the network's input, one value per spatial dim (see
    netspec/ir/receptive.py for the rules): `size` input pixels seen by one output position
    (rounded up past an upsampling), `jump` input pixels between neighbouring output positions,
    `start` where output position 0's field begins (negative: it reaches into the padding).
    `covers`: every output position sees the whole input. `unread`: rows (columns) at the end
    of the node's input that none of its windows read; `gaps`: its stride steps over rows."""

    model_config = ConfigDict(extra="forbid")

    node: str
    size: tuple[int, ...]
    jump: tuple[int | float, ...]
    start: tuple[int | float, ...]
    covers: bool = False
    unread: tuple[int, ...] = ()
    gaps: bool = False


class Graph(BaseModel):
    """A concrete network: nodes in execution order, the output node, checks and totals."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    source: str | None = None
    source_hash: str | None = None
    input: InputSpec
    classes: int | None = None
    per_pixel: bool = False  # a dense output: `classes` scores per pixel, [classes, H, W]
    dtype: str = "fp32"
    bindings: dict[str, Scalar] = {}
    nodes: list[Node]
    output: str
    budgets: list[BudgetCheck] = []
    train: dict[str, Any] = {}
    totals: Totals
    heads: list[Head] = []
    # With side heads: the main path's totals (totals counts the heads too); None without heads.
    main_totals: Totals | None = None
    # Per node with positions (`check --columns rf`); left out of the JSON when not computed.
    receptive_fields: list[ReceptiveField] | None = Field(
        default=None, exclude_if=lambda v: v is None
    )

    _positions: dict[str, int] | None = PrivateAttr(default=None)
    # Where each train setting stands in the source (the key), kept by the builder; not in the
    # JSON (a graph read back from JSON has none, and errors name the train section instead).
    _train_spans: dict[str, Span] = PrivateAttr(default_factory=dict)

    @property
    def train_spans(self) -> dict[str, Span]:
        private = self.__pydantic_private__
        return private.get("_train_spans", {}) if private else {}

    def keep_train_spans(self, spans: dict[str, Span]) -> None:
        self._private()["_train_spans"] = spans

    def _private(self) -> dict[str, Any]:
        private = self.__pydantic_private__
        if private is None:  # built without validation (the builder's fast path)
            private = {"_positions": None, "_train_spans": {}}
            object.__setattr__(self, "__pydantic_private__", private)
        return private

    def __eq__(self, other: object) -> bool:
        # The id index is a cache, not part of the graph.
        return (
            isinstance(other, Graph)
            and type(other) is type(self)
            and _fields(self) == _fields(other)
        )

    __hash__ = None  # type: ignore[assignment]

    def node(self, node_id: str) -> Node:
        """The node with this id, in O(1): a cached id -> position index, checked on each use
        and rebuilt when the node list has changed under it."""
        nodes = self.nodes
        private = self._private()
        index = private.get("_positions")
        for _ in range(2):  # the cached index, then (on a miss) a fresh one
            if index is not None:
                i = index.get(node_id)
                if i is not None and i < len(nodes) and nodes[i].id == node_id:
                    return nodes[i]
            index = private["_positions"] = {n.id: i for i, n in enumerate(nodes)}
        raise KeyError(node_id)

    def class_count(self, needed_by: str) -> int:
        """The classes data must have: `classes`, else a vector output's size.

        Raises:
            NetspecError: the output is not class scores (`needed_by` says what needs them:
                "training", "int8 calibration").
        """
        if self.classes is not None:
            return self.classes
        if len(self.output_shape) == 1:
            return self.output_shape[0]
        raise NetspecError(
            f"{self.name} outputs [{', '.join(map(str, self.output_shape))}], not class scores",
            hint=f"{needed_by} needs a classifier: declare `classes N` and end with "
            "FC(N) -> SOFTMAX",
        )

    @property
    def ends_in_probabilities(self) -> bool:
        """The output node turns scores into probabilities (SOFTMAX): training and `logits`
        exports read the scores before it."""
        return self.node(self.output).layer.probabilities

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (
            self.nodes[-1].shape
            if self.nodes[-1].id == self.output
            else self.node(self.output).shape
        )

    def main_path(self) -> Graph:
        """This graph without its side heads (what inference runs); itself when it has none."""
        if not self.heads:
            return self
        assert self.main_totals is not None  # the builder sets it with the heads
        nodes = [n for n in self.nodes if self.head_of(n.id) is None]
        return self.model_copy(
            update={"nodes": nodes, "heads": [], "totals": self.main_totals, "main_totals": None}
        )

    def head_of(self, node_id: str) -> str | None:
        """The side head a node belongs to, or None for the main path."""
        for head in self.heads:
            if node_id.startswith(head.name + "."):
                return head.name
        return None

    @property
    def budgets_ok(self) -> bool:
        return all(b.ok for b in self.budgets)

    def summary(self, fmt: str = "table", **options: Any) -> str:
        """The `netspec check` table as text (options: see `netspec.summary.summary`).

        The table is drawn by `netspec.summary`, a layer above the IR, which registers itself
        here when imported (`netspec.compile_spec` and the commands import it)."""
        if _RENDERER is None:
            raise RuntimeError(
                "the table is drawn by netspec.summary: import it first "
                "(netspec.compile_spec does), or call netspec.summary.summary(graph)"
            )
        return _RENDERER(self, fmt, **options)

    def __str__(self) -> str:
        return self.summary() if _RENDERER is not None else super().__str__()

    def _repr_markdown_(self) -> str:  # a notebook shows the table
        return self.summary("markdown")


def _fields(graph: Graph) -> dict[str, Any]:
    """Its fields, the optional analyses the builder does not fill in as their default."""
    return {"receptive_fields": None, **graph.__dict__}


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
    figures = ("params", "buffers", "macs", "ops", "memory")
    p, b, m, o, mem = (sum(map(attrgetter(f), nodes)) for f in figures)
    return make_totals(p, b, m, o, mem, dtype)
