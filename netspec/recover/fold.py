"""Blocks and repetitions found in a recovered chain.

A *unit* is a join (residual, concat, gate) with the activations right after it. Units of one
structure (the same layers and arguments, values aside) become one block whose parameters are
the values that vary between them (a channel count, a stride; a value always a multiple of
another is written so: `4 * c`); a residual block also takes the plain chains of its body's
structure, its skip under `when=(...)` (MobileNet's inverted residuals). Consecutive equal
items then fold into `[...]*N`, repeatedly, so repetitions nest (VGG's stages).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from netspec.recover.graph import Item, Join, Op, Value, walk
from netspec.recover.text import Call, Fork, Node, Rep, fmt_value, join_text, node_text, op_text

TAILS = frozenset(
    [
        "RELU",
        "RELU6",
        "SIGMOID",
        "TANH",
        "HARDSWISH",
        "HARDSIGMOID",
        "SILU",
        "GELU",
        "ELU",
        "LEAKYRELU",
        "PRELU",
    ]
)
PARAM_NAMES = {
    "channels": "c",
    "units": "n",
    "stride": "s",
    "kernel": "k",
    "padding": "p",
    "stop": "c",
}
MAX_WINDOW = 12  # the longest repeated window looked for
WIDTH = 96


@dataclass
class Block:
    """`block name(params) = body`: its text over lines, and how many calls use it."""

    name: str
    params: list[str]
    body: str
    uses: int = 0

    def lines(self) -> list[str]:
        head = f"block {self.name}({', '.join(self.params)}) ="
        if len(self.body) + 2 <= WIDTH:
            return [head, "  " + self.body]
        parts = split_join(self.body)
        wrapped = wrap(self.body, "  ")
        if ", when=(" in self.body:  # the condition on a line of its own
            body, cond = self.body.rsplit(", when=(", 1)
            return [head, *wrap(body + ",", "  "), f"    when=({cond}"]
        if parts is None or len(parts[1]) < 3 and len(wrapped) <= 3:
            return [head, *wrapped]
        opener, branches, rest = parts
        out = [head, f"  {opener}("]
        for i, branch in enumerate(branches):
            lines = wrap(branch, "    ")
            lines[-1] += "," if i < len(branches) - 1 else ")" + rest
            out += lines
        return out


def split_join(text: str) -> tuple[str, list[str], str] | None:
    """`kind(a, b) -> rest` as ("kind", ["a", "b"], " -> rest"): the join's branches split at
    its own commas; None when the text does not start with a join."""
    start = text.find("(")
    if start <= 0 or not text[:start].isidentifier():
        return None
    depth, pieces, last = 0, [], start + 1
    for i in range(start, len(text)):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                pieces.append(text[last:i].strip())
                return text[:start], pieces, text[i + 1 :]
        elif ch == "," and depth == 1:
            pieces.append(text[last:i].strip())
            last = i + 1
    return None


def wrap(text: str, indent: str, width: int = 96) -> list[str]:
    """A chain's text over lines, broken before ` -> ` where a line would pass `width`."""
    parts = text.split(" -> ")
    lines, current = [], ""
    for part in parts:
        if current and len(indent) + len(current) + len(part) + 4 > width:
            lines.append(indent + current)
            current = "-> " + part
        else:
            current = f"{current} -> {part}" if current else part
    lines.append(indent + current)
    return lines


def signature(item: Item) -> str:
    """An item's structure: spellings, joins and argument names, values left out."""
    if isinstance(item, Op):
        return item.spelling + "(" + ",".join(k for k, _ in item.args) + ")"
    inner = "|".join(",".join(map(signature, b)) for b in item.branches)
    return f"{item.op.spelling}<{inner}>"


def segment(items: list[Item]) -> list[Item | list[Item]]:
    """The chain with each join and the activations after it grouped as one unit (a list)."""
    out: list[Item | list[Item]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, Join):
            j = i + 1
            while j < len(items):
                nxt = items[j]
                if not (isinstance(nxt, Op) and nxt.spelling in TAILS):
                    break
                j += 1
            out.append(items[i:j])
            i = j
        else:
            out.append(item)
            i += 1
    return out


def _slots(unit: list[Item]) -> list[tuple[int, str]]:
    return [(i, k) for i, op in enumerate(walk(unit)) for k, _ in op.args]


def _values(unit: list[Item]) -> list[Value]:
    return [v for op in walk(unit) for _, v in op.args]


def _derive(vec: list[Value], params: list[tuple[str, list[Value]]]) -> str | None:
    """`p`, `k * p` or `p // k` when `vec` is a parameter's values or a fixed multiple."""
    for name, pvec in params:
        if pvec == vec:
            return name
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in vec)
    for name, pvec in params:
        if not ints or not all(isinstance(v, int) and not isinstance(v, bool) for v in pvec):
            continue
        ratios = {v // p if p and v % p == 0 else None for v, p in zip(vec, pvec, strict=False)}  # type: ignore[operator]
        if len(ratios) == 1 and None not in ratios and (r := ratios.pop()) and r > 1:
            return f"{r} * {name}"
        ratios = {p // v if v and p % v == 0 else None for v, p in zip(vec, pvec, strict=False)}  # type: ignore[operator]
        if len(ratios) == 1 and None not in ratios and (r := ratios.pop()) and r > 1:
            return f"{name} // {r}"
    return None


def _parameters(
    units: list[list[Item]],
) -> tuple[list[tuple[str, list[Value]]], dict[tuple[int, str], str]]:
    """The values that vary between units, as parameters (a fixed multiple of one derived)."""
    slots = _slots(units[0])
    columns = list(zip(*(_values(u) for u in units), strict=False))
    params: list[tuple[str, list[Value]]] = []
    exprs: dict[tuple[int, str], str] = {}
    counts: Counter[str] = Counter()
    for slot, column in zip(slots, columns, strict=False):
        vec = list(column)
        if all(v == vec[0] for v in vec):
            continue
        derived = _derive(vec, params)
        if derived is None:
            base = PARAM_NAMES.get(slot[1], slot[1])
            counts[base] += 1
            derived = base if counts[base] == 1 else f"{base}{counts[base]}"
            params.append((derived, vec))
        exprs[slot] = derived
    return _smallest(params, exprs), exprs


def _smallest(
    params: list[tuple[str, list[Value]]], exprs: dict[tuple[int, str], str]
) -> list[tuple[str, list[Value]]]:
    """A parameter whose only derived use is `p // r` rebased on that smaller value: `c` and
    `4 * c` rather than `c // 4` and `c` (ConvNeXt's block: a depthwise conv, then 4c, then c)."""
    out = []
    for name, vec in params:
        uses = {e for e in exprs.values() if e == name or e.startswith(f"{name} //")}
        divided = [e for e in uses if e != name]
        if len(divided) == 1 and not any(e.endswith(f"* {name}") for e in exprs.values()):
            r = int(divided[0].split("//")[1])
            for slot, e in exprs.items():
                if e == name:
                    exprs[slot] = f"{r} * {name}"
                elif e == divided[0]:
                    exprs[slot] = name
            vec = [v // r for v in vec]  # type: ignore[operator]
        out.append((name, vec))
    return out


def make_block(
    name: str, units: list[list[Item]], skip: list[bool] | None = None, tails: int = 0
) -> tuple[Block, list[Call]] | None:
    """One block for units of one structure, and the call standing for each unit.

    With `skip` (one flag per unit), the units are residual bodies (then `tails` activations)
    of which those flagged had the skip: the block's residual has `when=(...)`, a condition on
    its stride and channels that holds exactly for them; None when no such condition does.
    """
    params, exprs = _parameters(units)
    when = ""
    if skip is not None:
        when = _when(units, params, exprs, skip)
        if not when:
            return None
    # A parameter whose most common value is most calls' becomes a default, written last.
    defaults: dict[str, Value] = {}
    for pname, vec in params:
        value, n = Counter(map(fmt_value, vec)).most_common(1)[0]
        if n * 2 > len(vec) and pname.rstrip("0123456789") in ("s", "p", "g", "d"):
            defaults[pname] = next(v for v in vec if fmt_value(v) == value)
    order = [p for p in params if p[0] not in defaults] + [p for p in params if p[0] in defaults]
    heads = [p if p not in defaults else f"{p}={fmt_value(defaults[p])}" for p, _ in order]
    body = _template(units[0], exprs)
    if skip is not None:
        parts = body.split(" -> ")
        cut = len(parts) - tails
        body = " -> ".join([f"residual({' -> '.join(parts[:cut])}, when=({when}))", *parts[cut:]])
    calls = []
    for i, unit in enumerate(units):
        args = [fmt_value(vec[i]) for _, vec in order]
        while args and order[len(args) - 1][0] in defaults:
            p = order[len(args) - 1][0]
            if args[-1] != fmt_value(defaults[p]):
                break
            args.pop()
        calls.append(Call(name, args, walk(unit)))
    return Block(name, heads, body, len(units)), calls


def _when(
    units: list[list[Item]],
    params: list[tuple[str, list[Value]]],
    exprs: dict[tuple[int, str], str],
    skip: list[bool],
) -> str:
    """`s == 1 and in.c == c`: the stride parameters 1 and the output channels the input's,
    when that holds for exactly the units with the skip."""
    ops = walk(units[0])
    strides = sorted({e for (i, k), e in exprs.items() if k == "stride" and e.isidentifier()})
    convs = [i for i, op in enumerate(ops) if op.arg("channels") is not None]
    if not convs:
        return ""
    last = convs[-1]
    c_expr = exprs.get((last, "channels"), fmt_value(ops[last].arg("channels")))  # type: ignore[arg-type]
    values = dict(params)
    for n, unit in enumerate(units):
        first = walk(unit)[0]
        in_c = first.in_channels
        out_c = walk(unit)[last].arg("channels")
        holds = all(values[s][n] == 1 for s in strides) and in_c == out_c
        if holds != skip[n] or in_c is None:
            return ""
    return " and ".join([*(f"{s} == 1" for s in strides), f"in.c == {c_expr}"])


def _template(unit: list[Item], exprs: dict[tuple[int, str], str]) -> str:
    index = 0

    def item_text(item: Item) -> str:
        nonlocal index
        if isinstance(item, Op):
            values = {k: e for (i, k), e in exprs.items() if i == index}
            index += 1
            return op_text(item, values)
        branches = [" -> ".join(item_text(x) for x in b) or "IDENTITY" for b in item.branches]
        index += 1  # the join op itself (no arguments)
        return join_text(item.op.spelling, branches)

    return " -> ".join(item_text(x) for x in unit)


def _block_name(unit: list[Item], taken: set[str]) -> str:
    join = unit[0]
    assert isinstance(join, Join)
    skip = any(not b for b in join.branches)
    base = {"add": "res" if skip else "proj", "concat": "dense_layer" if skip else "mixed"}.get(
        join.op.spelling, "gate"
    )
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


def _residual_body(unit: list[Item]) -> list[Item] | None:
    """A residual unit's body and activations (`residual(body) -> tails`), else None."""
    join = unit[0]
    if not isinstance(join, Join) or join.op.spelling != "add" or len(join.branches) != 2:
        return None
    bodies = [b for b in join.branches if b]
    return [*bodies[0], *unit[1:]] if len(bodies) == 1 else None


def _windows(parts: list[Item | list[Item]], sigs: list[str]) -> list[int]:
    """Starts of plain runs of items with these signatures, left to right, not overlapping."""
    out, i, k = [], 0, len(sigs)
    while i + k <= len(parts):
        run = parts[i : i + k]
        if all(
            not isinstance(p, list) and signature(p) == s for p, s in zip(run, sigs, strict=False)
        ):
            out.append(i)
            i += k
        else:
            i += 1
    return out


def find_blocks(items: list[Item]) -> tuple[list[Block], list[Node]]:
    """The blocks of a main chain and the chain with their calls in place."""
    parts = segment(items)
    groups: dict[str, list[int]] = {}
    for i, part in enumerate(parts):
        if isinstance(part, list):
            groups.setdefault(";".join(map(signature, part)), []).append(i)
    blocks: list[Block] = []
    taken: set[str] = set()
    replaced: dict[int, tuple[Node, int]] = {}  # part index -> (call, parts it stands for)
    for members in groups.values():
        units: list[list[Item]] = [parts[i] for i in members]  # type: ignore[misc]
        made = _with_plain(parts, members, taken)
        if made is not None:
            block, spans = made
        elif len(units) >= 2:
            block, calls = make_block(_block_name(units[0], taken), units)  # type: ignore[misc]
            spans = [(i, c, 1) for i, c in zip(members, calls, strict=False)]
        else:
            continue
        blocks.append(block)
        for i, made_call, n in spans:
            replaced[i] = (made_call, n)
    out: list[Node] = []
    i = 0
    while i < len(parts):
        if i in replaced:
            call, n = replaced[i]
            out.append(call)
            i += n
            continue
        part = parts[i]
        out.extend(part if isinstance(part, list) else [part])
        i += 1
    return blocks, out


def _with_plain(
    parts: list[Item | list[Item]], members: list[int], taken: set[str]
) -> tuple[Block, list[tuple[int, Call, int]]] | None:
    """Residual units and the plain chains of their body's structure as one block with a
    conditional skip (MobileNet's inverted residuals), when there are such chains."""
    first = parts[members[0]]
    assert isinstance(first, list)
    bodies: list[list[Item]] = []
    for i in members:
        part = parts[i]
        body = _residual_body(part) if isinstance(part, list) else None
        if body is None:
            return None
        bodies.append(body)
    tails = len(first) - 1
    starts = _windows(parts, [signature(x) for x in bodies[0]])
    if not starts:
        return None
    k = len(bodies[0])
    found: list[tuple[int, list[Item], bool, int]] = [
        (i, b, True, 1) for i, b in zip(members, bodies, strict=True)
    ]
    for i in starts:
        found.append((i, [p for p in parts[i : i + k] if not isinstance(p, list)], False, k))
    where = sorted(found, key=lambda w: w[0])
    units = [u for _, u, _, _ in where]
    name = _block_name(first, taken)
    made = make_block(name, units, [s for _, _, s, _ in where], tails)
    if made is None:
        taken.discard(name)
        return None
    block, calls = made
    return block, [(i, c, n) for (i, _, _, n), c in zip(where, calls, strict=False)]


def fold_tree(items: list[Node]) -> list[Node]:
    """Repetitions folded in the chain and inside every join's branches."""
    out: list[Node] = []
    for item in items:
        if isinstance(item, Join):
            out.append(Fork(item.op.spelling, [fold_tree(list(b)) for b in item.branches]))
        else:
            out.append(item)
    return fold_repeats(out)


def fold_repeats(items: list[Node]) -> list[Node]:
    """Consecutive equal windows as `[...]*N`, until nothing more folds (so they nest)."""
    while True:
        keys = [node_text(i) for i in items]
        out: list[Node] = []
        i, changed = 0, False
        while i < len(items):
            best = (0, 1, 1)  # (items covered, window, count)
            for k in range(1, min(MAX_WINDOW, (len(items) - i) // 2) + 1):
                r = 1
                while keys[i + r * k : i + (r + 1) * k] == keys[i : i + k]:
                    r += 1
                if r > 1 and k * r > best[0]:
                    best = (k * r, k, r)
            _, k, r = best
            if r > 1:
                inner = items[i : i + k]
                if k == 1 and isinstance(inner[0], Rep):
                    inner = [Rep(inner[0].items, inner[0].count)]
                out.append(Rep(inner, r))
                i += k * r
                changed = True
            else:
                out.append(items[i])
                i += 1
        items = out
        if not changed:
            return items
