"""`netspec export`, `netspec run` and `netspec bench`: the ONNX side of netspec.

netspec export specs/resnet18.ns -o resnet18.onnx [--weights run/ckpt.safetensors]
netspec run resnet18.onnx --input cat.jpg dog.png batch.npy
netspec bench specs/resnet18.ns
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import click
import numpy as np

from netspec import __version__, io
from netspec.backends import lower_onnx
from netspec.backends.lower_onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, LowerOptions
from netspec.commands.options import SPEC, load_graph, set_option
from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers import fmt_shape

CLASSES_KEY = "netspec.classes"  # ONNX metadata: the class names of a trained run, as JSON
LABELS_MAX_BYTES = 16 << 20
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


# --- export ------------------------------------------------------------------------------------


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
    options = LowerOptions(
        opset=opset, fold_bn=fold_bn, fp16=fp16, logits=logits, all_outputs=outputs == "all"
    )
    if weights is not None and seed is not None:
        raise NetspecError(
            "--seed draws random initial weights and --weights loads trained ones: give one"
        )
    start = time.perf_counter()
    io.check_output_folder(Path(output))  # before the work, not after it
    graph = load_graph(spec, sets, extra)
    metadata: dict[str, str] = {}
    if weights is not None:
        from netspec.train.run_folder import class_names

        file = io.checkpoint_file(weights)
        arrays, origin = lower_onnx.load_checkpoint(file), str(file)
        _check_finite(arrays, origin, fp16)
        note = "checkpoint sha256:" + _digest(file)
        classes = graph.classes or (graph.output_shape[0] if len(graph.output_shape) == 1 else 0)
        names = class_names(weights, classes) if classes else None
        if names is not None:
            metadata[CLASSES_KEY] = json.dumps(names)
    else:
        seed = seed or 0
        arrays, origin, note = (
            lower_onnx.initial_weights(graph, seed),
            f"seed {seed}",
            f"seed={seed}",
        )
    from netspec.commands import deploy

    if int8 or calibrate is not None:
        if not (int8 and calibrate):
            raise NetspecError(
                "--int8 needs --calibrate SOURCE" if int8 else "--calibrate is for --int8",
                hint=f"netspec export {spec} -o MODEL.onnx --int8 --calibrate digits",
            )
        # the run's own split, so that validation examples are ones it never trained on
        split = deploy.run_split(weights, calibrate)
        if val_split is not None:
            split["val_split"] = val_split
        result = deploy.export_int8(
            graph,
            output,
            arrays,
            options,
            origin=origin,
            note=note,
            metadata=metadata,
            calibrate=calibrate,
            calib_size=calib_size,
            method=calib_method,
            val_split=split.get("val_split", 0.2),
            seed=split.get("seed", seed or 0),
            val_data=split.get("val_data"),
            external_threshold=0 if external_data else deploy.files.MAX_PROTO_BYTES,
        )
        deploy.print_int8_report(result, graph, origin, time.perf_counter() - start)
        return
    side = None
    try:
        if external_data or deploy.weight_bytes(arrays, options) > deploy.files.MAX_PROTO_BYTES:
            report, side = deploy.export_external(
                graph, output, arrays, options, origin=origin, note=note, metadata=metadata
            )
        else:
            report = lower_onnx.export(
                graph, output, arrays, options, origin=origin, note=note, metadata=metadata
            )
    except lower_onnx.ExportCheckFailed as err:
        raise NetspecError(
            f"the lowered model failed a check, so nothing was written: {err}",
            hint="this is a bug in netspec; please report it with the spec",
        ) from None
    took = time.perf_counter() - start
    _print_report(
        report, graph if options.all_outputs else graph.main_path(), options, origin, took
    )
    if side is not None:
        click.echo(f"  {'weights':<8} in the side file {side} (keep it beside the model)")


def _check_finite(arrays: dict[str, np.ndarray], origin: str, fp16: bool = False) -> None:
    """Refuse weights holding NaN or infinity (or, for --fp16, values past float16's range):
    the model would output NaN, and that is the weights' fault, not a bug in netspec."""
    top = float(np.finfo(np.float16).max) if fp16 else np.inf
    bad = [
        f"{name} ({int((~(np.abs(a) < top)).sum()):,} of {a.size:,})"
        for name, a in arrays.items()
        if np.issubdtype(a.dtype, np.floating) and not (np.abs(a) < top).all()
    ]
    if bad:
        what = "NaN, infinite or past float16's range" if fp16 else "NaN or infinite"
        raise NetspecError(
            f"the weights in {origin} hold {what} values, so nothing was written",
            notes=[
                f"in {', '.join(bad[:6])}" + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
            ],
            hint="did the training diverge? export an earlier checkpoint (best.safetensors)",
        )


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _print_report(
    report: lower_onnx.ExportReport, graph: Graph, options: LowerOptions, origin: str, took: float
) -> None:
    dtype = "float16 compute, float32 input/output" if options.fp16 else "float32"
    params = f"{report.parameters:,} in initializers"
    if options.fold_bn:
        folded = len(report.folded)
        params += f" ({folded} batch norm{'s' * (folded != 1)} folded into their convolutions)"
    elif graph.totals.buffers:
        params += f" ({graph.totals.params:,} params + {graph.totals.buffers:,} BN running stats)"
    in_type = "int64 token ids" if graph.input.is_tokens else "float32"
    out_kind = "probabilities" if graph.ends_in_probabilities and not options.logits else "scores"
    rows = [
        (
            "network",
            f"{graph.name} (source hash {graph.source_hash or '-'}, netspec {__version__})",
        ),
        ("opset", f"{report.opset} (IR version {report.ir_version}), {dtype}"),
        ("weights", origin),
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
    click.echo(f"wrote {report.path} ({io.fmt_bytes(report.bytes)}) in {took:.2f} s")
    for key, value in rows:
        click.echo(f"  {key:<8} {value}")
    for i, check in enumerate(report.checks):
        mark = "ok" if check.ok else "FAILED"
        click.echo(f"  {'checks' if i == 0 else '':<8} {mark:<3} {check.name}: {check.detail}")


# --- run ---------------------------------------------------------------------------------------


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="FILE",
    help="an image or .npy array (repeatable)",
)
@click.argument("more", nargs=-1, metavar="[FILE]...")
@click.option(
    "-k",
    "--top-k",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="classes shown per input",
)
@click.option("--labels", type=click.Path(dir_okay=False), help="class names, one per line")
@click.option("--provider", default="auto", show_default=True, help="auto, tensorrt, cuda or cpu")
def run(
    model: str,
    inputs: tuple[str, ...],
    more: tuple[str, ...],
    top_k: int,
    labels: str | None,
    provider: str,
) -> None:
    """Run MODEL on images or .npy arrays (one batch) and print the top classes of each.

    Images are converted to the model's channels (gray or RGB), resized to its height and width
    and scaled to [0, 1], as in training. A .npy file holds one example or a batch of them.
    """
    from netspec.runtime import open_session, provider_line

    files = list(inputs) + list(more)
    if not files:
        raise NetspecError(
            "no inputs", hint=f"netspec run {model} --input image.png [more.png ...]"
        )
    session = open_session(model, provider)
    click.echo(provider_line(session))
    tokens = "int" in session.input_type
    batch, names = read_inputs(files, session.example_shape, tokens)
    try:
        out = session.run(batch)
    except Exception as err:  # onnxruntime's errors have no common base class
        raise NetspecError(
            f"{model} failed on these inputs: {str(err).strip().splitlines()[0]}"
        ) from None
    bad = [n for n, row in zip(names, out, strict=True) if not np.isfinite(row).all()]
    if bad:
        raise NetspecError(
            f"{model} outputs NaN or infinite values for {', '.join(bad[:4])}"
            + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""),
            hint="its weights may hold NaN or infinite values (did the training diverge?)",
        )
    if session.metadata.get("netspec.per_pixel") == "true" and out.ndim >= 3:
        names_of = _class_names(labels, out.shape[1]) if labels else None
        _print_pixel_classes(out, names, names_of)
        return
    names_of = (
        _class_names(labels, out.shape[-1])
        if labels
        else _metadata_classes(session.metadata, out.shape[-1])
        if out.ndim == 2
        else None
    )
    _print_predictions(out, names, session.metadata.get("netspec.output"), top_k, names_of)


def read_inputs(
    files: list[str], shape: tuple[int, ...], tokens: bool = False
) -> tuple[np.ndarray, list[str]]:
    """One batch from images and .npy files for a model taking `[batch, *shape]`.

    Returns the batch and a name per row (`x.npy[3]` for the rows of a batch file).

    Raises:
        NetspecError: a missing or unreadable file, or an array of the wrong shape (both shapes
            in the message).
    """
    rows: list[np.ndarray] = []
    names: list[str] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise NetspecError(
                f"no input file {name}" + (" (it is a folder)" if path.is_dir() else "")
            )
        if path.suffix.lower() == ".npy":
            array = _read_npy(path, shape, tokens)
            rows.extend(array)
            names.extend([name] if len(array) == 1 else [f"{name}[{i}]" for i in range(len(array))])
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            rows.append(read_image(path, shape))
            names.append(name)
        else:
            raise NetspecError(
                f"cannot read {name}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a .npy array"
            )
    return np.stack(rows), names


def _read_npy(
    path: Path, shape: tuple[int, ...], tokens: bool, vocab: int | None = None
) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise NetspecError(
            f"cannot read {path} as a .npy array: {err or 'the file is empty'}"
        ) from None
    if not isinstance(array, np.ndarray):  # np.load opens a zip archive (.npz) as well
        array.close()
        raise NetspecError(
            f"{path} is an .npz archive, not a .npy array",
            hint="save one array with np.save(path, x)",
        )
    if array.shape == shape:
        array = array[None]
    elif (
        len(shape) == 3 and shape[0] == 1 and array.shape[-2:] == shape[1:] and array.ndim in (2, 3)
    ):
        array = array.reshape(-1, *shape)  # gray images without their channel axis
    elif len(shape) >= 2 and array.shape[-len(shape) :] == (*shape[1:], shape[0]):
        was = array.shape
        array = np.moveaxis(array if array.ndim > len(shape) else array[None], -1, 1)
        click.echo(
            f"note: {path} is channels-last [{fmt_shape(was)}]; converted to channels-first "
            f"[{fmt_shape(array.shape)}]",
            err=True,
        )
    if array.shape[1:] != shape or array.ndim != len(shape) + 1:
        raise NetspecError(
            f"{path} holds an array of shape [{fmt_shape(array.shape)}]; the model takes [{fmt_shape(shape)}] "
            f"(one example) or [N, {fmt_shape(shape)}] (a batch)",
            hint="arrays are channels-first or channels-last, without or with a batch axis",
        )
    if len(array) == 0:
        raise NetspecError(f"{path} holds no examples (shape [{fmt_shape(array.shape)}])")
    if np.iscomplexobj(array):
        raise NetspecError(
            f"{path} holds complex numbers ({array.dtype}); the model takes real values",
            hint="pass the real part (x.real) or the magnitude (abs(x)) if that is what you mean",
        )
    if tokens:
        if not np.issubdtype(array.dtype, np.integer):
            raise NetspecError(
                f"{path} holds {array.dtype} values; the model takes integer token ids"
            )
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise NetspecError(
                f"{path} holds token ids in [{low}, {high}]; token ids are never negative",
                hint="onnxruntime would read -1 as the vocabulary's last id, silently",
            )
        return array.astype(np.int64)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
        raise NetspecError(f"{path} holds {array.dtype} values; the model takes numbers")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NetspecError(
            f"{path} holds {bad} NaN or infinite value(s) (or values past float32's range)",
            hint="clean the input first: the model's scores would be NaN",
        )
    return values


def read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An image as the model's `[C, H, W]` float32 input in [0, 1] (gray for C=1, RGB for C=3)."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise NetspecError(
            f"{path} is an image, but the model takes [{fmt_shape(shape)}], not [1 or 3, H, W]",
            hint="give it .npy arrays instead",
        )
    channels, height, width = shape
    array = io.read_image(path, channels, height, width).astype(np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _class_names(path: str, classes: int) -> list[str]:
    text = io.read_text(path, "labels file", LABELS_MAX_BYTES)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != classes:
        raise NetspecError(f"{path} names {len(names)} classes; the model has {classes}")
    return names


def _metadata_classes(metadata: dict[str, str], classes: int) -> list[str] | None:
    """The class names an exported model carries (`netspec.classes`), when they fit."""
    try:
        names = json.loads(metadata.get(CLASSES_KEY, "null"))
    except ValueError:
        return None
    if isinstance(names, list) and len(names) == classes and all(isinstance(n, str) for n in names):
        return names
    return None


def _print_pixel_classes(out: np.ndarray, names: list[str], labels: list[str] | None) -> None:
    """A per-pixel model: each input's class map, as the share of pixels of each class."""
    for name, row in zip(names, out, strict=True):
        winners = np.argmax(row, axis=0)
        shares = np.bincount(winners.ravel(), minlength=row.shape[0]) / winners.size
        listing = ", ".join(
            f"{labels[c] if labels else c} {share:.1%}" for c, share in enumerate(shares)
        )
        click.echo(f"{name}: classes per pixel [{fmt_shape(winners.shape)}]: {listing}")


def _print_predictions(
    out: np.ndarray, names: list[str], kind: str | None, k: int, labels: list[str] | None
) -> None:
    if out.ndim != 2:
        for name, row in zip(names, out, strict=True):
            click.echo(
                f"{name}: output [{fmt_shape(row.shape)}], min {row.min():.4g}, max {row.max():.4g}"
            )
        return
    probs = out.astype(np.float64)
    looks_like_probs = bool(
        ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(1), 1, atol=1e-3)
    )
    if kind == "scores" or (kind is None and not looks_like_probs):
        probs = np.exp(probs - probs.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        click.echo("(the model outputs scores; probabilities shown are their softmax)")
    k = min(k, probs.shape[1])
    width = (
        max(len(str(probs.shape[1] - 1)), *(len(s) for s in labels))
        if labels
        else len(str(probs.shape[1] - 1))
    )
    for name, row in zip(names, probs, strict=True):
        click.echo(name)
        for rank, c in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            label = labels[c] if labels else str(c)
            click.echo(f"  {rank}. {label:>{width}}  {row[c] * 100:6.2f}%")


# --- bench -------------------------------------------------------------------------------------


@click.command()
@click.argument("spec", type=SPEC)
@click.option(
    "-b",
    "--batch",
    "batches",
    multiple=True,
    type=click.IntRange(min=1),
    help="batch sizes [1, 8, 64]",
)
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="timing budget per cell",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="intra-op threads for both [the usable cores]"
)
@click.option(
    "--provider",
    default="auto",
    show_default=True,
    help="onnxruntime's provider: auto, tensorrt, cuda, cpu",
)
@click.option("--fold-bn", is_flag=True, help="fold batch norms in the ONNX graph")
@set_option
def bench(
    spec: str,
    batches: tuple[int, ...],
    seconds: float,
    threads: int | None,
    provider: str,
    fold_bn: bool,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
) -> None:
    """Latency (median, p90) and throughput of SPEC in torch eager and in ONNX Runtime, side by side.

    \b
    Given .onnx files instead (netspec bench fp32.onnx int8.onnx fp16.onnx), times the model
    files side by side in onnxruntime, with ratios against the first.
    """
    from netspec.commands.deploy import bench_onnx, is_model_file

    if is_model_file(spec):
        models = [spec, *extra]
        not_models = [m for m in extra if not is_model_file(m)] + list(sets)
        if not_models:
            raise NetspecError(
                f"bench times either one spec or .onnx model files; received {not_models[0]}",
                hint="give only .onnx files after the first one",
            )
        if fold_bn:
            raise NetspecError("--fold-bn is for a spec; a model file is benchmarked as written")
        bench_onnx(models, batches, seconds, threads, provider)
        return
    import torch
    from rich.console import Console
    from rich.table import Table

    from netspec.backends.lower_torch import build
    from netspec.runtime import (
        busy_note,
        cpu_threads,
        example_input,
        measure_side_by_side,
        open_session,
        provider_line,
    )

    graph = load_graph(spec, sets, extra)
    threads = threads or cpu_threads()
    torch.set_num_threads(threads)
    module = build(graph, seed=0).eval()
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    session = open_session(
        lower_onnx.lower(graph, weights, LowerOptions(fold_bn=fold_bn)).to_bytes(),
        provider,
        threads,
    )
    console = Console()
    console.print(provider_line(session))
    note = busy_note(threads)
    if note:
        console.print(note)

    x1 = example_input(graph.input.shape, graph.input.vocab, 1)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x1)).numpy()
    err = float(np.abs(session.run(x1) - ref).max() / max(float(np.abs(ref).max()), 1e-12))

    table = Table(title=f"{graph.name}: torch eager (cpu) vs onnxruntime ({session.provider})")
    for col in (
        "batch",
        "torch median",
        "torch p90",
        "torch /s",
        "ort median",
        "ort p90",
        "ort /s",
        "speed-up",
    ):
        table.add_column(col, justify="right")
    per_example: float | None = (
        None  # seconds per example in the slower runtime, to skip what will not fit
    )
    for batch in sorted(set(batches or (1, 8, 64))):
        why = _skip(graph, batch, per_example, seconds)
        if why:
            table.add_row(str(batch), f"skipped: {why}", *[""] * 6)
            continue
        x = example_input(graph.input.shape, graph.input.vocab, batch)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            timings = measure_side_by_side(
                {"torch": lambda xt=xt: module(xt), "ort": lambda x=x: session.run(x)}, seconds
            )
        t_torch, t_ort = timings["torch"], timings["ort"]
        per_example = max(t_torch.median, t_ort.median) / batch
        table.add_row(
            str(batch),
            _ms(t_torch.median),
            _ms(t_torch.p90),
            f"{t_torch.throughput(batch):,.0f}",
            _ms(t_ort.median),
            _ms(t_ort.p90),
            f"{t_ort.throughput(batch):,.0f}",
            f"{t_torch.median / t_ort.median:.2f}x",
        )
    table.caption = (
        f"threads: {threads} (torch intra-op {torch.get_num_threads()}, onnxruntime intra-op {threads}); "
        f"2 warm-up runs each, then torch and ort take turns, >= 5 runs each or {seconds:g} s each; "
        "speed-up = torch median / ort median; "
        f"max |ort - torch| / max |torch| = {err:.1e} at batch 1"
    )
    console.print(table)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _skip(graph: Graph, batch: int, per_example: float | None, seconds: float) -> str | None:
    """Why a batch size will not fit this machine (memory, or far past the time budget)."""
    need = graph.totals.memory_elements * 4 * batch * 2  # activations, with room for workspace
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = None
    if free is not None and need > free // 2:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    if per_example is not None:
        estimate = per_example * batch * 7 * 2  # 2 warm-ups + 5 runs, two runtimes
        if estimate > max(60.0, 10 * seconds):
            return f"would take ~{estimate:.0f} s (raise --seconds)"
    return None


__all__ = ["export", "run", "bench", "read_inputs", "read_image"]
