"""How sizes and counts are written for a reader: `3.2M` params, a budget's `4MB` or `2MiB`.

Kept apart from the table (`netspec.summary`) so the IR's budget messages and the table write
a limit the same way without the IR importing the table."""

from __future__ import annotations


def compact(n: float) -> str:
    """3211264 -> 3.2M, the way the course's tables print sizes."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
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
