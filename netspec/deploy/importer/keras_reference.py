"""A NumPy run of a Keras 3 file's layers as Keras defines them: channels-last, Keras' own
kernel layouts, TensorFlow's `same` padding. The imported spec's outputs are held to it, so a
wrong transposition or padding shows as a mismatch (no TensorFlow needed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from netspec.deploy.importer.keras import _h5_weights, _inbound, _layers, _read_zip
from netspec.errors import NetspecError

Array = np.ndarray


def _pad_same(x: Array, k: tuple[int, ...], s: tuple[int, ...], value: float = 0.0) -> Array:
    """TensorFlow's `same`: total padding so that out = ceil(n / s), the odd pixel after."""
    pads = [(0, 0)]
    for n, kk, ss in zip(x.shape[1:-1], k, s, strict=True):
        total = max((math.ceil(n / ss) - 1) * ss + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [*pads, (0, 0)], constant_values=value)


def _windows(
    x: Array, cfg: dict[str, Any], k: tuple[int, ...], s: tuple[int, ...], fill: float
) -> Array:
    if cfg.get("padding", "valid") == "same":
        x = _pad_same(x, k, s, fill)
    dims = len(k)
    w = sliding_window_view(x, k, axis=tuple(range(1, 1 + dims)))  # (B, o..., C, k...)
    return w[(slice(None), *(slice(None, None, ss) for ss in s))]


def _tuple(v: Any, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, list | tuple) else (int(v),) * dims


def _conv(x: Array, cfg: dict[str, Any], t: list[Array]) -> Array:
    dims = x.ndim - 2
    k, s = _tuple(cfg["kernel_size"], dims), _tuple(cfg.get("strides", 1), dims)
    if _tuple(cfg.get("dilation_rate", 1), dims) != (1,) * dims or cfg.get("groups", 1) != 1:
        raise NetspecError("the Keras reference runs undilated, ungrouped convolutions only")
    w = _windows(x, cfg, k, s, 0.0)  # (B, o..., C, k...)
    letters = "hw"[:dims] if dims == 2 else "h"
    if "depth_multiplier" in cfg:
        y = np.einsum(f"b{letters.upper()}c{letters},{letters}cm->b{letters.upper()}c", w, t[0])
    else:
        y = np.einsum(f"b{letters.upper()}c{letters},{letters}co->b{letters.upper()}o", w, t[0])
    return y + t[1] if cfg.get("use_bias", True) else y


def _pool(mode: str) -> Callable[[Array, dict[str, Any], list[Array]], Array]:
    def run(x: Array, cfg: dict[str, Any], t: list[Array]) -> Array:
        dims = x.ndim - 2
        k = _tuple(cfg.get("pool_size", 2), dims)
        s = _tuple(cfg.get("strides") or k, dims)
        w = _windows(x, cfg, k, s, -np.inf if mode == "max" else 0.0)
        axes = tuple(range(-dims, 0))
        if mode == "max":
            return w.max(axis=axes)
        if cfg.get("padding") == "same":  # TensorFlow averages over the real pixels only
            ones = _windows(np.ones_like(x[:1]), cfg, k, s, 0.0).sum(axis=axes)
            return w.sum(axis=axes) / ones
        return w.mean(axis=axes)

    return run


ACT: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "hard_swish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "hard_silu": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "elu": lambda x: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1),
}


def _softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _bn(x: Array, cfg: dict[str, Any], t: list[Array]) -> Array:
    gamma, beta, mean, var = t[:4]
    return (x - mean) / np.sqrt(var + cfg.get("epsilon", 1e-3)) * gamma + beta


LAYERS: dict[str, Callable[[Array, dict[str, Any], list[Array]], Array]] = {
    "Conv2D": _conv,
    "Conv1D": _conv,
    "DepthwiseConv2D": _conv,
    "Dense": lambda x, cfg, t: x @ t[0] + (t[1] if cfg.get("use_bias", True) else 0),
    "MaxPooling2D": _pool("max"),
    "MaxPooling1D": _pool("max"),
    "AveragePooling2D": _pool("avg"),
    "AveragePooling1D": _pool("avg"),
    "GlobalAveragePooling2D": lambda x, cfg, t: x.mean(axis=tuple(range(1, x.ndim - 1))),
    "GlobalAveragePooling1D": lambda x, cfg, t: x.mean(axis=1),
    "GlobalMaxPooling2D": lambda x, cfg, t: x.max(axis=tuple(range(1, x.ndim - 1))),
    "GlobalMaxPooling1D": lambda x, cfg, t: x.max(axis=1),
    "Flatten": lambda x, cfg, t: x.reshape(len(x), -1),
    "BatchNormalization": _bn,
    "Dropout": lambda x, cfg, t: x,
    "SpatialDropout2D": lambda x, cfg, t: x,
    "Activation": lambda x, cfg, t: x,
    "ReLU": lambda x, cfg, t: np.clip(x, 0, cfg.get("max_value") or np.inf),
}


def _activate(x: Array, name: str | None) -> Array:
    if not name:
        return x
    if name == "softmax":
        return _softmax(x)
    return ACT[name](x)


def keras_runner(path: str | Path) -> Callable[[Array], Array]:
    """A function running the Keras file on a channels-first batch, the output channels-first."""
    config, data = _read_zip(Path(path))
    _, layers, sequential = _layers(config)
    variables = _h5_weights(data)

    def run(x: Array) -> Array:
        x = np.moveaxis(x.astype(np.float64), 1, -1) if x.ndim > 2 else x.astype(np.float64)
        values: dict[str, Array] = {}
        current = x
        for layer in layers:
            cls, cfg = layer["class_name"], layer["config"]
            name = cfg.get("name")
            if cls == "InputLayer":
                values[name] = x
                continue
            ins = [current] if sequential else [values[n] for n in _inbound(layer)]
            t = [a.astype(np.float64) for a in variables.get(name, [])]
            if cls in ("Add", "Multiply"):
                y = ins[0]
                for other in ins[1:]:
                    y = y + other if cls == "Add" else y * other
            elif cls == "Concatenate":
                y = np.concatenate(ins, axis=-1)
            else:
                y = LAYERS[cls](ins[0], cfg, t)
            y = _activate(y, cfg.get("activation") if cls != "ReLU" else None)
            values[name] = current = y
        out = current
        return np.moveaxis(out, -1, 1) if out.ndim > 2 else out

    return run
