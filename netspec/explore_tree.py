"""The tree of chain states that `netspec.explore_fast.FastEvaluator` walks, and the light
result a member gets at its leaf: its totals and budget checks without a pydantic model each.

A member's main chain is a fold over its elements' cached effects (netspec.ir.family), and
members that read the same values so far share the fold so far: the tree has a root per values
of the names the header reads, then a level per element, each keyed by the indices of the free
parameters that element's names depend on (`depends`, `getter`). Most members are a lookup per
level; a level's values are read off the indices where its names are free parameters
(`reader`), else from the member's global names (`Walk.env`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.bindings import DEFERRED, coerce_binding, global_env
from netspec.ir.checks import _CMP, _limit_error
from netspec.ir.expr import evaluate, free_names
from netspec.ir.graph import DTYPE_BYTES, Scalar
from netspec.ir.resolve import MISSING
from netspec.units import limit_text

if TYPE_CHECKING:
    from netspec.ir.build import Spec
    from netspec.ir.walk import Builder

# The tree's size in states, results and verdicts kept (about 1.1 KB each, measured with
# tracemalloc on a 720-member family), past which members are walked without keeping what
# they make: explore's cap is a million members, and the tree must not hold a gigabyte.
MAX_STATES = 100_000


class State:
    """The main chain folded up to one element, shared by every member whose values of the
    names read so far (the header's, then each element's) are the same: the output shape, the
    sums, the distinct layers met (their figures cache entries, by id), the soft errors, the
    size estimate so far, and the states after the next element
    by the values it reads (`children`). A state after an element that raised has `error`: the
    members under it are that error (the next elements only add to the size estimate, which the
    build checks before expanding anything). The root, after the header and input, carries the
    class count and dtype. The leaves keep the member's result by the values the budget limits
    read (`results`)."""

    __slots__ = (
        "shape",
        "sums",
        "marks",
        "errors",
        "bound",
        "children",
        "results",
        "error",
        "classes",
        "dtype",
        "builder",
        "member",
        "tail",
        "last",
    )

    def __init__(
        self,
        shape: tuple[int, ...],
        sums: tuple[int, ...],
        marks: frozenset[int],
        errors: tuple,
        bound: int,
    ) -> None:
        self.shape = shape
        self.sums = sums
        self.marks = marks
        self.errors = errors
        self.bound = bound
        self.children: dict[Any, State | None] = {}
        self.results: dict[Any, tuple | None] = {}
        self.error: NetspecError | None = None
        self.classes: int | None = None
        self.dtype = "fp32"
        # A root's builder, which expands the elements no member has met yet (`_expand`),
        # and the member whose global names it has.
        self.builder: Builder | None = None
        self.member: Walk | None = None
        # The last node that is not the identity (`Propagation.tail`): the final classifier
        # checks it.
        self.tail: Any = None
        self.last: Any = None  # the last node made (`Propagation.last`): a softmax reads it


class Walk:
    """The member being walked: its bindings, its root, and its global names when a state
    not in the tree needs them (computed once, on the first)."""

    __slots__ = ("spec", "idx", "bindings", "root", "_env")

    def __init__(
        self, spec: Spec, idx: tuple[int, ...], bindings: dict[str, Scalar], root: State
    ) -> None:
        self.spec = spec
        self.idx = idx
        self.bindings = bindings
        self.root = root
        self._env: dict[str, Any] | None | object = MISSING

    def env(self) -> dict[str, Any] | None:
        """The global names as the build has them after its header (None: they do not
        evaluate; the build says why)."""
        if self._env is MISSING:
            try:
                env = global_env(
                    self.spec, {k: coerce_binding(v) for k, v in self.bindings.items()}
                )
            except NetspecError:
                env = None
            if env is not None and env.get("classes") is DEFERRED:  # as the header sets it
                env["classes"] = self.root.classes
            self._env = env
        return self._env  # type: ignore[return-value]


def getter(positions: tuple[int, ...]) -> Any:
    """The values at `positions` of a member's indices, as a key."""
    if not positions:
        return lambda idx: None
    return itemgetter(*positions)


def reader(spec: Spec, names: tuple[str, ...]) -> Callable[[tuple[int, ...]], tuple] | None:
    """The values of `names` (`env.get(name, MISSING)` each) read off a member's indices,
    or None where one is a constant or the class count (the global names have them)."""
    position = {name: i for i, name in enumerate(spec.free)}
    consts = {c.name for c in spec.consts}
    parts: list[tuple[int, Any]] = []
    for name in names:
        if name in consts or name == "classes":
            return None
        if name in position:
            parts.append((position[name], spec.free[name].values))
        else:  # no global name: the build reads it as missing
            parts.append((-1, None))

    def read(idx: tuple[int, ...]) -> tuple:
        return tuple(MISSING if i < 0 else values[idx[i]] for i, values in parts)

    return read


def depends(spec: Spec, names: tuple[str, ...]) -> tuple[int, ...]:
    """The positions of the free parameters that the values of `names` depend on: their
    own, those the constants they read depend on, those of the class count."""
    position = {name: i for i, name in enumerate(spec.free)}
    consts = {c.name: c for c in spec.consts}
    seen: set[str] = set()
    found: set[int] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in position:
            found.add(position[name])
        if name in consts:
            stack.extend(free_names(consts[name].value))
        if name == "classes" and spec.classes is not None:
            stack.extend(free_names(spec.classes.value))
    return tuple(sorted(found))


class Check(NamedTuple):
    """A budget checked, as `BudgetCheck` has it (without a pydantic model per member)."""

    metric: str
    op: str
    limit: Any
    value: Any
    ok: bool
    span: Any


class LightTotals(NamedTuple):
    """A member's totals, as `Totals` has them (`make_totals`), without a pydantic model per
    member."""

    params: int
    trainable_params: int
    buffers: int
    macs: int
    flops: int
    ops: int
    memory_elements: int
    memory_bytes: int
    dtype: str

    @classmethod
    def of(cls, sums: tuple[int, ...], dtype: str) -> LightTotals:
        p, b, m, o, mem = sums[:5]
        return cls(p, p, b, m, 2 * m, o, mem, mem * DTYPE_BYTES[dtype], dtype)


# A budget's metric: its place among LightTotals.of's figures.
_METRIC = {"params": 0, "trainable": 1, "macs": 3, "flops": 4, "memory": 7}


@dataclass(slots=True)
class LightGraph:
    """The part of a light `Graph` a member's verdict reads (`netspec.explore._read`)."""

    totals: Any  # Totals or LightTotals
    budgets: list[Any]  # BudgetCheck or Check
    nodes: tuple = ()  # a light graph has no nodes (a failed budget names no holders)


class Budgets:
    """A spec's budgets checked as `budget_checks` checks them in a light build, each limit
    evaluated once per values of the names it reads."""

    def __init__(self, spec: Spec) -> None:
        self.names = [(b, tuple(sorted(free_names(b.limit)))) for b in spec.budgets]
        self.limits: dict[Any, tuple[Any, str] | None] = {}

    def check(
        self,
        totals: LightTotals,
        env_of: Callable[[], dict[str, Any] | None],
        errors: list[NetspecError],
    ) -> list[Any] | None:
        """The budget checks as `budget_checks` makes them in a light build (a failed one adds
        its error to `errors`), each limit evaluated once per values of the names it reads
        (`env_of` gives them, where a limit reads any); None where a limit is wrong (the build
        says why)."""
        checks, failed = [], []
        limits = self.limits
        for item, names in self.names:
            env: dict[str, Any] = {}
            lkey: Any = id(item)
            if names:
                got_env = env_of()
                if got_env is None:
                    return None
                env = got_env
                lkey = (id(item), *(env.get(n, MISSING) for n in names))
            got: Any = limits.get(lkey, MISSING)
            if got is MISSING:
                got = limits[lkey] = limit_of(item, env)
            if got is None:
                return None
            limit, shown = got
            value = totals[_METRIC[item.metric]]
            ok = _CMP[item.op](value, limit)
            checks.append(Check(item.metric, item.op, limit, value, ok, item.span))
            if not ok:  # budget_checks' error; a light graph has no nodes to hold the most
                unit = " bytes" if item.metric == "memory" else ""
                failed.append(
                    NetspecError(
                        f"budget exceeded: {item.metric} = {value:,}{unit}, over the limit "
                        f"{item.op} {shown}",
                        item.span,
                        hint=f"over by {value / limit - 1:.1%}" if limit else None,
                        notes=[],
                    )
                )
        errors.extend(failed)
        return checks


def limit_of(item: ast.BudgetItem, env: Mapping[str, Any]) -> tuple[Any, str] | None:
    """A budget's limit and its text in the spec's units, or None where it is wrong."""
    try:
        limit = evaluate(item.limit, env)
    except NetspecError:
        return None
    if _limit_error(item, limit) is not None:
        return None
    return limit, limit_text(item.metric, limit)
