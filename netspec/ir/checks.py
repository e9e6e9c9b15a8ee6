"""Budgets and assertions: `budget` items against the totals, shape assertions explained."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.bindings import construct, show_value
from netspec.ir.expr import eval_int, evaluate, walk
from netspec.ir.graph import BudgetCheck, Graph, Node
from netspec.ir.naming import Value
from netspec.units import limit_text

_CMP = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def budget_checks(
    budgets: Sequence[ast.BudgetItem],
    graph: Graph,
    env: Mapping[str, Any],
    errors: list[NetspecError],
) -> list[BudgetCheck]:
    """Each `budget` item held against the graph's totals; a failed one adds to `errors`."""
    t = graph.totals
    values = {
        "params": t.params,
        "trainable": t.trainable_params,
        "macs": t.macs,
        "flops": t.flops,
        "memory": t.memory_bytes,
    }
    checks = []
    for item in budgets:
        limit = evaluate(item.limit, env)
        refused = _limit_error(item, limit)
        if refused is not None:
            errors.append(refused)
            continue
        value = values[item.metric]
        ok = _CMP[item.op](value, limit)
        checks.append(
            construct(
                BudgetCheck,
                dict(
                    metric=item.metric,
                    op=item.op,
                    limit=limit,
                    value=value,
                    ok=ok,
                    span=item.span,
                ),
            )
        )
        if not ok:
            unit = " bytes" if item.metric == "memory" else ""
            errors.append(
                NetspecError(
                    f"budget exceeded: {item.metric} = {value:,}{unit}, over the limit {item.op} {limit_text(item.metric, limit)}",
                    item.span,
                    hint=f"over by {value / limit - 1:.1%}" if limit else None,
                    notes=_holders(graph, item.metric, value),
                )
            )
    return checks


def _limit_error(item: ast.BudgetItem, limit: Any) -> NetspecError | None:
    """A budget limit that is no number, a count written in bytes, or negative."""
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        return NetspecError(
            f"a budget limit must be a number; received {limit!r}",
            item.limit.span,
            hint="e.g. `budget params <= 5M, memory <= 100MB`",
        )
    if item.metric != "memory" and any(
        isinstance(n, ast.Num) and n.text.endswith("B") for n in walk(item.limit)
    ):
        return NetspecError(
            f"`{item.metric}` is a count, but its limit is written in bytes",
            item.limit.span,
            hint=f"drop the B (`budget {item.metric} <= 1M`); bytes are for "
            "`memory` (`budget memory <= 100MB`)",
        )
    if limit < 0:
        return NetspecError(
            f"a budget limit is a size or a count, at least 0; received {show_value(limit)}",
            item.limit.span,
            hint=f"e.g. `budget {item.metric} <= 5M`",
        )
    return None


_NODE_FIGURE = {
    "params": "params",
    "trainable": "params",
    "macs": "macs",
    "flops": "macs",
    "memory": "memory",
}


def _holders(graph: Graph, metric: str, total: int) -> list[str]:
    """The layers holding most of a failed budget, biggest first (up to three, each 5% or
    more), as a note: `most of it: fc1 89.2%, conv3 6.1%`."""
    attr = _NODE_FIGURE[metric]
    figures = sorted(
        ((getattr(n, attr), n.id) for n in graph.nodes if getattr(n, attr)), reverse=True
    )
    if metric == "memory":
        total = sum(f for f, _ in figures)  # elements (the budget is in bytes)
    if not figures or total <= 0:
        return []
    top = [(f, i) for f, i in figures[:3] if f / total >= 0.05]
    if not top:
        return []
    return ["most of it: " + ", ".join(f"`{i}` {f / total:.1%}" for f, i in top)]


def assertion_error(
    el: ast.Element, cur: Value, env: Mapping[str, Any], ids: Mapping[str, Node | None]
) -> NetspecError | None:
    """The error of a failed shape assertion `X : [...]` on `cur`, explained, or None."""
    declared = tuple(eval_int(e, env, "an asserted dimension", 0) for e in el.assertion or ())
    if declared == cur.shape:
        return None
    node = ids.get(cur.node)
    # The size was set by the last layer that is not shape-preserving in place (CONV -> RELU).
    while node is not None and node.layer.inplace and node.inputs:
        source = ids.get(node.inputs[0])
        if source is None or source.shape != node.shape:
            break
        node = source
    notes = [
        f"declared [{', '.join(map(str, declared))}], computed [{', '.join(map(str, cur.shape))}]"
    ]
    hint = None
    if node is not None and node.id != cur.node:
        notes.append(f"the size is set by `{node.id}`")
    source = ids.get(node.inputs[0]) if node is not None and node.inputs else None
    if node is not None and source is not None and len(declared) == len(cur.shape):
        explained = node.layer.explain_size(source.shape, node.shape, declared)
        if explained:
            notes.extend(explained[0])
            hint = explained[1]
    return NetspecError(
        f"shape assertion failed at `{cur.node}`" if cur.node else "shape assertion failed",
        el.assertion_span,
        hint=hint,
        notes=notes,
    )
