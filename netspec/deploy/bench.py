"""Latency and throughput, measured side by side (`netspec bench`): a spec in torch eager
against its ONNX lowering in onnxruntime, or ONNX model files (fp32, fp16, int8) against each
other. Each batch size is timed with the contenders taking turns (`netspec.timing`), so a
machine whose load drifts weighs on all of them alike; a batch size that would not fit the
memory or the time budget is skipped, with why.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from netspec.deploy import files
from netspec.deploy.runtime import Session, example_input, open_session, provider_line
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.timing import Timing, busy_note, cpu_threads, measure_side_by_side

DEFAULT_BATCHES = (1, 8, 64)


@dataclass
class Bench:
    """Timings per batch size: contender -> `Timing`, or why the batch size was skipped.

    Attributes:
        rows: (batch, timings or the reason it was skipped), by batch size.
        provider: which onnxruntime provider ran, and why the better ones did not.
        provider_name: its short name (cpu, cuda, tensorrt).
        threads: intra-op threads for every contender.
        busy: a warning when the machine's other load makes timings unreliable.
        kinds, sizes: for model files, each one's precision and bytes on disk.
        max_error: for a spec, max |ort - torch| / max |torch| at batch 1.
        torch_threads: for a spec, torch's intra-op threads.
        onnx_nodes: for a spec, the nodes of the ONNX graph timed (fewer with fold_bn).
    """

    rows: list[tuple[int, dict[str, Timing] | str]]
    provider: str
    provider_name: str
    threads: int
    busy: str | None
    kinds: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    max_error: float = 0.0
    torch_threads: int = 0
    onnx_nodes: int = 0


def bench_models(
    models: list[str],
    batches: Iterable[int] = (),
    seconds: float = 2.0,
    threads: int | None = None,
    provider: str = "auto",
) -> Bench:
    """Time model files side by side in onnxruntime, labelled by file name (with the folder
    when two names clash).

    Raises:
        NetspecError: a file that is not a model, a provider that does not work here, or a
            model failing at some batch size.
    """
    threads = threads or cpu_threads()
    labels = model_labels(models)
    kinds = {
        label: files.precision(files.load(m, weights=False))
        for label, m in zip(labels, models, strict=True)
    }
    sessions = {
        label: open_session(m, provider, threads) for label, m in zip(labels, models, strict=True)
    }
    first = next(iter(sessions.values()))
    bench = Bench([], provider_line(first), first.provider, threads, busy_note(threads), kinds)
    bench.sizes = {label: files.file_bytes(m) for label, m in zip(labels, models, strict=True)}

    def timed(batch: int) -> dict[str, Timing]:
        fns: dict[str, Callable[[], object]] = {}
        for label, s in sessions.items():
            x = example_input(s.example_shape, 2 if "int" in s.input_type else None, batch)
            fns[label] = functools.partial(s.run, x)
        try:
            return measure_side_by_side(fns, seconds)
        except Exception as err:  # onnxruntime's errors have no common base class
            raise NetspecError(
                f"a model failed at batch {batch}: {str(err).strip().splitlines()[0]}"
            ) from None

    bench.rows = _rows(batches, seconds, len(models), timed, lambda batch: None)
    return bench


def bench_spec(
    graph: Graph,
    batches: Iterable[int] = (),
    seconds: float = 2.0,
    threads: int | None = None,
    provider: str = "auto",
    fold_bn: bool = False,
) -> Bench:
    """Time the graph in torch eager (CPU, seeded initial weights) against its ONNX lowering
    in onnxruntime (`torch`, `ort`), and measure how far their outputs differ at batch 1.

    Raises:
        NetspecError: a provider that does not work here, or a graph that cannot be lowered.
    """
    import torch

    from netspec.backends.lower_torch import build
    from netspec.deploy.lower_base import LowerOptions
    from netspec.deploy.lowering import lower

    threads = threads or cpu_threads()
    torch.set_num_threads(threads)
    module = build(graph, seed=0).eval()
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    lowered = lower(graph, weights, LowerOptions(fold_bn=fold_bn))
    session = open_session(lowered.to_bytes(), provider, threads)
    x1 = example_input(graph.input.shape, graph.input.vocab, 1)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x1)).numpy()
    err = float(np.abs(session.run(x1) - ref).max() / max(float(np.abs(ref).max()), 1e-12))

    def timed(batch: int) -> dict[str, Timing]:
        x = example_input(graph.input.shape, graph.input.vocab, batch)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            return measure_side_by_side(
                {"torch": lambda: module(xt), "ort": lambda: session.run(x)}, seconds
            )

    bench = _spec_bench(session, threads, err, torch.get_num_threads())
    bench.onnx_nodes = len(lowered.model.graph.node)
    bench.rows = _rows(batches, seconds, 2, timed, lambda batch: _memory_skip(graph, batch))
    return bench


def _spec_bench(session: Session, threads: int, err: float, torch_threads: int) -> Bench:
    return Bench(
        [],
        provider_line(session),
        session.provider,
        threads,
        busy_note(threads),
        max_error=err,
        torch_threads=torch_threads,
    )


def _rows(
    batches: Iterable[int],
    seconds: float,
    contenders: int,
    timed: Callable[[int], dict[str, Timing]],
    too_big: Callable[[int], str | None],
) -> list[tuple[int, dict[str, Timing] | str]]:
    """Each batch size timed, or skipped when it would not fit the memory (`too_big`). The
    default sizes (no `batches` asked for) also skip one that would take far past the time
    budget, estimated from the size before; a size asked for with `-b` is always timed."""
    asked = sorted(set(batches))
    rows: list[tuple[int, dict[str, Timing] | str]] = []
    per_example: float | None = None  # seconds per example in the slowest contender
    for batch in asked or DEFAULT_BATCHES:
        why = too_big(batch)
        if why is None and per_example is not None and not asked:
            estimate = per_example * batch * 7 * contenders  # 2 warm-ups + 5 runs each
            if estimate > max(60.0, 10 * seconds):
                why = f"would take ~{estimate:.0f} s (ask for it: -b {batch})"
        if why is not None:
            rows.append((batch, why))
            continue
        timings = timed(batch)
        per_example = max(t.median for t in timings.values()) / batch
        rows.append((batch, timings))
    return rows


def _memory_skip(graph: Graph, batch: int) -> str | None:
    """Why a batch size will not fit this machine's available memory, if it will not."""
    need = graph.totals.memory_elements * 4 * batch * 2  # activations, with room for workspace
    free = available_memory()
    if free is None or need <= free // 2:
        return None
    return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"


def available_memory() -> int | None:
    """Bytes the machine can give without swapping: Linux's MemAvailable (free memory plus the
    page cache it can drop), else the free pages; None when neither can be read. Free pages
    alone undercount it (a machine with a warm page cache has little memory "free")."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def model_labels(models: list[str]) -> list[str]:
    """Short distinct names: file names, with their folder when two clash."""
    names = [Path(m).name for m in models]
    if len(set(names)) == len(names):
        return names
    return [str(Path(m)) if names.count(Path(m).name) > 1 else Path(m).name for m in models]


__all__ = ["DEFAULT_BATCHES", "Bench", "bench_models", "bench_spec", "model_labels"]
