"""Skips for what this machine lacks, which CI must never take.

A test that cannot run here (no Graphviz, a user who can write anywhere) skips on a developer's
machine, saying why. CI sets NETSPEC_CI=1, and there the same test fails instead: a skip there
would hide the very failure the test exists for. (The browser test has its own flag,
NETSPEC_REQUIRE_BROWSER=1, which CI sets as well.)
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("NETSPEC_CI") == "1"

# Without `dot` and outside CI, skip; in CI the test runs, and fails without `dot`.
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None and not IN_CI,
    reason="Graphviz's `dot` is not installed (apt-get install graphviz)",
)


def skip_unless_ci(reason: str) -> None:
    """Skip, saying why; under NETSPEC_CI=1, fail instead."""
    if IN_CI:
        pytest.fail(f"{reason} (NETSPEC_CI=1: CI must not skip this test)")
    pytest.skip(reason)
