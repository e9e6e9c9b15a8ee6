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
    """Import a PyTorch module: captured by `torch.export` (torch.onnx's dynamo exporter, which
    exports the ExportedProgram's ATen graph; batch norms stay batch norms), read as ONNX, then
    held to the module itself (its parameter count and its outputs)."""
    if input_shape is None:
        raise NetspecError(
            "a PyTorch module needs --input-shape (without the batch), e.g. --input-shape 3x224x224"
        )
    net = load_factory(source)
    data = export_program(net, input_shape, source)
    name = source.rsplit(":", 1)[-1]
    model = read_onnx(data, input_shape, name=name)
    imported = from_model(model, source, flat)
    count = sum(p.numel() for p in net.parameters())
    count += sum(b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
    imported.checks.append(
        ("module", count == imported.source_params, f"{count:,} params + buffers in the module")
    )

    def run(x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    verify_outputs(imported, run)
    return imported


def export_program(net: Any, input_shape: tuple[int, ...], source: str) -> bytes:
    """The module's graph as ONNX bytes, by `torch.export` (a dynamic batch): no Python control
    flow is baked in silently, as TorchScript tracing would; a forward torch.export cannot
    capture (data-dependent branches, unsupported Python) is an error naming the reason."""
    import contextlib
    import logging
    import warnings

    import torch

    batch = torch.export.Dim("batch", min=1)
    quiet = io.StringIO()
    level = logging.root.manager.disable
    try:
        logging.disable(logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net,
                (torch.zeros(2, *input_shape),),
                dynamo=True,
                opset_version=18,
                optimize=False,
                input_names=["input"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 (capturing runs the module's forward)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise NetspecError(
            f"torch.export cannot capture `{source}`: {type(e).__name__}: {first[:300]}",
            hint="the forward must be traceable by torch.export (no data-dependent Python "
            "branches); or export the module to ONNX yourself and import the file",
        ) from None
    finally:
        logging.disable(level)
    assert program is not None
    # Constants folded, dead nodes dropped; not onnxscript's whole optimizer, whose rewrites
    # fold batch norms away (the spec keeps what the module has).
    from onnxscript.optimizer import fold_constants, remove_unused_nodes

    model = program.model_proto
    fold_constants(model)
    remove_unused_nodes(model)
    return model.SerializeToString()
