"""The fast path of `netspec explore`: members evaluated from what other members built.

A light build (`Spec.instantiate(light=True)`) keeps each element's whole effect (output
shape, figures, soft errors, distinct layers) by its input shape and the values of the names
it reads (`Spec.element_cache`), and each time round a repetition the same way, so that the
member with `M` stages replays the `M - 1` a smaller member built. This module shares the
rest of a member's work with the members that read the same values so far, in a tree of chain
states (netspec.explore_tree): a root per values of the header's names (the header and input
of a real build), then a level per main-chain element. Most members are a lookup per level
and a leaf that holds their totals and budget checks.

A state not in the tree yet is made from the element's cached effect; where none is cached,
a builder of the root's expands that one element from the state (`_expand`): its sums and
distinct layers (`Builder.carry_on`, which the caps on work read) and the last nodes made
before it (which a softmax and the final classifier check). The size estimates are the
build's (`bound_main`, shared in `Spec.size_cache`). A member that a shared piece would
decide differently (over the work limit, an output that is not the classes, a budget limit
that is wrong) takes a whole light build. Either way the result is exactly what the light build returns, member by
member (tests/test_explore_fast.py compares both on the zoo's families and 1,200 fuzzed ones).
A spec whose light build keeps state beyond these pieces (side heads, layers referring to
other layers, block counters, per-pixel outputs, token inputs, `classes` bound as a
parameter) always takes the plain path.
"""

from __future__ import annotations

from operator import add
from typing import Any

from netspec.errors import NetspecError
from netspec.explore_tree import (
    MAX_STATES,
    Budgets,
    LightGraph,
    LightTotals,
    State,
    Walk,
    depends,
    getter,
    reader,
)
from netspec.frontend import ast
from netspec.ir.bindings import coerce_binding, global_env
from netspec.ir.build import Builder, Spec
from netspec.ir.checks import budget_checks
from netspec.ir.estimate import SizeEstimate
from netspec.ir.expand import estimate_names, size_key, size_key_of
from netspec.ir.expr import free_names
from netspec.ir.family import Failed, cache_key, element_names
from netspec.ir.graph import Scalar
from netspec.ir.limits import MAX_WORK, WORK_NEW
from netspec.ir.meter import OverCap
from netspec.ir.naming import Scope, Value
from netspec.ir.resolve import MISSING
from netspec.ir.shapes import referenced_names
from netspec.ir.walk import is_softmax


class FastEvaluator:
    """Evaluates members of one spec, light, sharing what members have in common; `__call__`
    returns what `spec.instantiate(bindings, collect=True, light=True)` returns."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.budgets = Budgets(spec)
        self.fast = 0  # members evaluated from the caches
        self.plain = 0  # members handed to the light build
        self.elements: list[ast.Element] = []
        self.header_names: tuple[str, ...] = ()
        self.final: ast.Element | None = None  # the final softmax, which the classifier adds
        self.eligible = self._eligible()
        # The tree of chain states: a root per values of the names the header reads, then a
        # level per element (see `State`); each level's key is the indices of the free
        # parameters its names depend on (through constants and the class count too).
        self.roots: dict[Any, State | None] = {}
        self.kept = 0  # states, results and verdicts on constants kept in the tree
        self.mark_of: dict[int, list[int]] = {}  # the figures cache entries the states met
        self.env_ok: dict[Any, bool] = {}
        if self.eligible:
            self.header_key = getter(depends(spec, self.header_names))
            self.level_keys = [
                getter(depends(spec, element_names(self.spec, el))) for el in self.elements
            ]
            # Each element's values and its size estimate's key, read off a member's indices
            # where its names are free parameters (or unbound): no global names needed.
            self.readers = [reader(spec, element_names(self.spec, el)) for el in self.elements]
            self.size_readers = [reader(spec, estimate_names(spec, el)) for el in self.elements]
            self.budget_key = getter(
                depends(spec, tuple(n for _, names in self.budgets.names for n in names))
            )
            consts = tuple(c.name for c in spec.consts)
            self.consts_key = getter(depends(spec, consts)) if consts else None

    @classmethod
    def of(cls, spec: Spec) -> FastEvaluator:
        """The spec's evaluator, kept on it: its shared pieces serve every later exploration
        of the same parsed spec, as the spec's own caches do."""
        evaluator = getattr(spec, "_fast_evaluator", None)
        if evaluator is None:
            evaluator = cls(spec)
            spec._fast_evaluator = evaluator  # type: ignore[attr-defined]
        return evaluator

    def _eligible(self) -> bool:
        spec = self.spec
        chain = spec.chain
        if (
            chain is None
            or not chain.elements
            or spec.input is None
            or spec.input.shape is None  # token inputs set the build's context
            or spec.heads
            or spec.counted
            or spec.count_spans
            or referenced_names(spec)
            or "classes" in spec.free
            or (spec.classes is not None and spec.classes.per_pixel)
        ):
            return False
        elements = list(chain.elements)
        first = elements[0]
        if isinstance(first.primary, ast.Call) and first.primary.name.upper() == "INPUT":
            if (
                first.primary.args
                or first.repeat
                or first.optional
                or first.label
                or first.assertion
            ):
                return False
            elements = elements[1:]
        if not elements:
            return False
        self.elements = elements
        self.final = elements[-1] if is_softmax(elements[-1]) else None
        read: set[str] = {"classes"}
        for part in (spec.classes, spec.dtype, spec.defaults, spec.input):
            if part is not None:
                read |= free_names(part)
        self.header_names = tuple(sorted(read))
        return True

    def __call__(self, bindings: dict[str, Scalar]) -> tuple[Any, list[NetspecError]]:
        idx = self._indices(bindings) if self.eligible else None
        return self.evaluate(idx, bindings)

    def evaluate(
        self, idx: tuple[int, ...] | None, bindings: dict[str, Scalar]
    ) -> tuple[Any, list[NetspecError]]:
        """The member whose free parameters take the values at `idx` (their indices in each
        domain, in the spec's order; `bindings` names the same values): what `__call__`
        returns, without finding the indices again (explore knows them)."""
        if idx is not None and self.eligible:
            got = self._walk(idx, bindings)
            if got is not None:
                return got
        self.plain += 1
        return self.spec.instantiate(bindings, collect=True, light=True)

    def _indices(self, bindings: dict[str, Scalar]) -> tuple[int, ...] | None:
        """Each free parameter's index in its domain, or None where a binding is not one of
        its values (the build says why)."""
        domains = self.spec.free
        if bindings.keys() != domains.keys():
            return None
        out = []
        for name, domain in domains.items():
            value = coerce_binding(bindings[name])
            try:
                i = domain.values.index(value)  # a range's index is arithmetic
            except ValueError:
                return None
            if type(domain.values[i]) is not type(value):  # 1 and True are equal
                return None
            out.append(i)
        return tuple(out)

    def _walk(self, idx: tuple[int, ...], bindings: dict[str, Scalar]) -> Any:
        """The member down the tree of chain states (see `State`), or None where a build
        must decide. Most members are a dictionary lookup per element; a state not in the tree
        yet is made from the element's cached effect, which the root's builder makes where no
        member has (`_expand`)."""
        keep = self.kept < MAX_STATES  # past it, the tree stops growing: members cost more
        k = self.header_key(idx)
        root: Any = self.roots.get(k, MISSING)
        if root is MISSING:
            root = self._root(bindings)
            if keep:
                self.roots[k] = root
                self.kept += 1
        if root is None:
            return None
        if self.consts_key is not None:
            k = self.consts_key(idx)
            ok = self.env_ok.get(k)
            if ok is None:
                ok = self._env_ok(bindings)
                if keep:
                    self.env_ok[k] = ok
                    self.kept += 1
            if not ok:
                return None
        state = root
        member = Walk(self.spec, idx, bindings, root)
        for level, key in enumerate(self.level_keys):
            k = key(idx)
            child: Any = state.children.get(k, MISSING)
            if child is MISSING:
                child = self._next(state, level, member)
                if keep:
                    state.children[k] = child
                    self.kept += 1
            if child is None:
                return None
            state = child
        k = self.budget_key(idx)
        result: Any = state.results.get(k, MISSING)
        if result is MISSING:
            result = self._result(state, member)
            if keep:
                state.results[k] = result
                self.kept += 1
        if result is None:
            return None
        self.fast += 1
        graph, errors = result
        return graph, list(errors)

    def _next(self, state: State, level: int, member: Walk) -> State | None:
        """The state after element `level` from `state`, or None where a build must decide
        (the work or the size estimate over the cap)."""
        el = self.elements[level]
        size = self._size(level, member)
        if size is None:
            return None
        bound = state.bound + size
        if bound > MAX_WORK:
            return None
        if state.error is not None:  # the build stopped before: only the bound goes on
            child = State(state.shape, state.sums, state.marks, state.errors, bound)
            child.error = state.error
            return child
        read = self.readers[level]
        if read is not None:
            values = read(member.idx)
        else:
            env = member.env()
            if env is None:
                return None
            values = tuple(env.get(n, MISSING) for n in element_names(self.spec, el))
        key = cache_key(
            self.spec,
            el,
            state.shape,
            member.root.classes,
            values,
            (),  # no counted blocks here
            state.tail,
            state.last,
            el is self.final,
        )
        hit = self.spec.element_cache.get(key)
        if hit is None:
            if not self._bounded(level, member, bound) or not self._expand(el, state, member):
                return None
            hit = self.spec.element_cache[key]
        if isinstance(hit, Failed):
            errors = state.errors + hit.errors
            child = State(state.shape, state.sums, state.marks, errors, bound)
            child.error = hit.error
            return child
        shape, deltas, errs, used, _calls, tail, last = hit
        sums = tuple(map(add, state.sums, deltas))
        marks = state.marks
        if used:
            mark_of = self.mark_of
            for m in used:
                mark_of[id(m)] = m
            marks = marks.union(map(id, used))
        if sums[5] + sums[6] + WORK_NEW * len(marks) > MAX_WORK:
            return None
        child = State(shape, sums, marks, state.errors + errs, bound)
        child.tail = state.tail if tail is None else tail
        child.last = state.last if last is None else last
        return child

    def _bounded(self, level: int, member: Walk, bound: int) -> bool:
        """Whether the main chain's size estimate, from element `level` on, stays under the cap
        as the build checks it before expanding anything (`bound_main`)."""
        for later in range(level + 1, len(self.elements)):
            size = self._size(later, member)
            if size is None:
                return False
            bound += size
            if bound > MAX_WORK:
                return False
        return True

    def _expand(self, el: ast.Element, state: State, member: Walk) -> bool:
        """Expand one element from `state` with the root's build, given the member's global
        names and what the build's checks read of the chain so far: the work and its distinct
        layers (the caps), the last layer that is not the identity (the final classifier), the
        last node (a softmax). The element's effect, or its error, goes into the spec's cache;
        False where the build must decide (the work over the cap)."""
        root = member.root
        builder = root.builder
        env = member.env()
        if env is None or builder is None:
            return False
        if root.member is not member:  # the same build for this member's global names
            builder.bindings = dict(member.bindings)
            builder.names(env)
            root.member = member
        mark_of = self.mark_of
        builder.carry_on(state.sums, [mark_of[i] for i in state.marks])
        builder.nodes.tail, builder.nodes.last = state.tail, state.last
        cur = Value("input" if state is member.root else "", state.shape)
        try:
            builder.element(el, cur, env, Scope(""))
        except OverCap:
            return False
        except NetspecError:  # kept in the cache as the element's effect
            pass
        return True

    def _result(self, state: State, member: Walk) -> tuple | None:
        """What the build returns at the end of the chain: the error an element raised, or
        the totals with the budgets checked; None where the build must decide (an output that
        is not the classes, a budget limit that is wrong)."""
        if state.error is not None:
            return None, (*state.errors, state.error)
        root = member.root
        if root.classes is not None and state.shape != (root.classes,):
            return None  # the build says why the output is not the classes
        totals = LightTotals.of(state.sums, root.dtype)
        errors = list(state.errors)
        checks = self.budgets.check(totals, member.env, errors)
        if checks is None:  # a limit that is wrong: checked as the build does
            env = member.env()
            if env is None:
                return None
            graph = LightGraph(totals, [])
            try:
                checks = budget_checks(self.spec.budgets, graph, env, errors)  # type: ignore[arg-type]
            except NetspecError:  # a limit that does not evaluate: the build reports it
                return None
        return LightGraph(totals, checks), tuple(errors)

    def _size(self, level: int, member: Walk) -> int | None:
        """A main-chain element's size estimate, as the build's `bound_main` has it (shared
        in the spec's cache), or None where it does not evaluate (the build says why)."""
        el = self.elements[level]
        read = self.size_readers[level]
        env = None
        if read is not None:
            key = size_key_of(el, 0, None, read(member.idx))
        else:
            env = member.env()
            if env is None:
                return None
            key = size_key(self.spec, el, env, 0, None)
        size = self.spec.size_cache.get(key)
        if size is None:
            env = env or member.env()
            if env is None:
                return None
            try:
                size = SizeEstimate(self.spec.blocks, env, self.spec.primary_names).of_element(
                    el, env, 0
                )
            except NetspecError:
                return None
            self.spec.size_cache[key] = size
        return size

    def _env_ok(self, bindings: dict[str, Scalar]) -> bool:
        """Whether the global names evaluate (a constant may fail for some values)."""
        try:
            global_env(self.spec, {k: coerce_binding(v) for k, v in bindings.items()})
        except NetspecError:
            return False
        return True

    def _root(self, bindings: dict[str, Scalar]) -> State | None:
        """The state after the header and input stages of a real build, kept for the members
        reading the same values there, or None where they do not build plainly. The build is
        kept too: it expands the elements no member has met yet (`_expand`)."""
        builder = Builder(self.spec, dict(bindings), light=True)
        used: dict[int, list[int]] = {}
        try:
            env = builder.names()
            dtype = builder.header(env)
            builder.nodes.used.append(used)  # the input node's figures cache entry
            inp = builder.input(env)
        except NetspecError:
            return None
        if builder.errors:
            return None
        builder.nodes.used.pop()
        builder.final_softmax = self.final
        for m in used.values():
            self.mark_of[id(m)] = m
        root = State(inp.shape, tuple(builder.sums), frozenset(used), (), 1)
        root.classes, root.dtype = builder.classes, dtype
        root.tail, root.last = builder.nodes.tail, builder.nodes.last
        root.builder = builder
        return root


__all__ = ["FastEvaluator"]
