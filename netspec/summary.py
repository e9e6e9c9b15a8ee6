"""The summary `netspec check` prints and `graph.summary()` returns: one row per layer (or per
scope, with `depth`), then the totals, the weights, a training-memory estimate and the budgets.
Nothing here imports torch.

Numbers are never cut. The text table is written here, not by a layout library: column widths
are computed once from the cells (time linear in the layers), a table prints at its natural
width unless a terminal width is given, and at a narrow terminal the descriptive columns
(the layer's description, then the kernel) are folded or dropped, never a figure.

Formats: `table` (plain text), `markdown` (GitHub tables), `csv` (the per-layer rows with raw
numbers; with `rows=False` the totals as `figure,value`), and `json` (the IR graph itself).
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from netspec.errors import NetspecError
from netspec.io import fmt_bytes
from netspec.ir import receptive
from netspec.ir.graph import DTYPE_BYTES, Graph, Node, ReceptiveField, set_renderer
from netspec.layers import fmt_shape
from netspec.layers.base import expand
from netspec.units import compact, limit_text

FORMATS = ("table", "markdown", "csv", "json")
GAP = "  "  # between columns
MIN_FOLD = 16  # narrowest a folded description column may get before it is dropped


def count(n: int) -> str:
    return f"{n:,}" if n else "-"


def share(part: int, total: int) -> str:
    """A row's share of a total, as a percentage with one decimal ('<0.1%' when tiny)."""
    if not part or not total:
        return "-"
    pct = 100 * part / total
    return "<0.1%" if pct < 0.05 else f"{pct:.1f}%"


# ---- what a row says about its layer ------------------------------------------------------


def describe(node: Node, in_shape: tuple[int, ...] | None = None) -> str:
    """`CONV(64, kernel=7, stride=2)`: the layer as spec text (`Layer.text`), which parses
    back to the same layer."""
    return node.layer.text(in_shape)


def kernel_shape(node: Node, ins: tuple[tuple[int, ...], ...]) -> str:
    """The weight tensor's shape as PyTorch stores it, when it is a kernel or a matrix (conv:
    out x in/groups x kh x kw; fc: out x in; embedding: vocab x dim); a pooling window (kh x
    kw); '' otherwise (a batch norm's per-channel scale is no kernel)."""
    layer = node.layer
    weight = layer.weights(ins, node.shape).get("weight") if ins else None
    if weight is not None and len(weight) >= 2:
        return fmt_shape(weight)
    window = getattr(layer, "kernel", None)
    if weight is None and window is not None and ins:
        return fmt_shape(expand(window, len(ins[0]) - 1, "kernel"))
    return ""


class _RowText:
    """A layer row's descriptive cells, computed once per distinct (kind, arguments, input
    channels, rank): a long network repeats few layer configurations."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self.cache: dict[tuple, tuple[str, str]] = {}
        self.shape_text: dict[tuple[int, ...], str] = {}
        self.last: Node | None = None  # the previous row's node: most layers' only input
        self.keep: list[dict[str, Any]] = []

    def __call__(self, node: Node) -> tuple[str, str]:
        inputs = node.inputs
        last, self.last = self.last, node
        if len(inputs) == 1 and last is not None and last.id == inputs[0]:
            first: tuple[int, ...] | None = last.shape
        else:
            first = self.shapes[inputs[0]] if inputs else None
        # A node's args are its layer's arguments: the same kind and args, the same layer
        # (and the builder hands every node of a layer one args dict: a cheap key).
        args = node.args
        key = (node.kind, id(args), first[0] if first else None, len(node.shape), node.implicit)
        cells = self.cache.get(key)
        if cells is None:
            ins = (
                (first,)
                if len(inputs) == 1 and first is not None
                else tuple(self.shapes[i] for i in inputs)
            )
            kind = describe(node, first) + (" (implicit)" if node.implicit else "")
            cells = self.cache[key] = (kind, kernel_shape(node, ins))
            self.keep.append(args)  # its id stays its own while the cache holds it
        return cells

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            self._shapes = {n.id: n.shape for n in self.graph.nodes}
        return self._shapes

    def shape(self, shape: tuple[int, ...]) -> str:
        text = self.shape_text.get(shape)
        if text is None:
            text = self.shape_text[shape] = fmt_shape(shape)
        return text


# ---- the per-layer columns ----------------------------------------------------------------


@dataclass
class Column:
    """One column: its header, raw values (for csv) and their text (for table and markdown)."""

    header: str
    key: str  # the csv header
    right: bool
    raw: list[Any]
    text: list[str]
    descriptive: bool = False  # folded or dropped first when a terminal is too narrow
    fold: bool = True  # a descriptive column of words may fold; one of figures is dropped whole
    rank: int = 0  # descriptive columns give way lowest rank first (then leftmost first)


@dataclass
class _RowValues:
    """The per-row values of the layer table, one list per column (column by column: a
    graph may have 220,000 rows)."""

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    memory: list[int] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    groups: list[list[Node]] = field(default_factory=list)  # with a depth: each row's layers


def _row_values(graph: Graph, depth: int | None, text: _RowText) -> _RowValues:
    """One row per layer, or with `depth` one per scope collapsed below it (subtotals); the
    side heads' rows are marked in their kind (they run in training only)."""
    r = _RowValues()
    if depth is None:
        nodes = graph.nodes
        cells = list(map(text, nodes))
        r.kinds = [c[0] for c in cells]
        r.kernels = [c[1] for c in cells]
        r.names = [n.id for n in nodes]
        r.outputs = [text.shape(n.shape) for n in nodes]
        r.memory = [n.memory for n in nodes]
        r.params = [n.params for n in nodes]
        r.macs = [n.macs for n in nodes]
        r.ops = [n.ops for n in nodes]
    else:
        for name, group in _rows(graph.nodes, depth):
            last = group[-1]
            kind, kernel = text(last) if name is None else (f"{len(group)} layers", "")
            r.names.append(name or last.id)
            r.kinds.append(kind)
            r.kernels.append(kernel)
            r.outputs.append(text.shape(last.shape))
            r.memory.append(sum(n.memory for n in group))
            r.params.append(sum(n.params for n in group))
            r.macs.append(sum(n.macs for n in group))
            r.ops.append(sum(n.ops for n in group))
            r.groups.append(group)
    if graph.heads:
        for i, name in enumerate(r.names):
            head = graph.head_of(name) or graph.head_of(name + ".")
            if head is not None:
                r.kinds[i] += f" (head {head})"
    return r


def layer_columns(
    graph: Graph,
    all_ops: bool = False,
    depth: int | None = None,
    raw: bool = False,
    rf: bool | list[ReceptiveField] | None = False,
    inputs: bool = False,
    frozen: Collection[str] | None = None,
) -> list[Column]:
    """The per-layer columns; with `depth`, the layers inside a scope deeper than `depth`
    (a block call, a named group, a branch) collapse into one row with their subtotals.
    `raw`: also the shares as numbers (for csv). `rf`: the receptive-field columns (True, or
    the fields already computed). `inputs`: the shape(s) each row takes, after the kind.
    `frozen`: the ids of the layers `freeze` holds; a `trainable` column after the params."""
    t = graph.totals
    text = _RowText(graph)
    r = _row_values(graph, depth, text)
    names, kinds, kernels, memory, params, macs = (
        r.names, r.kinds, r.kernels, r.memory, r.params, r.macs
    )  # fmt: skip
    outputs, ops, groups = r.outputs, r.ops, r.groups
    columns = [
        Column("layer", "layer", False, names, names),
        Column("kind", "kind", False, kinds, kinds, descriptive=True),
        Column("kernel", "kernel", True, kernels, kernels, descriptive=True),
        Column("output", "output", True, outputs, outputs),
        Column("memory", "memory", True, memory, texts(memory)),
        Column("params", "params", True, params, texts(params)),
        Column(
            "params %",
            "params_pct",
            True,
            [round(100 * v / t.params, 4) if t.params else 0.0 for v in params] if raw else [],
            texts(params, lambda v: share(v, t.params)),
        ),
        Column("MACs", "macs", True, macs, texts(macs)),
        Column(
            "MACs %",
            "macs_pct",
            True,
            [round(100 * v / t.macs, 4) if t.macs else 0.0 for v in macs] if raw else [],
            texts(macs, lambda v: share(v, t.macs)),
        ),
    ]
    rows = groups if depth is not None else [[n] for n in graph.nodes]
    if inputs:
        shown = [_inputs_text(group[0], text) for group in rows]
        columns.insert(3, Column("input", "input", True, shown, shown))
    if frozen is not None:
        state = [_trainable(group, frozen) for group in rows]
        at = next(i for i, c in enumerate(columns) if c.key == "params_pct") + 1
        columns.insert(at, Column("trainable", "trainable", False, state, state))
    if all_ops:
        columns.append(Column("ops", "ops", True, ops, texts(ops)))
    if rf:
        ids = names if depth is None else [group[-1].id for _, group in _rows(graph.nodes, depth)]
        fields = receptive.receptive_fields(graph) if rf is True else rf
        columns += receptive_columns(fields, ids)
    return columns


def _inputs_text(node: Node, text: _RowText) -> str:
    """The shape a layer takes (`64x56x56`), its inputs' joined by `+` (concat, add)."""
    return " + ".join(text.shape(text.shapes[i]) for i in node.inputs)


def _trainable(group: list[Node], frozen: Collection[str]) -> str:
    """`yes`, `frozen` or `partly` (a collapsed scope) for rows with weights; '' otherwise."""
    held = [n.id in frozen for n in group if n.params]
    if not held:
        return ""
    return "frozen" if all(held) else "partly" if any(held) else "yes"


def receptive_columns(fields: list[ReceptiveField], ids: list[str]) -> list[Column]:
    """RF, jump and start of the rows' (last) nodes; blank where the input has no positions."""
    by_node = {f.node: f for f in fields}
    cells = [by_node.get(i) for i in ids]
    columns = []
    for header, attr in (("RF", "size"), ("jump", "jump"), ("start", "start")):
        values = ["" if f is None else receptive.text(getattr(f, attr)) for f in cells]
        columns.append(Column(header, f"rf_{attr}", True, values, values))
    return columns


class _Texts(dict[Any, str]):
    """value -> its text, each distinct value formatted once."""

    def __init__(self, fmt: Callable[[Any], str]) -> None:
        self.fmt = fmt

    def __missing__(self, value: Any) -> str:
        text = self[value] = self.fmt(value)
        return text


def texts(values: list[int], fmt: Callable[[int], str] = count) -> list[str]:
    """The values' texts: a long network repeats few figures, so each is formatted once."""
    return list(map(_Texts(fmt).__getitem__, values))


def _rows(nodes: list[Node], depth: int) -> list[tuple[str | None, list[Node]]]:
    """(scope name or None for a single layer, its nodes), in execution order."""
    out: list[tuple[str | None, list[Node]]] = []
    for node in nodes:
        parts = node.id.split(".")
        scope = ".".join(parts[:depth]) if len(parts) > depth else None
        if scope is not None and out and out[-1][0] == scope:
            out[-1][1].append(node)
        else:
            out.append((scope, [node]))
    return out


# ---- totals -------------------------------------------------------------------------------


def totals_rows(
    graph: Graph,
    all_ops: bool = False,
    batch: int | None = None,
    frozen: Collection[str] | None = None,
) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows: totals, weights, training memory, output and budgets.
    `frozen`: the ids of the layers `freeze` holds, whose params are not trainable."""
    t = graph.totals
    eb = DTYPE_BYTES[graph.dtype]
    held = sum(n.params for n in graph.nodes if n.id in frozen) if frozen else 0
    rows = [
        ("params", f"{t.params:,}", compact(t.params)),
        ("trainable params", f"{t.trainable_params - held:,}", "after freeze" if frozen else ""),
    ]
    if frozen is not None:
        layers = sum(1 for n in graph.nodes if n.id in frozen and n.params)
        rows.append(("frozen params", f"{held:,}", f"{layers} layer(s) held by freeze"))
    rows += [
        ("non-trainable buffers", f"{t.buffers:,}", "batch norm running statistics"),
        ("MACs", f"{t.macs:,}", compact(t.macs) + " multiply-adds (conv + fc)"),
        ("FLOPs", f"{t.flops:,}", compact(t.flops) + " = 2 x MACs"),
    ]
    if all_ops:
        rows.append(
            ("other ops", f"{t.ops:,}", "bias, batch norm, pooling, activations, additions")
        )
        rows.append(("FLOPs, all ops", f"{t.flops + t.ops:,}", compact(t.flops + t.ops)))
    rows += [
        (
            "activation memory",
            f"{t.memory_elements:,}",
            "elements, forward, per example (input included)",
        ),
        (f"  at {t.dtype}", f"{t.memory_bytes:,}", f"bytes ({fmt_bytes(t.memory_bytes)})"),
        (
            f"weights at {t.dtype}",
            f"{t.params * eb:,}",
            f"bytes ({fmt_bytes(t.params * eb)}): params x {eb}",
        ),
    ]
    return rows + _training_rows(graph, batch) + _tail(graph)


def _training_rows(graph: Graph, batch: int | None) -> list[tuple[str, str, str]]:
    """The training memory estimate, part by part (or why it was not estimated)."""
    from netspec.memory import training_memory

    try:
        m = training_memory(graph, batch)
    except NetspecError as e:  # a bad train section: `check` reports it as an error
        return [("training", "-", f"not estimated: {e.message.split(' (')[0]}")]
    rows = [
        (f"training, batch {m.batch}", fmt_bytes(m.total), f"{m.optimizer}, estimated:"),
        ("  weights", f"{m.weights:,}", f"bytes ({fmt_bytes(m.weights)})"),
    ]
    if m.buffers:
        rows.append(("  buffers", f"{m.buffers:,}", f"bytes ({fmt_bytes(m.buffers)})"))
    rows += [
        ("  gradients", f"{m.gradients:,}", f"bytes ({fmt_bytes(m.gradients)})"),
        (
            "  optimizer state",
            f"{m.optimizer_state:,}",
            f"bytes ({fmt_bytes(m.optimizer_state)}): {m.optimizer}, {m.states} x params",
        ),
        (
            "  activations for backward",
            f"{m.activations:,}",
            f"bytes ({fmt_bytes(m.activations)}): tensors autograd keeps",
        ),
        ("  total", f"{m.total:,}", f"bytes ({fmt_bytes(m.total)})"),
    ]
    return rows


def _tail(graph: Graph) -> list[tuple[str, str, str]]:
    """The output and the budgets."""
    classes = f"{graph.classes} classes" if graph.classes else ""
    if graph.classes and graph.per_pixel:
        classes += " per pixel"
    rows = [("output", fmt_shape(graph.output_shape), classes)]
    main = graph.main_totals
    if main is not None:
        names = ", ".join(h.name for h in graph.heads)
        rows += [
            (
                "main path params",
                f"{main.params:,}",
                f"{compact(main.params)}; the totals above count the side heads ({names}) too",
            ),
            (
                "main path MACs",
                f"{main.macs:,}",
                f"{compact(main.macs)} on the main path (inference); the heads run in training",
            ),
        ]
        for head in graph.heads:
            shape = fmt_shape(graph.node(head.output).shape)
            rows.append((f"head {head.name}", shape, f"branches off `{head.at}`"))
    for b in graph.budgets:
        unit = " bytes" if b.metric == "memory" else ""
        rows.append(
            (
                f"budget {b.metric} {b.op} {limit_text(b.metric, b.limit)}",
                "pass" if b.ok else "FAIL",
                f"{b.value:,.0f}{unit} ({b.value / b.limit:.0%} of the limit)"
                if b.limit > 0
                else f"{b.value:,.0f}{unit}",
            )
        )
    return rows


def title(graph: Graph) -> str:
    text = graph.name
    if graph.description:
        text += f": {graph.description}"
    extras = [f"{k}={_v(v)}" for k, v in graph.bindings.items()]
    extras.append(f"input={fmt_shape(graph.input.shape)}")
    return text + "  [" + " ".join(extras) + "]"


def _v(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


# ---- rendering ----------------------------------------------------------------------------


def summary(
    graph: Graph,
    fmt: str = "table",
    *,
    width: int | None = None,
    all_ops: bool = False,
    rows: bool = True,
    depth: int | None = None,
    batch: int | None = None,
    color: bool = False,
    rf: bool = False,
    inputs: bool = False,
    frozen: Collection[str] | None = None,
) -> str:
    """The whole summary as text.

    Args:
        graph: the IR graph.
        fmt: `table`, `markdown`, `csv` or `json` (the IR graph as JSON).
        width: a terminal's width, to fold or drop descriptive columns; None: natural width.
        all_ops: also count the cheap ops (an `ops` column and two totals).
        rows: the per-layer rows (False: totals and budgets only).
        depth: collapse scopes deeper than this into one row each, with subtotals.
        batch: the batch size of the training-memory estimate (default: the spec's).
        color: mark budget passes and failures in color (a terminal).
        rf: the receptive-field columns (RF, jump, start; netspec/ir/receptive.py), their
            notes under the table, and in `json` the graph's `receptive_fields`.
        inputs: an `input` column: the shape(s) each layer takes.
        frozen: the ids of the layers `freeze` holds (`netspec.train.freeze.frozen_layers`):
            a `trainable` column, and the trainable and frozen params in the totals.
    """
    if fmt == "json":
        return json_bytes(receptive.with_receptive_fields(graph) if rf else graph).decode() + "\n"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; received {fmt!r}")
    fields = receptive.receptive_fields(graph) if rf else None
    columns = (
        layer_columns(graph, all_ops, depth, fmt == "csv", fields, inputs, frozen) if rows else []
    )
    totals = totals_rows(graph, all_ops, batch, frozen)
    if fmt == "csv":
        return _csv(columns) if rows else _csv_totals(totals)
    notes = receptive.notes(graph, fields) if fields is not None else []
    if fmt == "markdown":
        extra = "".join(f"- {n}\n" for n in notes)
        return _markdown(graph, columns, totals) + (
            f"\nreceptive fields:\n\n{extra}" if notes else ""
        )
    parts = [title(graph), ""]
    if rows:
        parts += text_table(columns, width, header=True)
        parts.append("")
    if notes:
        parts += ["receptive fields:", *(f"  {n}" for n in notes), ""]
    style = _budget_style if color else None
    parts += text_table(_totals_columns(totals), width, header=False, style=style)
    return "\n".join(parts) + "\n"


def json_bytes(graph: Graph) -> bytes:
    """The IR graph as indented JSON (`graph.model_dump_json(indent=2)`), as UTF-8 bytes."""
    return Graph.__pydantic_serializer__.to_json(graph, indent=2)


def _totals_columns(totals: list[tuple[str, str, str]]) -> list[Column]:
    labels, values, notes = (list(c) for c in zip(*totals, strict=True))
    return [
        Column("", "figure", False, labels, labels),
        Column("", "value", True, values, values),
        Column("", "note", False, notes, notes, descriptive=True),
    ]


def _budget_style(text: str) -> str:
    import click

    if text.strip() == "pass":
        return click.style(text, fg="green", bold=True)
    if text.strip() == "FAIL":
        return click.style(text, fg="red", bold=True)
    return text


def text_table(
    columns: list[Column],
    width: int | None,
    *,
    header: bool,
    style: Callable[[str], str] | None = None,
) -> list[str]:
    """Aligned plain-text lines. With a width, descriptive columns fold, then drop, to fit;
    a figure is never cut (a table of figures alone wider than the terminal prints whole)."""
    widths = [
        max(len(c.header) if header else 0, max(map(len, c.text), default=0)) for c in columns
    ]
    fold: int | None = None
    if width is not None:
        columns, widths, fold = _fit(columns, widths, width)
    if not columns:
        return []
    lines = []
    if header:
        lines.append(_line([c.header for c in columns], columns, widths))
        lines.append(GAP.join("-" * w for w in widths).rstrip())
    if fold is None and style is None:
        fmt = GAP.join(
            f"{{:{'>' if c.right else '<'}{w}}}" for c, w in zip(columns, widths, strict=True)
        )
        lines.extend(
            fmt.format(*row).rstrip() for row in zip(*(c.text for c in columns), strict=True)
        )
        return lines
    for row in zip(*(c.text for c in columns), strict=True):
        cells = list(row)
        more: list[str] = []
        if fold is not None and len(cells[fold]) > widths[fold]:
            first, *more = textwrap.wrap(
                cells[fold], widths[fold], break_long_words=False, break_on_hyphens=False
            ) or [""]
            cells[fold] = first
        padded = [_pad(c, col, w) for c, col, w in zip(cells, columns, widths, strict=True)]
        if style is not None:
            padded = [style(p) for p in padded]
        lines.append(GAP.join(padded).rstrip())
        for piece in more:
            blank = [" " * w for w in widths]
            blank[fold] = _pad(piece, columns[fold], widths[fold])  # type: ignore[index]
            lines.append(GAP.join(blank).rstrip())
    return lines


def _pad(text: str, column: Column, width: int) -> str:
    return text.rjust(width) if column.right else text.ljust(width)


def _line(cells: list[str], columns: list[Column], widths: list[int]) -> str:
    return GAP.join(
        _pad(c, col, w) for c, col, w in zip(cells, columns, widths, strict=True)
    ).rstrip()


def _fit(
    columns: list[Column], widths: list[int], width: int
) -> tuple[list[Column], list[int], int | None]:
    """Fit a terminal: fold the first descriptive column (by rank), else drop descriptive
    columns one by one; figures stay whole even when they alone are wider than the terminal."""
    columns, widths = list(columns), list(widths)

    def total() -> int:
        return sum(widths) + len(GAP) * (len(widths) - 1)

    while total() > width:
        descriptive = [i for i, c in enumerate(columns) if c.descriptive]
        if not descriptive:
            break
        i = min(descriptive, key=lambda d: (columns[d].rank, d))
        room = widths[i] - (total() - width)
        longest_word = max((len(w) for t in columns[i].text for w in t.split()), default=0)
        if columns[i].fold and room >= max(MIN_FOLD, len(columns[i].header), longest_word):
            widths[i] = room
            return columns, widths, i
        del columns[i], widths[i]
    return columns, widths, None


def _markdown(graph: Graph, columns: list[Column], totals: list[tuple[str, str, str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    def row(cells: Iterable[str]) -> str:
        return "| " + " | ".join(esc(c) for c in cells) + " |"

    out = [f"**{esc(graph.name)}**" + (f": {esc(graph.description)}" if graph.description else "")]
    out.append("")
    if columns:
        out.append(row(c.header for c in columns))
        out.append("|" + "|".join("---:" if c.right else "---" for c in columns) + "|")
        out.extend(row(r) for r in zip(*(c.text for c in columns), strict=True))
        out.append("")
    out.append(row(("figure", "value", "note")))
    out.append("|---|---:|---|")
    out.extend(row((label.strip(), value, note)) for label, value, note in totals)
    return "\n".join(out) + "\n"


def _csv(columns: list[Column]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(c.key for c in columns)
    writer.writerows(zip(*(c.raw for c in columns), strict=True))
    return buf.getvalue()


def _csv_totals(totals: list[tuple[str, str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("figure", "value", "note"))
    writer.writerows((label.strip(), value.replace(",", ""), note) for label, value, note in totals)
    return buf.getvalue()


set_renderer(summary)

__all__ = ["FORMATS", "compact", "describe", "json_bytes", "kernel_shape", "summary"]
