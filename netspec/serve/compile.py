"""Compile spec text for the playground: the summary, budgets, diagram and errors as JSON,
and the zoo menu. Plain functions of text (no HTTP), so the tests call them directly.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, SpecErrors, register_source, render_error

_NETWORK = re.compile(r'^network\s+\w+\s+"([^"]*)"', re.M)
SOURCE_NAME = "<editor>"  # the file name in the page's errors, as `check` shows a file's
MAX_BOXES = 400  # a diagram over this many boxes is collapsed first, then left out
MAX_ROWS = 5_000  # table rows sent to the page (the totals always cover every layer)
DOT_TIMEOUT_S = 5.0
SVG_CACHE = 32  # diagrams kept by their DOT source: fixing a typo redraws nothing
_svgs: OrderedDict[str, str] = OrderedDict()
# The error renderer reads source text from one table by file name, and a Spec's caches
# are not shared across threads: one compile at a time (each takes milliseconds).
LOCK = threading.Lock()


def zoo_dir() -> Path:
    """The folder of the specs shipped with netspec (netspec.zoo knows where a wheel keeps
    them)."""
    from netspec.zoo import zoo_dir as shipped

    return shipped()


@functools.cache
def zoo() -> list[dict[str, str]]:
    """The zoo menu: each spec's name and its `network` line's description (its title)."""
    out = []
    for path in sorted(zoo_dir().glob("*.ns")):
        head = path.read_text(encoding="utf-8")[:4096]
        match = _NETWORK.search(head)
        out.append({"name": path.stem, "title": match.group(1) if match else ""})
    return out


def zoo_text(name: str) -> str | None:
    names = {p.stem: p for p in zoo_dir().glob("*.ns")}
    path = names.get(name)
    return path.read_text(encoding="utf-8") if path else None


def error_json(err: NetspecError) -> dict[str, Any]:
    """An error as the editor shows it: where (1-based line/col, end exclusive), what, hint."""
    span = err.span
    where = None
    if span is not None and span.file == SOURCE_NAME:
        where = {
            "line": span.line,
            "col": span.col,
            "end_line": span.end_line,
            "end_col": span.end_col,
        }
    return {
        "message": err.message,
        "hint": err.hint,
        "notes": list(err.notes),
        "span": where,
        "rendered": render_error(err),
    }


def flatten_errors(err: NetspecError) -> list[NetspecError]:
    return list(err.errors) if isinstance(err, SpecErrors) else [err]


def errors_json(err: NetspecError, text: str) -> list[dict[str, Any]]:
    """`err` (raised compiling `text`, maybe long ago) as the editor shows it: rendered with
    `text` as the editor's source, under the lock (a compile may have registered another)."""
    with LOCK:
        register_source(SOURCE_NAME, text)
        return [error_json(e) for e in flatten_errors(err)]


def parse_errors(text: str) -> list[dict[str, Any]]:
    """Why `text` is not a spec (it does not parse), as the editor shows it; [] when it is."""
    from netspec.ir.build import load_spec_text

    with LOCK:
        try:
            load_spec_text(text, SOURCE_NAME)
        except NetspecError as e:
            return [error_json(x) for x in flatten_errors(e)]
    return []


def compile_text(
    text: str,
    bindings: str = "",
    depth: int | None = None,
    collapse: bool = False,
    color: str | None = None,
    diagram: bool = True,
    summary: bool = True,
) -> dict[str, Any]:
    """Compile `text` as `netspec check` would and return what the page shows: the summary
    (`summary`), the errors, and the diagram's SVG (`diagram`). The page asks for the summary
    first and the diagram second, so the table never waits for Graphviz; the second request
    finds the graph in a one-entry cache."""
    start = time.perf_counter()
    out: dict[str, Any] = {"ok": False, "errors": [], "graph": None, "svg": None, "note": None}
    graph, errors, free = _compiled(text, bindings)
    out["free"] = free
    out["errors"] = errors
    if graph is not None:
        if summary:
            out["graph"] = summary_json(graph)
        if diagram:
            out["svg"], out["note"] = _diagram(graph, depth, collapse, color)
    out["ok"] = graph is not None and not errors
    out["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return out


_last: dict[tuple[str, str], tuple[Any, list[dict[str, Any]], list[str]]] = {}


def _compiled(text: str, bindings: str) -> tuple[Any, list[dict[str, Any]], list[str]]:
    """The graph (None on a fatal error), the errors (as JSON) and the free parameters."""
    from netspec.io import parse_bindings
    from netspec.ir.build import load_spec_text

    key = (text, bindings)
    with LOCK:
        hit = _last.get(key)
        if hit is not None:
            return hit
        graph = None
        errors: list[NetspecError] = []
        free: list[str] = []
        try:
            values = parse_bindings((bindings,)) if bindings.strip() else {}
            spec = load_spec_text(text, SOURCE_NAME)
            free = sorted(spec.free)
            graph, errors = spec.instantiate(values, collect=True)
        except NetspecError as e:
            errors = flatten_errors(e)
        # rendered here: the error renderer's source table holds this text only under the lock
        shown = [error_json(e) for e in errors]
        _last.clear()
        _last[key] = (graph, shown, free)
        return graph, shown, free


def summary_json(graph: Any) -> dict[str, Any]:
    """The check table's rows (the first MAX_ROWS), totals and budget verdicts, the numbers
    exact as the IR has them."""
    from netspec.draw import fmt_shape, kind_text

    rows = []
    for node in graph.nodes[:MAX_ROWS]:
        span = node.span
        rows.append(
            {
                "id": node.id,
                "kind": kind_text(node, graph),
                "shape": fmt_shape(node.shape),
                "memory": node.memory,
                "params": node.params,
                "macs": node.macs,
                "implicit": node.implicit,
                "line": span.line if span is not None and span.file == SOURCE_NAME else None,
                "col": span.col if span is not None and span.file == SOURCE_NAME else None,
            }
        )
    t = graph.totals
    return {
        "name": graph.name,
        "description": graph.description,
        "rows": rows,
        "layers": len(graph.nodes),  # rows holds the first MAX_ROWS of them
        "totals": {
            "params": t.params,
            "trainable_params": t.trainable_params,
            "buffers": t.buffers,
            "macs": t.macs,
            "flops": t.flops,
            "memory_elements": t.memory_elements,
            "memory_bytes": t.memory_bytes,
            "dtype": t.dtype,
        },
        "output": fmt_shape(graph.output_shape),
        "classes": graph.classes,
        "budgets": [
            {"metric": b.metric, "op": b.op, "limit": b.limit, "value": b.value, "ok": b.ok}
            for b in graph.budgets
        ],
    }


def _diagram(
    graph: Any, depth: int | None, collapse: bool, color: str | None
) -> tuple[str | None, str | None]:
    from netspec import draw

    note = None
    try:
        if depth is None and not collapse and len(graph.nodes) > MAX_BOXES:
            collapse, note = True, f"{len(graph.nodes):,} layers: drawn collapsed"
        built = draw.build(graph, depth=depth, collapse=collapse, color=color)
        if len(built.boxes) > MAX_BOXES and not collapse:
            built = draw.build(graph, depth=depth, collapse=True, color=color)
            note = f"{len(graph.nodes):,} layers: drawn collapsed"
        if len(built.boxes) > MAX_BOXES:
            return None, f"{len(built.boxes):,} boxes even collapsed: no diagram (over {MAX_BOXES})"
        source = draw.to_dot(built)
        key = hashlib.sha1(source.encode()).hexdigest()
        svg = _svgs.get(key)
        if svg is None:
            svg = draw.render(source, "svg", timeout=DOT_TIMEOUT_S, fast=True).decode()
            _svgs[key] = svg
            while len(_svgs) > SVG_CACHE:
                _svgs.popitem(last=False)
        else:
            _svgs.move_to_end(key)
    except NetspecError as e:
        return None, e.message + (f" ({e.hint})" if e.hint else "")
    start = svg.find("<svg")
    return (svg[start:] if start >= 0 else svg), note
