"""The `netspec check` table: one row per layer, totals and budget lines, as the course's
VGG16 listing. Rendered with rich; nothing here imports torch."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from netspec.ir.graph import Graph
from netspec.layers import fmt_shape


def compact(n: float) -> str:
    """3211264 -> 3.2M, the way the course's tables print sizes."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"


def describe(node) -> str:
    text = node.layer.describe()
    return f"{node.kind}({text})" if text else node.kind


def layer_table(graph: Graph, all_ops: bool = False) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=_title(graph), title_justify="left", pad_edge=False)
    table.add_column("layer", no_wrap=True)
    table.add_column("kind")
    table.add_column("output", justify="right", no_wrap=True)
    table.add_column("memory", justify="right")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    if all_ops:
        table.add_column("ops", justify="right")
    for node in graph.nodes:
        name = Text(node.id)
        kind = Text(describe(node))
        if node.implicit:
            kind.append(" (implicit)", style="italic yellow")
            name.stylize("dim")
        row = [
            name,
            kind,
            fmt_shape(node.shape),
            f"{node.memory:,}" if node.memory else "-",
            f"{node.params:,}" if node.params else "-",
            f"{node.macs:,}" if node.macs else "-",
        ]
        if all_ops:
            row.append(f"{node.ops:,}" if node.ops else "-")
        table.add_row(*row)
    return table


def _title(graph: Graph) -> str:
    title = graph.name
    if graph.description:
        title += f": {graph.description}"
    if graph.bindings:
        title += "  [" + " ".join(f"{k}={_v(v)}" for k, v in graph.bindings.items()) + "]"
    return title


def _v(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def totals_table(graph: Graph, all_ops: bool = False) -> Table:
    t = graph.totals
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(style="dim")
    table.add_row("params", f"{t.params:,}", compact(t.params))
    table.add_row("trainable params", f"{t.trainable_params:,}", "")
    table.add_row("non-trainable buffers", f"{t.buffers:,}", "batch norm running statistics")
    table.add_row("MACs", f"{t.macs:,}", compact(t.macs) + " multiply-adds (conv + fc)")
    table.add_row("FLOPs", f"{t.flops:,}", compact(t.flops) + " = 2 x MACs")
    if all_ops:
        table.add_row(
            "other ops", f"{t.ops:,}", "bias, batch norm, pooling, activations, additions"
        )
        table.add_row("FLOPs, all ops", f"{t.flops + t.ops:,}", compact(t.flops + t.ops))
    table.add_row(
        "activation memory",
        f"{t.memory_elements:,}",
        "elements, forward, per example (input included)",
    )
    table.add_row(
        f"  at {t.dtype}", f"{t.memory_bytes:,}", f"bytes ({t.memory_bytes / 2**20:.1f} MiB)"
    )
    table.add_row(
        "output", fmt_shape(graph.output_shape), f"{graph.classes} classes" if graph.classes else ""
    )
    for b in graph.budgets:
        mark = Text("pass", style="bold green") if b.ok else Text("FAIL", style="bold red")
        unit = " bytes" if b.metric == "memory" else ""
        table.add_row(
            Text.assemble("budget ", b.metric, " ", b.op, " ", compact(b.limit)),
            mark,
            f"{b.value:,.0f}{unit} ({b.value / b.limit:.0%} of the limit)" if b.limit else "",
        )
    return table


def render(graph: Graph, console: Console, all_ops: bool = False, rows: bool = True) -> None:
    parts = []
    if rows:
        parts.append(layer_table(graph, all_ops))
    parts.append(totals_table(graph, all_ops))
    console.print(Group(*parts))
