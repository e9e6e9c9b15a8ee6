"""What the members of a design-space family share in light builds: an element's effect
(output shape, figures, soft errors, the figures cache entries it used, the calls it made of
counted blocks) depends only on its input shape and the values of the names it reads, so it is
computed once and replayed for every member with the same values (`ParsedSpec.element_cache`;
the key and the replay are inline in `netspec.ir.walk.Builder.element`, the hot path of
explore)."""

from __future__ import annotations

from typing import Any, NamedTuple

from netspec.errors import NetspecError
from netspec.frontend import ast
from netspec.ir.expr import free_names
from netspec.ir.naming import Value, switch_name
from netspec.ir.spec import ParsedSpec

# An element's effect: (output shape, sums deltas, errors, figures cache entries used, calls
# of each counted block), or a `Failed`.
Effect = tuple[tuple[int, ...], tuple[int, ...], tuple, tuple, tuple[int, ...]]


class Failed(NamedTuple):
    """An element that raised: the soft errors it reported before (a shape assertion, say),
    then the error, so that a member replaying it reports what the first one did."""

    errors: tuple[NetspecError, ...]
    error: NetspecError


def effect(
    out: Value,
    sums_before: list[int],
    sums_after: list[int],
    errors: list[NetspecError],
    used: dict[int, list[int]],
    calls: dict[str, int],
    counted: list[str],
    calls_before: list[int],
) -> Effect:
    """What an element just expanded did, to keep for the family's other members."""
    deltas = tuple(a - b for a, b in zip(sums_after, sums_before, strict=True))
    ncalls = tuple(calls.get(b, 0) - n for b, n in zip(counted, calls_before, strict=True))
    return (out.shape, deltas, tuple(errors), tuple(used.values()), ncalls)


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
