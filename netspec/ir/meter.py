"""The work meter of one build: the totals summed as nodes are made, the work metered against
netspec's cap (see netspec.ir.limits), the repetitions being expanded and the chains open. Every
stage of a build writes to the one `Meter` the build makes; nothing else of the build's state
lives here."""

from __future__ import annotations

import itertools
from typing import Any, NoReturn

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.estimate import SATURATED, enter
from netspec.ir.limits import MAX_WORK, WORK_NEW

BUILDS = itertools.count(1)  # each build's serial number (see Meter.fresh)

LIMITS_HINT = (
    "a network this large is almost certainly a typo in a count; netspec bounds its work "
    "before doing it (see `Limits` in the README)"
)


class OverCap(NetspecError):
    """The network passes a cap on the build's work: it depends on everything expanded before,
    so a design-space build never keeps it as the error of one element."""


class Meter:
    """One build's running totals and work.

    `sums`: params, buffers, macs, ops, memory (the totals), then the work metered: nodes and
    other steps. `fresh` counts the distinct layers (nodes whose layer and input shapes no
    earlier node had): the figures cache marks its entries with `serial`, the number of the
    build that last used them. `open_repetitions`: the repetitions being expanded, outermost
    first; `depth`: the chains open."""

    __slots__ = ("sums", "fresh", "serial", "open_repetitions", "depth")

    def __init__(self) -> None:
        self.sums = [0, 0, 0, 0, 0, 0, 0]
        self.fresh = 0
        self.serial = next(BUILDS)
        self.open_repetitions: list[ast.Element] = []
        self.depth = 0

    @property
    def work(self) -> int:
        """The units of work done so far (see MAX_WORK)."""
        return self.sums[5] + self.sums[6] + WORK_NEW * self.fresh

    def enter(self, span: Any) -> None:
        """One more chain nested in the ones being expanded (`leave` closes it)."""
        self.depth = enter(self.depth, span)

    def leave(self) -> None:
        self.depth -= 1

    def add_step(self, span: Any) -> None:
        """A step of work that is not a node: a block call, a branch, a time round a loop that
        reads its index."""
        self.sums[6] += 1
        if self.work > MAX_WORK:
            self.over_work(span)

    def refuse_over(self, size: int, span: Any, what: str, built: int | None = None) -> None:
        """Refuse `what`, estimated at `size` units, when it would take the work over the cap
        (from `built` units, the work done so far when not given)."""
        if built is None:
            built = self.work
        if built + size > MAX_WORK:
            raise OverCap(
                f"{what} expands to {_at_least(size)} "
                f"{'node or step' if size == 1 else 'nodes and steps'}: the network would "
                f"take {_at_least(built + size)} units of work, over netspec's limit of "
                f"{MAX_WORK:,}",
                span,
                hint=LIMITS_HINT,
            )

    def over_work(self, span: Any) -> NoReturn:
        """The work metered so far passed the cap: refused at the outermost repetition being
        expanded (the count to look at), else where the work was."""
        sums = self.sums
        rep = self.open_repetitions[0] if self.open_repetitions else None
        raise OverCap(
            f"{'this repetition takes' if rep is not None else 'here'} the network "
            f"{'' if rep is not None else 'goes '}over netspec's limit of {MAX_WORK:,} units of "
            f"work: {sums[5]:,} nodes, {sums[6]:,} other steps (block calls, branches, times "
            f"round a loop reading its index) and {self.fresh:,} distinct layers (1 unit each; "
            f"a distinct layer {WORK_NEW} more)",
            rep.repeat.span if rep is not None and rep.repeat is not None else span,
            hint=LIMITS_HINT,
        )


def _at_least(n: int) -> str:
    return f"over {SATURATED:,}" if n >= SATURATED else f"{n:,}"
