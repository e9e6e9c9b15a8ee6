"""Keras 3 layers to netspec layers: one function per Keras class, in a table keyed by the
class name. Each takes the layer's config, its input's channels-last shape, its variables and
(for a Dense) the map a Flatten before it flattened; it returns the spelling, the arguments,
the weights in PyTorch's layouts and the channels-last output shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from netspec.recover.graph import Value

ACTIVATIONS = {
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "tanh": "TANH",
    "softmax": "SOFTMAX",
    "swish": "SILU",
    "silu": "SILU",
    "gelu": "GELU",
    "elu": "ELU",
    "relu6": "RELU6",
    "hard_sigmoid": "HARDSIGMOID",
    "hard_swish": "HARDSWISH",
    "hard_silu": "HARDSWISH",
}
Result = tuple[str, list[tuple[str, Value]], list[np.ndarray], tuple[int, ...]]
Converter = Callable[[dict[str, Any], tuple[int, ...], list[np.ndarray], Any], Result]
CONVERTERS: dict[str, Converter] = {}


def converts(*names: str) -> Callable[[Converter], Converter]:
    def add(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return add


def _pair(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (int(value),) * dims


def _one(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else values


def _window(
    size: tuple[int, ...], k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...], padding: str
) -> tuple[int, ...]:
    if padding == "same":
        return tuple(math.ceil(n / ss) for n, ss in zip(size, s, strict=True))
    return tuple(
        (n - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, dd in zip(size, k, s, d, strict=True)
    )


def _channels_last(cfg: dict[str, Any]) -> None:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError("only channels_last Keras layers are read")


@converts("Conv2D", "Conv1D", "DepthwiseConv2D")
def _conv(cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any) -> Result:
    _channels_last(cfg)
    dims = len(shape) - 1
    depthwise = "depth_multiplier" in cfg
    k = _pair(cfg["kernel_size"], dims)
    s = _pair(cfg.get("strides", 1), dims)
    d = _pair(cfg.get("dilation_rate", 1), dims)
    bias = bool(cfg.get("use_bias", True))
    kernel = tensors[0]  # (k..., in/groups, out); depthwise (k..., in, multiplier)
    axes = (dims + 1, dims, *range(dims))
    if depthwise:
        if cfg.get("depth_multiplier", 1) != 1:
            raise ValueError("a depth multiplier other than 1")
        out_c = shape[-1]
        weight = kernel.transpose(dims, dims + 1, *range(dims))  # (in, 1, k...)
    else:
        out_c = int(cfg["filters"])
        weight = kernel.transpose(axes)
    args: list[tuple[str, Value]] = [] if depthwise else [("channels", out_c)]
    args += [("kernel", _one(k)), ("stride", _one(s)), ("padding", cfg.get("padding", "valid"))]
    args += [("dilation", _one(d))]
    if not depthwise:
        args.append(("groups", int(cfg.get("groups", 1))))
    args.append(("bias", bias))
    out = (*_window(shape[:-1], k, s, d, cfg.get("padding", "valid")), out_c)
    return "DWCONV" if depthwise else "CONV", args, [weight] + tensors[1:2] * bias, out


@converts("Dense")
def _dense(
    cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], from_map: Any
) -> Result:
    if len(shape) != 1:
        raise ValueError("a Dense on a map (netspec's FC reads vectors: Flatten first)")
    kernel = tensors[0]  # (in, out)
    if from_map is not None and len(from_map) > 1:  # rows in Keras' (h, w, c) order -> (c, h, w)
        *space, c = from_map
        order = np.arange(kernel.shape[0]).reshape(*space, c)
        kernel = kernel[np.moveaxis(order, -1, 0).reshape(-1)]
    bias = bool(cfg.get("use_bias", True))
    units = int(cfg["units"])
    return "FC", [("units", units), ("bias", bias)], [kernel.T] + tensors[1:2] * bias, (units,)


def _pool(spelling: str) -> Converter:
    def convert(
        cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any
    ) -> Result:
        _channels_last(cfg)
        dims = len(shape) - 1
        k = _pair(cfg.get("pool_size", 2), dims)
        s = _pair(cfg.get("strides") or k, dims)
        padding = cfg.get("padding", "valid")
        out = (*_window(shape[:-1], k, s, (1,) * dims, padding), shape[-1])
        args: list[tuple[str, Value]] = [("kernel", _one(k)), ("stride", _one(s))]
        return spelling, [*args, ("padding", padding)], [], out

    return convert


for _name, _spelling in (("MaxPooling", "MAXPOOL"), ("AveragePooling", "AVGPOOL")):
    for _dims in ("1D", "2D"):
        CONVERTERS[_name + _dims] = _pool(_spelling)


@converts("GlobalAveragePooling2D", "GlobalAveragePooling1D")
def _gap(cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any) -> Result:
    if cfg.get("keepdims"):
        raise ValueError("keepdims=True")
    return "GAP", [], [], (shape[-1],)


@converts("GlobalMaxPooling2D", "GlobalMaxPooling1D")
def _gmp(cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any) -> Result:
    if cfg.get("keepdims"):
        raise ValueError("keepdims=True")
    return "GMP", [], [], (shape[-1],)


@converts("Flatten")
def _flatten(
    cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any
) -> Result:
    return "FLATTEN", [], [], (int(np.prod(shape)),)


@converts("BatchNormalization")
def _bn(cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any) -> Result:
    if not (cfg.get("center", True) and cfg.get("scale", True)) or cfg.get("axis", -1) not in (
        -1,
        [-1],
        len(shape),
    ):
        raise ValueError("a batch norm without scale or center, or over another axis")
    eps = float(f"{cfg.get('epsilon', 1e-3):.6g}")
    return "BN", [("eps", eps)], tensors[:4], shape


@converts("Dropout", "SpatialDropout2D")
def _dropout(
    cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any
) -> Result:
    return "", [], [], shape


@converts("Activation", "ReLU")
def _activation(
    cfg: dict[str, Any], shape: tuple[int, ...], tensors: list[np.ndarray], _: Any
) -> Result:
    if (
        cfg.get("max_value") not in (None, 6, 6.0)
        or cfg.get("negative_slope")
        or cfg.get("threshold")
    ):
        raise ValueError("a ReLU with a slope or threshold")
    name = "relu6" if cfg.get("max_value") else cfg.get("activation", "relu")
    if name == "linear":
        return "", [], [], shape
    return ACTIVATIONS[name], [], [], shape


MERGES = {"Add": "add", "Concatenate": "concat", "Multiply": "mul"}


__all__ = ["ACTIVATIONS", "CONVERTERS", "MERGES"]
