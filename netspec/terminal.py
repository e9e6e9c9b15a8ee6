"""Tables fitted to the terminal (rich's): a table prints at its natural width when that fits;
else its descriptive columns (a reason, a description) are cut to one line with an ellipsis,
then the columns a reader can spare (a p90 beside a median) are dropped, in the order given,
and a note says which; a figure is never cut. `--wide` prints the whole table whatever the
terminal's width (`console(wide=True)`), and so does output to a file or a pipe.

The plain-text tables of `netspec.summary` (check, zoo) follow the same rule by themselves."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table

WIDE = 100_000  # a console this wide never wraps a table
NARROWEST = 12  # a cut descriptive column keeps at least this many characters


def console(wide: bool = False, **options: Any) -> Console:
    """The console a command prints its tables on: the terminal's width (a terminal, or
    `COLUMNS` set), else unbounded: written to a file or a pipe, a table prints whole, as
    `netspec check`'s does."""
    at_terminal = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(**options) if at_terminal and not wide else Console(width=WIDE, **options)


def natural_width(con: Console, renderable: Any) -> int:
    """Its natural width, unbounded by the console's."""
    return Measurement.get(con, con.options.update(width=WIDE), renderable).maximum


def print_whole(con: Console, table: Any) -> None:
    """Print a table uncut: into a pipe or a file (not a terminal, though `COLUMNS` may be
    set), widen the console to the table's natural width, so no figure is cut short."""
    if not con.is_terminal:
        con.width = max(con.width, natural_width(con, table))
    con.print(table)


def _column_width(con: Console, column: Column) -> int:
    cells = [column.header, *column.cells]
    return max((natural_width(con, c) for c in cells), default=0)


class Fitted(NamedTuple):
    """What `fit` did to a table: the columns it cut and those it dropped, by header."""

    cut: list[str]
    dropped: list[str]

    def note(self) -> str | None:
        """`cut to fit: reason; not shown: p90 (--wide prints the whole table)`, or None."""
        parts = [f"cut to fit: {', '.join(self.cut)}"] if self.cut else []
        parts += [f"not shown: {', '.join(self.dropped)}"] if self.dropped else []
        return f"{'; '.join(parts)} (--wide prints the whole table)" if parts else None


def fit(table: Table, con: Console, cut: Sequence[str] = (), drop: Sequence[str] = ()) -> Fitted:
    """Fit `table` to `con`'s width, in place.

    Args:
        cut: headers of descriptive columns, cut with an ellipsis (never wrapped) as needed,
            each down to `NARROWEST` characters before the next one is cut.
        drop: headers of columns to drop, first ones first, while the table is still too wide.
    """
    done = Fitted([], [])
    if con.width >= WIDE:
        return done
    for column in table.columns:
        if column.header in cut:
            column.no_wrap, column.overflow = True, "ellipsis"
    excess = natural_width(con, table) - con.width
    for header in cut:
        found = next((c for c in table.columns if c.header == header), None)
        if excess <= 0 or found is None:
            continue
        natural = _column_width(con, found)
        found.max_width = max(NARROWEST, natural - excess)
        if found.max_width < natural:
            done.cut.append(header)
        excess = natural_width(con, table) - con.width
    for header in drop:
        at = [i for i, column in enumerate(table.columns) if column.header == header]
        if excess <= 0 or not at:
            continue
        del table.columns[at[0]]
        done.dropped.append(header)
        excess = natural_width(con, table) - con.width
    return done


__all__ = ["WIDE", "Fitted", "console", "fit", "natural_width"]
