"""Spec text for recovered items: a layer's call (`CONV(64, 3, stride=2, bias=off)`), a join
(`residual(...)`, `concat(...)`), a repetition (`[...]*3`), a block call; and chains laid out
over lines."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from netspec.recover.graph import Join, Op, Value

# Arguments a spelling takes by position (the rest by name), as its layer kind declares them.
POSITIONAL = {
    "CONV": ("channels", "kernel"),
    "DWCONV": ("kernel",),
    "CONVTRANSPOSE": ("channels", "kernel"),
    "FC": ("units",),
    "MAXPOOL": ("kernel",),
    "AVGPOOL": ("kernel",),
    "LRN": ("size",),
    "ADAPTIVEAVGPOOL": ("size",),
    "UPSAMPLE": ("scale",),
    "LAYERNORM": ("eps",),
    "CHANNELSHUFFLE": ("groups",),
    "SLICE": ("start", "stop"),
    "LAYERSCALE": ("init",),
    "EMBEDDING": ("dim",),
}
WIDTH = 96  # the longest line the writer makes when it can break


def fmt_value(value: Value | str) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def call_text(spelling: str, args: list[tuple[str, str]]) -> str:
    """`SPELLING(a, b, key=c)` with the spelling's positional arguments first (while they are
    given in order), every other one by name; `SPELLING` alone without arguments."""
    positional = POSITIONAL.get(spelling, ())
    parts, named = [], False
    for i, (name, text) in enumerate(args):
        if not named and i < len(positional) and positional[i] == name:
            parts.append(text)
        else:
            named = True
            parts.append(f"{name}={text}")
    return f"{spelling}({', '.join(parts)})" if parts else spelling


@dataclass
class Rep:
    """`[items]*count` (a single item: `item*count`)."""

    items: list[Node]
    count: int


@dataclass
class Call:
    """A block call: `name(args)`, the instance's ops kept for the weights' order."""

    name: str
    args: list[str]
    ops: list[Op] = field(default_factory=list)


@dataclass
class Fork:
    """A join whose branches are written nodes (repetitions folded inside them)."""

    kind: str
    branches: list[list[Node]]


Node = Op | Join | Rep | Call | Fork


DEFAULTS: dict[str, dict[str, Value]] = {
    "CONV": {"stride": 1, "dilation": 1, "groups": 1, "bias": True},
    "DWCONV": {"stride": 1, "dilation": 1, "bias": True},
    "CONVTRANSPOSE": {
        "stride": 2,
        "padding": 0,
        "output_padding": 0,
        "dilation": 1,
        "groups": 1,
        "bias": True,
    },
    "MAXPOOL": {"padding": 0, "ceil": False},
    "AVGPOOL": {"padding": 0, "ceil": False},
    "FC": {"bias": True},
    "BN": {"eps": 1e-5},
    "LEAKYRELU": {"slope": 0.01},
    "ELU": {"alpha": 1.0},
    "GELU": {"approximate": "none"},
    "UPSAMPLE": {"mode": "nearest", "align_corners": False},
    "CHANNELSHUFFLE": {"groups": 2},
}


# The spec's own `defaults` line while it is written (see `spec_defaults`).
SPEC_DEFAULTS: ContextVar[dict[str, dict[str, Value]] | None] = ContextVar(
    "spec_defaults", default=None
)


def spec_defaults(ops: Sequence[Op]) -> dict[str, dict[str, Value]]:
    """A `defaults` line's entries: `bias=off` for a spelling most of whose convs have none, a
    batch norm's eps when every one has the same other than PyTorch's."""
    out: dict[str, dict[str, Value]] = {}
    for spelling in ("CONV", "DWCONV"):
        biases = [op.arg("bias") for op in ops if op.spelling == spelling]
        if biases and biases.count(False) * 2 > len(biases):
            out[spelling] = {"bias": False}
    eps = {op.arg("eps") for op in ops if op.spelling == "BN"}
    if len(eps) == 1 and (value := eps.pop()) not in (None, 1e-5):
        out["BN"] = {"eps": value}
    return out


def defaults_line(entries: dict[str, dict[str, Value]]) -> str | None:
    if not entries:
        return None
    calls = [
        f"{s}({', '.join(f'{k}={fmt_value(v)}' for k, v in a.items())})" for s, a in entries.items()
    ]
    return "defaults " + ", ".join(calls)


def _omitted(op: Op, name: str, value: Value) -> bool:
    """An argument the spelling's default gives (a conv's `same` padding, a pool's stride)."""
    own = (SPEC_DEFAULTS.get() or {}).get(op.spelling, {})
    if name in own:
        return own[name] == value
    if DEFAULTS.get(op.spelling, {}).get(name, ...) == value and type(value) is not float:
        return True
    if name == "eps" and value == (1e-6 if op.spelling == "LAYERNORM" else 1e-5):
        return True
    if op.spelling == "EMBEDDING" and name == "vocab":  # the input's `tokens(vocab=...)`
        return True
    if op.spelling in ("MAXPOOL", "AVGPOOL") and name == "stride":
        return value == op.arg("kernel")
    if op.spelling in ("CONV", "DWCONV") and name == "padding":
        k = op.arg("kernel")
        ks = k if isinstance(k, tuple) else (k,)
        same = tuple((kk - 1) // 2 for kk in ks if isinstance(kk, int))
        plain = op.arg("stride") == 1 and op.arg("dilation", 1) == 1
        odd = all(isinstance(kk, int) and kk % 2 for kk in ks)
        pads = value if isinstance(value, tuple) else (value,) * len(ks)
        return plain and odd and pads == same
    return False


def op_text(op: Op, values: dict[str, str] | None = None) -> str:
    """A layer's call, defaults left out; `values` replace argument values by name (a block's
    parameters, always written)."""
    values = values or {}
    args = []
    for k, v in op.args:
        if k in values:
            args.append((k, values[k]))
        elif not (_omitted(op, k, v) and not _depends(op, k, values)):
            args.append((k, fmt_value(v)))
    return call_text(op.spelling, args)


def _depends(op: Op, name: str, values: dict[str, str]) -> bool:
    """A default that holds only for this instance's stride or kernel (a parameter in a block)."""
    return name in ("padding", "stride") and bool({"stride", "kernel", "dilation"} & set(values))


def node_text(node: Node) -> str:
    """One item as text, on one line."""
    if isinstance(node, Op):
        return op_text(node)
    if isinstance(node, Call):
        return f"{node.name}({', '.join(node.args)})" if node.args else node.name
    if isinstance(node, Rep):
        inner = chain_text(node.items)
        single = len(node.items) == 1 and not isinstance(node.items[0], Rep)
        return f"{inner}*{node.count}" if single else f"[{inner}]*{node.count}"
    if isinstance(node, Fork):
        return join_text(node.kind, [chain_text(b) for b in node.branches])
    return join_text(node.op.spelling, [chain_text(b) for b in node.branches])


def join_text(kind: str, branches: list[str]) -> str:
    """`add(a, b)`; `residual(a)` for a sum with a plain skip; `mul(IDENTITY, g)` for a gate."""
    if kind == "add" and len(branches) == 2 and "IDENTITY" in branches:
        body = branches[0] if branches[1] == "IDENTITY" else branches[1]
        return f"residual({body})"
    return f"{kind}({', '.join(branches)})"


def chain_text(items: Sequence[Node]) -> str:
    return " -> ".join(node_text(i) for i in items) if items else "IDENTITY"


def heavy(node: Node) -> bool:
    """Starts a new line in a laid-out chain: a layer with weights, a block, a join, a loop."""
    if isinstance(node, Op):
        return node.spelling in ("CONV", "DWCONV", "CONVTRANSPOSE", "FC", "EMBEDDING")
    return True


def layout(items: Sequence[Node], indent: str = "", first: str = "INPUT") -> list[str]:
    """A chain over lines: `first`, then `-> ...` lines, a new one at each heavy item or when
    the line would pass WIDTH; a join too long for a line gets a line per branch."""
    lines = [indent + first] if first else []
    return lines + _segments(items, indent + "  ", "-> ", "-> ")


def _segments(items: Sequence[Node], indent: str, lead: str, more: str) -> list[str]:
    """Lines of a chain at `indent`, the first after `lead`, the others after `more`."""
    lines: list[str] = []
    current = ""

    def flush() -> None:
        nonlocal current
        if current:
            lines.append(f"{indent}{more if lines else lead}{current}")
            current = ""

    # The current line holds block calls only (a stage: `b(64, 2) -> b(64)*3`) until a call of
    # its first block comes again (the next stage).
    calls, first_call = False, ""
    for item in items:
        text = node_text(item)
        wide = len(indent) + len(current) + len(text) + 7 > WIDTH
        call = _is_call(item)
        if current and calls and call and not wide and _name(item) != first_call:
            current = f"{current} -> {text}"
            continue
        if isinstance(item, Fork) and len(indent) + len(text) + 4 > WIDTH:
            flush()
            pre = more if lines else lead
            sub = fork_lines(item, indent + " " * len(pre))
            lines.append(f"{indent}{pre}{sub[0]}")
            lines.extend(sub[1:])
            continue
        if current and (heavy(item) or wide):
            flush()
        calls = call and not current
        first_call = _name(item) if calls else ""
        current = f"{current} -> {text}" if current else text
    flush()
    return lines


def _name(node: Node) -> str:
    while isinstance(node, Rep) and len(node.items) == 1:
        node = node.items[0]
    return node.name if isinstance(node, Call) else ""


def _is_call(node: Node) -> bool:
    while isinstance(node, Rep) and len(node.items) == 1:
        node = node.items[0]
    return isinstance(node, Call)


def fork_lines(fork: Fork, indent: str) -> list[str]:
    """`kind(` then each branch on its own lines, one step in; the first line unindented."""
    branches = fork.branches
    head = f"{fork.kind}("
    if fork.kind == "add" and len(branches) == 2 and not all(branches):
        head, branches = "residual(", [b for b in branches if b]
    lines = [head]
    inner = indent + "  "
    for i, branch in enumerate(branches):
        seg = _segments(branch, inner, "", "-> ") if branch else [inner + "IDENTITY"]
        seg[-1] += "," if i < len(branches) - 1 else ")"
        lines.extend(seg)
    return lines
