"""The deployment halves of `netspec export`, `netspec eval` and `netspec bench`: int8 export
with calibration, fp32 export with external weight data, and evaluating or benchmarking
`.onnx` model files (fp32, fp16 or int8) side by side.

netspec export specs/mnist_cnn.ns --weights RUN -o m8.onnx --int8 --calibrate digits
netspec eval m8.onnx --data digits
netspec bench m.onnx m8.onnx m16.onnx
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from netspec.backends import lower_onnx
from netspec.backends.lower_onnx import LowerOptions
from netspec.deploy import files
from netspec.errors import NetspecError
from netspec.io import check_output_folder, fmt_bytes
from netspec.ir.graph import Graph

if TYPE_CHECKING:
    from netspec.deploy.quantize import Parity, Quantized


def is_model_file(name: str) -> bool:
    """A command argument naming an ONNX model file rather than a spec."""
    return Path(name).suffix.lower() == ".onnx"


def weight_bytes(arrays: Mapping[str, np.ndarray], options: LowerOptions) -> int:
    """About the bytes the lowered model's initializers take (float16 halves float32)."""
    total = sum(a.nbytes for k, a in arrays.items() if not k.endswith("num_batches_tracked"))
    return total // 2 if options.fp16 else total


# --- fp32 with external data --------------------------------------------------------------------


def export_external(
    graph: Graph,
    output: str | Path,
    arrays: Mapping[str, np.ndarray],
    options: LowerOptions,
    *,
    origin: str,
    note: str,
    metadata: Mapping[str, str] | None = None,
) -> tuple[lower_onnx.ExportReport, Path]:
    """Lower and write with every weight in a side file (`files.side_file(output)`), checked
    as `lower_onnx.export` checks (onnx's full checker, the IR's shapes, a batch in
    onnxruntime) before either file appears. Returns the report and the side file.

    Raises:
        lower_onnx.ExportCheckFailed: the model failed a check (a bug in netspec).
    """
    output = Path(output)
    graph, arrays = lower_onnx.for_outputs(graph, arrays, options)
    lowered = lower_onnx.lower(graph, arrays, options, origin=origin, note=note, metadata=metadata)
    with files.staging(output) as stage:
        staged = stage / output.name
        files.save_lowered(lowered, staged)
        checks = lower_onnx.verify(lowered, graph, str(staged))
        lower_onnx.require_passed(checks)
        size = files.file_bytes(staged)
        files.publish(staged, output)
    report = lower_onnx.ExportReport.of(lowered, output, size, options.opset, checks)
    return report, files.side_file(output)


# --- int8 ------------------------------------------------------------------------------------------


def run_split(weights: str | None, source: str) -> dict[str, Any]:
    """How the training run behind `weights` split `source`: its val_split, seed and val_data,
    so that int8 accuracy is measured on examples the run held out. Empty when `weights` is
    not a run folder or the run trained on other data."""
    import json

    if weights is None or not Path(weights).is_dir():
        return {}
    try:
        saved = json.loads((Path(weights) / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    settings = saved.get("settings", {})
    if settings.get("data") != source:
        return {}
    return {k: settings[k] for k in ("val_split", "seed", "val_data") if k in settings}


@dataclass(frozen=True)
class Int8Export:
    """What `export_int8` wrote and measured."""

    path: Path
    side: Path | None
    bytes: int
    fp32_bytes: int
    quantized: Quantized
    parity: Parity
    accuracy: tuple[float, float] | None  # fp32, int8 on the validation part
    val_examples: int
    source: str
    checks: list[lower_onnx.Check]


def export_int8(
    graph: Graph,
    output: str | Path,
    arrays: Mapping[str, np.ndarray],
    options: LowerOptions,
    *,
    origin: str,
    note: str,
    metadata: Mapping[str, str] | None = None,
    calibrate: str,
    calib_size: int = 256,
    method: str = "minmax",
    val_split: float = 0.2,
    seed: int = 0,
    val_data: str | None = None,
    external_threshold: int = files.MAX_PROTO_BYTES,
) -> Int8Export:
    """Lower to fp32, calibrate on `calibrate`'s training part (the same source and
    preprocessing as `netspec train`), quantize to int8, compare with fp32 and write the int8
    model to `output`; nothing is written when any step fails.

    Raises:
        NetspecError: bad data or options, or a model onnxruntime cannot quantize.
    """
    from netspec.commands.train import _classes
    from netspec.deploy import quantize as q
    from netspec.runtime import open_session
    from netspec.train.data import load_data

    if options.fp16:
        raise NetspecError("--int8 and --fp16 are two precisions: give one")
    if options.all_outputs:
        raise NetspecError(
            "--int8 quantizes the main output only; leave out --outputs all",
            hint="export the side heads in fp32: --outputs all without --int8",
        )
    if graph.per_pixel:  # its checks and accuracy count top-1 per example
        raise NetspecError(
            f"{graph.name} has a per-pixel output; --int8 does not quantize dense outputs yet",
            hint="export it in fp32 (without --int8), or with --fp16",
        )
    if graph.input.is_tokens:
        raise NetspecError(
            f"{graph.name} takes token ids; --int8 quantizes models with a float input"
        )
    method = q.check_method(method)
    if calib_size < q.CALIB_BATCH:
        raise NetspecError(
            f"--calib-size {calib_size} is fewer than one calibration batch of {q.CALIB_BATCH}",
            hint=f"use --calib-size {q.CALIB_BATCH} or more",
        )
    output = Path(output)
    check_output_folder(output)  # before minutes of work, not after
    data = load_data(
        calibrate,
        graph.input.shape,
        _classes(graph),
        val_split=val_split,
        seed=seed,
        val_source=val_data,
        vocab=graph.input.vocab,
    )
    train = data.train
    n = min(calib_size, len(train))
    origin_data = f"the calibration data ({calibrate}, training part)"
    q.check_classes(train.y[:n].numpy(), train.class_names, origin_data)
    x = q.check_calibration(train.x[:n].numpy(), graph.input.shape, origin=origin_data)
    graph, arrays = lower_onnx.for_outputs(graph, arrays, options)
    lowered = lower_onnx.lower(graph, arrays, options, origin=origin, note=note, metadata=metadata)
    with files.staging(output) as stage:
        fp32 = stage / "fp32.onnx"
        if lowered.nbytes > external_threshold:
            files.save_lowered(lowered, fp32)
        else:
            fp32.write_bytes(lowered.to_bytes())
        checks = lower_onnx.verify(lowered, graph, str(fp32))
        failed = [c for c in checks if not c.ok]
        if failed:
            raise NetspecError(
                "the fp32 model failed a check, so nothing was written: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed),
                hint="this is a bug in netspec; please report it with the spec",
            )
        staged = stage / output.name
        quantized = q.quantize(
            fp32, staged, x, method=method, external_threshold=external_threshold
        )
        s32, s8 = open_session(fp32, "cpu"), open_session(staged, "cpu")
        parity = q.compare(s32, s8, x)
        accuracy = None
        if len(data.val):
            vx = data.val.x.numpy()
            vy = data.val.y.numpy()
            accuracy = (_accuracy(s32, vx, vy), _accuracy(s8, vx, vy))
        size, fp32_size = files.file_bytes(staged), files.file_bytes(fp32)
        files.publish(staged, output)
    return Int8Export(
        output,
        files.side_file(output) if quantized.side else None,
        size,
        fp32_size,
        quantized,
        parity,
        accuracy,
        len(data.val),
        calibrate,
        checks,
    )


def _accuracy(session: Any, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    hits = 0
    for start in range(0, len(y), batch):
        out = session.run(np.ascontiguousarray(x[start : start + batch], dtype=np.float32))
        hits += int((out.argmax(1) == y[start : start + batch]).sum())
    return hits / len(y)


def print_int8_report(result: Int8Export, graph: Graph, origin: str, took: float) -> None:
    """The int8 export's report: sizes, calibration, what stayed float and why, fp32 vs int8."""
    qz, parity = result.quantized, result.parity
    click.echo(f"wrote {result.path} ({fmt_bytes(result.bytes)}) in {took:.2f} s")
    if result.side is not None:
        click.echo(f"  weights  in the side file {result.side} (keep it beside the model)")
    rows = [
        ("network", f"{graph.name}, int8 (QDQ: per-channel int8 weights, uint8 activations)"),
        ("weights", origin),
        (
            "size",
            f"{fmt_bytes(result.bytes)} int8 vs {fmt_bytes(result.fp32_bytes)} fp32 "
            f"({result.fp32_bytes / result.bytes:.2f}x smaller)",
        ),
        (
            "calib",
            f"{qz.calibration} examples of {result.source} (training part, preprocessed as in "
            f"training), {qz.method}",
        ),
        ("int8", ", ".join(f"{op} x{n}" for op, n in sorted(qz.int8_ops.items()))),
    ]
    for key, value in rows:
        click.echo(f"  {key:<8} {value}")
    if not qz.float_nodes:
        click.echo(f"  {'float':<8} none: every compute node runs in int8")
    for i, group in enumerate(qz.float_nodes):
        names = ", ".join(group.names[:6]) + (" ..." if len(group.names) > 6 else "")
        click.echo(
            f"  {'float' if i == 0 else '':<8} {group.op} x{len(group.names)} ({names}): {group.why}"
        )
    click.echo(
        f"  {'parity':<8} on the {parity.examples} calibration examples: max |int8 - fp32| "
        f"{parity.max_abs:.3g} (mean {parity.mean_abs:.3g}), same top-1 on "
        f"{parity.top1_agreement:.1%}"
    )
    if result.accuracy is not None:
        a32, a8 = result.accuracy
        click.echo(
            f"  {'accuracy':<8} validation ({result.val_examples} examples): fp32 {a32:.2%}, "
            f"int8 {a8:.2%} ({(a8 - a32) * 100:+.2f} points)"
        )
    else:
        click.echo(
            f"  {'accuracy':<8} not measured: the validation part of {result.source} is empty"
        )
    for i, check in enumerate(result.checks):
        mark = "ok" if check.ok else "FAILED"
        click.echo(f"  {'fp32' if i == 0 else '':<8} {mark:<3} {check.name}: {check.detail}")


# --- eval --------------------------------------------------------------------------------------


def eval_onnx(
    model: str,
    data: str | None,
    val_data: str | None,
    val_split: float | None,
    seed: int | None,
    split: str,
    batch_size: int,
    provider: str = "cpu",
) -> None:
    """`netspec eval MODEL.onnx --data SOURCE`: the same report as for a checkpoint."""
    from rich.console import Console

    from netspec.runtime import open_session, provider_line
    from netspec.train.data import load_data
    from netspec.train.device import pick_runtime
    from netspec.train.evaluate import evaluate, onnx_logits
    from netspec.train.report import eval_tables

    if data is None:
        raise NetspecError(
            f"no data to evaluate {model} on: pass --data SOURCE",
            hint="sources: digits, synthetic[:N], npz:PATH, idx:PATH, folder:PATH",
        )
    header = files.load(model, weights=False)
    kind = files.precision(header)
    session = open_session(model, provider)
    out_shape = session.session.get_outputs()[0].shape
    if len(out_shape) != 2 or not isinstance(out_shape[1], int):
        raise NetspecError(f"{model} outputs {out_shape}, not class scores [batch, classes]")
    tokens = "int" in session.input_type
    split_data = load_data(
        data,
        session.example_shape,
        out_shape[1],
        val_split=0.2 if val_split is None else val_split,
        seed=seed or 0,
        val_source=val_data,
        vocab=_vocab(header) if tokens else None,
    )
    dataset = split_data.val if split == "val" else split_data.train
    if len(dataset) == 0:
        raise NetspecError(
            f"the {split} part of {data} is empty", hint="use --val-split above 0, or --val-data"
        )
    probabilities = session.metadata.get("netspec.output", "probabilities") == "probabilities"
    logits = onnx_logits(session.run, probabilities)
    result = evaluate(
        logits, dataset.x, dataset.y, dataset.class_names, pick_runtime("cpu"), batch_size
    )
    console = Console()
    console.print(provider_line(session), highlight=False)
    name = session.metadata.get("netspec.name") or Path(model).name
    for table in eval_tables(result, f"{name} ({kind}, {Path(model).name}) on {data} ({split})"):
        console.print(table)
    console.print(
        f"accuracy: {result.accuracy:.2%} ({int(result.confusion.diagonal().sum())}/{result.count})",
        highlight=False,
        soft_wrap=True,
    )


def _vocab(model: Any) -> int | None:
    """A token model's vocabulary: the rows of the table its first Gather reads."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return None


# --- bench -------------------------------------------------------------------------------------


def bench_onnx(
    models: list[str],
    batches: tuple[int, ...],
    seconds: float,
    threads: int | None,
    provider: str,
) -> None:
    """`netspec bench A.onnx [B.onnx ...]`: latency and throughput of model files side by side,
    each batch size timed with the models taking turns; ratios against the first model."""
    from rich.console import Console
    from rich.table import Table

    from netspec.runtime import (
        busy_note,
        cpu_threads,
        example_input,
        measure_side_by_side,
        open_session,
        provider_line,
    )

    threads = threads or cpu_threads()
    labels = _labels(models)
    kinds = {
        label: files.precision(files.load(m, weights=False))
        for label, m in zip(labels, models, strict=True)
    }
    sessions = {
        label: open_session(m, provider, threads) for label, m in zip(labels, models, strict=True)
    }
    sizes = {label: files.file_bytes(m) for label, m in zip(labels, models, strict=True)}
    console = Console()
    console.print(provider_line(next(iter(sessions.values()))), highlight=False)
    note = busy_note(threads)
    if note:
        console.print(note, highlight=False)
    base = labels[0]
    table = Table(title=f"{len(models)} model{'s' * (len(models) != 1)}: latency and throughput")
    for col in ("batch", "model", "type", "size", "median", "p90", "/s", "ratio"):
        table.add_column(col, justify="right")
    per_example: float | None = None
    for batch in sorted(set(batches or (1, 8, 64))):
        if per_example is not None:
            estimate = per_example * batch * 7 * len(models)
            if estimate > max(60.0, 10 * seconds):
                table.add_row(
                    str(batch),
                    f"skipped: would take ~{estimate:.0f} s (raise --seconds)",
                    *[""] * 6,
                )
                continue
        fns = {}
        for label, s in sessions.items():
            x = example_input(s.example_shape, 2 if "int" in s.input_type else None, batch)
            fns[label] = lambda s=s, x=x: s.run(x)
        try:
            timings = measure_side_by_side(fns, seconds)
        except Exception as err:  # onnxruntime's errors have no common base class
            raise NetspecError(
                f"a model failed at batch {batch}: {str(err).strip().splitlines()[0]}"
            ) from None
        per_example = max(t.median for t in timings.values()) / batch
        for i, (label, t) in enumerate(timings.items()):
            table.add_row(
                str(batch) if i == 0 else "",
                label,
                kinds[label],
                fmt_bytes(sizes[label]),
                _ms(t.median),
                _ms(t.p90),
                f"{t.throughput(batch):,.0f}",
                f"{timings[base].median / t.median:.2f}x",
            )
        table.add_section()
    table.caption = (
        f"onnxruntime on {next(iter(sessions.values())).provider}, intra-op threads: {threads}; "
        f"2 warm-up runs each, then the models take turns, >= 5 runs each or {seconds:g} s each; "
        f"ratio = {base} median / this median (above 1x: faster than {base})"
    )
    console.print(table)


def _labels(models: list[str]) -> list[str]:
    """Short distinct names for the table: file names, with their folder when two clash."""
    names = [Path(m).name for m in models]
    if len(set(names)) == len(names):
        return names
    return [str(Path(m)) if names.count(Path(m).name) > 1 else Path(m).name for m in models]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


__all__ = [
    "Int8Export",
    "bench_onnx",
    "eval_onnx",
    "export_external",
    "export_int8",
    "is_model_file",
    "print_int8_report",
    "weight_bytes",
]
