"""The layer registry: every kind, defined once. Backends add one function per kind."""

from __future__ import annotations

from typing import Any

from netspec.layers.activation import Dropout, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from netspec.layers.base import Layer, Shape, ShapeError, fmt_shape, numel
from netspec.layers.conv import Conv
from netspec.layers.linear import Dense, Embedding, Flatten
from netspec.layers.norm import BatchNorm, LocalResponseNorm
from netspec.layers.pool import AdaptiveAvgPool, GlobalPool, Pool
from netspec.layers.structure import Add, Concat, Identity, Input

LAYERS: tuple[type[Layer], ...] = (
    Input,
    Conv,
    Pool,
    GlobalPool,
    AdaptiveAvgPool,
    Flatten,
    Dense,
    Embedding,
    BatchNorm,
    LocalResponseNorm,
    ReLU,
    LeakyReLU,
    Tanh,
    Sigmoid,
    Softmax,
    Dropout,
    Concat,
    Add,
    Identity,
)

# kind -> class
KINDS: dict[str, type[Layer]] = {cls.kind: cls for cls in LAYERS}

# SPELLING (upper case) -> (class, argument presets)
SPELLINGS: dict[str, tuple[type[Layer], dict[str, Any]]] = {
    spelling: (cls, presets) for cls in LAYERS for spelling, presets in cls.spellings.items()
}


def layer_from_node(kind: str, args: dict[str, Any]) -> Layer:
    """Rebuild a validated layer from an IR node's kind and JSON arguments."""
    cls = KINDS[kind]
    return cls.model_validate(args, strict=False)


__all__ = [
    "KINDS",
    "LAYERS",
    "SPELLINGS",
    "Layer",
    "Shape",
    "ShapeError",
    "fmt_shape",
    "numel",
    "layer_from_node",
]
