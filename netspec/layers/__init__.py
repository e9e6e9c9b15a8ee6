"""The layer registry: every kind, defined once. Backends add one function per kind.

A layer kind is one class (a frozen pydantic model of its arguments) that owns every fact about
the kind: its arguments, spellings, shape rule, weights (state_dict names and shapes in
PyTorch's layout; params and buffers are counted from them), MACs and ops, whether it works in
place, whether training penalises it, its default node name, and how the builder treats it
(implicit flatten before it, token input). Defining the class registers it under its `kind`;
`KINDS`, `SPELLINGS` and `LAYERS` are read from that registry, and a kind or spelling defined
twice fails at import.

How to add a layer kind (SiLU is the worked example):

1. One class in the family's module here (`activation.py`, `conv.py`, ...), imported below:
   `kind`, `spellings`, argument fields, and the rules that differ from `Layer`'s defaults
   (`output_shape`, `weights`/`running`, `macs`, `ops`, the ClassVar flags).
2. One function per backend, registered on the backend's table by the kind:
   `@LOWERINGS.register("silu")` in `netspec/backends/lower_torch.py` (returns an
   `nn.Module`) and in the family's `netspec/deploy/lower_*.py` (emits ONNX nodes). A kind missing from
   either table fails `build`/`lower` naming it, the same way in both (`MissingLowering`).
3. Its docstring (the first paragraph is its one-line meaning), then `python tools/gen_docs.py`
   to regenerate docs/layers.md.

tests/test_registry.py then runs the new kind through the checklist by itself: a property test
of its shape and counts against torch, an ONNX Runtime parity case, its `netspec layers` row
and its docs/layers.md row. A kind missing any of them fails the suite by name.
"""

from __future__ import annotations

from typing import Any

# Import order is registration order: the order `netspec layers` lists the kinds in.
# isort: off
from netspec.layers import structure, conv, pool, linear, norm, activation  # noqa: F401

# isort: on
from netspec.layers.base import REGISTRY, Layer, Shape, ShapeError, fmt_shape, numel

LAYERS: tuple[type[Layer], ...] = tuple(REGISTRY.values())

# kind -> class
KINDS: dict[str, type[Layer]] = REGISTRY

# SPELLING (upper case) -> (class, argument presets)
SPELLINGS: dict[str, tuple[type[Layer], dict[str, Any]]] = {
    spelling: (cls, presets) for cls in LAYERS for spelling, presets in cls.spellings.items()
}

__all__ = ["KINDS", "LAYERS", "SPELLINGS", "Layer", "Shape", "ShapeError", "fmt_shape", "numel"]
