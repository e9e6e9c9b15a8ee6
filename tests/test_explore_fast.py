"""The fast path of `netspec explore` (netspec.explore_fast, issue 26) against plain light
builds, member by member: validity, the error (message, location, hint, notes), the budgets
exceeded, params, MACs and memory, with cold caches and warm ones."""

from __future__ import annotations

import pytest
from helpers.families import fuzz_families, zoo_families

from netspec import explore as ex
from netspec.explore_fast import FastEvaluator
from netspec.ir.build import load_spec_text


def _verdict(m: ex.Member) -> tuple:
    e = m.error
    error = None if e is None else (e.message, e.span, e.hint, tuple(e.notes or ()))
    return (m.number, m.bindings, m.valid, error, m.over, m.params, m.macs, m.memory)


def _both(text: str, sample: int | None = None, shard: tuple[int, int] | None = None) -> None:
    """Each member through both paths, on fresh specs, twice (cold caches, then warm)."""
    got = {}
    for fast in (False, True):
        spec = load_spec_text(text, "<family>")
        space = ex.Space.of(spec)
        runs = [ex._evaluate_all(spec, space, sample, 3, shard=shard, fast=fast) for _ in "12"]
        got[fast] = [[_verdict(m) for m in run] for run in runs]
    for plain, fast in zip(got[False], got[True], strict=True):
        assert len(plain) == len(fast)
        for a, b in zip(plain, fast, strict=True):
            assert a == b, f"member #{a[0]}: plain {a}, fast {b}"


def _outcome(graph, errors) -> tuple:
    """What a light build returns, as plain values: totals, budget checks, errors."""
    errs = [(e.message, e.span, e.hint, list(e.notes or ())) for e in errors]
    if graph is None:
        return (None, None, errs)
    t = graph.totals
    totals = (t.params, t.trainable_params, t.buffers, t.macs, t.flops, t.ops, t.memory_bytes)
    budgets = [(b.metric, b.op, b.limit, b.value, b.ok, b.span) for b in graph.budgets]
    return (totals, budgets, errs)


def _same_as_builds(text: str) -> None:
    """FastEvaluator returns what Spec.instantiate(light=True) returns, member by member."""
    plain_spec, fast_spec = load_spec_text(text, "<family>"), load_spec_text(text, "<family>")
    evaluator = FastEvaluator(fast_spec)
    space = ex.Space.of(plain_spec)
    for _ in "cold", "warm":
        for idx in space.indices():
            bindings = {d.name: d.values[i] for d, i in zip(space.domains, idx, strict=True)}
            want = _outcome(*plain_spec.instantiate(bindings, collect=True, light=True))
            assert _outcome(*evaluator(bindings)) == want, bindings


ZOO = zoo_families()


def test_the_zoo_has_families() -> None:
    assert {"cs231n_family", "mobilenet_family"} <= set(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_family_fast_equals_plain(name: str) -> None:
    _both(ZOO[name])


def test_the_evaluator_returns_what_a_light_build_returns() -> None:
    """Totals, budget checks (passed and failed) and every error with its hint and notes."""
    _same_as_builds(ZOO["cs231n_family"])
    for _, text in fuzz_families(10, 500):
        _same_as_builds(text)


@pytest.mark.parametrize(
    "budget",
    [
        "budget params <= 100K, macs <= -1",  # one fails, then a limit that is wrong
        "budget memory <= 1MB, params <= nope",  # a limit that does not evaluate
        "budget params <= 300K, macs <= 20M, memory <= 512KB",
    ],
)
def test_budgets_fast_equal_plain(budget: str) -> None:
    text = ZOO["cs231n_family"].replace("budget params <= 2M, macs <= 200M, memory <= 4MB", budget)
    assert budget in text
    _same_as_builds(text)
    _both(text)


def test_sampled_and_sharded_members_fast_equal_plain() -> None:
    _both(ZOO["cs231n_family"], sample=60, shard=(2, 3))


def test_most_card_members_take_the_fast_path() -> None:
    """Counted, not timed: warm, every member of the card family is read from the caches, and
    cold, about half (those whose elements an earlier member built)."""
    spec = load_spec_text(ZOO["cs231n_family"], "cs231n_family.ns")
    space = ex.Space.of(spec)
    evaluator = FastEvaluator(spec)
    assert evaluator.eligible
    every = [
        {d.name: d.values[i] for d, i in zip(space.domains, idx, strict=True)}
        for idx in space.indices()
    ]
    for bindings in every:
        evaluator(bindings)
    assert evaluator.fast >= len(every) // 3
    evaluator.fast = evaluator.plain = 0
    for bindings in every:
        evaluator(bindings)
    assert (evaluator.fast, evaluator.plain) == (len(every), 0)
    # explore() keeps one evaluator per parsed spec: a second exploration finds it warm
    assert FastEvaluator.of(spec) is FastEvaluator.of(spec)


def test_explore_output_is_the_same_through_either_path(monkeypatch) -> None:
    """The whole exploration (front, verification, failure groups, CSV) does not change."""
    text = ZOO["cs231n_family"]
    fast = ex.to_csv(ex.explore(load_spec_text(text, "cs231n_family.ns")))
    plain_all = ex._evaluate_all

    def plain(*args, **kwargs):
        return plain_all(*args, **kwargs, fast=False)

    monkeypatch.setattr(ex, "_evaluate_all", plain)
    assert ex.to_csv(ex.explore(load_spec_text(text, "cs231n_family.ns"))) == fast


def test_a_spec_the_fast_path_does_not_cover_is_built_plainly() -> None:
    text = ZOO["cs231n_family"].replace("INPUT\n", "INPUT\n  -> CONV(8) as stem\n") + (
        "head aux at stem: GAP -> FC(10) -> SOFTMAX\n"
    )
    spec = load_spec_text(text, "<heads>")
    evaluator = FastEvaluator(spec)
    assert not evaluator.eligible
    _both(text, sample=40)


def test_fuzzed_families_fast_equal_plain() -> None:
    for seed, text in fuzz_families(25):
        try:
            _both(text)
        except AssertionError as e:
            raise AssertionError(f"fuzzed family (seed {seed}):\n{text}\n{e}") from None


@pytest.mark.slow
def test_many_fuzzed_families_fast_equal_plain() -> None:
    for seed, text in fuzz_families(1200, 20_000):
        try:
            _both(text)
            _same_as_builds(text)
        except AssertionError as e:
            raise AssertionError(f"fuzzed family (seed {seed}):\n{text}\n{e}") from None


def test_the_tree_stops_growing_at_its_cap_and_the_results_stay_the_same(monkeypatch) -> None:
    """Past MAX_STATES the evaluator keeps nothing more (a million-member exploration must not
    hold a tree of a gigabyte); members are still evaluated exactly."""
    import netspec.explore_fast as fast

    monkeypatch.setattr(fast, "MAX_STATES", 40)
    text = ZOO["cs231n_family"]
    _both(text)
    spec = load_spec_text(text, "<family>")
    evaluator = FastEvaluator.of(spec)
    ex._evaluate_all(spec, ex.Space.of(spec), None, 0)
    # a member decides once whether to keep what it makes: at most a root, a state per
    # element and a result past the cap
    assert 40 <= evaluator.kept < 40 + len(evaluator.elements) + 2
    assert evaluator.fast > 0
