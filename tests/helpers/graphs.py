"""Graphs from the specs in specs/ and from spec text (no torch here)."""

from __future__ import annotations

from pathlib import Path

from netspec.ir.build import load_spec, load_spec_text
from netspec.ir.graph import Graph

SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec_graph(path: Path) -> Graph | None:
    """A spec's graph, even when an assertion or budget failed (None when it cannot build).
    A family is taken at its first member: each free parameter at its first value."""
    spec = load_spec(path)
    bindings = {name: domain.values[0] for name, domain in spec.free.items()}
    graph, _errors = spec.instantiate(bindings, collect=True)
    return graph


def text_graph(text: str) -> Graph:
    """The graph of spec text (raises on any error)."""
    return load_spec_text(text).instantiate()


def file_graph(name: str) -> Graph:
    """The graph of specs/`name` (raises on any error)."""
    return load_spec(SPECS / name).instantiate()
