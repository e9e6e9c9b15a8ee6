"""The spec text of a recovered tree: header, blocks, the main chain laid out over lines."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace

from netspec.recover.fold import Block, find_blocks, fold_tree
from netspec.recover.graph import Item, Join, Op, walk
from netspec.recover.text import (
    SPEC_DEFAULTS,
    Node,
    defaults_line,
    join_text,
    layout,
    node_text,
    spec_defaults,
)


@dataclass
class Written:
    """A written spec and what it says about its source."""

    text: str
    blocks: list[Block] = field(default_factory=list)
    classes: int | None = None


def spec_name(name: str) -> str:
    """A valid network name from a file's or graph's name."""
    name = re.sub(r"\W+", "_", name).strip("_") or "imported"
    return name if name[0].isalpha() else f"n_{name}"


def _classifier(items: list[Item]) -> tuple[list[Item], int | None]:
    """`classes N` from a final FC(N) (before a SOFTMAX, if any), written `FC(classes)`."""
    i = len(items) - 1
    if i >= 0 and isinstance(items[i], Op) and items[i].spelling == "SOFTMAX":  # type: ignore[union-attr]
        i -= 1
    last = items[i] if i >= 0 else None
    if (
        not isinstance(last, Op)
        or last.spelling != "FC"
        or last.shape is None
        or len(last.shape) != 1
    ):
        return items, None
    classes = last.arg("units")
    assert isinstance(classes, int)
    fc = replace(last, args=tuple((k, "classes" if k == "units" else v) for k, v in last.args))
    return [*items[:i], fc, *items[i + 1 :]], classes


def _input_line(items: list[Item], shape: tuple[int, ...]) -> str:
    """`input [C, H, W]`, or `input tokens(length=L, vocab=V)` read by an embedding."""
    first = walk(items)[:1]
    if first and first[0].spelling == "EMBEDDING" and len(shape) == 1:
        return f"input tokens(length={shape[0]}, vocab={first[0].arg('vocab')})"
    return f"input [{', '.join(map(str, shape))}]"


def _notes(items: list[Item]) -> list[str]:
    counts = Counter(op.note for op in walk(items) if op.note)
    return [f"# {n} x {note}" for note, n in sorted(counts.items())]


def write_spec(
    items: list[Item],
    name: str,
    input_shape: tuple[int, ...],
    source: str,
    flat: bool = False,
) -> Written:
    """The spec of a recovered main chain.

    Args:
        items: the tree (`to_tree`).
        name: the network's name.
        input_shape: the input without the batch.
        source: where it came from, for the first comment.
        flat: one layer a line, no blocks or repetitions.
    """
    items, classes = _classifier(items)
    lines = [f"# Imported from {source} by `netspec import`."]
    lines += _notes(items)
    lines += [f"network {spec_name(name)}", _input_line(items, input_shape)]
    if classes is not None:
        lines.append(f"classes {classes}")
    entries = spec_defaults(walk(items))
    line = defaults_line(entries)
    if line:
        lines.append(line)
    lines.append("")
    token = SPEC_DEFAULTS.set(entries)
    try:
        blocks, body = _body(items, lines, flat)
    finally:
        SPEC_DEFAULTS.reset(token)
    return Written("\n".join(lines + body) + "\n", blocks, classes)


def _body(items: list[Item], lines: list[str], flat: bool) -> tuple[list[Block], list[str]]:
    """The blocks (added to `lines`) and the main chain's lines."""
    blocks: list[Block] = []
    if flat:
        chain: list[Node] = list(items)
        body = _flat_lines(chain)
    else:
        blocks, chain = find_blocks(items)
        chain = fold_tree(chain)
        for block in blocks:
            lines += block.lines()
        if blocks:
            lines.append("")
        body = layout(chain)
    return blocks, body


def _flat_lines(items: list[Node]) -> list[str]:
    """One layer a line; a join's branches each on their own lines."""
    lines = ["  INPUT"]
    for item in items:
        if isinstance(item, Join):
            branches = [" -> ".join(node_text(x) for x in b) or "IDENTITY" for b in item.branches]
            lines.append("  -> " + join_text(item.op.spelling, branches))
        else:
            note = f"  # {item.note}" if isinstance(item, Op) and item.note else ""
            lines.append(f"  -> {node_text(item)}{note}")
    return lines
