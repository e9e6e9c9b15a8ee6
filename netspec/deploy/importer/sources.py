"""The sources `netspec import` reads, told apart by their form: an ONNX file, a Keras 3
`.keras` file, or a PyTorch module `module:package.path:factory`. Each is checked against
itself: ONNX files run in onnxruntime, modules in torch."""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from netspec.deploy.importer.keras import read_keras
from netspec.deploy.importer.keras_reference import keras_runner
from netspec.deploy.importer.onnx_reader import read_onnx
from netspec.deploy.importer.pipeline import Imported, from_model, ort_runner, verify_outputs
from netspec.errors import NetspecError

MODULE_PREFIX = "module:"
ZIP_MAGIC = b"PK\x03\x04"


def import_any(
    source: str, input_shape: tuple[int, ...] | None = None, flat: bool = False
) -> Imported:
    """Import `source`, its figures and outputs checked (see `Imported.checks`)."""
    if source.startswith(MODULE_PREFIX):
        return import_module(source, input_shape, flat)
    path = Path(source)
    if not path.is_file():
        raise NetspecError(
            f"no such file: {source}",
            hint="a source is an .onnx or .keras file, or module:package.path:factory",
        )
    with path.open("rb") as f:
        head = f.read(4)
    if path.suffix == ".keras" or head == ZIP_MAGIC:
        return import_keras(path, flat)
    model = read_onnx(path, input_shape)
    imported = from_model(model, path.name, flat)
    verify_outputs(imported, ort_runner(model.model), batch=_batch(model.model))
    return imported


def import_keras(path: Path, flat: bool) -> Imported:
    """Import a Keras 3 file, its outputs held to a NumPy run of the Keras layers as Keras
    defines them (channels-last, its own kernel layouts), no TensorFlow needed."""
    model = read_keras(path)
    imported = from_model(model, path.name, flat)
    reference = keras_runner(path)
    verify_outputs(imported, reference)
    return imported


def _batch(model: Any) -> int:
    """The batch the model's input takes: its fixed size, else 2."""
    dim = model.graph.input[0].type.tensor_type.shape.dim
    return dim[0].dim_value if dim and dim[0].HasField("dim_value") else 2


def load_factory(source: str) -> Any:
    """The nn.Module a `module:package.path:factory` source's factory returns."""
    import torch

    spec = source[len(MODULE_PREFIX) :]
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise NetspecError(
            f"`{source}`: expected module:package.path:factory",
            hint="e.g. module:torchvision.models:resnet18",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 (whatever the user's module raises on import)
        raise NetspecError(f"cannot import `{module_name}`: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise NetspecError(f"`{module_name}` has no callable `{attr}`")
    try:
        net = factory()
    except Exception as e:  # noqa: BLE001 (the factory is user code)
        raise NetspecError(f"the factory `{spec}` raised {type(e).__name__}: {e}") from None
    if not isinstance(net, torch.nn.Module):
        raise NetspecError(
            f"the factory `{spec}` returned a {type(net).__name__}; expected a torch.nn.Module"
        )
    return net.eval()


def import_module(source: str, input_shape: tuple[int, ...] | None, flat: bool) -> Imported:
    """Import a PyTorch module: traced once on a zero input by torch.onnx's TorchScript
    exporter (constant folding off, so batch norms stay batch norms), then read as ONNX and
    held to the module itself (its parameter count and its outputs)."""
    import warnings

    import torch

    if input_shape is None:
        raise NetspecError(
            "a PyTorch module needs --input-shape (without the batch), e.g. --input-shape 3x224x224"
        )
    net = load_factory(source)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (torch.zeros(1, *input_shape),),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                opset_version=17,
                do_constant_folding=False,
                input_names=["input"],
                dynamic_axes={"input": {0: "batch"}},
            )
    except Exception as e:  # noqa: BLE001 (tracing runs the module's forward)
        raise NetspecError(f"cannot trace `{source}`: {type(e).__name__}: {str(e)[:300]}") from None
    name = source.rsplit(":", 1)[-1]
    model = read_onnx(buffer.getvalue(), input_shape, name=name)
    imported = from_model(model, source, flat)
    count = sum(p.numel() for p in net.parameters())
    count += sum(b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
    imported.checks.append(
        ("module", count == imported.source_params, f"{count:,} params + buffers in the module")
    )

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    verify_outputs(imported, run)
    return imported
