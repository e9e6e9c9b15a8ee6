"""Tests for netspec.explore and `netspec explore`: the space, verdicts grouped by reason, the
Pareto front, members written back as specs (and compiled again), bad input, and no torch."""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cpu import cpu_limit

import netspec
from netspec import explore as ex
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.ir.build import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]
FAMILY = ROOT / "specs" / "cs231n_family.ns"


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    # cli.set_exit_code is process-wide and main() does not reset it between calls.
    monkeypatch.setattr("netspec.cli._exit_code", 0)


@pytest.fixture(scope="module")
def family():
    return load_spec(FAMILY)


@pytest.fixture(scope="module")
def result(family) -> ex.Exploration:
    return ex.explore(family)


def spec_of(tmp_path: Path, text: str, name: str = "fam.ns"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path), path


def dominates(a: ex.Member, b: ex.Member) -> bool:
    fa, fb = (a.params, a.macs, a.memory), (b.params, b.macs, b.memory)
    return fa != fb and all(x <= y for x, y in zip(fa, fb, strict=True))


# --- the shipped family ---------------------------------------------------------------------


def test_family_declares_the_cards_choice_points(family) -> None:
    assert list(family.free) == ["N", "M", "K", "width", "pool"]
    assert family.free["pool"].switch
    assert ex.Space.of(family).size == 3 * 6 * 3 * 3 * 2


def test_verdicts_and_the_collapse_reason(result) -> None:
    assert len(result.members) == 324
    invalid = [m for m in result.members if not m.valid]
    # With pooling on, the sixth stage pools a 1x1 map: every M=6, pool=on member collapses.
    assert {m.number for m in invalid} == {
        m.number for m in result.members if m.bindings["M"] == 6 and m.bindings["pool"] is True
    }
    (group,) = result.failures
    assert group.count == 27 and "collapses to 0" in group.message
    assert group.span.line == 16 and ex.source_snippet(result.spec, group.span) == "POOL"
    assert "i=5" in group.detail and "pool6" in group.detail
    assert len(result.fitting) == 106
    for m in result.members:
        assert m.fits == (
            m.valid and m.params <= 2_000_000 and m.macs <= 200_000_000 and m.memory <= 4_000_000
        )


def test_member_numbers_are_positions_in_the_whole_space(family, result) -> None:
    space = ex.Space.of(family)
    assert [m.number for m in result.members] == list(range(1, 325))
    for m in result.members[::7]:
        assert space.member(m.number) == m.bindings


def test_front_is_exactly_the_non_dominated_fitting_members(result) -> None:
    fitting = result.fitting
    front = set(map(id, result.front))
    assert result.front_fits and front
    for m in fitting:
        beaten = any(dominates(o, m) for o in fitting)
        assert (id(m) in front) == (not beaten), m.label()
        assert m.on_front == (id(m) in front)
    assert all(m.verified for m in result.front)


def test_pareto_front_keeps_ties_and_drops_dominated() -> None:
    def mk(n, p, c, mem):
        m = ex.Member(n, {})
        m.params, m.macs, m.memory, m.valid = p, c, mem, True
        return m

    pts = [
        mk(1, 1, 5, 5),
        mk(2, 5, 1, 5),
        mk(3, 5, 5, 1),
        mk(4, 5, 5, 5),
        mk(5, 1, 5, 5),
        mk(6, 2, 5, 5),
    ]
    assert [m.number for m in ex.pareto_front(pts)] == [1, 5, 2, 3]


def test_round_trip_of_random_members(family, result, tmp_path: Path) -> None:
    """50 random members: explored figures == the written spec compiled == check's."""
    rng = random.Random(231)
    chosen = rng.sample(result.valid, 50)
    for m in chosen:
        out = tmp_path / f"m{m.number}.ns"
        ex.pick(family, m.number, out)
        graph, errors = load_spec(out).instantiate(collect=True)
        assert not load_spec(out).free
        assert (graph.totals.params, graph.totals.macs, graph.totals.memory_bytes) == (
            m.params,
            m.macs,
            m.memory,
        )
        assert all(e.message.startswith("budget exceeded") for e in errors)
        assert bool(errors) == bool(m.over)
        if m.fits:
            t = netspec.compile_spec(out).totals
            assert (t.params, t.macs, t.memory_bytes) == (m.params, m.macs, m.memory)
    assert (
        main(
            ["check", str(tmp_path / f"m{next(m for m in chosen if m.fits).number}.ns"), "--brief"]
        )
        == 0
    )


def test_torch_parameter_count_of_random_members(family, result) -> None:
    """50 random members that fit the budget (at most 2M params: over-budget members reach 660M,
    which the torch backend initialises for real): torch's count == the explored params."""
    pytest.importorskip("torch")
    pytest.importorskip("netspec.backends.lower_torch")
    rng = random.Random(7)
    for m in rng.sample(result.fitting, 50):
        _, _, graph = ex.pick(family, m.number)
        model = netspec.build(graph)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == m.params, m.label()


# --- grids and samples ----------------------------------------------------------------------


def test_grid_selects_values(family) -> None:
    grid = ex.parse_grid(family, ["N=1,2", "M=2..4 pool=on", "width={16,64}"])
    assert grid == {"N": (0, 1), "M": (1, 2, 3), "pool": (0,), "width": (0, 2)}
    r = ex.explore(family, grid=grid)
    assert len(r.members) == 2 * 3 * 3 * 2
    assert {m.bindings["pool"] for m in r.members} == {True}
    assert {m.bindings["M"] for m in r.members} == {2, 3, 4}
    full = {m.number: m for m in ex.explore(family).members}
    for m in r.members:  # the same numbers and figures as in the whole space
        assert (full[m.number].bindings, full[m.number].params) == (m.bindings, m.params)


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        (["Nn=1"], "did you mean `N`"),
        (["widht=16"], "did you mean `width`"),
        (["N=7"], "outside its domain 1..3"),
        (["pool=maybe"], "outside its domain on|off"),
        (["M=4..2"], "the range is empty"),
        (["N"], "NAME=VALUES"),
        (["N=1", "N=2"], "given twice"),
    ],
)
def test_grid_refusals(family, items, needle) -> None:
    with pytest.raises(NetspecError) as e:
        ex.parse_grid(family, items)
    assert needle in e.value.message + (e.value.hint or "")


def test_sample_is_seeded_and_consistent(family) -> None:
    a = ex.explore(family, sample=40, seed=3)
    b = ex.explore(family, sample=40, seed=3)
    c = ex.explore(family, sample=40, seed=4)
    assert a.sampled and len(a.members) == 40
    assert (
        [m.number for m in a.members]
        == [m.number for m in b.members]
        != [m.number for m in c.members]
    )
    space = ex.Space.of(family)
    assert all(space.member(m.number) == m.bindings for m in a.members)


# --- bad input ------------------------------------------------------------------------------


def test_a_concrete_spec_is_not_a_family(tmp_path: Path, capsys) -> None:
    spec, path = spec_of(
        tmp_path, "input [1, 8, 8]\nclasses 2\nINPUT -> CONV(4) -> RELU -> SOFTMAX\n"
    )
    with pytest.raises(NetspecError) as e:
        ex.explore(spec)
    assert "no free parameters" in e.value.message and "netspec check" in e.value.hint
    assert main(["explore", str(path)]) == 2
    assert "no free parameters" in capsys.readouterr().err


def test_a_grid_without_valid_members(family, capsys) -> None:
    with pytest.raises(NetspecError) as e:
        ex.explore(family, grid=ex.parse_grid(family, ["M=6", "pool=on"]))
    assert "none of the 27 members" in e.value.message
    assert any("collapses to 0" in n for n in e.value.notes)
    assert main(["explore", str(FAMILY), "--grid", "M=6", "pool=on"]) == 2
    assert "is valid" in capsys.readouterr().err


def test_a_space_over_the_cap_needs_sample(tmp_path: Path, capsys) -> None:
    text = "input [3, 16, 16]\nclasses 10\na in 1..200\nb in 1..100\nc in 1..60\nINPUT -> CONV(a) -> FC(b) -> FC(c) -> SOFTMAX\n"
    spec, path = spec_of(tmp_path, text)
    with pytest.raises(NetspecError) as e:
        ex.explore(spec)
    assert "1,200,000 members" in e.value.message and "--sample" in e.value.hint
    assert main(["explore", str(path)]) == 2
    r = ex.explore(spec, sample=300, seed=1)
    assert len(r.members) == 300 and r.sampled and r.front
    assert main(["explore", str(path), "--sample", "200"]) == 0
    capsys.readouterr()


def test_pick_refuses_invalid_and_missing_members(family) -> None:
    invalid = ex.Space.of(family)  # member 91 is N=1 M=6 K=0 width=16 pool=on: collapses
    assert invalid.member(91) == {"N": 1, "M": 6, "K": 0, "width": 16, "pool": True}
    with pytest.raises(NetspecError, match="not a valid network"):
        ex.pick(family, 91)
    with pytest.raises(NetspecError, match="no member #325"):
        ex.pick(family, 325)


def test_light_checks_miss_duplicate_names_but_pick_does_not(tmp_path: Path) -> None:
    spec, _ = spec_of(
        tmp_path,
        "input [1, 8, 8]\nclasses 2\nN in 1..2\nINPUT -> [CONV(4) as c -> RELU]*N -> SOFTMAX\n",
    )
    r = ex.explore(spec)
    assert [m.number for m in r.front] == [1]
    with pytest.raises(NetspecError, match="used twice"):
        ex.pick(spec, 2)


def test_front_members_are_built_in_full(tmp_path: Path) -> None:
    # N=2 has fewer params than N=1, so it is on the front, where the full build finds that
    # the label `c` is used twice (light evaluation does not check names).
    text = (
        "input [1, 8, 8]\nclasses 2\nN in 1..2\nINPUT -> [CONV(8 // N) as c -> RELU]*N -> SOFTMAX\n"
    )
    spec, _ = spec_of(tmp_path, text)
    r = ex.explore(spec)
    assert [m.number for m in r.front] == [1] and r.front[0].verified
    (group,) = r.failures
    assert "used twice" in group.message and [m.number for m in group.members] == [2]


# --- members as specs -----------------------------------------------------------------------


def test_member_source_binds_in_place(family, result) -> None:
    m = next(
        m
        for m in result.members
        if m.bindings == {"N": 2, "M": 3, "K": 1, "width": 32, "pool": True}
    )
    text = ex.member_source(family, m)
    assert "N = 2 " in text and "M = 3 " in text and "width = 32" in text and "pool = on" in text
    assert " in 1..3" not in text and text.count("\n") == family.text.count("\n") + 2
    graph = load_spec_text(text, "<m>").instantiate(collect=True)[0]
    assert (graph.totals.params, graph.totals.macs) == (m.params, m.macs)


@pytest.mark.parametrize(
    "text",
    [
        # a constant before a free parameter: the bindings move above the constants
        "input [1, 8, 8]\nclasses 2\nc = 4\nN in 1..2  # n\nd = N * c\nINPUT -> CONV(d) -> POOL? -> SOFTMAX\n",
        # several statements on one line, a free parameter after a constant
        "input [1, 8, 8] classes 2 N in 1..2 c = 4 M in 1..2 d = N * c * M\nINPUT -> CONV(d) -> POOL? -> SOFTMAX\n",
        # switches only
        "input [1, 8, 8]\nclasses 2\nINPUT -> CONV(4) -> POOL? -> BN? -> SOFTMAX\n",
        # a constant using a free parameter, sets of symbols and tuples
        "input [1, 9, 9]\nclasses 2\nk in {3, (3, 5)}\np in {max, avg}\nw in {4, 8}\nc = 2 * w\n"
        "INPUT -> CONV(c, k) -> POOL(mode=p)? -> SOFTMAX\n",
    ],
)
def test_member_source_round_trips(tmp_path: Path, text: str) -> None:
    spec, _ = spec_of(tmp_path, text)
    r = ex.explore(spec)
    assert len(r.valid) == len(r.members)
    for m in r.valid:
        src, member, graph = ex.pick(spec, m.number, tmp_path / "m.ns")
        again = load_spec(tmp_path / "m.ns")
        assert not again.free
        t = again.instantiate().totals
        assert (t.params, t.macs, t.memory_bytes) == (m.params, m.macs, m.memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fam.ns", "m.ns"]  # no temp files left


# --- the command line -----------------------------------------------------------------------


def test_cli_report_csv_plot_and_pick(tmp_path: Path, capsys) -> None:
    csv_path, png, member = tmp_path / "all.csv", tmp_path / "front.png", tmp_path / "member.ns"
    assert (
        main(
            ["explore", str(FAMILY), "--sort", "macs", "--csv", str(csv_path), "--plot", str(png)]
            + ["--wide"]  # the reason whole: at 80 columns (xdist sets COLUMNS) it is cut
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "324 members" in out
        and "fit the budgets" in out
        and "Pareto front" in out
        and "collapses" in out
    )
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == 324
    assert set(rows[0]) == {
        "member",
        "N",
        "M",
        "K",
        "width",
        "pool",
        "valid",
        "reason",
        "params",
        "macs",
        "memory_bytes",
        "fits_budget",
        "on_front",
    }
    assert (
        sum(int(r["valid"]) for r in rows) == 297
        and sum(int(r["fits_budget"]) for r in rows) == 106
    )
    assert all("collapses" in r["reason"] for r in rows if r["valid"] == "0")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    front_row = next(r for r in rows if r["on_front"] == "1")
    assert main(["explore", str(FAMILY), "--pick", front_row["member"], "-o", str(member)]) == 0
    assert main(["check", str(member), "--brief"]) == 0
    assert front_row["params"] in capsys.readouterr().out.replace(",", "")


def test_cli_when_no_member_fits_the_budget(tmp_path: Path, capsys) -> None:
    text = "input [1, 8, 8]\nclasses 2\nbudget params <= 10\nw in {4, 8}\nINPUT -> CONV(w) -> POOL? -> SOFTMAX\n"
    _, path = spec_of(tmp_path, text)
    assert main(["explore", str(path)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps titles at 80 columns
    assert "no member fits the budgets" in out and "front of the valid members" in out


def test_cli_grid_words_after_the_spec(capsys) -> None:
    assert main(["explore", str(FAMILY), "--grid", "N=1", "M=2..3", "K=0", "--all"]) == 0
    out = capsys.readouterr().out
    assert "36 members" not in out and "12 members" in out


def test_explore_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from netspec.cli import main\n"
        f"rc = main(['explore', {str(FAMILY)!r}, '--csv', {str(tmp_path / 'a.csv')!r}, '--sample', '100'])\n"
        f"rc2 = main(['explore', {str(FAMILY)!r}, '--pick', '19', '-o', {str(tmp_path / 'm.ns')!r}])\n"
        "assert rc == rc2 == 0, (rc, rc2)\n"
        "assert 'torch' not in sys.modules, 'explore imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_the_family_explores_fast(family) -> None:
    fresh = load_spec(FAMILY)  # cold caches
    with cpu_limit(1.0):  # members/s against the target: tools/bench_explore.py
        ex.explore(fresh)
