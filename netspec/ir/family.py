"""What the members of a design-space family share in light builds: an element's effect
(output shape, figures, soft errors, the figures cache entries it used, the calls it made of
counted blocks, the last nodes a later softmax or classifier reads) depends only on its input
shape and the values of the names it reads, so it is computed once (`record`) and replayed for
every member with the same values (`replay`; `ParsedSpec.element_cache`, keyed by
`cache_key`). The build shares elements and each time round a repetition
(`netspec.ir.walk.Builder._shared`, the hot path of explore); a size estimate is kept by the
names that decide a size (`size_names`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.expr import free_names, walk
from netspec.ir.limits import MAX_WORK
from netspec.ir.meter import Meter, OverCap
from netspec.ir.naming import Value, switch_name
from netspec.ir.shapes import Propagation
from netspec.ir.spec import ParsedSpec
from netspec.layers import SPELLINGS

# An element's effect: (output shape, sums deltas, errors, figures cache entries used, calls
# of each counted block, the last node that is not the identity and the last node, where the
# element made them (the final classifier and a softmax read them: `Propagation.tail`,
# `Propagation.last`), else None), or a `Failed`.
Effect = tuple[tuple[int, ...], tuple[int, ...], tuple, tuple, tuple[int, ...], Any, Any]


class Failed(NamedTuple):
    """An element that raised: the soft errors it reported before (a shape assertion, say),
    then the error, so that a member replaying it reports what the first one did."""

    errors: tuple[NetspecError, ...]
    error: NetspecError


class Building(Protocol):
    """What `record` and `replay` read and write of a build (netspec.ir.walk.Builder)."""

    spec: ParsedSpec
    calls: dict[str, int]
    counted: list[str]
    nodes: Propagation
    meter: Meter
    errors: list[NetspecError]


def record(b: Building, expand: Callable[[], Value], key: tuple) -> Value:
    """An element (or a time round a repetition) no member met with these values: expanded
    by `expand`, its effect kept in the spec's cache under `key` for the family's other
    members (or the error it raised, but for the cap on work, which depends on what came
    before)."""
    spec, calls, counted, nodes = b.spec, b.calls, b.counted, b.nodes
    before = list(b.meter.sums)
    calls_before = [calls.get(c, 0) for c in counted]
    nerr = len(b.errors)
    tail, last = nodes.tail, nodes.last
    used_stack = nodes.used
    used_stack.append({})
    try:
        out = expand()
    except NetspecError as e:
        if not isinstance(e, OverCap):
            spec.element_cache[key] = Failed(tuple(b.errors[nerr:]), e)
        raise
    finally:
        used = used_stack.pop()
        if used_stack:
            used_stack[-1].update(used)
    deltas = tuple(a - c for a, c in zip(b.meter.sums, before, strict=True))
    ncalls = tuple(calls.get(c, 0) - n for c, n in zip(counted, calls_before, strict=True))
    spec.element_cache[key] = (
        out.shape,
        deltas,
        tuple(b.errors[nerr:]),
        tuple(used.values()),
        ncalls,
        nodes.tail if nodes.tail is not tail else None,
        nodes.last if nodes.last is not last else None,
    )
    return out


def replay(b: Building, hit: Effect | Failed, span: Any) -> Value:
    """A cached effect applied as the build would have made it (or its error raised), its
    output returned, nameless; `span`: where work over the cap is reported."""
    if isinstance(hit, Failed):
        b.errors.extend(hit.errors)
        raise hit.error
    shape, deltas, errors, used, ncalls, tail, last = hit
    nodes = b.nodes
    if tail is not None:
        nodes.tail = tail
    if last is not None:
        nodes.last = last
    meter = b.meter
    sums = meter.sums
    for i, d in enumerate(deltas):
        sums[i] += d
    calls = b.calls
    for c, d in zip(b.counted, ncalls, strict=True):
        calls[c] = calls.get(c, 0) + d
    serial = meter.serial
    for mark in used:  # its distinct layers, as a full build would count them
        if mark[0] != serial:
            mark[0] = serial
            meter.fresh += 1
    used_stack = nodes.used
    if used_stack:
        used_stack[-1].update((id(m), m) for m in used)
    if meter.work > MAX_WORK:
        meter.over_work(span)
    b.errors.extend(errors)
    return Value("", shape)


def element_names(spec: ParsedSpec, node: Any) -> tuple[str, ...]:
    """The names an element (or a repetition's body) reads, sorted, kept per node: the values
    its effect is kept by (`cache_key`)."""
    names = spec.element_names.get(id(node))
    if names is None:
        names = spec.element_names[id(node)] = tuple(sorted(names_used(spec, node, set())))
    return names


def cache_key(
    spec: ParsedSpec,
    node: Any,
    shape: tuple[int, ...],
    classes: int | None,
    values: tuple,
    calls: tuple[int, ...],
    tail: Any,
    last: Any,
    final: bool,
) -> tuple:
    """Where an element's (or a time round's) effect is kept: the node, its input shape, the
    class count, the values of its names (`element_names`), the calls of the counted blocks
    so far; the final classifier's, the last layer that is not the identity before it (`tail`);
    one that calls a softmax, the last node made before it (`last`, see `reads_last`). The
    build and netspec.explore_fast both key by it: what one keeps, the other finds."""
    key = (id(node), shape, classes, *values, *calls)
    if final:
        key += (tail,)
    if reads_last(spec, node):
        key += (last,)
    return key


def reads_last(spec: ParsedSpec, node: Any) -> bool:
    """Whether an element (or a repetition's body) may read the last node made before it: it
    calls a layer that refuses probabilities as input (`SOFTMAX -> SOFTMAX`), itself or in a
    block it calls. Its effect then depends on that node, which its key in the cache holds."""
    hit = spec.reads_last.get(id(node))
    if hit is None:
        hit = spec.reads_last[id(node)] = any(
            isinstance(item, ast.Call) and _probabilities(spec, item, set()) for item in walk(node)
        )
    return hit


def _probabilities(spec: ParsedSpec, call: ast.Call, seen: set[str]) -> bool:
    block = spec.blocks.get(call.name)
    if block is not None:
        if block.name in seen:
            return False
        seen.add(block.name)
        return any(
            isinstance(item, ast.Call) and _probabilities(spec, item, seen)
            for item in walk(block.body)
        )
    entry = SPELLINGS.get(call.name.upper())
    return entry is not None and entry[0].probabilities


def names_used(spec: ParsedSpec, node: Any, seen_blocks: set[str]) -> set[str]:
    """Every name an element may read: its own expressions and those of blocks it calls."""
    names = free_names(node)
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Element):
            stack.append(item.primary)
            if item.optional and item.condition is None:
                names.add(switch_name(item) or "")
        elif isinstance(item, ast.Group):
            stack.extend(item.chain.elements)
        elif isinstance(item, ast.Branches):
            for ch in item.chains:
                stack.extend(ch.elements)
        elif isinstance(item, ast.Call):
            block = spec.blocks.get(item.name)
            if block is not None and block.name not in seen_blocks:
                seen_blocks.add(block.name)
                inner = names_used(spec, block.body, seen_blocks)
                for p in block.params:
                    if p.default is not None:
                        inner |= free_names(p.default)
                names |= inner - {p.name for p in block.params}
    return names


def size_names(spec: ParsedSpec, node: Any) -> set[str]:
    """The names an element's size estimate may read (netspec.ir.estimate): its counts,
    switches and conditions, and everything a block call reads; not the arguments of a layer
    call, which is one node whatever they are. A family's members that differ only in widths
    share their estimates."""
    names: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Element):
            stack.append(item.primary)
            if item.repeat is not None:
                names |= free_names(item.repeat)
            if item.optional:
                if item.condition is None:
                    names.add(switch_name(item) or "")
                else:
                    names |= free_names(item.condition)
        elif isinstance(item, ast.Group):
            stack.extend(item.chain.elements)
        elif isinstance(item, ast.Branches):
            names |= free_names(item.kwargs)
            for ch in item.chains:
                stack.extend(ch.elements)
        elif isinstance(item, ast.Call) and item.name in spec.blocks:
            names |= names_used(spec, item, set())
    return names
