"""The fast path of `netspec explore`: a member evaluated from the light build's caches alone.

A light build (`Spec.instantiate(light=True)`) caches each element's whole effect (output
shape, figures, soft errors, distinct layers) by its input shape and the values of the names
it reads (`Spec.element_cache`). Once a family's first members have filled that cache, most
members need no element built: their verdict and figures are a fold over cached entries. What
remains of a build per member is fixed work (a `Builder`, the size estimate, the header, a
`Graph`), which this module shares instead of repeating:

- the header and the input (classes, dtype, the input node) by the values of the names they
  read, taken from a real builder's first stages;
- the size estimate of each main-chain element by the values of the names the element reads;
- the main chain as a fold over `Spec.element_cache` entries, with the build's work limit;
- the budgets checked against totals as the build checks them (`budget_checks`).

A member with an element not cached yet is built from that element on (`_resume`: the
header and input built, the elements before applied from the cache as `Builder.element`
applies a hit, the rest through `Builder.element`). A member that a shared piece would decide
differently (over the work limit, an output that is not the classes, a budget limit that is
wrong) takes a whole light build, its size estimates shared (`_SharedBuilder`). Either way the
result is exactly what the light build returns, member by member (tests/test_explore_fast.py
compares both on the zoo's families and fuzzed ones). A spec whose light build keeps state
beyond these pieces (side heads, layers referring to other layers, block counters, per-pixel
outputs, token inputs, `classes` bound as a parameter) always takes the plain path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.bindings import DEFERRED, coerce_binding, global_env
from netspec.ir.build import _MISSING, Builder, Spec, _is_softmax
from netspec.ir.checks import _CMP, _limit_error, budget_checks
from netspec.ir.counter import Recount
from netspec.ir.estimate import SizeEstimate
from netspec.ir.expr import evaluate, free_names
from netspec.ir.graph import Scalar, Totals, make_totals
from netspec.ir.limits import MAX_WORK, WORK_NEW
from netspec.ir.naming import Scope, Value
from netspec.ir.shapes import referenced_names
from netspec.ir.spec import paused_gc
from netspec.units import limit_text

_PLAIN = object()  # a header the fast path does not share: its members take the plain path


@dataclass(frozen=True, slots=True)
class _Base:
    """What a build holds after its header and input: the same for every member whose header
    and input read the same values."""

    classes: int | None
    dtype: str
    shape: tuple[int, ...]
    sums: tuple[int, ...]
    marks: tuple[list[int], ...]  # the input node's distinct-layer mark


@dataclass(frozen=True, slots=True)
class _Check:
    """A budget that passed, as `BudgetCheck` has it (without a pydantic model per member)."""

    metric: str
    op: str
    limit: Any
    value: Any
    ok: bool
    span: Any


@dataclass(slots=True)
class _LightGraph:
    """The part of a light `Graph` a member's verdict reads (`netspec.explore._read`)."""

    totals: Totals
    budgets: list[Any]  # BudgetCheck or _Check
    nodes: tuple = ()  # a light graph has no nodes (a failed budget names no holders)


class FastEvaluator:
    """Evaluates members of one spec, light, sharing what members have in common; `__call__`
    returns what `spec.instantiate(bindings, collect=True, light=True)` returns."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.bases: dict[tuple, _Base | object] = {}
        self.sizes: dict[tuple, int] = {}
        self.limits: dict[tuple, Any] = {}
        self.budget_names = [(b, tuple(sorted(free_names(b.limit)))) for b in spec.budgets]
        self.fast = 0  # members evaluated from the caches
        self.plain = 0  # members handed to the light build
        self.resumed = 0  # members built from their first element not cached
        self.elements: list[ast.Element] = []
        self.header_names: tuple[str, ...] = ()
        self.eligible = self._eligible()

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
        read: set[str] = {"classes"}
        for part in (spec.classes, spec.dtype, spec.defaults, spec.input):
            if part is not None:
                read |= free_names(part)
        self.header_names = tuple(sorted(read))
        return True

    def __call__(self, bindings: dict[str, Scalar]) -> tuple[Any, list[NetspecError]]:
        if self.eligible:
            got = self._fast(bindings)
            if got is not None:
                return got
        self.plain += 1
        if not self.eligible:
            return self.spec.instantiate(bindings, collect=True, light=True)
        # Spec.instantiate's light build (no block counters here, so no recount), its size
        # estimate shared.
        builder = _SharedBuilder(self.spec, dict(bindings), light=True)
        builder.sizes = self.sizes
        try:
            with paused_gc():
                graph = builder.build()
        except NetspecError as e:
            return None, builder.errors + [e]
        except Recount:  # pragma: no cover - a spec with block counters is not eligible
            return self.spec.instantiate(bindings, collect=True, light=True)
        return graph, builder.errors

    def _fast(self, bindings: dict[str, Scalar]) -> tuple[Any, list[NetspecError]] | None:
        """The member from the caches, or None where a build must decide."""
        spec = self.spec
        try:
            env = global_env(spec, {k: coerce_binding(v) for k, v in bindings.items()})
        except NetspecError:
            return None
        hkey = tuple(env.get(n, _MISSING) for n in self.header_names)
        base = self.bases.get(hkey)
        if base is None:
            base = self.bases[hkey] = self._base(bindings)
        if not isinstance(base, _Base):
            return None
        if env.get("classes") is DEFERRED:  # as the build's header sets it
            env["classes"] = base.classes
        cache, names_of = spec.element_cache, spec.element_names
        elements = self.elements
        keys = []
        for el in elements:
            names = names_of.get(id(el))
            if names is None:  # no build has read this element yet
                return None
            keys.append(tuple(env.get(n, _MISSING) for n in names))
        if not self._bounded(keys, env):
            return None
        # The main chain: each element's cached effect, in order.
        classes = base.classes
        shape = base.shape
        sums = list(base.sums)
        marks = {id(m): m for m in base.marks}
        errors: list[NetspecError] = []
        hits: list[tuple] = []
        for el, values in zip(elements, keys, strict=True):
            hit = cache.get((id(el), shape, classes, *values))
            if hit is None:  # built from here on, the elements before as the build reads them
                return self._resume(bindings, hits)
            if isinstance(hit, NetspecError):
                self.fast += 1
                return None, errors + [hit]
            hits.append(hit)
            shape, deltas, errs, used, _calls = hit
            for i, d in enumerate(deltas):
                sums[i] += d
            for m in used:
                marks[id(m)] = m
            if sums[5] + sums[6] + WORK_NEW * len(marks) > MAX_WORK:
                return None
            errors.extend(errs)
        if classes is not None and shape != (classes,):
            return None  # the build says why the output is not the classes
        p, b, m, o, mem = sums[:5]
        totals = make_totals(p, b, m, o, mem, base.dtype)
        checks = self._budgets(totals, env, errors)
        if checks is None:  # a limit that is wrong: checked as the build does
            graph = _LightGraph(totals, [])
            try:
                checks = budget_checks(spec.budgets, graph, env, errors)  # type: ignore[arg-type]
            except NetspecError:  # a limit that does not evaluate: the build reports it
                return None
        self.fast += 1
        return _LightGraph(totals, checks), errors

    def _bounded(self, keys: list[tuple], env: dict[str, Any]) -> bool:
        """The size estimate of the main chain before any of it is expanded, as
        `_bound_main` checks it: False where the build would refuse it (it says why)."""
        spec = self.spec
        built = 1
        sizes = self.sizes
        for el, values in zip(self.elements, keys, strict=True):
            skey = (id(el), *values)
            size = sizes.get(skey)
            if size is None:
                try:
                    size = SizeEstimate(spec.blocks, env, spec.primary_names).of_element(el, env, 0)
                except NetspecError:
                    return False
                sizes[skey] = size
            if built + size > MAX_WORK:
                return False
            built += size
        return True

    def _resume(self, bindings: dict[str, Scalar], hits: list[tuple]) -> Any:
        """A light build from the first element no build has made for these values: the
        header and input built, the elements before applied from the cache as
        `Builder.element` applies a hit, then `Builder.build`'s remaining steps (no heads, no
        counters here); the size estimate of the main chain passed already (`_fast`)."""
        spec = self.spec
        builder = _SharedBuilder(spec, dict(bindings), light=True)
        builder.sizes = self.sizes
        self.resumed += 1
        try:
            with paused_gc():
                env = builder._names()
                dtype = builder._header(env)
                cur = inp = builder._input(env)
                builder.input_shape = inp.shape
                last = self.elements[-1]
                builder.final_softmax = last if _is_softmax(last) else None
                sums, serial = builder.sums, builder.serial
                for el, (shape, deltas, errs, used, _calls) in zip(
                    self.elements, hits, strict=False
                ):
                    for i, d in enumerate(deltas):
                        sums[i] += d
                    for mark in used:
                        if mark[0] != serial:
                            mark[0] = serial
                            builder.fresh += 1
                    if builder.work > MAX_WORK:
                        builder._over_work(el.span)
                    builder.errors.extend(errs)
                    cur = Value("", shape)
                scope = Scope("")
                for el in self.elements[len(hits) :]:
                    cur = builder.element(el, cur, env, scope)
                if builder.classes is not None:
                    builder._check_output(cur, last)
                p, b, m, o, mem = sums[:5]
                totals = make_totals(p, b, m, o, mem, dtype)
                checks = self._budgets(totals, env, builder.errors)
                if checks is None:
                    graph = _LightGraph(totals, [])
                    checks = budget_checks(spec.budgets, graph, env, builder.errors)  # type: ignore[arg-type]
        except NetspecError as e:
            return None, builder.errors + [e]
        except Recount:  # pragma: no cover - a spec with block counters is not eligible
            return spec.instantiate(bindings, collect=True, light=True)
        return _LightGraph(totals, checks), builder.errors

    def _budgets(
        self, totals: Totals, env: dict[str, Any], errors: list[NetspecError]
    ) -> list[Any] | None:
        """The budget checks as `budget_checks` makes them in a light build (a failed one adds
        its error to `errors`), each limit evaluated once per values of the names it reads;
        None where a limit is wrong (the build says why)."""
        values = {
            "params": totals.params,
            "trainable": totals.trainable_params,
            "macs": totals.macs,
            "flops": totals.flops,
            "memory": totals.memory_bytes,
        }
        checks, failed = [], []
        for item, names in self.budget_names:
            lkey = (id(item), *(env.get(n, _MISSING) for n in names))
            limit = self.limits.get(lkey, _MISSING)
            if limit is _MISSING:
                try:
                    limit = evaluate(item.limit, env)
                except NetspecError:
                    limit = None
                if limit is not None and _limit_error(item, limit) is not None:
                    limit = None
                self.limits[lkey] = limit
            if limit is None:
                return None
            value = values[item.metric]
            ok = _CMP[item.op](value, limit)
            checks.append(_Check(item.metric, item.op, limit, value, ok, item.span))
            if not ok:  # budget_checks' error; a light graph has no nodes to hold the most
                unit = " bytes" if item.metric == "memory" else ""
                failed.append(
                    NetspecError(
                        f"budget exceeded: {item.metric} = {value:,}{unit}, over the limit "
                        f"{item.op} {limit_text(item.metric, limit)}",
                        item.span,
                        hint=f"over by {value / limit - 1:.1%}" if limit else None,
                        notes=[],
                    )
                )
        errors.extend(failed)
        return checks

    def _base(self, bindings: dict[str, Scalar]) -> _Base | object:
        """The header and input stages of a real build, kept for the members reading the same
        values there."""
        builder = Builder(self.spec, dict(bindings), light=True)
        try:
            env = builder._names()
            dtype = builder._header(env)
            builder._used.append({})
            inp = builder._input(env)
        except NetspecError:
            return _PLAIN
        if builder.errors:
            return _PLAIN
        marks = tuple(builder._used.pop().values())
        return _Base(builder.classes, dtype, inp.shape, tuple(builder.sums), marks)


class _SharedBuilder(Builder):
    """A light build whose size estimates are shared between members: each element's, at the
    top of the main chain and before each repetition is expanded, by the values of the names
    it reads (the element cache's key), its depth and its count."""

    sizes: dict[tuple, int]

    def _element_names(self, el: ast.Element) -> tuple[str, ...]:
        names_of = self.spec.element_names
        names = names_of.get(id(el))
        if names is None:  # as Builder.element computes them
            names = names_of[id(el)] = tuple(sorted(self._names_used(el, set())))
        return names

    def _check_size(self, el: ast.Element, count: int, env: Mapping[str, Any]) -> None:
        if count <= 0:
            return
        depth = self._depth
        key = (
            "repeat",
            id(el),
            depth,
            count,
            *(env.get(n, _MISSING) for n in self._element_names(el)),
        )
        size = self.sizes.get(key)
        if size is None:
            size = self.sizes[key] = self.estimate.of_element(el, env, depth, count)
        self._refuse_over(size, el.repeat.span if el.repeat else el.span, "this repetition")

    def _bound_main(self, elements: list[ast.Element], env: Mapping[str, Any]) -> None:
        built = 1
        for el in elements:
            key = (id(el), *(env.get(n, _MISSING) for n in self._element_names(el)))
            size = self.sizes.get(key)
            if size is None:
                size = self.estimate.of_element(el, env, self._depth)
                self.sizes[key] = size
            if built + size > MAX_WORK:  # the build's own check says it, at the same element
                return super()._bound_main(elements, env)
            built += size


__all__ = ["FastEvaluator"]
