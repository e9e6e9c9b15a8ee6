"""The cap on a build's work (README, "Limits"; issue "Hostile input"): what the size estimate
before the build cannot see is metered as the work is done. Each case here took `check` far
over 2 s or 500 MB, or crashed, before the cap counted block calls, branches and distinct
layers, and bounded nesting and names."""

from __future__ import annotations

import re

import pytest
from helpers.cpu import cpu_limit

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import Builder, load_spec_text
from netspec.ir.limits import MAX_DEPTH, MAX_NAME, MAX_WORK, WORK_NEW

MLP = "input [64]\nclasses 10\n"
MAP = "input [8, 4, 4]\nclasses 10\n"


def refused(text: str, light: bool = False) -> NetspecError:
    # generous: a regression here takes minutes
    with cpu_limit(5.0), pytest.raises(SpecErrors) as info:
        load_spec_text(text).instantiate({}, light=light)
    err = info.value.errors[0]
    assert err.span is not None and err.span.line >= 1, "every refusal is located"
    return err


def where(err: NetspecError) -> str:
    assert err.span is not None
    return f"{err.span.line}:{err.span.col}"


def nested_blocks(depth: int, count: int, label: str = "") -> str:
    """`b{depth}` calls `b{depth-1}`... calls `b0`, an FC and a ReLU: `depth` + 1 scopes for
    two nodes (36 s and 900 MB at 30 deep, 124,990 calls, when only nodes counted)."""
    lines = ["block b0(w) = FC(w) -> RELU"]
    lines += [f"block b{i}(w) = b{i - 1}(w){label}" for i in range(1, depth + 1)]
    return MLP + "\n".join(lines) + f"\nINPUT -> [b{depth}(64)]*{count} -> FC(10) -> SOFTMAX\n"


def test_block_calls_count_as_work_before_the_build() -> None:
    err = refused(nested_blocks(30, 124_990))
    assert "limit" in err.message and "nodes and steps" in err.message
    assert where(err) == "34:20"  # the count of the repetition
    # 31 scopes and 2 nodes a time round: the same spec at the cap's size is built.
    fits = MAX_WORK // 33 - 10
    g = load_spec_text(nested_blocks(30, fits)).instantiate({}, light=True)
    assert g.totals.params == fits * (64 * 64 + 64) + 64 * 10 + 10


def test_branches_count_as_work() -> None:
    text = MAP + "INPUT -> [concat(CONV(4, 1), CONV(4, 1))]*60000 -> GAP -> FC(10) -> SOFTMAX\n"
    err = refused(text)  # 3 nodes and 2 scopes a time round: 300,000
    assert "300,000 nodes and steps" in err.message


def test_distinct_layers_are_metered_as_the_work_is_done() -> None:
    # Within the estimate (2 nodes and a step a time round); every FC and ReLU differs from
    # all before.
    count = MAX_WORK // 3 - 10
    err = refused(MLP + f"INPUT -> [FC(1 + i) -> RELU]*{count} for i -> FC(10) -> SOFTMAX\n")
    assert "distinct layers" in err.message and f"{MAX_WORK:,}" in err.message
    assert where(err) == "3:30"  # the repetition being expanded
    # Refused the moment the work passed the cap: the counts it reports are over the cap by
    # less than the last unit of work done (a distinct node: 1 + WORK_NEW).
    nodes, steps, distinct = (
        int(n.replace(",", ""))
        for n in re.findall(r"([\d,]+) (?:nodes|other steps|distinct layers)", err.message)
    )
    work = nodes + steps + WORK_NEW * distinct
    assert MAX_WORK < work <= MAX_WORK + 1 + WORK_NEW
    assert nodes == distinct and abs(steps - nodes / 2) <= 1  # every node distinct; 2 a round


def test_the_same_layer_repeated_is_one_distinct_layer() -> None:
    # `FC(64 + 0 * i)` reads the index (a step each time round) but makes one layer.
    text = MLP + "INPUT -> [FC(64 + 0 * i) -> RELU]*1000 for i -> FC(10) -> SOFTMAX\n"
    builder = Builder(load_spec_text(text), {})
    builder.build()
    assert builder.sums[5] == 2003 and builder.fresh == 5  # input, fc, relu, fc, softmax
    assert builder.sums[6] == 1000
    assert builder.work == 2003 + 1000 + WORK_NEW * 5


@pytest.mark.parametrize(
    "text",
    [
        MLP + "INPUT -> [FC(1 + i % 7) -> RELU]*3000 for i -> FC(10) -> SOFTMAX\n",
        MLP + "block b(w) = FC(w) -> RELU\nINPUT -> [b(8) -> b(16)]*500 -> FC(10) -> SOFTMAX\n",
        MAP + "INPUT -> [concat(CONV(4, 1), CONV(4 + i % 3, 1))]*200 for i -> GAP -> FC(10)\n",
        MLP + "INPUT -> FC(32) -> [FC(1 + i) -> RELU]*50 for i -> [FC(1 + i) -> RELU]*60 for i\n"
        "  -> FC(10) -> SOFTMAX\n",
    ],
    ids=["indexed", "blocks", "branches", "reused_after"],
)
def test_a_design_space_build_meters_the_work_of_a_full_build(text: str) -> None:
    """A light build (explore) replays cached elements: it must count the same work, so that
    explore and check accept and refuse the same members."""
    spec = load_spec_text(text)
    full = Builder(spec, {})
    full.build()
    for _ in range(2):  # the second light build runs on a warm cache
        light = Builder(spec, {}, light=True)
        light.build()
        assert (light.sums[5:], light.fresh) == (full.sums[5:], full.fresh)
        assert light.work == full.work


def test_blocks_nested_past_the_limit_are_a_located_error() -> None:
    err = refused(nested_blocks(2000, 1))  # a RecursionError traceback before
    assert f"nest more than {MAX_DEPTH} deep" in err.message
    assert err.span is not None and err.span.line > 2000 - MAX_DEPTH - 5


def test_blocks_nested_up_to_the_limit_build() -> None:
    # The main chain and 99 block bodies: 100 chains, one in another (each scope named `x`,
    # to keep the dotted names within their limit).
    g = load_spec_text(nested_blocks(MAX_DEPTH - 2, 2, " as x")).instantiate({})
    assert g.totals.params == 2 * (64 * 64 + 64) + 64 * 10 + 10


def test_brackets_in_nested_blocks_past_the_limit_are_a_located_error() -> None:
    # Each block's brackets are within the parser's limit; blocks and brackets together pass it.
    brackets = "[" * 60 + "FC(w)" + "]" * 60
    text = MLP + f"block a(w) = {brackets}\nblock b(w) = {brackets.replace('FC(w)', 'a(w)')}\n"
    err = refused(text + "INPUT -> b(8) -> FC(10) -> SOFTMAX\n")
    assert f"nest more than {MAX_DEPTH} deep" in err.message
    assert err.span is not None and err.span.line == 3  # inside `a`, 100 levels down


@pytest.mark.parametrize(
    "text, at",
    [
        (
            MLP + f"block b(w) = FC(w) as {'x' * 200_000} -> RELU\n"
            "INPUT -> [b(64)]*2000 -> FC(10) -> SOFTMAX\n",
            "3:14",
        ),
        (
            MLP + f"block {'b' * 200_000}(w) = FC(w) -> RELU\n"
            f"INPUT -> [{'b' * 200_000}(64)]*2000 -> FC(10) -> SOFTMAX\n",
            "3:200013",  # its FC
        ),
    ],
    ids=["label", "block_name"],
)
def test_long_names_are_refused(text: str, at: str) -> None:
    """Every node's dotted name is its own string: 2,000 calls of a block with a 200,000
    character name took 1.2 GB before."""
    err = refused(text)
    assert f"over netspec's limit of {MAX_NAME}" in err.message
    assert where(err) == at


def test_the_estimate_refuses_past_the_cap_not_at_it() -> None:
    """A repetition the estimate puts 1 unit over the cap is refused before any work; one fewer
    layer is exactly at the cap and the estimate lets it through (the meter then counts the
    distinct layers). Changing the estimate's `>` to `>=` passed every test before this one."""
    n = MAX_WORK - 2
    over = refused(f"input [64]\nINPUT -> [RELU]*{n}\n", light=True)
    assert "expands to" in over.message and f"take {MAX_WORK + 1:,} units" in over.message
    with pytest.raises(SpecErrors) as info:
        load_spec_text(f"input [64]\nINPUT -> [RELU]*{n - 1}\n").instantiate({}, light=True)
    at_cap = info.value.errors[0].message
    assert "expands to" not in at_cap and "takes the network over" in at_cap
