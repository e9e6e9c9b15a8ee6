"""The size estimate: the nodes and steps a chain, element or block call expands to, computed
without expanding it, so the build refuses a network over the cap on work before doing the
work (see netspec.ir.limits). Linear in the text: a block's size is kept per argument values,
and a loop whose body reads its index is estimated at its ends only."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.expr import eval_int, evaluate, free_names
from netspec.ir.limits import MAX_DEPTH, MAX_NAME, MAX_WORK
from netspec.ir.naming import switch_name

SATURATED = 10**18  # estimates stop counting here
_MAX_STEPS = 4 * MAX_WORK  # elements visited by one estimate (linear in the text)


class SizeEstimate:
    """One build's estimator. Inputs: the spec's blocks, the global names a block body reads,
    and the spec's cache of the names each primary reads (shared by a family's members). It
    keeps the sizes of the block calls it has estimated."""

    def __init__(
        self,
        blocks: Mapping[str, ast.BlockDef],
        globals: Mapping[str, Any],
        primary_names: dict[int, set[str]],
    ) -> None:
        self.blocks = blocks
        self.globals = globals
        self.primary_names = primary_names
        self.estimates: dict[tuple, int] = {}  # a block's size by its argument values
        self.estimating: list[str] = []  # blocks being estimated, outermost first
        self.indexed = 0  # loops with an index the body reads, open in the estimate
        self.steps = 0  # elements visited by this estimate
        self.depth = 0  # chains open, in the build and in this estimate

    def of_element(
        self, el: ast.Element, env: Mapping[str, Any], depth: int, count: int | None = None
    ) -> int:
        """An element's size, estimated inside `depth` chains being expanded."""
        self.steps, self.depth = 0, depth
        return self.element(el, env, count)

    def of_chain(self, ch: ast.Chain, env: Mapping[str, Any], depth: int) -> int:
        """A chain's size, estimated inside `depth` chains being expanded."""
        self.steps, self.depth = 0, depth
        return self.chain(ch, env)

    def chain(self, ch: ast.Chain, env: Mapping[str, Any]) -> int:
        """The nodes and steps a chain expands to (saturating at `SATURATED`)."""
        self.depth = enter(self.depth, ch.span)
        try:
            total = 0
            for el in ch.elements:
                total += self.element(el, env)
                if total > SATURATED:
                    return SATURATED
            return total
        finally:
            self.depth -= 1

    def element(self, el: ast.Element, env: Mapping[str, Any], count: int | None = None) -> int:
        """The nodes and steps an element expands to; `count` is its repetition's, when the
        caller evaluated it already."""
        self._step(el)
        if el.optional:
            on = switched_on(el, env)
            if on is False:
                return 0
            if on is None:  # a condition the estimate cannot evaluate (`?(in.h > 8)`)
                try:
                    return self._sized(el, env, count)
                except TooDeep:
                    # A recursion its condition may end: the build meters it as it goes.
                    return 1
        return self._sized(el, env, count)

    def _sized(self, el: ast.Element, env: Mapping[str, Any], count: int | None) -> int:
        p = el.primary
        if el.repeat is None:
            return self._primary(p, env)
        if count is None:
            try:
                count = eval_int(
                    el.repeat, {**env, **({el.index_var: 0} if el.index_var else {})}, "count"
                )
            except NetspecError:
                count = 1
        if count <= 0:
            return 0
        if el.index_var and el.index_var in names_of(self.primary_names, p):
            # The body depends on the index: its size at both ends of the loop (sizes that
            # grow or shrink with the index are bounded by one of them); loops nested deeper
            # take the last end only, so the estimate stays linear in the text.
            self.indexed += 1
            try:
                last = self._primary(p, {**env, el.index_var: count - 1})
                first = self._primary(p, {**env, el.index_var: 0}) if self.indexed <= 3 else 0
            finally:
                self.indexed -= 1
            per = max(first, last) + 1  # and the step of evaluating it afresh
        else:
            per = self._primary(p, env)
        return min(count * per, SATURATED)

    def _primary(self, p: ast.Primary, env: Mapping[str, Any]) -> int:
        if isinstance(p, ast.Call):
            block = self.blocks.get(p.name)
            if block is None:
                return 1
            return self._block(block, p, env)
        if isinstance(p, ast.Group):
            return self.chain(p.chain, env)
        # A residual: the add, and a projection conv + BN; a branch: a scope each, and the join.
        extra = 3 if p.op == "residual" else 1 + len(p.chains)
        return min(extra + sum(self.chain(c, env) for c in p.chains), SATURATED)

    def _block(self, block: ast.BlockDef, call: ast.Call, env: Mapping[str, Any]) -> int:
        bound, body_env = call_env(block, call, env, self.globals)
        key: tuple | None = (block.name, *sorted(bound.items(), key=lambda kv: kv[0]))
        try:
            hit = self.estimates.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable argument value
            key, hit = None, None
        if hit is not None:
            return hit
        recursive = block.name in self.estimating
        self.estimating.append(block.name)
        try:
            size = min(1 + self.chain(block.body, body_env), SATURATED)  # + its scope
        except TooDeep as e:
            if recursive and not isinstance(e, TooDeepRecursion):
                raise recursion_error(block, call) from None
            raise
        finally:
            self.estimating.pop()
        if key is not None:
            self.estimates[key] = size
        return size

    def _step(self, el: ast.Element) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise NetspecError(
                "this spec nests its loops and blocks too deeply to bound its size",
                el.span,
                hint="netspec bounds the expansion before doing it; "
                "use fewer nested loops whose bodies depend on their index",
            )


def call_env(
    block: ast.BlockDef, call: ast.Call, env: Mapping[str, Any], globals: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A block call's arguments as far as they evaluate before the build (no `in.c` yet), and
    the names its body sees: (the arguments given, the body's names). An argument that does not
    evaluate is left out: the build reports it."""
    bound: dict[str, Any] = {}
    params = [q.name for q in block.params]
    positional = [a for a in call.args if a.name is None]
    named = [(a.name, a) for a in call.args if a.name is not None]
    for name, arg in [*zip(params, positional, strict=False), *named]:
        with contextlib.suppress(NetspecError):
            bound[name] = evaluate(arg.value, env, symbols=True)
    body_env = dict(globals)
    for q in block.params:
        if q.name in bound:
            body_env[q.name] = bound[q.name]
        elif q.default is not None:
            with contextlib.suppress(NetspecError):
                body_env[q.name] = evaluate(q.default, body_env, symbols=True)
    return bound, body_env


class TooDeep(NetspecError):
    """Chains nested past MAX_DEPTH (brackets, branches, blocks calling blocks)."""


class TooDeepRecursion(TooDeep):
    """A block calling itself past MAX_DEPTH: no base case reached."""


def recursion_error(block: ast.BlockDef, call: ast.Call, names: bool = False) -> TooDeepRecursion:
    """A recursive block that never reaches its base case (or not within MAX_DEPTH levels, or
    before its layers' dotted names pass MAX_NAME characters: `names`)."""
    how = (
        f"until its layers' dotted names pass netspec's limit of {MAX_NAME} characters"
        if names
        else f"deeper than netspec expands ({MAX_DEPTH} blocks and brackets nested)"
    )
    return TooDeepRecursion(
        f"block `{block.name}` calls itself {how}: its recursion does not reach its base "
        "case by then",
        call.span,
        hint=f"end the recursion with a condition on the call, e.g. "
        f"`{block.name}(..., depth - 1)?(depth > 0)`, and pass it an argument that counts down",
    )


def switched_on(el: ast.Element, env: Mapping[str, Any]) -> bool | None:
    """Whether an optional element is on, as far as the names known tell: None when its
    condition or switch cannot be evaluated yet."""
    if el.condition is None:
        value = env.get(switch_name(el) or "")
        return value if isinstance(value, bool) else None
    try:
        value = evaluate(el.condition, env)
    except NetspecError:
        return None
    return value if isinstance(value, bool) else None


def enter(depth: int, span: Any) -> int:
    """One more chain nested in `depth` ones being expanded (or estimated): the new depth, or
    an error past MAX_DEPTH."""
    if depth >= MAX_DEPTH:
        raise TooDeep(
            f"blocks and brackets nest more than {MAX_DEPTH} deep here",
            span,
            hint="a block calling a block calling a block... or brackets in brackets: "
            f"netspec expands at most {MAX_DEPTH} levels",
        )
    return depth + 1


def names_of(cache: dict[int, set[str]], p: ast.Primary) -> set[str]:
    """The names a primary reads (kept by the primary's id in `cache`)."""
    names = cache.get(id(p))
    if names is None:
        names = cache[id(p)] = free_names(p)
    return names
