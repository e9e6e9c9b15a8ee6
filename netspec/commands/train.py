"""`netspec train` and `netspec eval`: train a spec on data into a run folder; evaluate weights.

torch is imported inside the commands, so listing the CLI's commands stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from netspec import terminal
from netspec.commands.options import SPEC, given, load_graph, parse_bindings, set_option
from netspec.errors import NetspecError
from netspec.train.run_folder import SETTINGS, SPEC_COPY, read_settings, read_spec_copy
from netspec.train.settings import KEYS, TrainSettings, describe_keys, resolve_settings
from netspec.weights.pretrained import Preprocessing

# Flags a resumed run may change: the rest would make it a different run.
_RESUMABLE = {"epochs", "device", "nproc", "threads", "quiet", "timeout"}
_NO_DATA = 'no training data: pass --data SOURCE or set `data = "..."` in the spec\'s train section'
_DATA_HINT = "sources: digits, synthetic[:N], npz:PATH, idx:PATH, folder:PATH"

_EPILOG = (
    "\b\nSettings (the spec's `train { key = value, ... }` section; flags override it):\n"
    + "\n".join(f"  {line}" for line in describe_keys().splitlines())
    + "\n\n\b\nRun folder: spec.ns, settings.json, task.json, metrics.csv, curves.png, result.json,\n"
    "  last.safetensors, best.safetensors, last.state.pt (what --resume reads).\n"
    "\n\b\nExit status: 0 done (early stopping included); 2 for bad input, or when the loss\n"
    "  became NaN/inf (the last good checkpoint is kept); 3 when a data-parallel worker was\n"
    "  lost or stalled (resume with --resume); 130 when interrupted."
)


def _setting_options(f):
    """One flag per setting key: --epochs, --batch-size, --lr, ... (None when not given)."""
    flags = [
        ("--data", str, "SOURCE"),
        ("--val-data", str, "SOURCE"),
        ("--test-data", str, "SOURCE"),
        ("--val-split", float, "F"),
        ("--limit", int, "N"),
        ("--epochs", int, "N"),
        ("--batch-size", int, "N"),
        ("--optimizer", str, "NAME|CALL"),
        ("--lr", float, "F"),
        ("--momentum", float, "F"),
        ("--nesterov/--no-nesterov", None, None),
        ("--weight-decay", float, "F"),
        ("--schedule", str, "NAME|CALL"),
        ("--patience", int, "N"),
        ("--l1", float, "F"),
        ("--l2", float, "F"),
        ("--augment", str, "SPEC"),
        ("--freeze", str, "PATTERN"),
        ("--seed", int, "N"),
        ("--freeze-epochs", int, "N"),
        ("--unfreeze-from", str, "LAYER"),
        ("--backbone-lr", float, "F"),
        ("--task", str, "NAME|CALL"),
        ("--loss", str, "NAME"),
        ("--precision", str, "auto|fp32|bf16"),
    ]
    for flag, kind, metavar in reversed(flags):
        key = flag[2:].split("/")[0].replace("-", "_")
        if kind is None:  # an on/off flag
            f = click.option(flag, key, default=None, help=KEYS[key].help)(f)
        elif key == "freeze":
            f = click.option(flag, key, multiple=True, metavar=metavar, help=KEYS[key].help)(f)
        else:
            f = click.option(flag, key, type=kind, metavar=metavar, help=KEYS[key].help)(f)
    return f


@click.command(epilog=_EPILOG)
@click.argument("spec", required=False, type=SPEC)
@set_option
@_setting_options
@click.option(
    "--init",
    "init",
    metavar="SOURCE",
    help="start from these weights, matched by structure (order, kind, shape): a .pth/.pt "
    "state dict, .safetensors, .onnx, a run folder, `pretrained[:NAME]` (the zoo spec's "
    "torchvision weights) or `torchvision:MODEL[.NAME]`; a classifier for other classes is "
    "re-initialised",
)
@click.option(
    "--init-partial",
    "init_partial",
    is_flag=True,
    help="with --init: load the layers that fit and leave the rest initialised (listed)",
)
@click.option(
    "--init-min",
    "init_min",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    metavar="F",
    help="with --init (partial): refuse to train unless this share of the model's weights "
    "(by element count) is loaded [default: any, but not none]",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto, cpu, cuda or cuda:N (CUDA: bf16 autocast, channels-last)",
)
@click.option(
    "--nproc",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="data-parallel processes (DDP: gloo on CPU, NCCL on CUDA)",
)
@click.option(
    "--out", "out", metavar="DIR", help="the run folder [default: runs/<network>-<timestamp>]"
)
@click.option(
    "--resume",
    "resume",
    metavar="RUN_DIR",
    type=click.Path(file_okay=False),
    help="continue an interrupted run from its last checkpoint",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="CPU threads per process [default: the idle cores, by the load average]",
)
@click.option(
    "--sync-bn/--no-sync-bn",
    "sync_bn",
    default=False,
    show_default=True,
    help="with several processes: batch norm over the whole global batch (synchronised) "
    "instead of each process's share",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="with several processes: how long a process waits for the others before the job "
    "stops (a stalled or lost worker: exit status 3)",
)
@click.option("--quiet", "-q", is_flag=True, help="print nothing but errors")
@click.pass_context
def train(
    ctx: click.Context,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    **options: Any,
) -> None:
    """Train SPEC on data, writing checkpoints, metrics and learning curves to a run folder.

    \b
    netspec train specs/mnist_cnn.ns --data digits
    netspec train specs/resnet18.ns --data folder:photos --init runs/r18/best.safetensors --freeze 'layer1.*'
    netspec train --resume runs/mnist_cnn-20250101-120000
    torchrun --nproc_per_node 2 -m netspec train specs/mnist_cnn.ns --data digits --out runs/m
    """
    from rich.console import Console

    from netspec.train.distributed import launched

    given = {
        k for k in options if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    group = launched()
    if group is not None:
        _train_in_group(group, spec, sets, extra, options, given)
        return
    console = Console(quiet=options["quiet"])
    job, device = _prepare(spec, sets, extra, options, given, console)
    _make_folder(job.out)  # only now: a refused run leaves no folder behind
    if not options["resume"]:
        _write_run_files(job, spec)
    console.print(_headline(job, device), highlight=False, soft_wrap=True)
    _report(_run(job, console), job.out, console)


def _prepare(
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    options: dict[str, Any],
    given: set[str],
    console: Any,
    write: bool = True,
    group: Any = None,
) -> tuple[Any, str]:
    """The job the flags describe, every check made and the data loaded, but no run folder
    made: (job, device type). Under torchrun (`group`) the folder is chosen by rank 0 later,
    and only rank 0 writes (`write`)."""
    from netspec.train.device import pick_runtime
    from netspec.train.tasks import fit_statistics, resolve_task
    from netspec.train.trainer import Job, cpu_threads
    from netspec.train.validate import validate

    flags = {k: options[k] for k in KEYS if k in given}
    nproc = group.world if group is not None else options["nproc"]
    if options["resume"]:
        graph, settings, out, threads = _resume(
            options["resume"], spec, sets, extra, flags, given, write=write
        )
        init, threads = None, options["threads"] or threads
        options = {**options, "sync_bn": bool(read_settings(out).get("sync_bn", False))}
        preprocessing = _saved_preprocessing(out)
    else:
        graph, settings, preprocessing = _new_run(spec, sets, extra, flags, options, console)
        init, threads = options["init"], options["threads"]
        out = _new_run_folder(options["out"], graph.name) if group is None else Path()
    validate(graph, settings, nproc=nproc)
    task = resolve_task(graph, settings.task, settings.loss)  # refused before any data is read
    local = group.local_rank if group is not None else nproc - 1
    runtime = pick_runtime(options["device"], rank=local)  # refused now if bad
    threads = cpu_threads(threads, 1 if group is not None else nproc)  # recorded: sways sums
    data = _prepared_data(graph, settings, task.kind, preprocessing, console)
    validate(graph, settings, nproc=nproc, examples=len(data.train))
    task = fit_statistics(task, data.train)
    job = Job(
        graph,
        settings,
        data,
        out,
        options["device"],
        nproc,
        init,
        bool(options["resume"]),
        options["quiet"],
        threads,
        init_shown=True,
        timeout=options["timeout"],
        sync_bn=options["sync_bn"],
        init_partial=options["init_partial"] or options["init_min"] is not None,
        preprocessing=preprocessing.to_json() if preprocessing is not None else None,
        task=task,
    )
    return job, runtime.device.type


def _new_run(
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    flags: dict[str, Any],
    options: dict[str, Any],
    console: Any,
) -> tuple[Any, TrainSettings, Any]:
    """A new run's graph, settings and the --init weights' preprocessing (None without
    one), refused before any data is read: an --init that does not fit (or loads too
    little), a --freeze matching nothing."""
    from netspec.train.freeze import frozen_layers

    if spec is None:
        raise click.UsageError("missing SPEC (or --resume RUN_DIR)")
    graph = load_graph(spec, sets, extra)
    settings = resolve_settings(graph.train, flags, spans=graph.train_spans)
    init, preprocessing = options["init"], None
    if (options["init_min"] is not None or options["init_partial"]) and init is None:
        raise NetspecError("--init-min and --init-partial go with --init SOURCE")
    if init is not None:
        preprocessing = _check_init(graph, init, options, console)
    frozen_layers(graph, settings.freeze)
    return graph, settings, preprocessing


def _prepared_data(
    graph: Any, settings: TrainSettings, task_kind: str, preprocessing: Any, console: Any
) -> Any:
    """The training data, with the --init weights' resize, crop and normalization applied
    (said), and the loader's notes printed."""
    resize = preprocessing.resize_for(graph.input.shape) if preprocessing is not None else None
    data = _load(graph, settings, task_kind, resize)
    if preprocessing is not None:  # the weights' own normalization, applied to every image
        data = preprocessing.apply_split(data)
        console.print(
            f"preprocessing (from the weights): {preprocessing.describe()}",
            highlight=False,
            soft_wrap=True,
        )
    for note in data.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return data


def _run(job: Any, console: Any) -> Any:
    from netspec.train.launch import train as run_training

    try:
        return run_training(job, console)
    except KeyboardInterrupt:
        click.echo(f"interrupted: continue with `netspec train --resume {job.out}`", err=True)
        raise


def _report(result: Any, out: Path, console: Any) -> None:
    from netspec.train.tasks import test_line

    best = next((r for r in result.history if r.epoch == result.best_epoch), None)
    if best is not None:
        shown = ", ".join(f"val_{k} {v:.4f}" for k, v in best.val_metrics().items())
        console.print(
            f"best: epoch {best.epoch}, {shown} ({out / 'best.safetensors'})",
            highlight=False,
            soft_wrap=True,
        )
    if result.test is not None:
        console.print(test_line(result.test), highlight=False, soft_wrap=True)
    console.print(f"run folder: {out}", highlight=False, soft_wrap=True)


def _train_in_group(
    group: Any,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    options: dict[str, Any],
    given: set[str],
) -> None:
    """One worker of a torchrun job: every rank checks and loads the same job, the ranks
    agree (one message for every error, a hash for mismatched jobs), rank 0 alone makes or
    finds the run folder, then all train. Rank 0 prints; the other ranks stay quiet."""
    from rich.console import Console

    from netspec.train import distributed as dd
    from netspec.train.device import pick_runtime

    if "nproc" in given:
        raise NetspecError(
            "--nproc starts processes on this machine; under torchrun each process is one "
            "worker already",
            hint="give torchrun --nproc_per_node N (and --nnodes) instead",
        )
    lead = group.rank == 0
    console = Console(quiet=options["quiet"] or not lead)

    def prepare() -> Any:
        return _prepare(spec, sets, extra, options, given, console, write=lead, group=group)[0]

    def open_folder(job: Any) -> Any:
        out, resume = _group_folder(job, options["out"], group)
        job = dataclasses.replace(job, out=out, resume=resume or job.resume)
        if not job.resume:
            _make_folder(out)
            _write_run_files(job, spec)
        elif resume:
            console.print(
                f"restart {group.restart} of {group.max_restarts}: resuming {out} from its "
                "last checkpoint",
                highlight=False,
                soft_wrap=True,
            )
        device = pick_runtime(options["device"], group.local_rank).device.type
        console.print(_headline(job, device), highlight=False, soft_wrap=True)
        return job

    done = dd.train_in_group(group, prepare, open_folder, options["device"], options["timeout"])
    if done.result is not None:
        _report(done.result, done.job.out, console)


def _group_folder(job: Any, out: str | None, group: Any) -> tuple[Path, bool]:
    """Rank 0's run folder under torchrun, and whether to resume it: a restarted job
    (`torchrun --max-restarts`) resumes the folder of its first attempt, which is --out, or
    runs/<network>-<rendezvous id> when torchrun was given one."""
    from netspec.train.checkpoint import STATE

    if job.resume:  # --resume RUN_DIR
        return job.out, False
    run_id = group.run_id if group.run_id not in ("", "none") else None
    named = Path(out) if out else (Path("runs") / f"{job.graph.name}-{run_id}" if run_id else None)
    if group.restart > 0 and named is not None and (named / STATE).is_file():
        return named, True
    if named is not None:
        return _new_run_folder(str(named), job.graph.name), False
    return _new_run_folder(None, job.graph.name), False


def _resume(
    run_dir: str,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    flags: dict[str, Any],
    given: set[str],
    write: bool = True,
) -> tuple[Any, TrainSettings, Path, int | None]:
    """The graph, settings and CPU threads of the run in `run_dir`, from its own spec copy
    and settings.json (updated there unless `write` is off: a torchrun worker but rank 0)."""
    from netspec.ir.build import load_spec

    changed = sorted(given - _RESUMABLE - {"resume"})
    if changed or sets or extra:
        shown = ", ".join("--" + k.replace("_", "-") for k in changed) or "--set"
        raise NetspecError(
            f"a resumed run keeps its settings; {shown} cannot change",
            hint="only --epochs (to train further), --device, --nproc, --threads and --quiet "
            "may be given with --resume",
        )
    out = Path(run_dir)
    if not (out / SETTINGS).is_file() or not (out / SPEC_COPY).is_file():
        raise NetspecError(f"{run_dir} is not a run folder: it has no {SETTINGS} or {SPEC_COPY}")
    saved = read_settings(out, required=("bindings", "settings"))
    threads = saved.get("threads")
    if threads is not None and (type(threads) is not int or threads < 1):
        raise NetspecError(f"{out / SETTINGS} is damaged: `threads` is {threads!r}")
    copy = read_spec_copy(out)
    if spec is not None:
        from netspec.frontend.parser import read_spec_file

        if read_spec_file(spec) != copy:
            raise NetspecError(
                f"{spec} differs from the spec the run in {run_dir} was trained with",
                hint=f"leave SPEC out to resume with the run's own copy ({out / SPEC_COPY})",
            )
    graph = load_spec(out / SPEC_COPY).instantiate(saved["bindings"])
    if saved.get("source_hash") not in (None, graph.source_hash):
        raise NetspecError(
            f"{out / SPEC_COPY} was edited after the run started (its source hash differs from "
            f"{SETTINGS}'s)",
            hint="a resumed run trains the spec it started with; start a new run with "
            f"--init {run_dir} to keep the weights",
        )
    settings = _saved_settings(saved["settings"], out / SETTINGS)
    if "epochs" in flags:
        settings = dataclasses.replace(
            settings, epochs=KEYS["epochs"].check("epochs", flags["epochs"])
        )
        saved["settings"] = settings.to_json()
    resumed = saved.get("resumed")
    saved["resumed"] = [
        *(resumed if isinstance(resumed, list) else []),
        time.strftime("%Y-%m-%dT%H:%M:%S"),
    ]
    from netspec.train.checkpoint import remove_partial_files, write_text

    if write:
        remove_partial_files(out)
        write_text(out / SETTINGS, json.dumps(saved, indent=2) + "\n")
    return graph, settings, out, threads


def _saved_settings(values: dict[str, Any], path: Path) -> TrainSettings:
    """A run's recorded settings, each value checked as a flag's would be."""
    try:
        settings = TrainSettings.from_json(values)
        for key in KEYS:
            if key in values:
                KEYS[key].check(key, getattr(settings, key))
    except (NetspecError, TypeError, ValueError) as err:
        raise NetspecError(
            f"{path} is damaged: its settings do not read back ({err})",
            hint="it is written by `netspec train`; restore it or start a new run",
        ) from None
    return settings


def _check_init(graph: Any, init: str, options: dict[str, Any], console: Any) -> Any:
    """Map --init's weights onto the graph (refusing a mismatch unless --init-partial) and
    show what was loaded, re-initialised and left; the weights' preprocessing, if known."""
    from netspec.weights.report import headline, load_init, summary_lines

    partial = options["init_partial"] or options["init_min"] is not None
    mapping = load_init(graph, init, partial=partial, minimum=options["init_min"])
    console.print(f"--init: {headline(mapping)}", highlight=False, soft_wrap=True)
    for line in summary_lines(mapping):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    published = mapping.source.published
    return published.preprocessing if published is not None else mapping.source.preprocessing


def _saved_preprocessing(out: Path) -> Any:
    """The preprocessing a run recorded in settings.json (a resumed run keeps it)."""
    return Preprocessing.from_json(read_settings(out).get("preprocessing"))


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NetspecError(f"cannot create the run folder {out}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise NetspecError(f"cannot write into the run folder {out}")


def _new_run_folder(out: str | None, name: str) -> Path:
    """The folder for a new run (not created yet): --out, which must be new or empty, or
    runs/<network>-<timestamp>."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise NetspecError(
                f"the run folder {out} already exists and is not empty",
                hint=f"pick another --out, or continue that run with --resume {out}",
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{name}-{stamp}-{n}"
    return path


def _load(graph: Any, settings: TrainSettings, task: str, resize: int | None = None) -> Any:
    from netspec.train.data import load_data

    if settings.data is None:
        raise NetspecError(_NO_DATA, hint=_DATA_HINT)
    return load_data(
        settings.data,
        graph.input.shape,
        _classes(graph),
        val_split=settings.val_split,
        seed=settings.seed,
        val_source=settings.val_data,
        limit=settings.limit,
        vocab=graph.input.vocab,
        label_map=_label_map(graph),
        task="classify" if task == "dense" else task,
        test_source=settings.test_data,
        resize=resize,
    )


def _label_map(graph: Any) -> tuple[int, ...] | None:
    """A dense output's map size, which per-pixel labels must have; None for a classifier."""
    return tuple(graph.output_shape[1:]) if graph.per_pixel else None


def _classes(graph: Any) -> int:
    return graph.class_count("training")


def _write_run_files(job: Any, spec: str | None) -> None:
    import torch

    from netspec import __version__
    from netspec.errors import source_text
    from netspec.train.checkpoint import write_text

    text = source_text(job.graph.source) if job.graph.source else None
    if text is None and spec is not None:
        text = Path(spec).read_text(encoding="utf-8")
    write_text(job.out / SPEC_COPY, text or "")
    info = {
        "spec": spec,
        "network": job.graph.name,
        "source_hash": job.graph.source_hash,  # a resume refuses an edited spec.ns
        "bindings": job.graph.bindings,
        "settings": job.settings.to_json(),
        "init": job.init,
        "preprocessing": job.preprocessing,
        "device": job.device,
        "nproc": job.nproc,
        "sync_bn": job.sync_bn,
        "threads": job.threads,
        "data": {
            "train": len(job.data.train),
            "val": len(job.data.val),
            "classes": job.data.train.class_names,
        },
        "params": job.graph.totals.params,
        "netspec": __version__,
        "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": sys.argv,
    }
    write_text(job.out / SETTINGS, json.dumps(info, indent=2) + "\n")


def _headline(job: Any, device: str) -> str:
    s = job.settings
    optimizer = f"{s.optimizer} lr={s.lr:g}" + (
        f" momentum={s.momentum:g}" if s.optimizer == "sgd" else ""
    )
    where = f"{job.threads} CPU thread(s)" if device == "cpu" else device
    return (
        f"training {job.graph.name} ({job.graph.totals.params:,} params) on {s.data}: "
        f"{len(job.data.train)} train / {len(job.data.val)} val"
        + (f" / {len(job.data.test)} test" if job.data.test is not None else "")
        + f" examples; {job.task.kind if job.task else 'classify'} task; {optimizer}, "
        f"schedule {s.schedule}, {s.epochs} epochs of batch {s.batch_size}"
        + (f"; {job.nproc} processes x {where}" if job.nproc > 1 else f"; {where}")
        + f" -> {job.out}"
        + (
            "\nper-pixel labels: acc is the pixel accuracy, miou the mean IoU (pixels labelled "
            "255 are ignored)"
            if job.data.train.per_pixel
            else ""
        )
    )


@click.command("eval")
@click.argument("spec", required=False, type=SPEC)
@set_option
@click.option(
    "--weights",
    "weights",
    default=None,
    metavar="CKPT",
    help="a .safetensors file, or a run folder (its best.safetensors); not with a .onnx MODEL",
)
@click.option(
    "--data", default=None, metavar="SOURCE", help="data source [default: the run folder's]"
)
@click.option(
    "--val-data",
    default=None,
    metavar="SOURCE",
    help="evaluate this source's held-out part instead",
)
@click.option(
    "--val-split",
    default=None,
    type=float,
    help="validation fraction of --data [default: the run's, else 0.2]",
)
@click.option(
    "--seed", default=None, type=int, help="seed of the split [default: the run's, else 0]"
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "test"]),
    default="val",
    show_default=True,
    help="which part to evaluate (test: the run's test set, or --test-data's)",
)
@click.option(
    "--test-data", default=None, metavar="SOURCE", help="with --split test: this test set"
)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option(
    "--provider", default="cpu", show_default=True, help="for a .onnx MODEL: onnxruntime's provider"
)
@click.option("--wide", is_flag=True, help="print the tables whole, whatever the terminal's width")
def eval_cmd(
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    weights: str | None,
    data: str | None,
    val_data: str | None,
    val_split: float | None,
    seed: int | None,
    split: str,
    test_data: str | None,
    batch_size: int,
    device: str,
    provider: str,
    wide: bool,
) -> None:
    """Evaluate weights on data: accuracy, per-class accuracy and the confusion matrix; for a
    dense output (`classes K per pixel`), pixel accuracy, IoU per class and mean IoU.

    \b
    netspec eval specs/mnist_cnn.ns --weights runs/mnist_cnn-20250101-120000 --data digits
    netspec eval --weights runs/mnist_cnn-20250101-120000      (the run's spec and data)
    netspec eval mnist_cnn.int8.onnx --data digits              (an fp32, fp16 or int8 model)
    """
    if test_data is not None and split != "test":
        raise NetspecError("--test-data goes with --split test", hint="add --split test")
    if spec is not None and spec.lower().endswith(".onnx"):
        from netspec.commands.deploy import eval_onnx

        _refuse_for_onnx(spec, weights, sets, extra)
        eval_onnx(
            spec, data, val_data, val_split, seed, split, batch_size, provider, test_data, wide
        )
        return
    if weights is None:
        raise click.UsageError("missing --weights CKPT (a .safetensors file or a run folder)")
    if given("provider"):
        raise NetspecError(
            "--provider is for a .onnx MODEL; a checkpoint runs in torch", hint="use --device"
        )

    from netspec.backends.lower_torch import build
    from netspec.train.checkpoint import load_exact, load_weights, weights_file
    from netspec.train.device import pick_runtime
    from netspec.train.report import print_task_eval
    from netspec.train.tasks import fit_statistics, read_task, resolve_task, training_graph

    run = Path(weights) if Path(weights).is_dir() else None
    saved = read_settings(run) if run and (run / SETTINGS).is_file() else {}
    graph = _eval_graph(spec, sets, extra, run, saved)
    run_settings = saved.get("settings") or {}
    source = data or run_settings.get("data")
    if source is None:
        raise NetspecError("no data to evaluate on: pass --data SOURCE", hint=_DATA_HINT)
    file = weights_file(weights)
    task = resolve_task(graph, run_settings.get("task", "auto"), run_settings.get("loss", "auto"))
    model = build(training_graph(graph, task), seed=0)
    load_exact(model, load_weights(file), str(file))
    split_data = _eval_data(
        graph, saved, source, data, val_data, val_split, seed, test_data, task.kind
    )
    dataset = {"val": split_data.val, "train": split_data.train, "test": split_data.test}[split]
    for note in split_data.notes:
        click.echo(f"note: {note}", err=True)
    if dataset is None:
        raise NetspecError(
            f"{source} has no test set",
            hint="pass --test-data SOURCE, or save x_test/y_test in the npz",
        )
    if len(dataset) == 0:
        raise NetspecError(
            f"the {split} part of {source} is empty", hint="use --val-split above 0, or --val-data"
        )
    runtime = pick_runtime(device, image_input=len(graph.input.shape) == 3)
    model.to(runtime.device).eval()
    task = (read_task(run) if run else None) or fit_statistics(task, split_data.train)
    title = f"{graph.name} on {source} ({split})"
    if task.kind in ("multilabel", "regression"):
        print_task_eval(model.logits, task, dataset, runtime, title)
        return
    _print_accuracy(model, task, dataset, runtime, batch_size, title, wide)


def _refuse_for_onnx(
    spec: str, weights: str | None, sets: tuple[str, ...], extra: tuple[str, ...]
) -> None:
    """What an ONNX model cannot take: weights and sizes (it holds its own), --device."""
    if weights is not None or sets or extra:
        raise NetspecError(
            f"{spec} holds its weights and sizes: --weights and NAME=VALUE are for a spec"
        )
    if given("device"):
        raise NetspecError(
            f"--device is for a checkpoint; {spec} runs in onnxruntime", hint="use --provider"
        )


def _eval_graph(
    spec: str | None, sets: tuple[str, ...], extra: tuple[str, ...], run: Path | None, saved: dict
) -> Any:
    """The graph to evaluate: SPEC's, else the run folder's own spec copy and bindings."""
    from netspec.ir.build import load_spec

    if spec is not None:
        return load_graph(spec, sets, extra)
    if run is not None and (run / SPEC_COPY).is_file():
        bindings = dict(saved.get("bindings") or {})
        return load_spec(run / SPEC_COPY).instantiate(
            bindings | parse_bindings(tuple(sets) + tuple(extra))
        )
    raise click.UsageError("missing SPEC (it may be left out only when --weights is a run folder)")


def _eval_data(
    graph: Any,
    saved: dict,
    source: str,
    data: str | None,
    val_data: str | None,
    val_split: float | None,
    seed: int | None,
    test_data: str | None,
    task_kind: str,
) -> Any:
    """The data split to evaluate on: the flags, else what the run was trained with, with the
    run's preprocessing (a fine-tuned run's resize, crop and normalization) applied."""
    from netspec.train.data import load_data

    run_settings = saved.get("settings") or {}
    prep = Preprocessing.from_json(saved.get("preprocessing"))
    split_data = load_data(
        source,
        graph.input.shape,
        _classes(graph),
        val_split=val_split if val_split is not None else run_settings.get("val_split", 0.2),
        seed=seed if seed is not None else run_settings.get("seed", 0),
        val_source=val_data if val_data is not None or data else run_settings.get("val_data"),
        vocab=graph.input.vocab,
        label_map=_label_map(graph),
        task="classify" if task_kind == "dense" else task_kind,
        test_source=test_data or (None if data else run_settings.get("test_data")),
        resize=prep.resize_for(graph.input.shape) if prep is not None else None,
    )
    if prep is not None:  # the run fine-tuned weights that expect this normalization
        split_data = prep.apply_split(split_data)
    return split_data


def _print_accuracy(
    model: Any, task: Any, dataset: Any, runtime: Any, batch_size: int, title: str, wide: bool
) -> None:
    """A classifier's tables (per class, confusion matrix) and its accuracy line; a dense
    output's pixel accuracy and IoU."""
    from netspec.train.evaluate import evaluate
    from netspec.train.metrics import TOP5_FROM, evaluate_task
    from netspec.train.report import eval_tables

    result = evaluate(model.logits, dataset.x, dataset.y, dataset.class_names, runtime, batch_size)
    console = terminal.console(wide)
    for table in eval_tables(result, title, console):
        console.print(table)
    hits = int(result.confusion.diagonal().sum())
    line = f"accuracy: {result.accuracy:.2%} ({hits}/{result.count})"
    if result.per_pixel:
        present = sum(1 for v in result.iou() if v == v)
        line = (
            f"pixel accuracy: {result.accuracy:.2%} ({hits:,}/{result.count:,} labelled pixels); "
            f"mean IoU: {result.mean_iou:.2%} (over {present} of {len(result.class_names)} classes)"
        )
    elif task.outputs >= TOP5_FROM:
        top5 = evaluate_task(model.logits, task, dataset.x, dataset.y, runtime, batch_size)[0]
        line += f"; top-5 accuracy: {top5['top5']:.2%}"
    console.print(line, highlight=False, soft_wrap=True)
