"""Keras 3 `.keras` files without TensorFlow: the zip's `config.json` gives the layers, its
`model.weights.h5` the tensors (read with h5py, the `import` extra), turned to PyTorch's
layouts (a conv kernel HWIO -> OIHW, a dense kernel (in, out) -> (out, in); a Dense after a
Flatten of a map has its rows put in channels-first order).

Keras is channels-last: an input [H, W, C] is netspec's [C, H, W].
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from netspec.deploy.importer.keras_layers import ACTIVATIONS, CONVERTERS, MERGES
from netspec.errors import NetspecError
from netspec.recover.graph import INPUT, Op


class KerasModel:
    """A Keras file read as netspec layers (the fields `pipeline.from_model` reads)."""

    def __init__(self, name: str, input_shape: tuple[int, ...], nodes: int) -> None:
        self.name = name
        self.input_shape = input_shape
        self.nodes = nodes
        self.ops: list[Op] = []
        self.output = INPUT
        self.weights: dict[str, np.ndarray] = {}
        self.keras_shapes: dict[str, tuple[int, ...]] = {INPUT: ()}  # channels-last shapes
        self.alias: dict[str, str] = {}  # a Keras layer name -> the op giving its output
        self.flattened: dict[str, tuple[int, ...]] = {}  # a Flatten's id -> the map it flattened

    def resolve(self, x: str) -> str:
        while x in self.alias:
            x = self.alias[x]
        return x


def _read_zip(path: Path) -> tuple[dict[str, Any], bytes | None]:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise NetspecError(f"{path}: a zip without config.json is not a Keras 3 file")
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5") if "model.weights.h5" in names else None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NetspecError(f"{path}: not a Keras 3 file ({e})") from None
    return config, weights


def _h5_weights(data: bytes | None) -> dict[str, list[np.ndarray]]:
    """Each layer's variables in order, by layer name (`layers/<name>/vars/<i>`)."""
    if data is None:
        return {}
    try:
        import h5py  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise NetspecError(
            "reading a .keras file's weights needs h5py", hint="pip install 'netspec[import]'"
        ) from None
    import io

    out: dict[str, list[np.ndarray]] = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and name.endswith("/vars"):
                layer = name[: -len("/vars")].rsplit("/", 1)[-1]
                keys = sorted(obj.keys(), key=int)
                out[layer] = [np.asarray(obj[k]) for k in keys]

        f.visititems(visit)
    return out


def _layers(config: dict[str, Any]) -> tuple[str, list[dict[str, Any]], bool]:
    if config.get("class_name") not in ("Sequential", "Functional", "Model"):
        raise NetspecError(
            f"a Keras {config.get('class_name')} model; netspec reads Sequential and Functional"
        )
    body = config["config"]
    return body.get("name", "keras_model"), body["layers"], config["class_name"] == "Sequential"


def read_keras(path: str | Path) -> KerasModel:
    """Read a `.keras` file as netspec layers and PyTorch-layout weights."""
    path = Path(path)
    config, data = _read_zip(path)
    name, layers, sequential = _layers(config)
    variables = _h5_weights(data)
    first = layers[0]
    if first["class_name"] != "InputLayer":
        shape = (config.get("build_config") or {}).get("input_shape")
        if not shape:
            raise NetspecError(f"{path}: no input shape (no InputLayer, no build_config)")
    else:
        shape = first["config"].get("batch_shape") or first["config"].get("batch_input_shape")
    dims = tuple(int(d) for d in shape[1:])
    netspec_shape = (dims[-1], *dims[:-1]) if len(dims) > 1 else dims
    model = KerasModel(name, netspec_shape, len(layers))
    model.keras_shapes[INPUT] = dims
    previous = INPUT
    for i, layer in enumerate(layers):
        cls, cfg = layer["class_name"], layer["config"]
        lname = cfg.get("name", layer.get("name", f"layer{i}"))
        if cls == "InputLayer":
            model.alias[lname] = INPUT
            continue
        ins = [previous] if sequential else _inbound(layer)
        where = f"layer {i + 1} of {len(layers)}"
        out = _convert(
            model, cls, cfg, lname, [model.resolve(x) for x in ins], variables.get(lname, []), where
        )
        if out != lname:
            model.alias[lname] = out
        previous = out
    model.output = model.resolve(previous)
    if model.output == INPUT:
        raise NetspecError(f"{path}: the model has no layers")
    return model


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise NetspecError(
            f"Keras layer `{layer['config'].get('name')}` is called {len(nodes)} times"
        )
    found: list[str] = []

    def collect(x: Any) -> None:
        if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
            found.append(x["config"]["keras_history"][0])
        elif isinstance(x, list | tuple):
            for y in x:
                collect(y)

    collect(nodes[0].get("args", []))
    return found


def _convert(
    model: KerasModel,
    cls: str,
    cfg: dict[str, Any],
    name: str,
    ins: list[str],
    tensors: list[np.ndarray],
    where: str,
) -> str:
    """Add the op(s) of one Keras layer; returns the id giving its output."""
    if cls in MERGES:
        return _merge(model, cls, cfg, name, ins, where)
    convert = CONVERTERS.get(cls)
    if convert is None:
        raise NetspecError(
            f"Keras layer `{name}` ({cls}, {where}): no netspec layer kind for it",
            hint="supported: " + ", ".join(sorted(CONVERTERS)),
        )
    in_shape = model.keras_shapes[ins[0]]
    from_map = model.flattened.get(ins[0])
    try:
        spelling, args, weights, out_shape = convert(cfg, in_shape, tensors, from_map)
    except (KeyError, ValueError, IndexError) as e:
        raise NetspecError(f"Keras layer `{name}` ({cls}, {where}): cannot read it ({e})") from None
    if not spelling:  # a layer that is its input (Dropout, a linear Activation)
        return ins[0]
    keys = []
    for j, array in enumerate(weights):
        keys.append(f"{name}/{j}")
        model.weights[keys[-1]] = np.ascontiguousarray(array, np.float32)
    op = Op(
        name,
        spelling,
        tuple(args),
        tuple(ins),
        tuple(keys),
        "",
        where,
        _cf(out_shape),
        _cf(in_shape),
    )
    model.ops.append(op)
    model.keras_shapes[name] = out_shape
    if spelling == "FLATTEN" and len(in_shape) > 1:
        model.flattened[name] = in_shape
    activation = cfg.get("activation")
    if cls == "Activation" or not activation or activation == "linear":
        return name
    act = ACTIVATIONS.get(activation)
    if act is None:
        raise NetspecError(f"Keras layer `{name}` ({cls}, {where}): activation `{activation}`")
    last = f"{name}.{activation}"
    model.ops.append(Op(last, act, (), (name,), (), "", where, _cf(out_shape), _cf(out_shape)))
    model.keras_shapes[last] = out_shape
    return last


def _merge(
    model: KerasModel, cls: str, cfg: dict[str, Any], name: str, ins: list[str], where: str
) -> str:
    shapes = [model.keras_shapes[x] for x in ins]
    if cls == "Concatenate":
        if cfg.get("axis", -1) not in (-1, len(shapes[0])):
            raise NetspecError(f"Keras layer `{name}` ({cls}, {where}): concatenation off channels")
        out = (*shapes[0][:-1], sum(s[-1] for s in shapes))
    else:
        out = shapes[0]
    model.ops.append(Op(name, MERGES[cls], (), tuple(ins), (), "", where, _cf(out), _cf(shapes[0])))
    model.keras_shapes[name] = out
    return name


def _cf(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A channels-last shape as netspec's channels-first."""
    return (shape[-1], *shape[:-1]) if len(shape) > 1 else shape


def weight_count(model: KerasModel) -> int:
    return sum(int(a.size) for a in model.weights.values())
