"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

from netspec.ir.build import load_spec
from netspec.ir.graph import Graph


def spec_graph(path: Path) -> Graph | None:
    """A spec's graph, even when an assertion or budget failed (None when it cannot build).
    A family is taken at its first member: each free parameter at its first value."""
    spec = load_spec(path)
    bindings = {name: domain.values[0] for name, domain in spec.free.items()}
    graph, _errors = spec.instantiate(bindings, collect=True)
    return graph
