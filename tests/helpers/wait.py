"""Waiting for a thread or a server: a hang guard, never a speed check.

The one place the tests read the wall clock (tests/test_suite_rules.py allows it here only):
`until` stops a test that would otherwise wait forever, after HANG_S, long enough that a
loaded machine never trips it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from helpers.cpu import HANG_S


def until(condition: Callable[[], object], what: str, limit: float = HANG_S) -> None:
    """Poll `condition` every 20 ms until it holds; fail naming `what` after `limit` s."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
