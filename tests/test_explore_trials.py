"""`netspec explore --train-top K --budget TIME`: trained trials with successive halving in an
Optuna study that several processes share; a process killed halfway loses nothing; bad
input refused up front with clear messages, the study untouched."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cpu import HANG_S
from helpers.wait import until

from netspec import explore as ex
from netspec.cli import main
from netspec.commands.explore_trials import candidates, parse_time
from netspec.errors import NetspecError
from netspec.explore_score import Scores
from netspec.ir.build import load_spec_text

ROOT = Path(__file__).resolve().parents[1]

FAMILY = """\
network tiny "convs on digits"
input [1, 8, 8]
classes 10
N in 1..2
width in {4, 8}
INPUT -> [CONV(width) -> RELU]*N -> POOL -> FC(10) -> SOFTMAX
"""

TRAIN = ["--epochs", "2", "--train-limit", "200"]


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)
    monkeypatch.chdir(tmp_path)  # the default study file lands in the current folder


def _family(tmp_path: Path, text: str = FAMILY) -> Path:
    path = tmp_path / "tiny.ns"
    path.write_text(text)
    return path


def _study(db: Path, journal: bool = False):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = (
        optuna.storages.JournalStorage(JournalFileBackend(str(db)))
        if journal
        else optuna.storages.RDBStorage(f"sqlite:///{db}")
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _running(db: Path) -> bool:
    import sqlite3

    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return bool(con.execute("select 1 from trials where state = 'RUNNING'").fetchall())
    except sqlite3.OperationalError:  # the tables are not made yet
        return False


def _counted(study) -> dict[int, list[str]]:
    """member -> the states of its trials."""
    out: dict[int, list[str]] = {}
    for t in study.get_trials(deepcopy=False):
        out.setdefault(int(t.user_attrs["member"]), []).append(t.state.name)
    return out


def test_budget_times() -> None:
    assert [parse_time(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
    with pytest.raises(NetspecError, match="takes a time"):
        parse_time("soon")


def test_candidates_by_score_put_nan_last_else_by_cost() -> None:
    spec = load_spec_text(FAMILY, "<tiny>")
    exp = ex.explore(spec)
    values = {1: math.nan, 2: 0.5, 3: 2.0, 4: 1.0}
    scores = Scores("naswot", exp.valid, values, nan=[1])
    assert [m.number for m in candidates(exp, scores, "params", 4)] == [3, 4, 2, 1]
    assert [m.number for m in candidates(exp, None, "macs", 2)] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "1m"], "--budget goes with --train-top"),
        (["--train-top", "1", "--budget", "1m"], "at least 2 members"),
        (["--train-top", "2"], "needs --budget"),
        (["--train-top", "2", "--budget", "0s"], "positive time"),
        (["--train-top", "2", "--budget", "1m", "--workers", "0"], "--workers takes a positive"),
    ],
)
def test_option_refusals(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(["explore", str(_family(tmp_path)), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_family_with_one_member_is_refused(tmp_path: Path, capsys) -> None:
    path = _family(tmp_path)
    args = ["--grid", "N=1", "--grid", "width=4", "--train-top", "2", "--budget", "1m"]
    assert main(["explore", str(path), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "1 member to train: successive halving compares members" in err
    assert not list(tmp_path.glob("*.db"))  # no study made


def test_a_storage_that_does_not_answer_is_a_quick_clear_error(tmp_path: Path, capsys) -> None:
    path = _family(tmp_path)
    url = "postgresql://127.0.0.1:1/netspec"  # port 1: refused at once
    args = ["--train-top", "2", "--budget", "1m", "--storage", url]
    assert main(["explore", str(path), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the server 127.0.0.1:1 does not answer" in err
    assert "Traceback" not in err


def test_a_storage_url_that_is_no_url_is_refused(tmp_path: Path, capsys) -> None:
    args = ["--train-top", "2", "--budget", "1m", "--storage", "study.db"]
    assert main(["explore", str(_family(tmp_path)), *args]) == 2
    assert "journal:PATH" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_a_budget_too_small_for_one_trial_is_refused_with_the_estimate(tmp_path, capsys) -> None:
    path = _family(tmp_path)
    db = tmp_path / "s.db"
    args = ["--train-top", "2", "--budget", "0.0001s", "--storage", f"sqlite:///{db}"]
    assert main(["explore", str(path), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "too small for one trial" in err and "measured one training step" in err
    assert not db.exists()  # refused before the study is made


@pytest.mark.slow
def test_a_data_set_too_small_for_a_batch_is_refused(tmp_path: Path, capsys) -> None:
    args = ["--train-top", "2", "--budget", "1m", "--train-limit", "5"]
    assert main(["explore", str(_family(tmp_path)), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has 5 training example(s), too few for one batch of 32" in err
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.slow
def test_trials_measure_a_front_and_travel_through_json_and_merge(tmp_path, capsys) -> None:
    path = _family(tmp_path)
    out = tmp_path / "r.json"
    png = tmp_path / "front.png"
    table = tmp_path / "all.csv"
    args = ["--train-top", "4", "--budget", "10m", *TRAIN, "--json", str(out), "--plot", str(png)]
    assert main(["explore", str(path), *args, "--csv", str(table)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 and r["trial"] for r in rows)
    assert "4 of 4 member(s) trained" in text and "batch 1, 1 thread" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    study = _study(tmp_path / "r.optuna.db")  # SQLite next to the --json output
    counted = _counted(study)
    assert sorted(counted) == [1, 2, 3, 4]
    assert all(
        len(states) == 1 and states[0] in ("COMPLETE", "PRUNED") for states in counted.values()
    )
    doc = json.loads(out.read_text())
    measured = {m["number"]: m["measured"] for m in doc["members"] if m["measured"]}
    assert sorted(measured) == [1, 2, 3, 4]
    assert all(0.0 <= m["accuracy"] <= 1.0 and m["latency_ms"] > 0 for m in measured.values())
    assert main(["explore", "merge", str(out)]) == 0
    merged = " ".join(capsys.readouterr().out.split())
    assert "measured: 4 trained member(s)" in merged
    # the same command again trains nothing: the study already holds every member
    assert main(["explore", str(path), *args]) == 0
    assert sum(len(s) for s in _counted(_study(tmp_path / "r.optuna.db")).values()) == 4


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_one_loses_nothing(tmp_path: Path) -> None:
    """Worker A dies (SIGKILL) halfway through its first trial; worker B, on the same SQLite
    study, marks A's trial failed once its heartbeat is stale, reruns it, and trains the rest:
    every member counted exactly once, the killed trial failed and never counted."""
    path = _family(tmp_path)
    db = tmp_path / "shared.db"
    cmd = [
        sys.executable,
        "-m",
        "netspec",
        "explore",
        str(path),
        "--train-top",
        "4",
        "--budget",
        "10m",
        *TRAIN,
        "--storage",
        f"sqlite:///{db}",
        "--heartbeat",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.Popen(
        cmd, env={**env, "NETSPEC_EXPLORE_KILL": "*:1"}, stdout=subprocess.PIPE, text=True
    )
    # B starts once A holds a trial, so A is sure to be killed inside one
    until(lambda: killed.poll() is not None or _running(db), "worker A's first trial")
    survivor = subprocess.Popen(
        [*cmd, "--json", str(tmp_path / "b.json")], env=env, stdout=subprocess.PIPE, text=True
    )
    killed.communicate(timeout=HANG_S)
    out, _ = survivor.communicate(timeout=HANG_S)
    assert killed.returncode == -9
    assert survivor.returncode == 0, out
    counted = _counted(_study(db))
    assert sorted(counted) == [1, 2, 3, 4]
    for states in counted.values():
        assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 1
    assert sum(s.count("FAIL") for s in counted.values()) == 1  # the killed trial, rerun
    text = " ".join(out.split())
    assert (
        "4 of 4 member(s) trained" in text
        and "1 trial(s) lost with their process and rerun" in text
    )
    doc = json.loads((tmp_path / "b.json").read_text())
    assert sum(1 for m in doc["members"] if m["measured"]) == 4


@pytest.mark.slow
def test_workers_option_spawns_processes_on_one_journal_study(tmp_path: Path) -> None:
    path = _family(tmp_path)
    log = tmp_path / "study.log"
    args = [
        "--train-top",
        "4",
        "--budget",
        "10m",
        *TRAIN,
        "--storage",
        f"journal:{log}",
        "--workers",
        "2",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "netspec", "explore", str(path), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert run.returncode == 0, run.stderr
    counted = _counted(_study(log, journal=True))
    assert sorted(counted) == [1, 2, 3, 4]
    assert all(len(s) == 1 for s in counted.values())


def test_explore_without_train_top_imports_neither_optuna_nor_torch(tmp_path: Path) -> None:
    path = _family(tmp_path)
    code = (
        "import sys; from netspec.cli import main; "
        f"main(['explore', {str(path)!r}, '--json', {str(tmp_path / 'r.json')!r}]); "
        "import netspec.commands.explore_trials; "
        "assert 'optuna' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=HANG_S)


def test_scores_and_measurements_travel_through_json_and_merge(tmp_path: Path) -> None:
    from netspec.explore_merge import merge, to_json

    spec = load_spec_text(FAMILY, str(tmp_path / "tiny.ns"))
    exp = ex.explore(spec)
    by = {m.number: m for m in exp.members}
    by[1].score, by[2].score = math.nan, 3.5
    by[2].measured = {"accuracy": 0.75, "epochs": 2, "state": "complete", "latency_ms": 0.01}
    (tmp_path / "r.json").write_text(to_json(exp))
    back = {m.number: m for m in merge([tmp_path / "r.json"]).members}
    assert math.isnan(back[1].score) and back[2].score == 3.5 and back[3].score is None
    assert back[2].measured == by[2].measured and back[1].measured is None


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:///{tmp}/no/such/x.db", "no folder"),
        ("journal:{tmp}/no/such/study.log", "no folder"),
    ],
)
def test_a_storage_in_a_missing_folder_is_refused(tmp_path, capsys, storage, message) -> None:
    args = ["--train-top", "2", "--budget", "1m", "--storage", storage.format(tmp=tmp_path)]
    assert main(["explore", str(_family(tmp_path)), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_a_study_of_other_candidates_is_refused_and_left_as_it_was(tmp_path, capsys) -> None:
    from netspec.explore_study import check_storage, open_storage, open_study

    db = tmp_path / "s.db"
    url = check_storage(f"sqlite:///{db}", db)
    study = open_study(open_storage(url), "mine", [1, 2, 3], 2)
    before = [(t.number, t.state.name) for t in study.get_trials()]
    args = ["--train-top", "2", "--budget", "10m", *TRAIN, "--storage", url, "--study", "mine"]
    assert main(["explore", str(_family(tmp_path)), *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trains other members or epochs than this command" in err
    assert [(t.number, t.state.name) for t in _study(db).get_trials()] == before
