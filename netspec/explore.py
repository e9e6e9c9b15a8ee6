"""Design-space exploration: every member of a family, through the IR only (never torch).

A family is a spec with free parameters (`N in 1..3`, `w in {16, 32}`) and unbound `X?`
switches. Its *space* is the product of their domains; a *member* binds each one. Members are
numbered 1, 2, ... in the order of `itertools.product` over the whole declared space (the first
parameter varies slowest), so a member's number is the same whatever `--grid` or `--sample`
selects, and `--pick 37` needs nothing but the spec.

    exp = explore(load_spec("specs/cs231n_family.ns"))
    exp.front          # Pareto-optimal members over (params, MACs, activation memory)
    member_source(exp.spec, exp.front[0])   # a concrete spec text for one member

Members are evaluated with `Spec.instantiate(light=True)`: totals and budgets, no nodes. Light
evaluation checks everything but duplicate `as` names, so the first valid member and every
member on the front are also built in full, and their totals must agree.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, Span, SpecErrors, did_you_mean
from netspec.explore_fast import FastEvaluator
from netspec.frontend import ast
from netspec.io import atomic_write, parse_bool
from netspec.ir.build import Builder, Domain, Spec, load_spec_text
from netspec.ir.graph import Graph, Scalar
from netspec.ir.spec import paused_gc
from netspec.units import plain

CAP = 1_000_000  # members; a larger space needs --sample
METRICS = ("params", "macs", "memory")  # the front's objectives, all minimised
MAX_VERIFY = 500  # members built in full per run (the front, plus the first valid member)


# ---- the space ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Space:
    """The members selected for exploration: per domain, the indices of the chosen values."""

    domains: tuple[Domain, ...]
    choices: tuple[Sequence[int], ...]  # a `range` for a whole domain (never materialised)

    @classmethod
    def of(cls, spec: Spec, grid: Mapping[str, Sequence[int]] | None = None) -> Space:
        """The spec's whole space, or the sub-grid `grid` (name -> value indices) of it."""
        domains = tuple(spec.free.values())
        grid = grid or {}
        return cls(
            domains,
            tuple(tuple(grid[d.name]) if d.name in grid else range(len(d.values)) for d in domains),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    @property
    def full_size(self) -> int:
        return math.prod(len(d.values) for d in self.domains)

    def strides(self) -> list[int]:
        out, step = [], 1
        for d in reversed(self.domains):
            out.append(step)
            step *= len(d.values)
        return out[::-1]

    def describe(self) -> str:
        """`N 1..3 x M 2..4 x pool on|off`."""
        parts = []
        for d, c in zip(self.domains, self.choices, strict=True):
            if isinstance(c, range) and isinstance(d.values, range):
                values: Sequence[Scalar] = d.values[c.start : c.stop]
            else:
                values = tuple(d.values[i] for i in c)
            sub = Domain(d.name, values, d.span, d.switch and len(c) > 1)
            parts.append(
                f"{d.name} {sub.describe()}" if len(c) > 1 else f"{d.name}={literal(sub.values[0])}"
            )
        return " x ".join(parts)

    def indices(self, sample: int | None = None, seed: int = 0) -> Iterator[tuple[int, ...]]:
        """Value indices of every selected member in order, or of `sample` random ones."""
        if sample is None or sample >= self.size:
            yield from itertools.product(*self.choices)
            return
        radices = [len(c) for c in self.choices]
        rng = random.Random(seed)
        if self.size <= sys.maxsize:
            chosen: Iterable[int] = rng.sample(range(self.size), sample)
        else:  # a range this long has no len() for sample(); draws this sparse rarely repeat
            picked: set[int] = set()
            while len(picked) < sample:
                picked.add(rng.randrange(self.size))
            chosen = picked
        for flat in sorted(chosen):
            digits = []
            for r in reversed(radices):
                flat, d = divmod(flat, r)
                digits.append(d)
            yield tuple(c[d] for c, d in zip(self.choices, reversed(digits), strict=True))

    def member(self, number: int) -> dict[str, Scalar]:
        """The bindings of member `number` (1-based, in the whole declared space)."""
        if not 1 <= number <= self.full_size:
            raise NetspecError(
                f"there is no member #{number}: the space has members 1..{self.full_size:,}",
                hint="pick a number from the # column of `netspec explore`",
            )
        flat = number - 1
        out: dict[str, Scalar] = {}
        for d, stride in zip(self.domains, self.strides(), strict=True):
            i, flat = divmod(flat, stride)
            out[d.name] = d.values[i]
        return out


def parse_grid(spec: Spec, items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """`N=1,2 M=2..4 pool=on` -> {name: value indices}; values must lie in the domains."""
    out: dict[str, tuple[int, ...]] = {}
    for item in (w for raw in items for w in raw.split()):
        if "=" not in item:
            raise NetspecError(
                f"--grid takes NAME=VALUES; received `{item}`",
                hint="e.g. --grid N=1,2 M=2..4 pool=on",
            )
        name, text = (s.strip() for s in item.split("=", 1))
        domain = spec.free.get(name)
        if domain is None:
            known = list(spec.free)
            raise NetspecError(
                f"--grid {name}: the spec has no free parameter `{name}`",
                hint=did_you_mean(name, known) or "its free parameters: " + ", ".join(known),
            )
        if name in out:
            raise NetspecError(
                f"--grid {name} is given twice", hint=f"list every value once: {name}=a,b,c"
            )
        values = domain.values
        # A range (`K in 2..1G`) is never listed: a value's index is its offset.
        lookup = (
            {literal(v): i for i, v in enumerate(values)}
            if not isinstance(values, range)
            else _RangeIndex(values)
        )
        picked: set[int] = set()
        for token in _grid_tokens(text, name):
            key = _canonical(token, domain)
            if key not in lookup:
                raise NetspecError(
                    f"--grid {name}={token}: {token} is outside its domain {domain.describe()}",
                    domain.span,
                    hint=f"pick values of {domain.describe()}, or widen the domain in the spec",
                )
            picked.add(lookup[key])
        out[name] = tuple(sorted(picked))
    return out


class _RangeIndex:
    """`literal(v) -> index` for a range domain, without listing it."""

    def __init__(self, values: range) -> None:
        self.values = values

    def _value(self, key: str) -> int | None:
        try:
            value = int(key)
        except ValueError:
            return None
        return value if value in self.values and literal(value) == key else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._value(key) is not None

    def __getitem__(self, key: str) -> int:
        value = self._value(key)
        if value is None:
            raise KeyError(key)
        return value - self.values.start


def _grid_tokens(text: str, name: str) -> list[str]:
    text = text.strip().strip("{}")
    tokens: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise NetspecError(
                f"--grid {name}: an empty value in `{text}`", hint=f"e.g. {name}=1,2 or {name}=1..3"
            )
        if ".." in part:
            lo, hi = part.split("..", 1)
            try:
                a, b = int(lo), int(hi)
            except ValueError:
                raise NetspecError(
                    f"--grid {name}={part}: a range needs integer ends", hint=f"e.g. {name}=1..3"
                ) from None
            if b < a:
                raise NetspecError(
                    f"--grid {name}={part}: the range is empty", hint=f"write {name}={b}..{a}"
                )
            tokens.extend(str(v) for v in range(a, b + 1))
        else:
            tokens.append(part)
    return tokens


def _canonical(token: str, domain: Domain) -> str:
    """A grid value as `literal` writes the domain's values (`yes` -> `on`, `016` -> `16`)."""
    flag = parse_bool(token)
    switch = all(isinstance(v, bool) for v in domain.values)
    if flag is not None and (switch or not token.strip().isdigit()):  # `1` in 1..3 is a number
        return "on" if flag else "off"
    for conv in (int, float):
        try:
            return literal(conv(token))
        except ValueError:
            pass
    return token


def literal(v: Any) -> str:
    """A value as spec source text: `on`, `16`, `0.5`, `max`, `(3, 5)`."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ")"
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


# ---- members -----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Member:
    """One member's verdict and figures (`memory` is activation bytes at the spec's dtype)."""

    number: int
    bindings: dict[str, Scalar]
    valid: bool = False
    error: NetspecError | None = None  # why it is invalid: a fatal or non-budget error
    over: tuple[str, ...] = ()  # the budgets it exceeds
    params: int = 0
    macs: int = 0
    memory: int = 0
    on_front: bool = False
    verified: bool = False  # built in full, totals equal
    score: float | None = None  # --score's proxy value (NaN: not a number for this member)
    measured: dict[str, Any] | None = None  # --train-top: accuracy, epochs, state, latency_ms

    @property
    def fits(self) -> bool:
        return self.valid and not self.over

    def label(self) -> str:
        return " ".join(f"{k}={literal(v)}" for k, v in self.bindings.items())

    def reason(self, budgets: Mapping[str, str] | None = None) -> str:
        if self.error is not None:
            return self.error.message + (
                f" at {_where(self.error.span)}" if self.error.span else ""
            )
        if self.over:
            return "over budget: " + ", ".join(
                f"{m} {budgets[m]}" if budgets else m for m in self.over
            )
        return ""

    def figure(self, metric: str) -> int:
        return getattr(self, metric)


def evaluate(
    spec: Spec, number: int, bindings: dict[str, Scalar], full: bool = False
) -> tuple[Member, Graph | None]:
    """Instantiate one member (light unless `full`) and read its verdict and totals."""
    graph, errors = spec.instantiate(bindings, collect=True, light=not full)
    m = Member(number, bindings)
    _read(m, graph, errors)
    return m, graph


def _read(m: Member, graph: Graph | None, errors: list[NetspecError]) -> None:
    if graph is None:  # a fatal error: shape collapse, bad argument, ...
        m.error = errors[-1] if errors else NetspecError("the member does not build")
        return
    t = graph.totals
    m.params, m.macs, m.memory = t.params, t.macs, t.memory_bytes
    if errors:  # soft ones: failed budgets, shape assertions, class mismatch
        failed = [b for b in graph.budgets if not b.ok]
        m.over = tuple(b.metric for b in failed)
        if len(errors) > len(failed):  # one error per failed budget, at the budget's span
            spans = [b.span for b in failed]
            m.error = next(e for e in errors if not any(e.span is s or e.span == s for s in spans))
            return
    m.valid = True


# ---- the exploration ---------------------------------------------------------------------


@dataclass(slots=True)
class FailureGroup:
    """Invalid members sharing one error (message and span)."""

    message: str
    span: Span | None
    hint: str | None
    members: list[Member] = field(default_factory=list)
    detail: str = ""  # from one member built in full: the layer and the loop indices

    @property
    def count(self) -> int:
        return len(self.members)


@dataclass(slots=True)
class Exploration:
    spec: Spec
    space: Space
    members: list[Member]
    failures: list[FailureGroup]
    front: list[Member]
    front_fits: bool  # False when no member fits: the front is then over the valid members
    budgets: dict[str, str]  # metric -> `<= 2M`
    seconds: float
    sampled: bool
    shard: tuple[int, int] | None = None  # (K, N): this result holds shard K of N

    @property
    def valid(self) -> list[Member]:
        return [m for m in self.members if m.valid]

    @property
    def fitting(self) -> list[Member]:
        return [m for m in self.members if m.fits]

    def over_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.budgets, 0)
        for m in self.members:
            if m.valid:
                for metric in m.over:
                    counts[metric] += 1
        return counts


def explore(
    spec: Spec,
    grid: Mapping[str, Sequence[int]] | None = None,
    sample: int | None = None,
    seed: int = 0,
    cap: int = CAP,
    verify: bool = True,
    stop: Callable[[], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> Exploration:
    """Evaluate every member of `spec`'s space (or of `grid`, or `sample` random ones).

    `stop`, when given, is called before each member is evaluated or built; whatever it
    raises ends the exploration there (the playground stops a job whose client left).

    `shard` (K, N) evaluates only the members whose number is K modulo N (K, K+N, K+2N, ...):
    N processes with K = 1..N split a space without talking to each other, and `merge` joins
    their `to_json` outputs. A shard without a valid member is a result, not an error.

    Raises NetspecError for a spec without free parameters, a space over `cap` members
    without `sample`, and a selection in which no member is valid.
    """
    if not spec.free:
        raise NetspecError(
            f"{spec.path} has no free parameters: it is one network, not a family",
            hint=f"check it with `netspec check {spec.path}`; make it a family with e.g. `N in 1..3` or an optional layer `POOL?`",
        )
    space = Space.of(spec, grid)
    if sample is not None and sample < 1:
        raise NetspecError(f"--sample takes a positive number of members; received {sample}")
    if space.size > cap and sample is None:
        raise NetspecError(
            f"the space has {space.size:,} members ({space.describe()}), over the limit of {cap:,}",
            hint=f"explore a random part with --sample 10000 --seed 0, or narrow it with --grid (e.g. --grid {space.domains[0].name}=...)",
        )
    start = time.perf_counter()
    step = stop or _go_on
    if shard is not None:
        check_shard(shard)
    members = _evaluate_all(spec, space, sample, seed, step, shard)
    failures = _group_failures(members)
    budgets = {
        b.metric: f"{b.op} {_show_limit(b.metric, b.limit)}" for b in _budget_checks(spec, members)
    }
    exp = Exploration(
        spec=spec,
        space=space,
        members=members,
        failures=failures,
        front=[],
        front_fits=True,
        budgets=budgets,
        seconds=0.0,
        sampled=sample is not None and sample < space.size,
        shard=shard,
    )
    if not exp.valid and shard is None:
        notes = [
            f"{g.count:,} member(s): {g.message}" + (f" at {_where(g.span)}" if g.span else "")
            for g in failures[:6]
        ]
        raise NetspecError(
            f"none of the {len(members):,} members explored ({space.describe()}) is valid",
            failures[0].span if failures else None,
            hint="widen the grid, or change the spec so that its smallest member fits",
            notes=notes,
        )
    if verify and exp.valid:
        _verify(exp, step)
    else:
        _set_front(exp)
    for group in exp.failures:
        step()
        group.detail = locate(spec, group)
    exp.seconds = time.perf_counter() - start
    return exp


def _go_on() -> None:
    """The default `stop`: never."""


def check_shard(shard: tuple[int, int]) -> None:
    k, n = shard
    if not (n >= 1 and 1 <= k <= n):
        raise NetspecError(
            f"shard {k}/{n} does not exist: K/N needs 1 <= K <= N",
            hint="e.g. --shard 1/2 on one machine and --shard 2/2 on another",
        )


def _evaluate_all(
    spec: Spec,
    space: Space,
    sample: int | None,
    seed: int,
    step: Callable[[], None] = _go_on,
    shard: tuple[int, int] | None = None,
    fast: bool = True,
) -> list[Member]:
    """Every selected member, light. `fast` evaluates them through `FastEvaluator` (members
    sharing cached work, the same results); False builds each one (the benchmark's baseline)."""
    names = space.names
    values = [d.values for d in space.domains]
    strides = space.strides()
    members = []
    instantiate: Callable[[tuple[int, ...], dict[str, Scalar]], Any] = (
        FastEvaluator.of(spec).evaluate
        if fast
        else lambda _idx, bindings: spec.instantiate(bindings, collect=True, light=True)
    )
    k, n = shard or (1, 1)
    with paused_gc():  # members leave no garbage cycles (see paused_gc)
        for idx in space.indices(sample, seed):
            number = 1 + sum(i * s for i, s in zip(idx, strides, strict=True))
            if (number - 1) % n != k - 1:  # shard K/N keeps the members numbered K, K+N, K+2N, ...
                continue
            step()
            bindings = {n: v[i] for n, v, i in zip(names, values, idx, strict=True)}
            graph, errors = instantiate(idx, bindings)
            m = Member(number, bindings)
            _read(m, graph, errors)
            members.append(m)
    return members


def _budget_checks(spec: Spec, members: list[Member]):
    """The budget checks of one valid member (each member has the same list)."""
    for m in members:
        if m.valid:
            graph, _ = spec.instantiate(m.bindings, collect=True, light=True)
            return graph.budgets if graph is not None else []
    return []


def _group_failures(members: Iterable[Member]) -> list[FailureGroup]:
    groups: dict[tuple[str, Span | None], FailureGroup] = {}
    for m in members:
        e = m.error
        if e is None:
            continue
        g = groups.get((e.message, e.span))
        if g is None:
            g = groups[(e.message, e.span)] = FailureGroup(e.message, e.span, e.hint)
        g.members.append(m)
    return sorted(groups.values(), key=lambda g: (-g.count, g.members[0].number))


def pareto_front(members: Iterable[Member], metrics: Sequence[str] = METRICS) -> list[Member]:
    """Members no other member beats on every metric (all minimised; ties both stay)."""
    pts = sorted(
        ((tuple(m.figure(k) for k in metrics), m) for m in members),
        key=lambda pm: (pm[0], pm[1].number),
    )
    front: list[tuple[tuple[int, ...], Member]] = []
    for p, m in pts:
        # Sorted lexicographically, so only an earlier point can dominate p.
        if not any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q, _ in front):
            front.append((p, m))
    return [m for _, m in front]


def _set_front(exp: Exploration) -> None:
    for m in exp.front:
        m.on_front = False
    pool = exp.fitting
    exp.front_fits = bool(pool)
    exp.front = pareto_front(pool or exp.valid)
    for m in exp.front:
        m.on_front = True


def _verify(exp: Exploration, step: Callable[[], None] = _go_on) -> None:
    """Build the first valid member and the front in full (light mode skips duplicate names);
    a member failing there becomes invalid, and the front is recomputed."""
    todo = [next(m for m in exp.members if m.valid)]
    budget = MAX_VERIFY
    while todo and budget > 0:
        changed = False
        for m in todo[:budget]:
            budget -= 1
            step()
            m.verified = True
            full, _ = evaluate(exp.spec, m.number, m.bindings, full=True)
            if not full.valid:
                m.valid, m.error = False, full.error
                changed = True
            elif (full.params, full.macs, full.memory) != (m.params, m.macs, m.memory):
                raise RuntimeError(
                    f"netspec bug: member #{m.number} ({m.label()}) totals differ between light and "
                    f"full instantiation: {(m.params, m.macs, m.memory)} vs {(full.params, full.macs, full.memory)}"
                )
        if changed:
            exp.failures = _group_failures(exp.members)
        _set_front(exp)
        todo = [m for m in exp.front if not m.verified]


def locate(spec: Spec, group: FailureGroup) -> str:
    """Rebuild one member of `group` in full: which layer failed and at which loop indices
    (`i=5, `stage.pool6``), which light evaluation does not name. The full build's error says
    both (`NetspecError.indices`, `.node`)."""
    member = group.members[0]
    builder = Builder(spec, dict(member.bindings), light=False)
    errors: list[NetspecError] = []
    try:
        builder.build()
    except NetspecError as e:
        errors = [e]
    except Exception:  # a diagnostic only: never let it hide the report
        return ""
    parts = []
    if errors and errors[0].indices:
        parts.append(", ".join(f"{k}={v}" for k, v in errors[0].indices.items()))
    for err in errors + builder.errors:
        if err.span == group.span and err.node is not None:
            parts.append(f"`{err.node}`")
            break
    return ", ".join(p for p in parts if p)


# ---- a member as a concrete spec ---------------------------------------------------------


def member_source(
    spec: Spec, member: Member | Mapping[str, Scalar], number: int | None = None
) -> str:
    """The family's source text with every free parameter bound: `N in 1..3` becomes `N = 2`
    in place, and each switch gets a constant (`pool = on`). Constants are evaluated in
    order, so when a constant precedes a free parameter, every binding moves above them."""
    bindings = dict(member.bindings if isinstance(member, Member) else member)
    number = member.number if isinstance(member, Member) else number
    text = spec.text
    offsets = _line_offsets(text)

    def pos(line: int, col: int) -> int:
        return offsets[line - 1] + col - 1

    stmts = spec.module.statements
    frees = [s for s in stmts if isinstance(s, ast.FreeParam)]
    consts = [s for s in stmts if isinstance(s, ast.ConstDef)]
    chain_start = next(s.span for s in stmts if isinstance(s, ast.ChainStmt))
    first_const = min((pos(c.span.line, c.span.col) for c in consts), default=None)
    in_place = first_const is None or all(pos(f.span.line, f.span.col) < first_const for f in frees)
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied right to left
    switches = [f"{d.name} = {literal(bindings[d.name])}" for d in spec.free.values() if d.switch]
    if in_place:
        for f in frees:
            start, end = pos(f.span.line, f.span.col), pos(f.span.end_line, f.span.end_col)
            new = f"{f.name} = {literal(bindings[f.name])}"
            if text[end : _line_end(text, end)].strip():  # a comment follows: keep it aligned
                new = new.ljust(end - start)
            edits.append((start, end, new))
        if switches:
            if frees:
                last = max(frees, key=lambda f: pos(f.span.end_line, f.span.end_col))
                at = _line_end(text, pos(last.span.end_line, last.span.end_col))
                edits.append((at, at, "".join("\n" + s + "  # switch" for s in switches)))
            else:  # before the first constant, or the chain: a statement boundary
                at = pos(chain_start.line, chain_start.col) if first_const is None else first_const
                edits.append((at, at, "".join(s + "  # switch\n" for s in switches)))
    else:
        for f in frees:  # dropped here, bound before the first constant
            edits.append((pos(f.span.line, f.span.col), pos(f.span.end_line, f.span.end_col), ""))
        lines = [f"{f.name} = {literal(bindings[f.name])}" for f in frees]
        lines += [s + "  # switch" for s in switches]
        assert first_const is not None  # not in place: a constant precedes a free parameter
        edits.append((first_const, first_const, "".join(line + "\n" for line in lines)))
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end:]
    label = " ".join(f"{k}={literal(v)}" for k, v in bindings.items())
    which = f"member #{number}" if number is not None else "a member"
    head = f"# {which} of {spec.path} ({label}), written by `netspec explore --pick`\n"
    return head + text if text.endswith("\n") else head + text + "\n"


def _line_offsets(text: str) -> list[int]:
    offsets, total = [], 0
    for line in text.splitlines(keepends=True):
        offsets.append(total)
        total += len(line)
    offsets.append(total)
    return offsets


def _line_end(text: str, at: int) -> int:
    end = text.find("\n", at)
    return len(text) if end < 0 else end


def pick(spec: Spec, number: int, path: str | Path | None = None) -> tuple[str, Member, Graph]:
    """Member `number` as a concrete spec: built in full, its text compiled back, both totals
    compared; written atomically to `path` when given. Returns (text, member, graph)."""
    bindings = Space.of(spec).member(number)
    member, graph = evaluate(spec, number, bindings, full=True)
    if member.error is not None:
        raise NetspecError(
            f"member #{number} ({member.label()}) is not a valid network: {member.error.message}",
            member.error.span,
            hint=member.error.hint or "pick a member from the table of `netspec explore`",
            notes=member.error.notes,
        )
    text = member_source(spec, member)
    where = str(path) if path is not None else f"<member {number}>"
    written = load_spec_text(text, where)
    if written.free:
        raise RuntimeError(
            f"netspec bug: the written member still has free parameters {list(written.free)}"
        )
    got, errors = written.instantiate(collect=True)
    if got is None:
        raise SpecErrors(errors)
    figures = (got.totals.params, got.totals.macs, got.totals.memory_bytes)
    if figures != (member.params, member.macs, member.memory):
        raise RuntimeError(
            f"netspec bug: member #{number} written as a spec has totals {figures}, "
            f"explored {(member.params, member.macs, member.memory)}"
        )
    if path is not None:
        atomic_write(path, text)
    return text, member, got


# ---- outputs -----------------------------------------------------------------------------


def to_csv(exp: Exploration) -> str:
    """Every explored member: bindings, verdict, figures, budget fit and front membership."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = any(m.score is not None or m.measured for m in exp.members)
    w.writerow(
        [
            "member",
            *exp.space.names,
            "valid",
            "reason",
            "params",
            "macs",
            "memory_bytes",
            "fits_budget",
            "on_front",
            *(MEASURED if extra else ()),
        ]
    )
    for m in exp.members:
        figures = [m.params, m.macs, m.memory] if m.error is None or m.params else ["", "", ""]
        w.writerow(
            [
                m.number,
                *(literal(v) for v in m.bindings.values()),
                int(m.valid),
                m.reason(exp.budgets),
                *figures,
                int(m.fits),
                int(m.on_front),
                *(_measured_cells(m) if extra else ()),
            ]
        )
    return buf.getvalue()


# --score and --train-top columns: the proxy's value, then what training measured
MEASURED = ("score", "val_acc", "epochs", "trial", "latency_ms")


def _measured_cells(m: Member) -> list[Any]:
    d = m.measured or {}
    return [
        "" if m.score is None else m.score,
        *("" if d.get(k) is None else d[k] for k in ("accuracy", "epochs", "state", "latency_ms")),
    ]


def plot(exp: Exploration, path: str | Path) -> None:
    """Params vs MACs of the valid members on log axes, the front highlighted (Agg, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    over = [m for m in exp.members if m.valid and m.over]
    fits = [m for m in exp.members if m.fits and not m.on_front]
    for group, style in (
        (over, {"marker": "x", "color": "0.65", "label": f"over budget ({len(over)})"}),
        (
            fits,
            {
                "marker": "o",
                "color": "tab:blue",
                "alpha": 0.6,
                "label": f"fits budget ({len(exp.fitting)})",
            },
        ),
        (
            exp.front,
            {
                "marker": "o",
                "color": "tab:red",
                "s": 45,
                "edgecolors": "black",
                "label": f"Pareto front ({len(exp.front)})",
            },
        ),
    ):
        if group:
            ax.scatter([m.params for m in group], [max(m.macs, 1) for m in group], **style)
    for m in exp.front:
        ax.annotate(
            f"#{m.number}",
            (m.params, max(m.macs, 1)),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    limits = {b.metric: b.limit for b in _budget_checks(exp.spec, exp.members)}
    if "params" in limits:
        ax.axvline(limits["params"], color="0.4", linestyle="--", linewidth=1)
    if "macs" in limits:
        ax.axhline(limits["macs"], color="0.4", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MACs (multiply-adds)")
    ax.set_title(
        f"{plain(exp.spec.name)}: {len(exp.valid):,} valid of {len(exp.members):,} members"
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


# ---- formatting --------------------------------------------------------------------------


def _where(span: Span | None) -> str:
    return f"{span.line}:{span.col}" if span else ""


def source_snippet(spec: Spec, span: Span | None, width: int = 40) -> str:
    """The text a span covers (first line only, shortened): `POOL?`."""
    if span is None or not spec.text:
        return ""
    lines = spec.text.splitlines()
    if not 1 <= span.line <= len(lines):
        return ""
    line = lines[span.line - 1]
    end = span.end_col if span.end_line == span.line else len(line) + 1
    snippet = line[span.col - 1 : end - 1].strip()
    return snippet if len(snippet) <= width else snippet[: width - 3] + "..."


def _show_limit(metric: str, limit: float) -> str:
    from netspec.summary import limit_text

    return limit_text(metric, limit)


__all__ = [
    "CAP",
    "METRICS",
    "literal",
    "Space",
    "Member",
    "FailureGroup",
    "Exploration",
    "explore",
    "evaluate",
    "parse_grid",
    "pareto_front",
    "member_source",
    "pick",
    "locate",
    "to_csv",
    "plot",
    "source_snippet",
]
