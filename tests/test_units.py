"""How counts are written (`netspec.units.compact`): three significant digits and a unit, the
same in the CLI, the diagram and the playground (tests/test_serve_browser.py compares them)."""

from __future__ import annotations

import pytest

from netspec.units import compact


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (10_000, "10K"),  # the playground wrote 1K
        (140_000_000, "140M"),  # and 14M (issue 25)
        (3_211_264, "3.21M"),
        (1_125_000, "1.13M"),  # a half rounds up, as JavaScript's toPrecision
        (999_999, "1M"),  # rounds up to the next unit, never "1e+03K"
        (48_096_000_000, "48.1G"),
        (-1_500, "-1.5K"),
    ],
)
def test_compact(n: float, text: str) -> None:
    assert compact(n) == text
