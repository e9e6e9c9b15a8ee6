"""The checks every exported model passes before it is written: onnx's full checker, the IR's
shape at every node (onnx's shape inference), and a batch run in onnxruntime on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from netspec.deploy.lower_base import BATCH
from netspec.deploy.runtime import example_input, open_session
from netspec.deploy.writer import Lowered
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers import fmt_shape


@dataclass(frozen=True)
class Check:
    """One check of an exported model: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str


def require_passed(checks: list[Check]) -> None:
    """Raise `ExportCheckFailed` naming every failed check; nothing is written after it."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ExportCheckFailed("; ".join(f"{c.name}: {c.detail}" for c in failed))


class ExportCheckFailed(NetspecError):
    """A lowered model failed a check: a bug in netspec, never the user's; nothing is written."""

    def __init__(self, failed: str) -> None:
        super().__init__(
            f"the lowered model failed a check, so nothing was written: {failed}",
            hint="this is a bug in netspec; please report it with the spec",
        )


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every tensor's shape as `onnx.shape_inference` sees it (a symbolic dim by its name).
    Initializers need no data for this: `Lowered.model` will do."""
    inferred = onnx.shape_inference.infer_shapes(
        model, check_type=True, strict_mode=True, data_prop=True
    )
    g = inferred.graph
    out: dict[str, list[int | str]] = {}
    for info in [*g.input, *g.value_info, *g.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            out[info.name] = [
                d.dim_param if d.HasField("dim_param") else d.dim_value
                for d in info.type.tensor_type.shape.dim
            ]
    return out


def shape_mismatches(lowered: Lowered, graph: Graph) -> list[str]:
    """IR nodes whose ONNX tensor has another shape than the IR's `[batch, *shape]`."""
    shapes = inferred_shapes(lowered.model)
    bad = []
    for node in graph.nodes:
        want: list[int | str] = [BATCH, *node.shape]
        got = shapes.get(lowered.tensors[node.id])
        if got != want:
            bad.append(
                f"{node.id}: IR {_dims(want)}, ONNX {_dims(got) if got is not None else 'unknown'}"
            )
    return bad


def verify(
    lowered: Lowered, graph: Graph, written: str | Path | bytes | None = None, run: bool = True
) -> list[Check]:
    """The checks every export passes: onnx's full checker, the IR's shapes at every node, and
    (with `run`) onnxruntime loading the model and running a batch of 2 on the CPU.

    Args:
        written: the model as written (a file or its bytes); by default, `lowered.to_bytes()`.
    """
    data = written if written is not None else lowered.to_bytes()
    checks = []
    try:
        onnx.checker.check_model(data, full_check=True)
        checks.append(Check("onnx.checker (full)", True, "passed"))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        checks.append(Check("onnx.checker (full)", False, str(err).strip().splitlines()[0]))
        return checks
    bad = shape_mismatches(lowered, graph)
    n = len(graph.nodes)
    detail = (
        f"all {n} IR nodes match" if not bad else f"{len(bad)} of {n} differ: " + "; ".join(bad[:3])
    )
    checks.append(Check("shape inference vs IR", not bad, detail))
    if run:
        checks.append(_run_check(graph, data))
    return checks


def _run_check(graph: Graph, data: str | Path | bytes) -> Check:
    try:
        session = open_session(data, provider="cpu")
        y = session.run(example_input(graph.input.shape, graph.input.vocab, batch=2))
    except Exception as err:  # onnxruntime's errors have no common base class
        return Check("onnxruntime (CPU)", False, str(err).strip().splitlines()[0])
    want = (2, *graph.output_shape)
    ok = y.shape == want and bool(np.isfinite(y).all())
    detail = f"runs a batch of 2: output [{fmt_shape(y.shape)}]" + (
        "" if ok else f", expected [{fmt_shape(want)}], finite"
    )
    return Check("onnxruntime (CPU)", ok, detail)


def _dims(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


__all__ = [
    "Check",
    "ExportCheckFailed",
    "inferred_shapes",
    "require_passed",
    "shape_mismatches",
    "verify",
]
