"""netspec.io: atomic outputs, stale temporaries, booleans and sizes."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from helpers.skips import skip_unless_ci

from netspec import io
from netspec.errors import NetspecError


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    io.atomic_write(target, "new contents")
    assert target.read_text() == "new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_written_files_get_a_normal_mode(tmp_path):
    old = os.umask(0o022)
    try:
        io.atomic_write(tmp_path / "a.csv", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == 0o644


def test_a_missing_folder_or_a_folder_as_target_is_a_clear_error(tmp_path):
    with pytest.raises(NetspecError, match="does not exist"):
        io.atomic_write(tmp_path / "nope" / "x.onnx", b"x")
    with pytest.raises(NetspecError, match="it is a folder"):
        io.atomic_write(tmp_path, b"x")


NOBODY = 65534  # the uid and gid of `nobody`: a user who owns nothing here


def _refusal(folder: Path) -> str:
    """The message of atomic_write's refusal to write into `folder` ("" when it wrote)."""
    try:
        io.atomic_write(folder / "x.onnx", b"x")
    except NetspecError as err:
        return err.message
    return ""


def _as_nobody(folder: Path) -> str:
    """`_refusal(folder)` in a forked child that dropped root's privileges for nobody's (CI may
    run as root, who can write anywhere: the check must still run there)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through the pipe and exits, never returning to pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = _refusal(folder)
        except BaseException as err:  # any failure reaches the parent's assertion as text
            result = f"the child failed: {type(err).__name__}: {err}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


def test_an_unwritable_folder_is_a_clear_error_even_for_root():
    # Not under tmp_path: its parents are private to the user running pytest, and nobody must
    # reach the folder to find it unwritable (rather than missing).
    top = Path(tempfile.mkdtemp(prefix="netspec-ro-"))
    try:
        top.chmod(0o755)
        ro = top / "ro"
        ro.mkdir(mode=0o555)
        if os.geteuid() == 0:
            message = _as_nobody(ro)
            assert not (ro / "x.onnx").exists(), "nobody wrote into a read-only folder"
        elif os.access(ro, os.W_OK):
            skip_unless_ci("this user can write into a read-only folder")
        else:
            message = _refusal(ro)
        assert message == f"cannot write {ro / 'x.onnx'}: the folder {ro} is not writable"
    finally:
        (top / "ro").chmod(0o700)
        shutil.rmtree(top)


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path):
    stale = tmp_path / f".model.onnx.abc{io.TEMP_SUFFIX}"
    fresh = tmp_path / f".model.onnx.def{io.TEMP_SUFFIX}"
    other = tmp_path / ".someone-elses.tmp"
    for f in (stale, fresh, other):
        f.write_bytes(b"x" * 10)
    hour_ago = stale.stat().st_mtime - 2 * io.STALE_AFTER_S
    os.utime(stale, (hour_ago, hour_ago))
    io.atomic_write(tmp_path / "model.onnx", b"new")
    assert not stale.exists()
    assert fresh.exists() and other.exists()


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("on", True),
        ("OFF", False),
        ("yes", True),
        ("no", False),
        ("true", True),
        ("0", False),
        ("maybe", None),
    ],
)
def test_one_table_of_boolean_words(word, value):
    assert io.parse_bool(word) is value


def test_sizes_are_binary_units():
    assert io.fmt_bytes(512) == "512 B"
    assert io.fmt_bytes(1536) == "1.5 KiB"
    assert io.fmt_bytes(58 * 2**20) == "58.0 MiB"
    assert io.fmt_bytes(3 * 2**30) == "3.0 GiB"
    assert io.fmt_count(15237608) == "15,237,608"
