"""`netspec explore --shard K/N --json` and `netspec explore merge`: shards join to the front
of the unsharded run; mismatched, repeated and missing shards are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec import explore as ex
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.explore_merge import merge, to_json
from netspec.ir.build import load_spec

FAMILY = Path(__file__).resolve().parents[1] / "specs" / "cs231n_family.ns"


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


def _front(exp: ex.Exploration) -> list[tuple[int, int, int, int]]:
    return sorted((m.number, m.params, m.macs, m.memory) for m in exp.front)


def _shards(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for k in range(1, n + 1):
        exp = ex.explore(load_spec(FAMILY), shard=(k, n))
        p = tmp_path / f"s{k}.json"
        p.write_text(to_json(exp))
        paths.append(p)
    return paths


@pytest.mark.parametrize("n", [2, 3])
def test_shards_merge_to_the_unsharded_front(tmp_path: Path, n: int) -> None:
    whole = ex.explore(load_spec(FAMILY))
    paths = _shards(tmp_path, n)
    parts = [json.loads(p.read_text())["members"] for p in paths]
    numbers = [{m["number"] for m in part} for part in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(numbers) for b in numbers[i + 1 :])
    assert set().union(*numbers) == {m.number for m in whole.members}
    assert all((x - 1) % n == k for k, part in enumerate(numbers) for x in part)
    joined = merge(paths[::-1])  # order of the files does not matter
    assert _front(joined) == _front(whole)
    assert [(m.number, m.valid, m.over) for m in joined.members] == [
        (m.number, m.valid, m.over) for m in whole.members
    ]
    assert [(g.message, g.count) for g in joined.failures] == [
        (g.message, g.count) for g in whole.failures
    ]
    # a shard's own front is not the whole front: merging is what makes it one
    assert _front(ex.explore(load_spec(FAMILY), shard=(1, n))) != _front(whole)


def test_cli_shard_json_and_merge(tmp_path: Path, capsys) -> None:
    for k in (1, 2):
        out = tmp_path / f"{k}.json"
        assert main(["explore", str(FAMILY), "--shard", f"{k}/2", "--json", str(out)]) == 0
    capsys.readouterr()
    assert main(["explore", "merge", str(tmp_path / "1.json"), str(tmp_path / "2.json")]) == 0
    merged = capsys.readouterr().out
    assert main(["explore", str(FAMILY)]) == 0
    whole = capsys.readouterr().out
    # the same report but the first line's timing
    assert merged.splitlines()[2:] == whole.splitlines()[2:]
    assert "324 members" in merged


def test_merge_refusals(tmp_path: Path) -> None:
    a, b = _shards(tmp_path, 2)
    with pytest.raises(NetspecError, match="2/2 missing"):
        merge([a])
    with pytest.raises(NetspecError, match="given twice"):
        merge([a, a, b])
    other = tmp_path / "other.json"
    doc = json.loads(b.read_text())
    doc["spec_sha256"] = "0" * 64
    other.write_text(json.dumps(doc))
    with pytest.raises(NetspecError, match="explore different things"):
        merge([a, other])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(NetspecError, match="not an explore result"):
        merge([a, tmp_path / "bad.json"])
    (tmp_path / "part.json").write_text('{"format": "netspec-explore/1", "shard": [2, 2]}')
    with pytest.raises(NetspecError, match="incomplete explore result: no spec_path"):
        merge([a, tmp_path / "part.json"])
    (tmp_path / "one").mkdir()
    (c,) = _shards(tmp_path / "one", 1)
    with pytest.raises(NetspecError, match="split the space differently"):
        merge([a, b, c])


@pytest.mark.parametrize("text", ["3/2", "0/2", "1", "a/b", "1/0"])
def test_bad_shards(text: str, capsys) -> None:
    assert main(["explore", str(FAMILY), "--shard", text]) == 2
    err = capsys.readouterr().err
    assert "shard" in err and "Traceback" not in err


def test_a_shard_with_no_member(tmp_path: Path) -> None:
    spec = tmp_path / "two.ns"
    spec.write_text(
        "input [1, 8, 8]\nclasses 10\nN in 1..2\nINPUT -> [CONV(4) -> RELU]*N -> FC(10) -> SOFTMAX\n"
    )
    exp = ex.explore(load_spec(spec), shard=(3, 3))
    assert exp.members == [] and exp.front == []
    parts = []
    for k in (1, 2, 3):
        p = tmp_path / f"{k}.json"
        p.write_text(to_json(ex.explore(load_spec(spec), shard=(k, 3))))
        parts.append(p)
    assert [m.number for m in merge(parts).front] == [1]
