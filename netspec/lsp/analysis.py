"""What the language server knows about one spec text, without pygls: diagnostics, hover,
completion, definitions, symbols and inlay hints. Positions are 0-based (line, character),
as in LSP; netspec's spans are 1-based with an exclusive end column."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from netspec.errors import NetspecError, Span, SpecErrors
from netspec.io import fmt_bytes, fmt_count
from netspec.ir import receptive
from netspec.ir.build import load_spec_text
from netspec.layers import SPELLINGS
from netspec.layers.reference import arguments
from netspec.layers.reference import signature as layer_signature
from netspec.zoo import names

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_SKIP = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"')  # comments and strings hold no names
_BLOCK = re.compile(r"^\s*block\s+([A-Za-z_]\w*)", re.M)
_VAR = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:=(?!=)|\bin\b)", re.M)
_HEAD = re.compile(r"^\s*head\s+([A-Za-z_]\w*)", re.M)
_TRAIN = re.compile(r"^\s*train\b", re.M)
_SUGGESTION = re.compile(r"`([^`]+)`")
KEYWORDS = ["network", "input", "classes", "budget", "dtype", "defaults", "block", "head"]
KEYWORDS += ["train", "concat", "add", "mul", "residual", "as", "for", "at", "in"]

Pos = tuple[int, int]
Range = tuple[Pos, Pos]


@dataclass
class Problem:
    range: Range
    message: str
    hint: str | None = None
    fixes: list[str] = field(default_factory=list)  # did-you-mean replacements


@dataclass
class Analysis:
    text: str
    problems: list[Problem]
    graph: Any = None  # the IR graph, when the spec built
    fields: dict[str, Any] | None = None  # receptive fields by node id, computed on first hover

    def receptive(self, node_id: str) -> Any:
        if self.fields is None:
            try:
                self.fields = receptive.compute(self.graph)
            except Exception:  # a hover without the field rather than no hover
                self.fields = {}
        return self.fields.get(node_id)


def span_range(span: Span | None, text: str) -> Range:
    if span is None:
        return (0, 0), (0, 1)
    start = (span.line - 1, span.col - 1)
    end = (span.end_line - 1, span.end_col - 1)
    if end <= start:
        end = (start[0], start[1] + 1)
    return start, end


def analyse(text: str, path: str) -> Analysis:
    """Compile the text as `check` does (a family at its first member), never raising."""
    errors: list[NetspecError] = []
    graph = None
    try:
        spec = load_spec_text(text, path)
        bindings = {name: domain.values[0] for name, domain in spec.free.items()}
        graph, errors = spec.instantiate(bindings, collect=True)
    except SpecErrors as e:
        errors = list(e.errors)
    except NetspecError as e:
        errors = [e]
    except Exception as e:  # a compiler bug: shown as a diagnostic, the server goes on
        errors = [NetspecError(f"internal error: {type(e).__name__}: {e}")]
    problems = [_problem(e, text) for e in errors]
    seen = {p.range for p in problems}
    for check in getattr(graph, "budgets", None) or []:
        r = span_range(check.span, text)
        if not check.ok and r not in seen:
            msg = f"budget {check.metric} {check.op} {fmt_count(check.limit)} exceeded:"
            problems.append(Problem(r, f"{msg} {fmt_count(check.value)}"))
    return Analysis(text, problems, graph)


def _problem(e: NetspecError, text: str) -> Problem:
    fixes = _SUGGESTION.findall(e.hint or "") if "did you mean" in (e.hint or "") else []
    rng = span_range(e.span, text)
    if fixes:
        rng = _narrow(text, rng, _SUGGESTION.findall(e.message))
    return Problem(rng, e.message, e.hint, fixes)


def _narrow(text: str, rng: Range, names: list[str]) -> Range:
    """The range of the misspelled name itself (an argument's span covers `strde=2`), so the
    quick fix replaces the name only."""
    start, end = offset_of(text, rng[0]), offset_of(text, rng[1])
    for name in names:
        m = re.search(rf"(?<![\w.]){re.escape(name)}\b", text[start:end])
        if m:
            return pos_of(text, start + m.start()), pos_of(text, start + m.end())
    return rng


# ---- names in the text ------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.split("\n")


def offset_of(text: str, pos: Pos) -> int:
    lines = _lines(text)
    line = min(max(pos[0], 0), len(lines) - 1)
    return sum(len(x) + 1 for x in lines[:line]) + min(pos[1], len(lines[line]))


def pos_of(text: str, offset: int) -> Pos:
    before = text[:offset]
    return before.count("\n"), offset - (before.rfind("\n") + 1)


def word_at(text: str, pos: Pos) -> tuple[str, Range] | None:
    off = offset_of(text, pos)
    for m in _WORD.finditer(text, max(0, off - 200), off + 200):
        if m.start() <= off <= m.end():
            return m.group(), (pos_of(text, m.start()), pos_of(text, m.end()))
    return None


def occurrences(text: str, name: str) -> list[Range]:
    blanked = _SKIP.sub(lambda m: " " * len(m.group()), text)
    found = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(name)}\b", blanked):
        found.append((pos_of(text, m.start()), pos_of(text, m.end())))
    return found


def definitions(text: str) -> dict[str, tuple[str, Range]]:
    """Block and variable names -> (what, range of the name where it is defined)."""
    blanked = _SKIP.sub(lambda m: " " * len(m.group()), text)
    out: dict[str, tuple[str, Range]] = {}
    for what, rx in (("block", _BLOCK), ("variable", _VAR), ("head", _HEAD)):
        for m in rx.finditer(blanked):
            rng = (pos_of(text, m.start(1)), pos_of(text, m.end(1)))
            out.setdefault(m.group(1), (what, rng))
    return out


def symbols(text: str) -> list[tuple[str, str, Range]]:
    """(name, what, range) for the document outline: blocks, variables, heads, train."""
    found = [(name, what, rng) for name, (what, rng) in definitions(text).items()]
    for m in _TRAIN.finditer(text):
        found.append(("train", "train", (pos_of(text, m.start()), pos_of(text, m.end()))))
    return sorted(found, key=lambda s: s[2])


# ---- hover, inlay hints, completion -----------------------------------------------------


def _contains(span: Span, pos: Pos) -> bool:
    start, end = (span.line - 1, span.col - 1), (span.end_line - 1, span.end_col - 1)
    return start <= pos <= end


def nodes_at(a: Analysis, pos: Pos) -> list[Any]:
    nodes = [n for n in getattr(a.graph, "nodes", []) if n.span and _contains(n.span, pos)]
    if not nodes:
        return []
    size = min(_extent(n.span) for n in nodes)
    return [n for n in nodes if _extent(n.span) == size]


def _extent(span: Span) -> tuple[int, int]:
    return span.end_line - span.line, span.end_col - span.col


def hover(a: Analysis, pos: Pos) -> str | None:
    hit = word_at(a.text, pos)
    what = definitions(a.text).get(hit[0]) if hit else None
    if hit and what and what[0] == "block":
        return _block_hover(a, hit[0], hit[1])
    nodes = nodes_at(a, pos)
    if nodes:
        return _node_hover(nodes, a.receptive(nodes[0].id))
    if hit is None:
        return None
    name = hit[0]
    if what and what[0] == "variable":
        bindings = getattr(a.graph, "bindings", {}) or {}
        value = bindings.get(name)
        line = a.text.split("\n")[what[1][0][0]].strip()
        return f"**{name}** (variable)\n\n`{line}`" + (f"\n\nvalue: `{value}`" if value else "")
    if name in SPELLINGS:
        cls, preset = SPELLINGS[name]
        args = layer_signature(cls)  # as `netspec layers` and docs/layers.md give them
        return f"**{name}** layer ({cls.__name__})\n\narguments: {args or 'none'}"
    return None


def _node_hover(nodes: list[Any], field: Any = None) -> str:
    n = nodes[0]
    shape = "x".join(map(str, n.shape))
    lines = [f"**{n.layer.text()}** `{n.id}` -> `[{', '.join(map(str, n.shape))}]`", ""]
    lines.append(f"- output: {shape}")
    lines.append(f"- params: {fmt_count(n.params)} ({n.params:,})")
    lines.append(f"- MACs: {fmt_count(n.macs)}")
    lines.append(f"- activation memory: {fmt_count(n.memory)} elements ({fmt_bytes(4 * n.memory)})")
    if field is not None:
        size = receptive.text(tuple(math.ceil(r) for r in field.size))
        jump = receptive.text(tuple(float(j) if j % 1 else int(j) for j in field.jump))
        lines.append(f"- receptive field: {size} input pixels, {jump} apart")
    if len(nodes) > 1:
        lines.append(f"- {len(nodes)} instances: " + ", ".join(f"`{m.id}`" for m in nodes[:5]))
    return "\n".join(lines)


def _block_hover(a: Analysis, name: str, at: Range) -> str:
    """A block's totals: of the call under the cursor when its instance can be told, else of
    all its calls."""
    head = f"**{name}** (block)"
    label = _label_after(a.text, at)
    labelled = [n for n in getattr(a.graph, "nodes", []) if n.id.startswith(f"{label}.")]
    if label and labelled:
        return head + f" call `{label}`\n\n" + _totals(labelled)
    instances: dict[str, list[Any]] = {}
    for n in getattr(a.graph, "nodes", []):
        parts = n.id.split(".")
        k = next((i for i, p in enumerate(parts) if re.fullmatch(rf"{re.escape(name)}\d+", p)), -1)
        if k >= 0:
            instances.setdefault(".".join(parts[: k + 1]), []).append(n)
    if not instances:
        return head
    calls = _call_sites(a.text, name)
    if len(calls) == len(instances) and at in calls:
        prefix = list(instances)[calls.index(at)]
        return head + f" call `{prefix}`\n\n" + _totals(instances[prefix])
    every = [n for nodes in instances.values() for n in nodes]
    return head + f"\n\nall {len(instances)} instances: " + _totals(every)


def _label_after(text: str, at: Range) -> str | None:
    """The `as NAME` after the call whose name is at `at`, if any."""
    off = offset_of(text, at[1])
    rest = text[off : off + 2000]
    depth, end = 0, 0
    for i, c in enumerate(rest):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if depth <= 0 and (c in ")" or not c.isspace() and c not in "("):
            end = i + 1 if c == ")" else i
            break
    m = re.match(r"\s*(?:\*\s*\w+\s*)?as\s+([A-Za-z_]\w*)", rest[end:])
    return m.group(1) if m else None


def _totals(nodes: list[Any]) -> str:
    params = sum(n.params for n in nodes)
    macs = sum(n.macs for n in nodes)
    shape = ", ".join(map(str, nodes[-1].shape))
    return f"{fmt_count(params)} params ({params:,}), {fmt_count(macs)} MACs, output [{shape}]"


def _call_sites(text: str, name: str) -> list[Range]:
    """Where `name` is called outside block definitions (a block's body: its `block` line and
    the indented lines after it)."""
    inside, sites = False, []
    lines = text.split("\n")
    body_lines: set[int] = set()
    for i, line in enumerate(lines):
        if re.match(r"block\b", line):
            inside = True
        elif line[:1].strip() and not line.startswith("#"):
            inside = False
        if inside:
            body_lines.add(i)
    for rng in occurrences(text, name):
        if rng[0][0] not in body_lines:
            sites.append(rng)
    return sites


def inlay_hints(a: Analysis) -> list[tuple[Pos, str]]:
    """The output shape after each layer written once in the text (not in block bodies)."""
    by_span: dict[Span, list[Any]] = {}
    for n in getattr(a.graph, "nodes", []):
        if n.span and not n.implicit:
            by_span.setdefault(n.span, []).append(n)
    hints = []
    for span, nodes in by_span.items():
        shapes = {n.shape for n in nodes}
        if len(shapes) == 1:
            shape = ", ".join(map(str, nodes[-1].shape))
            hints.append(((span.end_line - 1, span.end_col - 1), f" [{shape}]"))
    return sorted(hints)


def completions(text: str, pos: Pos) -> list[tuple[str, str]]:
    """(label, what) for the word being typed at pos."""
    off = offset_of(text, pos)
    line = text[:off].rsplit("\n", 1)[-1]
    zoo = re.search(r"zoo:(\w*)$", line)
    if zoo:
        return [(n, "zoo spec") for n in names() if n.startswith(zoo.group(1))]
    call = _open_call(text[:off])
    out: list[tuple[str, str]] = []
    if call and call in SPELLINGS:
        out += [(f"{f}=", f"{call} argument") for f in SPELLINGS[call][0].model_fields]
    out += [(s, "layer") for s in SPELLINGS]
    out += [(name, what) for name, (what, _r) in definitions(text).items()]
    out += [(k, "keyword") for k in KEYWORDS]
    prefix = re.search(r"[A-Za-z_0-9]*$", line)
    typed = prefix.group() if prefix else ""
    return [(label, what) for label, what in out if label.lower().startswith(typed.lower())]


def _open_call(before: str) -> str | None:
    """The name of the innermost unclosed `NAME(` before the cursor."""
    depth = 0
    for i in range(len(before) - 1, max(-1, len(before) - 2000), -1):
        c = before[i]
        if c in ")]":
            depth += 1
        elif c in "([":
            if depth == 0:
                m = re.search(r"([A-Za-z_]\w*)\s*$", before[:i]) if c == "(" else None
                return m.group(1) if m else None
            depth -= 1
    return None


# ---- signature help and folding -------------------------------------------------------------


def signature(text: str, pos: Pos) -> tuple[str, list[str], int] | None:
    """(label, parameter names, active parameter) for the call the cursor is in."""
    before = text[: offset_of(text, pos)]
    call = _open_call(before)
    if call is None:
        return None
    if call in SPELLINGS:
        cls, preset = SPELLINGS[call]
        listed = [a for a in arguments(cls) if a.name not in preset]  # as `netspec layers`
        names = [a.name for a in listed]
        params = [str(a) for a in listed]
    else:
        m = re.search(rf"\bblock\s+{re.escape(call)}\s*\(", _SKIP.sub(" ", text))
        if m is None:
            return None
        params = _split_args(text[m.end() :])
        names = [p.split("=")[0].strip() for p in params]
    args = _split_args(before[before.rfind(call) + len(call) :].lstrip()[1:], open_end=True)
    current = args[-1] if args else ""
    named = re.match(r"\s*([A-Za-z_]\w*)\s*=", current)
    active = names.index(named.group(1)) if named and named.group(1) in names else len(args) - 1
    return f"{call}({', '.join(params)})", params, max(active, 0)


def _split_args(text: str, open_end: bool = False) -> list[str]:
    """The top-level comma-separated arguments up to the closing `)` (or the end)."""
    depth, args, cur = 0, [], ""
    for c in text[:2000]:
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0:
                break
            depth -= 1
        if c == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        cur += c
    if cur.strip() or open_end:
        args.append(cur)
    return [a.strip() for a in args] if not open_end else args


def folding(text: str) -> list[tuple[int, int]]:
    """Statements over several lines (a block, a chain, a train section, a head), and runs of
    comment lines: (first line, last line), 0-based."""
    lines = text.split("\n")
    ranges, start, comment = [], None, None
    for i, line in enumerate([*lines, "end"]):
        top = bool(line[:1].strip()) and not line.startswith("#")
        if line.startswith("#"):
            comment = i if comment is None else comment
        else:
            if comment is not None and i - 1 > comment:
                ranges.append((comment, i - 1))
            comment = None
        if top or line.startswith("#"):
            if start is not None:
                last = max((j for j in range(start, i) if lines[j].strip()), default=start)
                if last > start:
                    ranges.append((start, last))
            start = i if top else None
    return sorted(ranges)
