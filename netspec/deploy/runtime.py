"""ONNX Runtime: sessions on the best execution provider that really works here, and timing.

onnxruntime-gpu lists TensorRT and CUDA as available even on a machine without a GPU, and
asking for them there prints pages of errors. So providers are probed once per process, quietly
(ONNX Runtime's logger silenced, its Python warnings captured), on a one-node model that must
also run; a session then asks for the best usable one: TensorRT, then CUDA, then the CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from netspec.errors import NetspecError, did_you_mean

# Short name -> onnxruntime's name, best first.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
LOG_ERRORS_ONLY, LOG_NOTHING = 3, 4


@dataclass(frozen=True)
class Probe:
    """Whether a provider really runs a model here, and why not when it does not."""

    name: str
    usable: bool
    reason: str = ""


def _ort() -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(LOG_ERRORS_ONLY)
    return ort


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence onnxruntime while it tries providers: its logger, and the "EP Error" it prints."""
    ort = _ort()
    ort.set_default_logger_severity(LOG_NOTHING)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield captured
    finally:
        ort.set_default_logger_severity(LOG_ERRORS_ONLY)


def _nvidia_driver() -> bool:
    for lib in ("libcuda.so.1", "nvcuda.dll", "libcuda.dylib"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


@cache
def probe_providers() -> dict[str, Probe]:
    """Every provider of `PROVIDERS`, probed once per process: usable or not, and why."""
    ort = _ort()
    available = set(ort.get_available_providers())
    driver = _nvidia_driver()
    probes = {}
    for short, name in PROVIDERS.items():
        if name not in available:
            probes[short] = Probe(short, False, "not in this onnxruntime build")
        elif short != "cpu" and not driver:
            probes[short] = Probe(short, False, "no NVIDIA driver on this machine")
        else:
            probes[short] = _probe(short)
    return probes


def _probe(short: str) -> Probe:
    ort = _ort()
    name = PROVIDERS[short]
    options = ort.SessionOptions()
    options.log_severity_level = LOG_NOTHING
    try:
        with _quiet():
            session = ort.InferenceSession(
                _probe_model(), options, providers=[_provider_entry(short)]
            )
            if session.get_providers()[0] != name:
                needs = "TensorRT, CUDA or cuDNN" if short == "tensorrt" else "CUDA or cuDNN"
                return Probe(
                    short, False, f"its libraries did not load ({needs} missing or mismatched)"
                )
            y = session.run(None, {"x": -np.ones((1, 8), np.float32)})[0]
    except Exception as err:  # onnxruntime's errors have no common base class
        return Probe(short, False, f"failed to start: {str(err).strip().splitlines()[0][:120]}")
    if not (y == 0).all():
        return Probe(short, False, "ran a test model wrong")
    return Probe(short, True)


def _provider_entry(short: str) -> str | tuple[str, dict[str, Any]]:
    if short == "tensorrt":  # engines take minutes to build: keep them between runs
        cache_dir = (
            Path(os.environ.get("NETSPEC_CACHE", Path.home() / ".cache" / "netspec")) / "tensorrt"
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        return (
            PROVIDERS[short],
            {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)},
        )
    return PROVIDERS[short]


def choose_provider(requested: str = "auto") -> str:
    """The short name of the provider to use: the best usable one for `auto`.

    Raises:
        NetspecError: an unknown name, or a provider that does not work here (with why).
    """
    requested = requested.lower()
    probes = probe_providers()
    if requested == "auto":
        return next(short for short, p in probes.items() if p.usable)
    if requested not in PROVIDERS:
        raise NetspecError(
            f"unknown provider `{requested}`",
            hint=did_you_mean(requested, PROVIDERS) or "one of auto, " + ", ".join(PROVIDERS),
        )
    probe = probes[requested]
    if not probe.usable:
        raise NetspecError(
            f"the {requested} provider does not work here: {probe.reason}",
            hint="use --provider auto",
        )
    return requested


class Session:
    """An onnxruntime session with its single input and output, and the provider it runs on."""

    def __init__(self, session: Any, provider: str) -> None:
        self.session = session
        self.provider = provider
        (inp,) = session.get_inputs()
        self.input_name = inp.name
        self.input_shape: list[int | str | None] = list(inp.shape)
        self.input_type: str = inp.type
        self.output_name = session.get_outputs()[0].name
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension (symbolic dims are refused at load)."""
        return tuple(int(d) for d in self.input_shape[1:])  # type: ignore[arg-type]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


def open_session(
    model: str | Path | bytes, provider: str = "auto", threads: int | None = None
) -> Session:
    """An onnxruntime session for a model file (or its bytes) on `provider` (`auto`: the best).

    Raises:
        NetspecError: a missing or unreadable file, a file that is not a model onnxruntime runs,
            or a provider that does not work here.
    """
    ort = _ort()
    short = choose_provider(provider)
    source: str | bytes
    if isinstance(model, bytes):
        source, where = model, "the model"
    else:
        path = Path(model)
        if not path.is_file():
            raise NetspecError(
                f"no model at {path}" + (" (it is a folder)" if path.is_dir() else ""),
                hint="export one with `netspec export SPEC -o MODEL.onnx`",
            )
        source, where = str(path), str(path)
    options = ort.SessionOptions()
    options.log_severity_level = LOG_ERRORS_ONLY
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    entries = [_provider_entry(s) for s in PROVIDERS if s == short or s == "cpu"]
    try:
        with _quiet():  # the error comes back as the exception; the log would repeat it
            session = ort.InferenceSession(source, options, providers=entries)
    except Exception as err:  # InvalidProtobuf, Fail, InvalidGraph, NoSuchFile...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NetspecError(
            f"cannot load {where}: {_short_ort_error(first)}",
            hint="is it an ONNX model? re-export it with `netspec export`",
        ) from None
    inputs, outputs = len(session.get_inputs()), len(session.get_outputs())
    if inputs != 1 or outputs < 1:
        raise NetspecError(
            f"{where} has {inputs} input(s) and {outputs} output(s); netspec runs models with "
            "one input and an output",
            hint="export one with `netspec export SPEC -o MODEL.onnx`",
        )
    wrapped = Session(session, _short_name(session.get_providers()[0]))
    if any(not isinstance(d, int) for d in wrapped.input_shape[1:]):
        raise NetspecError(
            f"{where} has an input of shape {wrapped.input_shape}; netspec needs fixed sizes past the batch"
        )
    return wrapped


def save_optimized(model: str | Path, out: Path) -> None:
    """Write the graph onnxruntime's CPU provider runs for the model file `model`, after its
    extended optimizations (fusions such as DequantizeLinear -> Conv -> QuantizeLinear into
    QLinearConv, without the layout changes of the `all` level), to `out`; initializers past
    1 KiB go to a side file `out.data`.

    Raises:
        NetspecError: a model onnxruntime cannot load.
    """
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = LOG_ERRORS_ONLY
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", out.name + ".data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    try:
        with _quiet():
            ort.InferenceSession(str(model), options, providers=[PROVIDERS["cpu"]])
    except Exception as err:  # onnxruntime's errors have no common base class
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NetspecError(f"cannot load {model}: {_short_ort_error(first)}") from None


def _short_name(name: str) -> str:
    return next((s for s, n in PROVIDERS.items() if n == name), name)


def _short_ort_error(text: str) -> str:
    # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x failed:Protobuf parsing failed."
    return text.split(" : ")[-1].strip() if text.startswith("[ONNXRuntimeError]") else text


def provider_line(session: Session) -> str:
    """One line: which provider runs, and why the better ones do not."""
    import onnxruntime as ort

    probes = probe_providers()
    reasons: dict[str, list[str]] = {}  # reason -> the better providers it rules out
    for short in PROVIDERS:
        if short == session.provider:
            break
        if not probes[short].usable:
            reasons.setdefault(probes[short].reason, []).append(short)
    why = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
    why = f" ({why})" if why else ""
    return f"onnxruntime {ort.__version__} runs on {PROVIDERS.get(session.provider, session.provider)}{why}"


def example_input(
    shape: tuple[int, ...], vocab: int | None, batch: int, seed: int = 0
) -> np.ndarray:
    """A seeded random input: floats in [0, 1) of `[batch, *shape]`, or token ids below `vocab`."""
    rng = np.random.default_rng(seed)
    if vocab is not None:
        return rng.integers(0, vocab, size=(batch, *shape), dtype=np.int64)
    return rng.random((batch, *shape), dtype=np.float32)


__all__ = [
    "PROVIDERS",
    "Probe",
    "Session",
    "choose_provider",
    "example_input",
    "open_session",
    "probe_providers",
    "provider_line",
    "save_optimized",
]
