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


@pytest.mark.slow  # imports matplotlib (~2 s)
def test_names_in_plots_are_drawn_as_they_are() -> None:
    """`run_$x_1$` drew a subscript x1 (mathtext), and a run folder `_base` dropped out of the
    legend: `plain` keeps both as written (issue 25)."""
    from matplotlib.cbook import is_math_text
    from matplotlib.figure import Figure

    from netspec.units import plain

    assert is_math_text("run_$x_1$") and not is_math_text(plain("run_$x_1$"))
    assert plain("conv_1") == "conv_1"  # a lone underscore is drawn as it is
    ax = Figure().add_subplot()
    for name in ("_base", "wide_2"):
        ax.plot([0, 1], [0, 1], label=plain(name, legend=True))
    assert [t.get_text() for t in ax.legend().get_texts()] == [" _base", "wide_2"]
