"""Diagrams of a network: one box per layer (or per collapsed group), laid out by Graphviz.

The diagram is built from the IR alone (ids, kinds, inputs, shapes and figures), written as
Graphviz DOT with the `graphviz` package and laid out by the `dot` program. `netspec draw`
and the playground page (`netspec serve`) both use this module, so there is one layout engine.

    boxes = build(graph, depth=1, color="macs")   # boxes and edges, after collapsing
    source = to_dot(boxes)                        # DOT text (the `graphviz` package)
    svg = render(source, "svg")                   # bytes, laid out by Graphviz `dot`
    svg = draw(graph, "svg", collapse=True)       # the three at once
"""

from __future__ import annotations

import atexit
import functools
import html
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError
from netspec.io import owner_tag, sweep_stale
from netspec.ir.graph import Graph
from netspec.units import compact

METRICS: tuple[str, ...] = ("params", "macs", "memory")
FORMATS = ("svg", "png", "pdf", "dot")
INSTALL_HINT = (
    "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` "
    "(macOS), or see https://graphviz.org/download/; `-o net.dot` needs no Graphviz"
)
# Brewer sequential schemes built into Graphviz: level 1 is near white, 9 the darkest.
SCHEMES = {"params": "blues9", "macs": "oranges9", "memory": "greens9"}
MAX_PERIOD = 64  # the longest repeated run of layers `collapse` looks for
GRAPHVIZ_TEMP = "netspec-graphviz-"  # prefix of the plugin folders `core_plugins` makes
# Past this many boxes Graphviz lays out for minutes and grows without bound (100,000 boxes:
# 577 MB after 37 s); the zoo's largest, resnet1202_cifar, draws 4,211 boxes in about 8 s.
MAX_BOXES = 10_000
DRAW_TIMEOUT_S = 120.0  # `netspec draw`'s default limit on the layout: 15x the largest zoo net


def check_size(diagram: Diagram, max_boxes: int = MAX_BOXES) -> None:
    """Refuse a diagram too big to lay out in reasonable time, saying how to draw it instead."""
    if len(diagram.boxes) > max_boxes:
        raise NetspecError(
            f"the diagram has {len(diagram.boxes):,} boxes, over the {max_boxes:,} Graphviz "
            "lays out in reasonable time",
            hint="draw repeated layers as one box each with --collapse, or scopes with "
            "--depth 1; --max-boxes raises the limit",
        )


@dataclass
class Box:
    """One box of the diagram: a single layer, or a collapsed group of layers."""

    key: str  # the DOT node name: a layer id, or a scope / repetition id
    nodes: list[Any]  # the IR nodes it stands for, in execution order
    title: str
    detail: str
    scope: str  # the enclosing scope still drawn as a cluster ("" for the top level)
    implicit: bool = False
    kind: str = "layer"  # layer | group | repeat | input

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nodes[-1].shape)

    def figure(self, metric: str) -> int:
        return sum(int(getattr(n, metric)) for n in self.nodes)


@dataclass
class Diagram:
    """The boxes and edges of a graph, after collapsing."""

    graph: Graph
    boxes: list[Box]
    edges: list[tuple[str, str]]
    color: str | None = None
    levels: dict[str, int] = field(default_factory=dict)  # box key -> colour level 1..9
    total: int = 0  # the colour metric summed over every box
    top: int = 0  # and its largest box's figure


def fmt_shape(shape: Iterable[int]) -> str:
    return "x".join(str(d) for d in shape)


def kind_text(node: Any, graph: Graph | None = None) -> str:
    """`CONV(64, 7, stride=2, padding=3)`: the layer as spec text (`Layer.text`), on its
    input's shape when the graph is given (a depthwise conv's channels then go unsaid)."""
    if node.kind == "input":
        return "INPUT"
    return str(node.layer.text(_in_shape(node, graph)))


def _in_shape(node: Any, graph: Graph | None) -> tuple[int, ...] | None:
    if graph is None or not node.inputs or not node.layer.from_input_channels:
        return None
    return tuple(graph.node(node.inputs[0]).shape)


def _layer_key(node: Any, typed: bool, graph: Graph | None = None) -> Any:
    """A hashable key of what a node computes (its kind and arguments, and the channels it
    takes where its text reads them), to describe each distinct layer once: a 40,000-fold
    repetition has two. `typed`: nodes hold their layer."""
    shape = _in_shape(node, graph)
    if typed:
        return (node.layer, shape)
    return (node.kind, repr(getattr(node, "args", None)), shape)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _scope_of(key: str) -> str:
    return key.rpartition(".")[0]


def _span_key(node: Any) -> tuple | None:
    s = node.span
    return None if s is None else (s.line, s.col, s.end_line, s.end_col)


def build(
    graph: Graph, depth: int | None = None, collapse: bool = False, color: str | None = None
) -> Diagram:
    """Group the graph's nodes into boxes.

    Args:
        depth: scopes (block calls, named groups, branches) nested deeper than `depth` are
            drawn as one box each with their subtotals; `None` draws every layer.
        collapse: draw each top-level scope as one box (`depth` 1 unless given) and each
            unnamed repetition (`[CONV -> RELU]*3`) as one box.
        color: shade boxes by their share of `params`, `macs` or `memory`.
    """
    if depth is not None and depth < 1:
        raise NetspecError(f"--depth takes 1 or more; received {depth}")
    if color is not None and color not in METRICS:
        raise NetspecError(
            f"--color takes one of {', '.join(METRICS)}; received `{color}`",
        )
    if collapse and depth is None:
        depth = 1
    boxes: list[Box] = []
    owner: dict[str, str] = {}  # node id -> box key
    texts: dict[Any, str] = {}  # layer key -> kind_text
    # Nodes that hold their validated layer (hashable) key it directly; else kind and args.
    first = getattr(graph.nodes[0], "layer", None) if graph.nodes else None
    typed = first is not None and _hashable(first)
    by_key: dict[str, Box] = {}
    for node in graph.nodes:
        parts = node.id.split(".")
        if depth is not None and len(parts) > depth:
            key = ".".join(parts[:depth])
            box = by_key.get(key)
            if box is None:
                box = Box(key, [], key.rpartition(".")[2], "", _scope_of(key), kind="group")
                by_key[key] = box
                boxes.append(box)
            box.nodes.append(node)
        else:
            kind = "input" if node.kind == "input" else "layer"
            key = _layer_key(node, typed, graph)
            text = texts.get(key)
            if text is None:
                text = texts[key] = kind_text(node, graph)
            box = Box(
                node.id,
                [node],
                parts[-1],
                text,
                _scope_of(node.id),
                node.implicit,
                kind,
            )
            by_key[node.id] = box
            boxes.append(box)
        owner[node.id] = box.key
    if collapse:
        boxes = _fold_repeats(boxes, owner)
    for box in boxes:
        if box.kind == "group":
            n = len(box.nodes)
            box.detail = f"{n} layer{'s' if n != 1 else ''}"
    diagram = Diagram(graph, boxes, _edges(graph, owner), color)
    if color:
        _shade(diagram, color)
    return diagram


def _fold_repeats(boxes: list[Box], owner: dict[str, str]) -> list[Box]:
    """Fold runs of single-layer boxes that repeat the same source elements (an unnamed
    repetition such as `[CONV(64) -> RELU]*2`) into one box per run."""
    # What a layer was written as: its scope, kind and source span (None: never folded).
    keys = [
        (b.scope, b.nodes[0].kind, _span_key(b.nodes[0]))
        if b.kind == "layer" and b.nodes[0].span is not None
        else None
        for b in boxes
    ]
    out: list[Box] = []
    i = 0
    while i < len(boxes):
        best = (0, 0)  # (layers covered, period)
        for period in range(1, MAX_PERIOD + 1):
            window = keys[i : i + period]
            if len(window) < period or None in window:
                break
            count = 1
            while keys[i + count * period : i + (count + 1) * period] == window:
                count += 1
            if count >= 2 and count * period > best[0]:
                best = (count * period, period)
        covered, period = best
        if not covered:
            out.append(boxes[i])
            i += 1
            continue
        run = boxes[i : i + covered]
        first = run[0]
        key = f"{first.key}~{run[-1].key}"
        count = covered // period
        steps = []
        for j in range(period):
            texts = {run[j + k * period].detail for k in range(count)}
            steps.append(run[j].detail if len(texts) == 1 else run[j].detail.split("(")[0])
        kinds = " -> ".join(steps)
        if len(kinds) > 40:
            kinds = kinds[:37] + "..."
        box = Box(
            key,
            [n for b in run for n in b.nodes],
            f"{first.title} .. {run[-1].title}",
            f"[{kinds}] x{count}",
            first.scope,
            kind="repeat",
        )
        for b in run:
            for n in b.nodes:
                owner[n.id] = key
        out.append(box)
        i += covered
    return out


def _shade(diagram: Diagram, metric: str) -> None:
    """Levels 2..9 split (0, largest box] in eighths; level 1 is a box with none of `metric`."""
    figures = {b.key: b.figure(metric) for b in diagram.boxes}
    diagram.total = sum(figures.values())
    diagram.top = max(figures.values(), default=0)
    for key, value in figures.items():
        diagram.levels[key] = 1 if not value else 1 + math.ceil(8 * value / diagram.top)


def _label(box: Box, diagram: Diagram) -> str:
    esc = html.escape
    rows = [f"<B>{esc(box.title)}</B>"]
    if box.detail:
        rows.append(esc(box.detail))
    rows.append(esc(fmt_shape(box.shape)))
    if box.kind in ("group", "repeat"):
        figures = (
            f"params {compact(box.figure('params'))} &middot; MACs {compact(box.figure('macs'))}"
        )
        rows.append(f'<FONT POINT-SIZE="10">{figures}</FONT>')
    if diagram.color and box.kind != "input" and box.figure(diagram.color):
        total = diagram.total
        share = box.figure(diagram.color) / total if total else 0.0
        shown = "&lt;0.1%" if 0 < share < 0.0005 else f"{share:.1%}"
        rows.append(f'<FONT POINT-SIZE="10">{esc(diagram.color)} {shown}</FONT>')
    if box.implicit:
        rows.append('<I><FONT POINT-SIZE="10">(implicit)</FONT></I>')
    return "<" + "<BR/>".join(rows) + ">"


def _edges(graph: Graph, owner: dict[str, str]) -> list[tuple[str, str]]:
    """The arrows between boxes (`owner`: node id -> its box), each once, in graph order."""
    edges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for node in graph.nodes:
        for src in node.inputs:
            edge = (owner[src], owner[node.id])
            if edge[0] != edge[1] and edge not in seen:
                seen.add(edge)
                edges.append(edge)
    return edges


def to_dot(diagram: Diagram) -> str:
    """The DOT source of a diagram: clusters for the scopes still open, one node per box."""
    import graphviz  # type: ignore[import-untyped]

    g = graphviz.Digraph(diagram.graph.name)
    g.attr(rankdir="TB", nodesep="0.25", ranksep="0.3", fontname="Helvetica", ordering="in")
    g.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica")
    g.attr("node", fontsize="11", margin="0.12,0.05")
    g.attr("edge", arrowsize="0.6", color="#555555")
    title = diagram.graph.name + (
        f": {diagram.graph.description}" if diagram.graph.description else ""
    )
    g.attr(label=title, labelloc="t", fontsize="14")

    # One cluster per scope that is still open, nested as the scopes are.
    children: dict[str, list[str]] = {}
    members: dict[str, list[Box]] = {}
    for box in diagram.boxes:
        members.setdefault(box.scope, []).append(box)
        scope = box.scope
        while scope:
            parent = _scope_of(scope)
            kids = children.setdefault(parent, [])
            if scope not in kids:
                kids.append(scope)
            scope = parent

    def fill(target: Any, scope: str) -> None:
        for box in members.get(scope, []):
            target.node(box.key, **_node_attrs(box, diagram))
        for child in children.get(scope, []):
            with target.subgraph(name="cluster_" + child) as sub:
                sub.attr(
                    label=child.rpartition(".")[2],
                    style="rounded,dashed",
                    color="#999999",
                    fontsize="11",
                    id="scope:" + child,
                )
                fill(sub, child)

    fill(g, "")
    for a, b in diagram.edges:
        g.edge(a, b)
    if diagram.color:
        g.node("__legend__", label=_legend(diagram), shape="plaintext", style="")
    return g.source


def _node_attrs(box: Box, diagram: Diagram) -> dict[str, str]:
    """A box's DOT attributes: its label, its look by kind, its colour by the metric."""
    attrs = {"label": _label(box, diagram), "id": "box:" + box.key}
    if box.kind == "input":
        attrs["shape"] = "box"
        attrs["style"] = "filled"
        attrs["fillcolor"] = "#eeeeee"
    elif box.kind in ("group", "repeat"):
        attrs["style"] = "rounded,filled,bold"
        attrs["peripheries"] = "2"
    if box.implicit:
        attrs["style"] = "rounded,filled,dashed"
        attrs["color"] = "#888888"
    if diagram.color and box.kind != "input":
        level = diagram.levels[box.key]
        attrs["fillcolor"] = f"/{SCHEMES[diagram.color]}/{level}"
        if level >= 7:
            attrs["fontcolor"] = "white"
    return attrs


def _legend(diagram: Diagram) -> str:
    metric = diagram.color or ""
    total, top = diagram.total, diagram.top
    rows = [f'<TR><TD COLSPAN="2"><B>{metric}</B><BR/>total {compact(total)}</TD></TR>']
    rows.append(f'<TR><TD BGCOLOR="/{SCHEMES[metric]}/1"> </TD><TD ALIGN="LEFT">0</TD></TR>')
    for level in range(2, 10):
        lo = (level - 2) / 8 * top / total if total else 0
        hi = (level - 1) / 8 * top / total if total else 0
        rows.append(
            f'<TR><TD BGCOLOR="/{SCHEMES[metric]}/{level}">    </TD>'
            f'<TD ALIGN="LEFT">{lo:.1%} - {hi:.1%}</TD></TR>'
        )
    return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0">' + "".join(rows) + "</TABLE>>"


def render(
    source: str, fmt: str = "svg", timeout: float | None = None, fast: bool = False
) -> bytes:
    """Lay out DOT `source` with Graphviz `dot` and return the `fmt` output (`dot`: the text).

    Args:
        fast: for SVG, lay out with Graphviz's built-in font metrics instead of Pango's
            (`core_plugins`): about three times faster, for the playground's live updates.

    Raises:
        NetspecError: Graphviz is not installed (with how to install it), the layout took
            longer than `timeout` seconds, or `dot` failed.
    """
    if fmt not in FORMATS:
        raise NetspecError(
            f"cannot draw to `{fmt}`: the formats are {', '.join(FORMATS)}",
            hint="name the output file with one of these suffixes, e.g. -o net.svg",
        )
    if fmt == "dot":
        return source.encode()
    exe = shutil.which("dot")
    if exe is None:
        raise NetspecError("Graphviz's `dot` program is not installed", hint=INSTALL_HINT)
    env = None
    if fast and fmt == "svg":
        plugins = core_plugins(exe)
        if plugins is not None:
            env = {**os.environ, "GVBINDIR": str(plugins)}
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"],
            input=source.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise NetspecError(
            f"Graphviz took longer than {timeout:g} s to lay out the diagram",
            hint="draw fewer boxes: --collapse, or --depth 1",
        ) from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise NetspecError(
            "Graphviz `dot` failed: " + (message[-1] if message else f"exit {done.returncode}")
        )
    return done.stdout


@functools.cache
def core_plugins(exe: str) -> Path | None:
    """A Graphviz plugin folder holding only the `core` renderers and the `dot` layout.

    `dot` given this folder (GVBINDIR, Graphviz's documented setting) measures text with its
    built-in font metrics instead of loading Pango and fontconfig, which cost most of the time
    of a small layout. None when the folder cannot be made; the caller then runs `dot` as is.
    """
    try:
        probe = subprocess.run([exe, "-v"], input=b"", capture_output=True, timeout=10)
        match = re.search(r'libdir = "([^"]+)"', probe.stderr.decode(errors="replace"))
        if not match:
            return None
        libdir = Path(match.group(1))
        # a killed process's folder (atexit never ran) is swept by the next one
        sweep_stale(Path(tempfile.gettempdir()), f"{GRAPHVIZ_TEMP}*")
        folder = Path(tempfile.mkdtemp(prefix=f"{GRAPHVIZ_TEMP}{owner_tag()}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for pattern in ("libgvplugin_core*", "libgvplugin_dot_layout*"):
            for lib in libdir.glob(pattern):
                (folder / lib.name).symlink_to(lib)
        env = {**os.environ, "GVBINDIR": str(folder)}
        subprocess.run([exe, "-c"], env=env, capture_output=True, timeout=10, check=True)
        test = subprocess.run(
            [exe, "-Tsvg"], input=b"digraph{a}", env=env, capture_output=True, timeout=10
        )
        return folder if test.returncode == 0 and b"<svg" in test.stdout else None
    except (OSError, subprocess.SubprocessError):
        return None


def draw(
    graph: Graph,
    fmt: str = "svg",
    depth: int | None = None,
    collapse: bool = False,
    color: str | None = None,
    timeout: float | None = DRAW_TIMEOUT_S,
    max_boxes: int = MAX_BOXES,
) -> bytes:
    """The diagram of `graph` as `fmt` bytes (svg, png, pdf, or the DOT text).

    Raises:
        NetspecError: over `max_boxes` boxes, or the layout took longer than `timeout` s.
    """
    diagram = build(graph, depth, collapse, color)
    check_size(diagram, max_boxes)
    return render(to_dot(diagram), fmt, timeout)
