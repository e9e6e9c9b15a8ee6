"""The error gallery: every kind of bad input gives file:line:col, the source line with the
span underlined and a hint, exit status 2, and no traceback.

Each `tests/errors/NAME.ns` has its rendered message in `NAME.out` (a snapshot). After a
deliberate change to a message, regenerate with NETSPEC_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cpu import HANG_S, cpu_limit

from netspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
GALLERY = sorted((ROOT / "tests" / "errors").glob("*.ns"))
UPDATE = os.environ.get("NETSPEC_UPDATE_GOLDEN") == "1"


def run_check(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["check", "--brief", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # messages name files relative to the repo root


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.stem)
def test_gallery_message(path: Path, capsys) -> None:
    rel = path.relative_to(ROOT).as_posix()
    code, _, err = run_check(capsys, rel)
    assert code == 2
    assert "Traceback" not in err
    golden = path.with_suffix(".out")
    if UPDATE:
        golden.write_text(err)
    assert golden.exists(), f"{golden} is missing: write it with NETSPEC_UPDATE_GOLDEN=1, review it"
    assert err == golden.read_text()


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.stem)
def test_gallery_points_at_the_spec(path: Path, capsys) -> None:
    """Every message but the whole-file ones carries file:line:col and an underline."""
    rel = path.relative_to(ROOT).as_posix()
    _, _, err = run_check(capsys, rel)
    first = err.splitlines()[0]
    if path.stem == "binary":
        assert first.startswith("error: ") and "binary" in first
        return
    assert first.startswith(f"{rel}:"), first
    line, col = first[len(rel) + 1 :].split(":")[:2]
    assert int(line) >= 1 and int(col) >= 1
    if path.stem != "empty":
        assert any(set(row.split("| ", 1)[-1].strip()) == {"^"} for row in err.splitlines())


def test_missing_file(capsys) -> None:
    code, _, err = run_check(capsys, "specs/no_such_spec.ns")
    assert code == 2
    assert "no such file: specs/no_such_spec.ns" in err


def test_unknown_binding_suggests(capsys) -> None:
    code, _, err = run_check(capsys, "specs/mnist_cnn.ns", "--set", "classe=3")
    assert code == 2
    assert "no parameter `classe`" in err


def test_huge_repetition_is_refused_fast(capsys) -> None:
    with cpu_limit(0.5):
        code, _, err = run_check(capsys, "tests/errors/repetition_cap.ns")
    assert code == 2
    assert "1,000,000,000" in err


def test_nested_huge_repetition_is_refused_before_expanding(tmp_path, capsys) -> None:
    spec = tmp_path / "nested.ns"
    spec.write_text(
        "input [3, 32, 32]\nclasses 10\nINPUT -> [[[RELU]*1000]*1000]*1000 -> GAP -> FC(10) -> SOFTMAX\n"
    )
    with cpu_limit(0.5):
        code, _, err = run_check(capsys, str(spec))
    assert code == 2
    assert "over netspec's limit" in err


def test_errors_are_collected_together(tmp_path, capsys) -> None:
    """A failed shape assertion does not hide a failed budget: both are reported."""
    spec = tmp_path / "two.ns"
    spec.write_text(
        "input [1, 28, 28]\nclasses 10\nbudget params <= 100\n"
        "INPUT -> CONV(16, padding=valid) : [16, 28, 28] -> FC(10) -> SOFTMAX\n"
    )
    code, _, err = run_check(capsys, str(spec))
    assert code == 2
    assert "shape assertion failed" in err and "budget exceeded" in err and "2 errors" in err


def test_cli_subprocess_has_no_traceback() -> None:
    """The installed entry point, as a user runs it: status 2 and a clean message."""
    proc = subprocess.run(
        [sys.executable, "-m", "netspec", "check", "tests/errors/unknown_layer.ns"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "tests/errors/unknown_layer.ns:3:10: error: unknown layer `CONVV`" in proc.stderr
