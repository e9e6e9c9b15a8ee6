"""The CLI run inside the test process: the same `netspec.cli.main` a shell runs, without a new
interpreter importing torch for every call (about 2 s of CPU each). Tests that need a real
process (a kill, a hang guard, a torchrun launch) keep `subprocess`."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Done:
    """What a CLI call left: its exit status and what it printed (like `CompletedProcess`)."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_cli(*args: str, cwd: Path | None = None) -> Done:
    """`netspec ARGS...` in this process, in `cwd`, with tables 200 columns wide.

    An exception that escapes `main` (a bug, where a user would see a traceback) fails the
    calling test with that exception."""
    from netspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.chdir(cwd or Path.cwd()),
        _environment({"COLUMNS": "200"}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return Done(code, out.getvalue(), err.getvalue())
