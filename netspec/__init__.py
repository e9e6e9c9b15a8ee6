"""netspec: a declarative architecture compiler for convolutional networks.

    graph = netspec.compile_spec("specs/vgg16.ns")    # the IR: shapes, params, MACs, memory
    model = netspec.build("specs/vgg16.ns")           # a torch.nn.Module matching the IR

torch is imported only by `build` (and by training and export), never by the IR.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from netspec.ir.graph import Graph


def compile_spec(spec: str | Path, bindings: dict[str, Any] | None = None) -> Graph:
    """Parse, validate and build a spec file into its IR graph (raises netspec errors)."""
    from netspec.ir.build import compile_spec as _compile

    return _compile(spec, bindings)


def load_graph(spec: str | Path | Graph, bindings: dict[str, Any] | None = None) -> Graph:
    """A Graph as is, or the graph of a spec file."""
    from netspec.ir.graph import Graph

    return spec if isinstance(spec, Graph) else compile_spec(spec, bindings)


def build(spec: str | Path | Graph, bindings: dict[str, Any] | None = None, seed: int = 0):
    """Compile a spec (or take a Graph) and lower it to a torch.nn.Module matching the IR."""
    from netspec.backends.lower_torch import build as _build

    return _build(load_graph(spec, bindings), seed=seed)
