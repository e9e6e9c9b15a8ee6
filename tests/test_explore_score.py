"""`netspec explore --score`: zero-cost proxies on one batch at initialisation, NaN members
recorded and ranked last, bad inputs refused with clear messages."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from netspec import explore as ex
from netspec import explore_score as sc
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text

FAMILY = """\
network tiny "convs on digits"
input [1, 8, 8]
classes 10
N in 1..2
width in {4, 8}
INPUT -> [CONV(width) -> RELU]*N -> POOL -> FC(10) -> SOFTMAX
"""

# half the members have no ReLU: naswot has nothing to read there
NO_RELU = """\
network norelu "an optional ReLU"
input [1, 8, 8]
classes 10
width in {4, 8}
INPUT -> CONV(width) -> RELU? -> FC(10) -> SOFTMAX
"""


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


@pytest.fixture(scope="module")
def tiny():
    spec = load_spec_text(FAMILY, "<tiny>")
    return spec, ex.explore(spec)


@pytest.mark.slow
@pytest.mark.parametrize("proxy", sc.PROXIES)
def test_each_proxy_scores_every_member_deterministically(tiny, proxy: str) -> None:
    spec, exp = tiny
    a = sc.score_members(spec, exp.valid, proxy, batch=16)
    b = sc.score_members(spec, exp.valid, proxy, batch=16)
    assert set(a.values) == {m.number for m in exp.valid} == {m.number for m in a.ranked()}
    assert a.values == b.values and a.nan == []
    assert all(math.isfinite(v) for v in a.values.values())
    assert set(a.seconds) == (set(sc.VOTERS) if proxy == "vote" else {proxy})
    scores = [a.values[m.number] for m in a.ranked()]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) > 1  # a proxy that tells nothing apart would be useless


def test_params_ranks_by_the_irs_parameter_count(tiny) -> None:
    spec, exp = tiny
    ranked = sc.score_members(spec, exp.valid, "params").ranked()
    assert [m.params for m in ranked] == sorted((m.params for m in exp.valid), reverse=True)


@pytest.mark.slow
def test_gradient_proxies_follow_the_batch(tiny) -> None:
    spec, exp = tiny
    one = sc.score_members(spec, exp.valid, "snip", batch=16, seed=0).values
    two = sc.score_members(spec, exp.valid, "snip", batch=16, seed=1).values
    assert one != two


def test_synflow_leaves_the_model_as_it_was(tiny) -> None:
    import torch

    from netspec.backends.lower_torch import build

    spec, exp = tiny
    graph, _ = spec.instantiate(exp.valid[-1].bindings, collect=True)
    model = build(graph, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 1, 8, 8)
    assert sc.synflow(model, x, torch.zeros(4, dtype=torch.long)) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_vote_is_the_mean_rank_and_ignores_nan() -> None:
    members = [ex.Member(n, {}) for n in (1, 2, 3)]
    per = {
        "synflow": {1: 1.0, 2: 2.0, 3: 3.0},
        "naswot": {1: 3.0, 2: 2.0, 3: math.nan},
        "snip": {1: 1.0, 2: 3.0, 3: 2.0},
    }
    votes = sc._vote(per, members)
    assert votes == {1: (0 + 1 + 0) / 3, 2: (0.5 + 0 + 1) / 3, 3: (1 + 0.5) / 2}


@pytest.mark.slow
def test_nan_members_are_recorded_and_ranked_last(capsys, tmp_path: Path) -> None:
    spec = load_spec_text(NO_RELU, "<norelu>")
    exp = ex.explore(spec)
    s = sc.score_members(spec, exp.valid, "naswot", batch=16)
    without = sorted(m.number for m in exp.valid if m.bindings["relu"] is False)
    assert sorted(s.nan) == without and len(without) == 2
    assert [m.number for m in s.ranked()[-2:]] == without
    assert all(not math.isnan(s.values[m.number]) for m in s.ranked()[:2])
    path = tmp_path / "norelu.ns"
    path.write_text(NO_RELU)
    assert main(["explore", str(path), "--score", "naswot", "--score-batch", "16"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns in a pipe
    assert "not a number for 2 member(s)" in out and "ranked last" in out


@pytest.mark.slow
def test_score_refusals(tiny, tmp_path: Path, capsys) -> None:
    spec, exp = tiny
    with pytest.raises(NetspecError, match="too few for one batch of 5000"):
        sc.score_members(spec, exp.valid, "snip", batch=5000)
    with pytest.raises(NetspecError, match="1 valid member"):
        sc.score_members(spec, exp.valid[:1], "snip")
    with pytest.raises(NetspecError, match="unknown proxy"):
        sc.score_members(spec, exp.valid, "synflo")
    path = tmp_path / "tiny.ns"
    path.write_text(FAMILY)
    for args, needle in (
        (["--score", "snip", "--score-batch", "5000"], "too few for one batch"),
        (
            ["--score", "snip", "--grid", "N=1", "--grid", "width=4"],
            "1 valid member",
        ),
        (["--score", "snip", "--data", "npz:/nonexistent.npz"], "not found"),
    ):
        assert main(["explore", str(path), *args]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_score_prints_the_cost_and_the_ranking(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.ns"
    path.write_text(FAMILY)
    assert main(["explore", str(path), "--score", "synflow", "--score-batch", "16"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "scored 4 member(s) by synflow on one batch of 16 from digits: synflow" in out
    assert "ms/member" in out and "ranked by synflow" in out


def test_explore_and_merge_stay_torch_free() -> None:
    code = (
        "import sys, netspec.commands.explore, netspec.explore_merge, netspec.explore_score; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_member_is_said(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.ns"
    path.write_text(FAMILY)
    assert main(["explore", str(path), "--grid", "N=1", "--grid", "width=4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 members" in out and "one member explored: there is nothing to compare it with" in out
