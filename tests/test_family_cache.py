"""What a light build shares between a family's members (netspec.ir.family, issue 26): each
time round a repetition kept by its input shape and the values it reads, size estimates kept
by the names that decide a size, and results that never depend on which member came first.
Counted, not timed."""

from __future__ import annotations

import pytest
from helpers.families import fuzz_families

from netspec import explore as ex
from netspec.ir.build import load_spec_text
from netspec.ir.family import Failed
from netspec.ir.shapes import Propagation

STAGES = """\
input [3, 32, 32]
classes 10
M in 1..4
width in {8, 16}
INPUT -> [CONV(width * 2**i) -> RELU -> POOL]*M for i -> SOFTMAX
"""


def _light(spec, **bindings):
    graph, errors = spec.instantiate(bindings, collect=True, light=True)
    return graph, errors


def test_a_member_with_one_more_stage_builds_only_that_stage(monkeypatch) -> None:
    """The member with M stages replays the M - 1 the smaller member built: it makes the
    nodes of one new time round (and the classifier on its new output), and its totals are
    a full build's."""
    spec = load_spec_text(STAGES, "<stages>")
    made = []
    add_node = Propagation.add_node

    def counted(self, *args, **kwargs):
        made[-1] += 1
        return add_node(self, *args, **kwargs)

    monkeypatch.setattr(Propagation, "add_node", counted)
    light = []
    for m in range(1, 5):
        made.append(0)
        graph, errors = _light(spec, M=m, width=8)
        assert errors == []
        light.append(graph.totals)
    monkeypatch.setattr(Propagation, "add_node", add_node)
    assert light == [spec.instantiate({"M": m, "width": 8}).totals for m in range(1, 5)]
    # each member: its input, its last stage (conv, relu, pool) and the classifier on the new
    # output (flatten, FC, softmax); built whole, member M would make 1 + 3 * M + 3
    assert made == [7, 7, 7, 7]


def test_estimates_are_shared_by_members_that_differ_only_in_widths() -> None:
    spec = load_spec_text(STAGES, "<stages>")
    for width in (8, 16):
        for m in range(1, 5):
            _light(spec, M=m, width=width)
    with_m = len(spec.size_cache)
    assert with_m > 0
    # the second width read no estimate the first had not made: widths are layer arguments
    fresh = load_spec_text(STAGES, "<stages>")
    for m in range(1, 5):
        _light(fresh, M=m, width=8)
    assert len(fresh.size_cache) == with_m


def test_a_failing_element_reports_the_same_errors_to_every_member() -> None:
    """The soft errors an element reported before it raised are kept with the error: a member
    replaying it reports what the first one did."""
    text = """\
input [3, 8, 8]
classes 10
K in 1..2
INPUT -> [CONV(8) : [9, 8, 8] -> POOL]*4 -> FC(K) -> SOFTMAX
"""
    spec = load_spec_text(text, "<fails>")
    first = _light(spec, K=1)
    second = _light(spec, K=2)
    assert first[0] is None and second[0] is None
    messages = [[e.message for e in errs] for _, errs in (first, second)]
    assert messages[0] == messages[1]
    *soft, fatal = messages[0]
    assert soft and all(m.startswith("shape assertion failed") for m in soft)
    assert "spatial size collapses" in fatal
    assert any(isinstance(v, Failed) and v.errors for v in spec.element_cache.values())


def test_what_a_member_reports_does_not_depend_on_which_member_came_first() -> None:
    """An assertion on an element whose input came from the cache names no node, whether
    that element was built in this member or replayed."""
    text = """\
input [4, 8, 8]
classes 4
A in 0..1
B in 0..1
INPUT -> [RELU]*A -> [DROPOUT(0.1)]*B : [3] -> GAP -> FC(4) -> SOFTMAX
"""
    got = {}
    for order in ((0, 1), (1, 0)):
        spec = load_spec_text(text, "<order>")
        for a in order:
            _, errors = _light(spec, A=a, B=0)
            got.setdefault(a, set()).add(tuple(e.message for e in errors))
    assert all(len(seen) == 1 for seen in got.values()), got


@pytest.mark.parametrize("between", ["", "-> DROPOUT(0.1) "])
def test_the_final_classifier_checks_the_layer_before_it_whichever_member_came_first(
    between: str,
) -> None:
    """`FC(16) -> SOFTMAX` with 10 classes is the spec's own classifier and wrong; `RELU ->
    SOFTMAX` gets an FC added. Both reach SOFTMAX with the same shape: a member must not
    replay the other's verdict (it did: a member with a wrong classifier explored as valid).
    With a DROPOUT between (the identity at inference), the last node made is the same in
    both: the classifier still looks past it."""
    text = f"""\
input [16]
classes 10
X in {{on, off}}
Y in {{on, off}}
INPUT -> FC(16)?(X) -> RELU?(Y) {between}-> SOFTMAX
"""
    for order in (((True, False), (False, True)), ((False, True), (True, False))):
        spec = load_spec_text(text, "<tail>")
        for x, y in order:
            graph, errors = _light(spec, X=x, Y=y)
            full, full_errors = spec.instantiate({"X": x, "Y": y}, collect=True)
            assert (graph is None) == (full is None), (order, x, y)
            assert [e.message for e in errors] == [e.message for e in full_errors]
            if graph is not None:
                assert graph.totals == full.totals


def test_a_softmax_of_probabilities_is_refused_in_a_light_build_as_in_a_full_one() -> None:
    """A light build keeps no nodes: it refused nothing here and explored the member as
    valid. The last node made now travels with the cached effects."""
    text = """\
input [16]
classes 10
X in {on, off}
INPUT -> FC(10) -> SOFTMAX?(X) -> SOFTMAX
"""
    for order in ((True, False), (False, True)):
        spec = load_spec_text(text, "<probabilities>")
        for x in order:
            graph, errors = _light(spec, X=x)
            full, full_errors = spec.instantiate({"X": x}, collect=True)
            assert (graph is None) == (full is None) == x
            assert [e.message for e in errors] == [e.message for e in full_errors]


def _light_as_full(count: int, seed: int) -> None:
    """Every member of fuzzed families, light (sharing the family's cache, in order) and in
    full: the same verdict and, where valid, the same totals. A light build's messages name
    no node (`at `conv1`: ...`) where a full build does; nothing else differs."""
    for family_seed, text in fuzz_families(count, seed):
        spec = load_spec_text(text, "<fuzz>")
        space = ex.Space.of(spec)
        for idx in space.indices():
            b = {d.name: d.values[i] for d, i in zip(space.domains, idx, strict=True)}
            light, _ = spec.instantiate(b, collect=True, light=True)
            full, _ = spec.instantiate(b, collect=True)
            where = f"fuzzed family (seed {family_seed}) {b}:\n{text}"
            assert (light is None) == (full is None), where
            if light is not None:
                assert light.totals == full.totals, where


def test_light_builds_of_a_family_agree_with_full_builds() -> None:
    _light_as_full(40, 0)


@pytest.mark.slow
def test_light_builds_of_many_families_agree_with_full_builds() -> None:
    _light_as_full(600, 5000)
