"""Budgets at their limit: `<=` lets a value equal to its limit pass and one over it fail, `<`
fails the equal value, for every budget metric, in a full build and a light one (explore's).

Before these, changing the check's `<=` to `<` passed every budget test (issue 20): no test had a
value exactly at its limit."""

from __future__ import annotations

import pytest

from netspec.ir.build import load_spec_text
from netspec.ir.graph import BUDGET_METRICS, Graph

# Conv without bias, batch norm (buffers: memory but not params), and an FC: every figure differs.
NET = (
    "input [3, 8, 8]\nclasses 4\nINPUT -> CONV(4, 3, bias=off) -> BN -> RELU -> FC(4) -> SOFTMAX\n"
)


def figure(graph: Graph, metric: str) -> int:
    t = graph.totals
    return {
        "params": t.params,
        "trainable": t.trainable_params,
        "macs": t.macs,
        "flops": t.flops,
        "memory": t.memory_bytes,
    }[metric]


FIGURES = {metric: figure(load_spec_text(NET).instantiate(), metric) for metric in BUDGET_METRICS}


def test_the_figures_are_known_and_distinct_where_the_kinds_differ() -> None:
    # conv 4*3*9 = 108, BN 2*4 = 8, FC 4*256 + 4 = 1028 parameters
    assert FIGURES["params"] == FIGURES["trainable"] == 108 + 8 + 1028
    assert FIGURES["flops"] == 2 * FIGURES["macs"]
    assert len({FIGURES["params"], FIGURES["macs"], FIGURES["memory"]}) == 3


@pytest.mark.parametrize("light", [False, True], ids=["full", "light"])
@pytest.mark.parametrize(
    "op, offset, ok",
    [("<=", 0, True), ("<=", -1, False), ("<", 0, False), ("<", 1, True)],
    ids=["le_at_limit", "le_one_over", "lt_at_limit", "lt_one_under"],
)
@pytest.mark.parametrize("metric", BUDGET_METRICS)
def test_a_budget_at_its_limit(metric: str, op: str, offset: int, ok: bool, light: bool) -> None:
    value = FIGURES[metric]
    limit = value + offset
    spec = load_spec_text(NET + f"budget {metric} {op} {limit}\n", "b.ns")
    graph, errors = spec.instantiate({}, collect=True, light=light)
    assert graph is not None
    [check] = graph.budgets
    assert (check.metric, check.op, check.value, check.limit) == (metric, op, value, limit)
    assert check.ok is ok
    if ok:
        assert errors == []
    else:
        [err] = errors
        assert f"budget exceeded: {metric} = {value:,}" in err.message
        assert err.span is not None and err.span.line == 4
