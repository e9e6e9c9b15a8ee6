"""The flat graph an importer produces (one `Op` per layer, in execution order) and its tree of
chains and branches (`to_tree`), the shape every netspec chain has: a branch splits at one
value and joins at one `add`, `concat` or `mul`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from netspec.errors import NetspecError

Value = int | float | bool | str | tuple[int, ...]
INPUT = "input"
JOINS = ("add", "concat", "mul")


@dataclass(frozen=True)
class Op:
    """One layer of an imported model.

    Attributes:
        id: its name in the source (an ONNX node's name, a module path).
        spelling: how a spec writes it (`CONV`, `BN`, `GAP`), or a join (`add`, `concat`, `mul`).
        args: its arguments as (name, value), in the spelling's order; defaults left out.
        inputs: the ids of the ops it reads (`input` for the model's input), in order.
        weights: the source's tensors, in netspec's state-dict order (weight, bias; BN's
            weight, bias, running_mean, running_var).
        note: what was merged into it, for a comment (`Conv+BN folded by the exporter`).
        where: its position in the source (`node 12 of 175`), for error messages.
        shape: its output's shape without the batch, when the source gives it.
    """

    id: str
    spelling: str
    args: tuple[tuple[str, Value], ...] = ()
    inputs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    note: str = ""
    where: str = ""
    shape: tuple[int, ...] | None = None  # its output's shape without the batch, when known
    in_shape: tuple[int, ...] | None = None  # its (first) input's

    @property
    def in_channels(self) -> int | None:
        return self.in_shape[0] if self.in_shape else None

    def arg(self, name: str, default: Value | None = None) -> Value | None:
        for key, value in self.args:
            if key == name:
                return value
        return default

    @property
    def is_join(self) -> bool:
        return self.spelling in JOINS


@dataclass
class Join:
    """Branches that split from one value and meet at `op` (add, concat or mul); an empty
    branch is the split value itself (IDENTITY)."""

    op: Op
    branches: list[list[Item]] = field(default_factory=list)


Item = Op | Join


class ImportError_(NetspecError):
    """A model netspec cannot express; names the node and its position."""


def _positions(ops: list[Op]) -> dict[str, int]:
    pos = {INPUT: -1}
    for i, op in enumerate(ops):
        pos[op.id] = i
    return pos


def _dominators(ops: list[Op], pos: dict[str, int]) -> dict[str, str]:
    """Immediate dominators from the input, in one pass over the ops (they are in execution
    order, so a dominator always comes earlier)."""
    idom: dict[str, str] = {INPUT: INPUT}
    for op in ops:
        ins = list(op.inputs)
        d = ins[0]
        for other in ins[1:]:
            a, b = d, other
            while a != b:
                if pos[a] > pos[b]:
                    a = idom[a]
                else:
                    b = idom[b]
            d = a
        idom[op.id] = d
    return idom


def live_ops(ops: list[Op], output: str) -> list[Op]:
    """The ops the output depends on, in order (a dead end is dropped)."""
    by_id = {op.id: op for op in ops}
    keep = set()
    stack = [output]
    while stack:
        x = stack.pop()
        if x in keep or x == INPUT:
            continue
        keep.add(x)
        stack.extend(by_id[x].inputs)
    return [op for op in ops if op.id in keep]


def to_tree(ops: list[Op], output: str) -> list[Item]:
    """The main chain from the input to `output` as items: layers and joins of branches.

    Raises:
        ImportError_: a value read on two branches that do not split at one place (a graph no
            chain of add/concat/mul expresses).
    """
    ops = live_ops(ops, output)
    pos = _positions(ops)
    idom = _dominators(ops, pos)
    by_id = {op.id: op for op in ops}
    used: set[str] = set()

    def chain(x: str, root: str) -> list[Item]:
        items: list[Item] = []
        while x != root:
            op = by_id[x]
            if x in used:
                raise _not_a_tree(op)
            used.add(x)
            if op.is_join:
                fork = idom[x]
                branches = [chain(i, fork) for i in op.inputs]
                items.append(Join(op, branches))
                x = fork
            else:
                if len(op.inputs) != 1:
                    raise ImportError_(f"{_named(op)} reads {len(op.inputs)} values; expected one")
                items.append(op)
                x = op.inputs[0]
        items.reverse()
        return items

    return chain(output, INPUT)


def _named(op: Op) -> str:
    return f"node `{op.id}` ({op.spelling}{', ' + op.where if op.where else ''})"


def _not_a_tree(op: Op) -> ImportError_:
    return ImportError_(
        f"{_named(op)} is read by branches that do not split from one value and join at one "
        "node: netspec's add/concat/mul cannot express this graph",
        hint="each branch of add(...), concat(...) or mul(...) starts from the same value",
    )


def walk(items: list[Item]) -> list[Op]:
    """Every op of a tree, in the order netspec's builder makes their nodes (branch by branch,
    the join after its branches)."""
    out: list[Op] = []
    for item in items:
        if isinstance(item, Join):
            for branch in item.branches:
                out.extend(walk(branch))
            out.append(item.op)
        else:
            out.append(item)
    return out


def nest_concats(ops: list[Op]) -> list[Op]:
    """A concatenation of an earlier one's inputs plus more, rewritten to read that earlier
    one: DenseNet's `cat(x0, ..., xk)` in every layer becomes `cat(cat(x0, ..., xk-1), xk)`,
    the same values, and a chain netspec writes `concat(IDENTITY, layer)`."""
    seen: dict[tuple[str, ...], str] = {}
    out = []
    for op in ops:
        if op.spelling == "concat":
            ins = op.inputs
            for cut in range(len(ins) - 1, 1, -1):
                prefix = seen.get(ins[:cut])
                if prefix is not None:
                    op = Op(
                        op.id,
                        op.spelling,
                        op.args,
                        (prefix, *ins[cut:]),
                        op.weights,
                        op.note,
                        op.where,
                        op.shape,
                        op.in_shape,
                    )
                    break
            seen.setdefault(tuple(ins), op.id)
        out.append(op)
    return out


def group_concats(ops: list[Op], output: str) -> list[Op]:
    """A concatenation of several branches' values split into nested ones, one per split point:
    torch.onnx flattens `cat([a, cat([b1, b2]), c])` into one Concat of a, b1, b2, c, where b1
    and b2 split from a value below the concat's own split (Inception-v3's E modules). The
    nested `concat(a, concat(b1, b2), c)` has the same values and is a tree."""
    ops = live_ops(ops, output)
    pos = _positions(ops)
    idom = _dominators(ops, pos)
    by_id = {op.id: op for op in ops}
    out: list[Op] = []

    def top(x: str, fork: str) -> str:
        while idom[x] != fork:
            x = idom[x]
        return x

    def common(xs: list[str]) -> str:
        d = xs[0]
        for other in xs[1:]:
            a, b = d, other
            while a != b:
                a, b = (idom[a], b) if pos[a] > pos[b] else (a, idom[b])
            d = a
        return d

    def grouped(op: Op, ins: tuple[str, ...], fork: str) -> tuple[str, ...]:
        groups: list[list[str]] = []
        for x in ins:
            if (
                x != fork
                and groups
                and groups[-1][-1] != fork
                and top(x, fork) == top(groups[-1][-1], fork)
            ):
                groups[-1].append(x)
            else:
                groups.append([x])
        if len(groups) in (1, len(ins)):
            return ins
        new = []
        for k, group in enumerate(groups):
            if len(group) == 1:
                new.append(group[0])
                continue
            inner = grouped(op, tuple(group), common(group))
            shapes = [by_id[x].shape for x in group if x in by_id]
            shape = None
            if len(shapes) == len(group) and all(shapes):
                shape = (sum(s[0] for s in shapes if s), *shapes[0][1:])  # type: ignore[index]
            nested = Op(f"{op.id}#{k}", "concat", op.args, inner, (), "", op.where, shape)
            idom[nested.id], pos[nested.id] = common(list(inner)), pos[op.id] - 0.5  # type: ignore[assignment]
            out.append(nested)
            new.append(nested.id)
        return tuple(new)

    for op in ops:
        if op.spelling == "concat" and len(op.inputs) > 2:
            ins = grouped(op, op.inputs, idom[op.id])
            if ins != op.inputs:
                op = replace(op, inputs=ins)
        out.append(op)
    return out
