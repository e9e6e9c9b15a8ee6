"""`netspec runs` and the test set end to end: runs compared side by side, bad folders refused.

Folders made by hand check the reader and the refusals in milliseconds; one slow test trains
two short runs with a test set through the CLI and compares them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.errors import NetspecError
from netspec.train.runs import compare, render

SPEC = """network tiny "a tiny CNN"
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> RELU -> POOL -> FC(8) -> RELU -> FC(4) -> SOFTMAX
"""


def _fake_run(folder: Path, lr: float, acc: float, data: str = "synthetic") -> Path:
    folder.mkdir(parents=True)
    (folder / "spec.ns").write_text(SPEC)
    settings = {"data": data, "lr": lr, "epochs": 2, "seed": 0}
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "network": "tiny",
                "bindings": {},
                "settings": settings,
                "data": {"classes": ["0", "1"]},
            }
        )
    )
    best = {"loss": 1.0 - acc, "acc": acc}
    (folder / "result.json").write_text(
        json.dumps(
            {
                "epochs_run": 2,
                "best_val": best,
                "test": {"loss": 0.5, "acc": acc - 0.01, "examples": 9.0},
            }
        )
    )
    (folder / "metrics.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n1,1,0.5,1,0.5,0.1,1.5\n2,1,0.5,0.9,0.6,0.1,2.0\n"
    )
    return folder


def test_settings_that_differ_and_the_metrics(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path / "a", 0.1, 0.8), _fake_run(tmp_path / "b", 0.01, 0.9)]
    comparison = compare(runs)
    assert comparison.differing == ["lr"] and comparison.notices == []
    rows = comparison.rows()
    assert [r["lr"] for r in rows] == [0.1, 0.01]
    assert rows[1]["val_acc"] == 0.9 and rows[1]["test_acc"] == pytest.approx(0.89)
    assert rows[0]["params"] > 0 and rows[0]["macs"] > 0 and rows[0]["time"] == "3.5s"
    table = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    assert [r["run"] for r in table] == ["a", "b"] and "epochs" not in table[0]  # same in both
    assert json.loads(render(comparison, "json"))["differing"] == ["lr"]
    assert render(comparison, "markdown").startswith("| run | network |")


def test_other_data_is_a_notice(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path / "a", 0.1, 0.8), _fake_run(tmp_path / "b", 0.1, 0.9, "digits")]
    notices = compare(runs).notices
    assert len(notices) == 1 and "other data (digits)" in notices[0]


def test_folders_that_are_not_runs_are_named_and_nothing_written(tmp_path: Path) -> None:
    good = _fake_run(tmp_path / "good", 0.1, 0.8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NetspecError, match="2 of the folders are not runs") as info:
        compare([good, empty, tmp_path / "missing"])
    assert any("has no settings.json" in n for n in info.value.notes)
    assert any("does not exist" in n for n in info.value.notes)
    plot = tmp_path / "curves.png"
    assert main(["runs", str(good), str(empty), "--plot", str(plot)]) == 2
    assert not plot.exists()
    (good / "result.json").write_text("[1")
    with pytest.raises(NetspecError, match="result.json is damaged"):
        compare([good])


@pytest.mark.slow
def test_test_set_runs_and_eval_split_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    templates = rng.random((4, 8, 8), dtype=np.float32)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 4
        return 0.5 * templates[y] + 0.5 * rng.random((n, 8, 8), dtype=np.float32), y

    (x, y), (xt, yt) = part(64), part(20)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    spec = tmp_path / "tiny.ns"
    spec.write_text(SPEC)
    runs = []
    for lr in ("0.01", "0.003"):
        out = tmp_path / f"lr{lr}"
        args = ["--data", f"npz:{tmp_path / 'd.npz'}", "--epochs", "2", "--lr", lr, "-q"]
        assert main(["train", str(spec), *args, "--out", str(out), "--threads", "1"]) == 0
        result = json.loads((out / "result.json").read_text())
        assert result["test"]["examples"] == 20 and 0 <= result["test"]["acc"] <= 1
        runs.append(out)
    capsys.readouterr()
    assert main(["eval", "--weights", str(runs[0]), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "(test)" in printed and "/20)" in printed  # the 20 test examples, not the split
    plot = tmp_path / "cmp.png"
    assert main(["runs", *map(str, runs), "--format", "csv", "--plot", str(plot)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["lr"] for r in rows] == ["0.01", "0.003"] and rows[0]["test_acc"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
