"""How sizes and counts are written for a reader: `3.2M` params, a budget's `4MB` or `2MiB`;
and names in a plot, as they are (`plain`).

Kept apart from the table (`netspec.summary`) so the IR's budget messages and the table write
a limit the same way without the IR importing the table."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def _sig3(x: float) -> str:
    """x to three significant digits, a half rounded up (as JavaScript's `toPrecision`, so that
    the playground writes what the CLI writes), trailing zeros dropped: 1.125 -> 1.13, 140 -> 140."""
    d = Decimal(x)  # the float's exact value
    if not d:
        return "0"
    rounded = d.quantize(Decimal(1).scaleb(d.adjusted() - 2), rounding=ROUND_HALF_UP)
    return format(rounded.normalize(), "f")


def compact(n: float) -> str:
    """3211264 -> 3.21M, 140000000 -> 140M, 999999 -> 1M: three significant digits and a unit,
    the way the course's tables print sizes. netspec/serve/static/app.js has the same function
    (tests/test_serve_browser.py compares the two)."""
    for i, (div, suffix) in enumerate(UNITS):
        if abs(n) >= div:
            text = _sig3(n / div)
            if abs(float(text)) < 1000:
                return text + suffix
            if i == 0:  # past the largest unit
                return f"{round(n / div)}{suffix}"
            return _sig3(n / UNITS[i - 1][0]) + UNITS[i - 1][1]  # 999,999 rounds to 1M
    return f"{n:g}"


def limit_text(metric: str, limit: float) -> str:
    """A budget's limit in the spec's own units: `4M` params; `4MB` (4*10^6) or `2MiB` (2*2^20)
    memory, whichever divides the limit exactly."""
    if metric != "memory":
        return compact(limit)
    units: tuple[tuple[str, int], ...] = (("GB", 10**9), ("MB", 10**6), ("KB", 10**3))
    units += (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
    for unit, scale in units:
        if limit >= scale and float(limit).is_integer() and int(limit) % scale == 0:
            return f"{int(limit) // scale}{unit}"
    return f"{compact(limit)}B"


def plain(name: str, legend: bool = False) -> str:
    """A name (a run's folder, a class, a file) as matplotlib draws it letter for letter: `$`
    escaped, since two of them start mathtext (`run_$x_1$` drew a subscript x1); for a legend
    `legend=True`, a leading `_` kept off the start, where matplotlib drops the entry."""
    text = name.replace("$", r"\$")
    return " " + text if legend and text.startswith("_") else text
