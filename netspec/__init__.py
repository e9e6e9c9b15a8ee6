"""netspec: a declarative architecture compiler for convolutional networks.

    graph = netspec.compile_spec("specs/vgg16.ns")    # the IR: shapes, params, MACs, memory
    graph = netspec.compile_spec("zoo:vgg16")         # the same, from the bundled zoo
    graph = netspec.compile_spec("input [1, 28, 28]\nclasses 10\nINPUT -> FC(10) -> SOFTMAX")
    print(graph)                                      # the `netspec check` table
    model = netspec.build("specs/vgg16.ns")           # a torch.nn.Module matching the IR

torch is imported only by `build` (and by training and export), never by the IR.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The train section's check registers with the IR, which cannot import it (see
# netspec.ir.sections): imported here, it runs in every build.
from netspec.train import settings as _train_settings  # noqa: E402, F401

if TYPE_CHECKING:
    from netspec.ir.graph import Graph


def compile_spec(spec: str | Path, bindings: dict[str, Any] | None = None) -> Graph:
    """Parse, validate and build a spec into its IR graph (raises netspec errors).

    `spec` is a file path, `zoo:NAME` for a bundled spec, or the spec's text itself (a string
    with a line break or an arrow `->`, which no file name has).
    """
    from netspec.ir.build import load_spec, load_spec_text
    from netspec.summary import summary  # noqa: F401 (registers the graph's table)
    from netspec.zoo import resolve

    if is_spec_text(spec):
        return load_spec_text(str(spec)).instantiate(bindings)
    return load_spec(resolve(spec)).instantiate(bindings)


def is_spec_text(spec: str | Path) -> bool:
    """A string holding a spec's text rather than naming a file."""
    return isinstance(spec, str) and ("\n" in spec or "->" in spec)


def load_graph(spec: str | Path | Graph, bindings: dict[str, Any] | None = None) -> Graph:
    """A Graph as is, or the graph of a spec file."""
    from netspec.ir.graph import Graph

    return spec if isinstance(spec, Graph) else compile_spec(spec, bindings)


def build(spec: str | Path | Graph, bindings: dict[str, Any] | None = None, seed: int = 0):
    """Compile a spec (or take a Graph) and lower it to a torch.nn.Module matching the IR."""
    from netspec.backends.lower_torch import build as _build

    return _build(load_graph(spec, bindings), seed=seed)
