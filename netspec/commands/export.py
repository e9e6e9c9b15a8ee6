"""`netspec export`: a spec compiled to a checked ONNX model (fp32, fp16 or int8); the work is
`netspec.deploy.export`'s, this parses the flags and prints the report.

netspec export specs/resnet18.ns -o resnet18.onnx [--weights run/ckpt.safetensors]
netspec export specs/mnist_cnn.ns --weights RUN -o m8.onnx --int8 --calibrate digits
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from netspec import __version__, io
from netspec.commands.options import SPEC, given, load_graph, set_option
from netspec.deploy import Calibration, ExportReport
from netspec.deploy import export as export_model
from netspec.deploy.lower_base import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from netspec.errors import NetspecError
from netspec.io import fmt_bytes
from netspec.ir.graph import Graph

INT8_ONLY = ("calib_size", "calib_method", "val_split")  # options that mean nothing without --int8


@click.command()
@click.argument("spec", type=SPEC)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="the .onnx file to write"
)
@click.option(
    "--weights",
    type=click.Path(),
    help="a safetensors checkpoint or a training run's folder (default: seeded init)",
)
@click.option(
    "--seed", type=int, default=None, help="seed of the initial weights when no --weights [0]"
)
@click.option("--fold-bn", is_flag=True, help="fold each batch norm into the convolution before it")
@click.option(
    "--fp16",
    is_flag=True,
    help="weights and compute in float16; input and output stay float32 (Cast nodes)",
)
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="the ONNX opset")
@click.option("--logits", is_flag=True, help="leave out a final softmax: output the class scores")
@click.option(
    "--outputs",
    type=click.Choice(["main", "all"]),
    default="main",
    show_default=True,
    help="all: the side heads (`head NAME at ...`) are outputs too, named after them",
)
@click.option(
    "--int8",
    is_flag=True,
    help="static int8 quantization (QDQ, per-channel weights), calibrated on --calibrate",
)
@click.option(
    "--calibrate",
    metavar="SOURCE",
    help="calibration data for --int8, read as `netspec train --data` reads it",
)
@click.option(
    "--calib-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="calibration examples (from the training part)",
)
@click.option(
    "--calib-method",
    type=click.Choice(["minmax", "entropy", "percentile"], case_sensitive=False),
    default="minmax",
    show_default=True,
    help="how activation ranges are set from the calibration data",
)
@click.option(
    "--val-split",
    type=float,
    default=None,
    help="with --int8: the data's validation fraction [the run's when --weights is its "
    "folder, else 0.2]",
)
@click.option(
    "--external-data",
    is_flag=True,
    help="weights in a side file MODEL.onnx.data (automatic past 2 GiB)",
)
@set_option
def export(
    spec: str,
    output: str,
    weights: str | None,
    seed: int | None,
    fold_bn: bool,
    fp16: bool,
    opset: int,
    logits: bool,
    outputs: str,
    int8: bool,
    calibrate: str | None,
    calib_size: int,
    calib_method: str,
    val_split: float | None,
    external_data: bool,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
) -> None:
    """Compile SPEC straight to an ONNX model (no tracing), check it, and write it atomically.

    \b
    The weights are a safetensors checkpoint's (--weights) or the seeded initialization of the
    PyTorch lowering (--seed, 0 by default). --fold-bn folds each batch norm that directly
    follows a convolution into it. --fp16 stores the weights and computes in float16, while
    the input and the output stay float32 (Cast nodes at both ends). Before it is written,
    the model passes onnx's full checker, matches the IR's shape at every layer and runs a
    batch in onnxruntime; a model failing any of these is never written.

    \b
    --int8 --calibrate SOURCE: static post-training quantization with onnxruntime
    (batch norms folded first), calibrated on SOURCE's training part; the report names the
    nodes left in float and why, and compares fp32 and int8 accuracy on the validation part.
    Weights past 2 GiB (or with --external-data) go to a side file MODEL.onnx.data.
    """
    calibration = _calibration(spec, int8, calibrate, calib_size, calib_method, val_split)
    if weights is not None and seed is not None:
        raise NetspecError(
            "--seed draws random initial weights and --weights loads trained ones: give one"
        )
    start = time.perf_counter()
    io.check_output_folder(Path(output))  # before the work, not after it
    graph = load_graph(spec, sets, extra)
    report = export_model(
        graph,
        output,
        weights,
        seed=seed,
        opset=opset,
        fold_bn=fold_bn,
        fp16=fp16,
        logits=logits,
        all_outputs=outputs == "all",
        int8=calibration,
        external_data=True if external_data else None,
    )
    took = time.perf_counter() - start
    if report.int8 is not None:
        _print_int8_report(report, graph, took)
        return
    _print_report(
        report, graph if outputs == "all" else graph.main_path(), fold_bn, fp16, logits, took
    )
    if report.side is not None:
        click.echo(f"  {'weights':<8} in the side file {report.side} (keep it beside the model)")


def _calibration(
    spec: str,
    int8: bool,
    calibrate: str | None,
    calib_size: int,
    calib_method: str,
    val_split: float | None,
) -> Calibration | None:
    """The int8 settings the flags ask for; calibration flags without --int8 are refused."""
    if int8 and calibrate:
        return Calibration(calibrate, size=calib_size, method=calib_method, val_split=val_split)
    if int8 or calibrate is not None:
        raise NetspecError(
            "--int8 needs --calibrate SOURCE" if int8 else "--calibrate is for --int8",
            hint=f"netspec export {spec} -o MODEL.onnx --int8 --calibrate digits",
        )
    stray = given(*INT8_ONLY)
    if stray:
        raise NetspecError(
            f"{stray[0]} is for an int8 export; without --int8 it would do nothing",
            hint=f"add --int8 --calibrate SOURCE, or leave out {stray[0]}",
        )
    return None


def _print_report(
    report: ExportReport, graph: Graph, fold_bn: bool, fp16: bool, logits: bool, took: float
) -> None:
    dtype = "float16 compute, float32 input/output" if fp16 else "float32"
    params = f"{report.parameters:,} in initializers"
    if fold_bn:
        folded = len(report.folded)
        params += f" ({folded} batch norm{'s' * (folded != 1)} folded into their convolutions)"
    elif graph.totals.buffers:
        params += f" ({graph.totals.params:,} params + {graph.totals.buffers:,} BN running stats)"
    in_type = "int64 token ids" if graph.input.is_tokens else "float32"
    out_kind = "probabilities" if graph.ends_in_probabilities and not logits else "scores"
    rows = [
        (
            "network",
            f"{graph.name} (source hash {graph.source_hash or '-'}, netspec {__version__})",
        ),
        ("opset", f"{report.opset} (IR version {report.ir_version}), {dtype}"),
        ("weights", report.origin),
        ("params", params),
        (
            "graph",
            f"{report.onnx_nodes} ONNX nodes; `{INPUT_NAME}` [batch, {', '.join(map(str, graph.input.shape))}] {in_type}"
            f" -> `{OUTPUT_NAME}` [batch, {', '.join(map(str, graph.output_shape))}] float32 {out_kind}"
            + "".join(
                f", `{h.name}` [batch, {', '.join(map(str, graph.node(h.output).shape))}]"
                for h in graph.heads  # side heads, with --outputs all
            ),
        ),
    ]
    click.echo(f"wrote {report.path} ({fmt_bytes(report.bytes)}) in {took:.2f} s")
    for key, value in rows:
        click.echo(f"  {key:<8} {value}")
    for i, check in enumerate(report.checks):
        mark = "ok" if check.ok else "FAILED"
        click.echo(f"  {'checks' if i == 0 else '':<8} {mark:<3} {check.name}: {check.detail}")


def _names(names: list[str], most: int = 6) -> str:
    """The layers' names, the first `most` of them: `conv1, conv2, ... (12 more)`."""
    more = len(names) - most
    return ", ".join(names[:most]) + (f", ... ({more} more)" if more > 0 else "")


def _print_int8_report(report: ExportReport, graph: Graph, took: float) -> None:
    """The int8 export's report: sizes, calibration, what stayed float and why, fp32 vs int8."""
    result = report.int8
    assert result is not None
    qz, parity = result.quantized, result.parity
    click.echo(f"wrote {report.path} ({fmt_bytes(report.bytes)}) in {took:.2f} s")
    if report.side is not None:
        click.echo(f"  weights  in the side file {report.side} (keep it beside the model)")
    rows = [
        (
            "network",
            f"{graph.name}, int8 (QDQ: per-channel int8 weights, uint8 activations)"
            + (
                "; weights in 7 bits: this CPU has no VNNI, and its int8 kernels saturate with 8"
                if qz.weight_bits == 7
                else ""
            ),
        ),
        ("weights", report.origin),
        (
            "size",
            f"{fmt_bytes(report.bytes)} int8 vs {fmt_bytes(result.fp32_bytes)} fp32 "
            f"({result.fp32_bytes / report.bytes:.2f}x smaller)",
        ),
        (
            "calib",
            f"{qz.calibration} examples of {result.source} (training part, preprocessed as in "
            f"training), {qz.method}",
        ),
    ]
    for key, value in rows:
        click.echo(f"  {key:<8} {value}")
    for i, (op, names) in enumerate(sorted(qz.int8_ops.items())):
        click.echo(f"  {'int8' if i == 0 else '':<8} {op} x{len(names)} ({_names(names)})")
    if not qz.float_nodes:
        click.echo(f"  {'float':<8} none: every compute node runs in int8")
    for i, group in enumerate(qz.float_nodes):
        click.echo(
            f"  {'float' if i == 0 else '':<8} {group.op} x{len(group.names)} "
            f"({_names(group.names)}): {group.why}"
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
    for i, check in enumerate(report.checks):
        mark = "ok" if check.ok else "FAILED"
        click.echo(f"  {'fp32' if i == 0 else '':<8} {mark:<3} {check.name}: {check.detail}")


__all__ = ["export"]
