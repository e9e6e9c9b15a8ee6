"""The running counter of block calls: `cnblock.index` is a call's position among all calls of
block `cnblock` over the whole network (0, 1, ... in the order the build expands them: the main
chain, then the side heads), `cnblock.count` is how many there are (ConvNeXt's and
EfficientNet's stochastic depth, `DROPPATH(0.1 * cnblock.index / (cnblock.count - 1))`).

The total is needed before the first call is expanded, so it is counted first by a walk over
the text that evaluates repetition counts, conditions and block arguments but no shapes. The
build then counts the calls it really makes; where the two differ (a condition that reads
`in.c`), `Spec.instantiate` builds once more with the real totals (`Recount`). A build that
makes more calls than the walk counted stops at the first one too many; the calls are then
counted by a light build in which every total is `UNCOUNTED` (an index over it is a fraction
near 0, valid wherever a rate is), and the spec is built with those."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.estimate import call_env, names_of, switched_on
from netspec.ir.expr import eval_int
from netspec.ir.limits import MAX_DEPTH, MAX_WORK

if TYPE_CHECKING:
    from netspec.ir.spec import ParsedSpec

UNCOUNTED = 10**9  # the totals of a counting build (more calls than any build makes)
_MAX_STEPS = 4 * MAX_WORK  # elements visited by one count (past it, the build corrects it)

Counts = dict[str, int]


class Recount(Exception):  # noqa: N818 (a signal to build again, not an error for the user)
    """The build made another number of calls of a counted block than the walk counted."""

    def __init__(self, counts: Counts | None, changed: str) -> None:
        super().__init__(counts)
        self.counts = counts  # the calls the build made, by block (None: it stopped early)
        self.changed = changed  # a block whose calls differ from its total used


class _Exhausted(Exception):  # noqa: N818
    pass


class CallCounter:
    """Counts the calls of the blocks in `targets` that a chain makes, without building it."""

    def __init__(self, spec: ParsedSpec, globals: Mapping[str, Any], targets: set[str]) -> None:
        self.spec = spec
        self.globals = globals
        self.targets = targets
        self.memo: dict[tuple, Counts] = {}
        self.steps = 0
        self.depth = 0

    def network(self) -> Counts:
        """The calls of the whole network: the main chain, then the side heads (a best guess
        when the walk gives up: the build counts again)."""
        total: Counts = {}
        chains = [self.spec.chain] + [h.chain for h in self.spec.heads]
        with contextlib.suppress(_Exhausted):
            for ch in chains:
                if ch is not None:
                    _add(total, self.chain(ch, self.globals))
        return total

    def chain(self, ch: ast.Chain, env: Mapping[str, Any]) -> Counts:
        total: Counts = {}
        self.depth += 1
        try:
            if self.depth <= MAX_DEPTH:
                for el in ch.elements:
                    _add(total, self.element(el, env))
            return total
        finally:
            self.depth -= 1

    def element(self, el: ast.Element, env: Mapping[str, Any]) -> Counts:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Exhausted
        if el.optional and switched_on(el, env) is False:
            return {}
        if el.repeat is None:
            return self.primary(el.primary, env)
        try:
            count = eval_int(el.repeat, env, "count")
        except NetspecError:
            count = 1
        var = el.index_var
        if var and var in names_of(self.spec.primary_names, el.primary):
            total: Counts = {}
            for i in range(count):
                _add(total, self.primary(el.primary, {**env, var: i}))
            return total
        return {k: v * count for k, v in self.primary(el.primary, env).items()}

    def primary(self, p: ast.Primary, env: Mapping[str, Any]) -> Counts:
        if isinstance(p, ast.Call):
            block = self.spec.blocks.get(p.name)
            return {} if block is None else self.block(block, p, env)
        if isinstance(p, ast.Group):
            return self.chain(p.chain, env)
        total: Counts = {}
        for ch in p.chains:
            _add(total, self.chain(ch, env))
        return total

    def block(self, block: ast.BlockDef, call: ast.Call, env: Mapping[str, Any]) -> Counts:
        _, body_env = call_env(block, call, env, self.globals)
        params = [q.name for q in block.params]
        key: tuple | None = (block.name, *(body_env.get(q) for q in params))
        try:
            hit = self.memo.get(key)  # type: ignore[arg-type]
        except TypeError:  # an argument value that does not hash
            key, hit = None, None
        if hit is None:
            hit = self.chain(block.body, body_env)
            if block.name in self.targets:
                hit = {**hit, block.name: hit.get(block.name, 0) + 1}
            if key is not None:
                self.memo[key] = hit
        return hit


def count_calls(spec: ParsedSpec, env: Mapping[str, Any]) -> Counts:
    """The calls of each block whose total the spec reads (`name.count`), as the text tells."""
    targets = set(spec.count_spans)
    counts = CallCounter(spec, env, targets).network()
    return {name: counts.get(name, 0) for name in targets}


def _add(total: Counts, more: Counts) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v
