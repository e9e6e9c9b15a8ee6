"""The training loop: a spec's graph, settings and data in; a run folder out.

One epoch at a time: shuffle, augment, forward through the logits (the spec's final SOFTMAX
stays in the inference graph, the loss is `F.cross_entropy` on the scores before it), add the
L1/L2 penalties, step the optimizer; then validate, step the learning-rate schedule, and write
the checkpoints and metrics atomically. A dense output (labels a class per pixel) trains
on the per-pixel cross-entropy over the labelled pixels and reports pixel accuracy and mean
IoU (`netspec.train.evaluate`). Randomness is derived from ``(seed, epoch, rank)``
at the start of every epoch, so a resumed run repeats exactly what the uninterrupted run would
have done.

With several processes (`netspec.train.launch`: `--nproc` or torchrun) the same loop runs in
every process of a data-parallel group (`netspec.train.distributed`); with one process there is
no process group and no wrapper.

The loss and the metrics follow the run's task (`netspec.train.tasks`: classify, multilabel,
regression, dense); a test set, when the data has one, is scored once at the end with the best
weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.train import checkpoint as ckpt
from netspec.train.augment import augment_batch, augment_pair, parse_augment
from netspec.train.data import IGNORE, Dataset, DataSplit
from netspec.train.device import Runtime, pick_runtime
from netspec.train.finetune import Stages
from netspec.train.freeze import frozen_layers
from netspec.train.metrics import Meter
from netspec.train.report import (
    EpochProgress,
    EpochRecord,
    epoch_table,
    plot_curves,
    write_metrics,
)
from netspec.train.settings import TrainSettings
from netspec.train.tasks import (
    Task,
    cross_entropy,
    fit_statistics,
    loss_function,
    resolve_task,
    training_graph,
    write_task,
)
from netspec.weights.report import load_init, summary_lines

if TYPE_CHECKING:
    from netspec.backends.lower_torch import NetspecModule

METRICS, CURVES, RESULT = "metrics.csv", "curves.png", "result.json"
# Called with the epoch number as each epoch starts (the fault-injection hook of the
# distributed tests, `netspec.train.distributed.FAULT_ENV`).
EPOCH_HOOKS: list[Callable[[int], None]] = []
_PLOT_SHARE = 0.1  # curves.png may take at most this share of a run's time between epochs


@dataclass(frozen=True)
class Job:
    """Everything one training run needs; picklable, so spawned processes receive it whole.

    Attributes:
        graph: the network.
        settings: the resolved training settings.
        data: the training and validation sets, already shaped for the graph's input.
        out: the run folder (created by the caller, with the spec copy and settings.json).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        nproc: data-parallel processes; 1 trains in this process.
        init: weights to start from, mapped by structure (`netspec.weights`).
        resume: continue the run in `out` from its last checkpoint.
        quiet: print nothing.
        init_shown: the caller already showed what `init` loads (the table is not repeated).
        threads: CPU threads per process; None picks by the load (see `cpu_threads`).
        timeout: seconds any collective may wait for another process before the job stops
            (a stalled or lost worker); data-parallel only.
        sync_bn: data-parallel: batch norm normalises over the whole global batch
            (synchronised across processes) instead of each process's share.
        curves: draw curves.png in the run folder (explore's trials, whose folders are
            temporary, skip it: most of a short rung's time went into the plot).
    """

    graph: Graph
    settings: TrainSettings
    data: DataSplit
    out: Path
    device: str = "auto"
    nproc: int = 1
    init: str | None = None
    resume: bool = False
    quiet: bool = False
    threads: int | None = None
    init_shown: bool = False  # the command already showed (and checked) what --init loads
    timeout: float = 300.0
    sync_bn: bool = False
    init_partial: bool = False  # --init-partial: load what fits, leave the rest initialised
    preprocessing: dict[str, Any] | None = None  # the --init weights' input normalization
    task: Task | None = None  # None: resolved from the spec and settings (`resolve_task`)
    curves: bool = True


@dataclass
class RunResult:
    """How a run ended, as written to the run folder's result.json."""

    out: Path
    history: list[EpochRecord]
    best_epoch: int | None
    stopped: str  # "completed", "early stopping" or "diverged"
    ranks_max_diff: float | None = None  # data-parallel: largest weight difference between ranks
    per_pixel: bool = False  # a dense output: accuracies are per pixel, and mean IoU is kept
    task: Task | None = None
    test: dict[str, float] | None = None  # the best weights' metrics on the test set

    def to_json(self) -> dict[str, Any]:
        best = next((r for r in self.history if r.epoch == self.best_epoch), None)
        last = self.history[-1] if self.history else None
        out = {
            "stopped": self.stopped,
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_loss": _json_float(best.val_loss) if best else None,
            "best_val_acc": _json_float(best.val_acc) if best else None,
            "final_val_acc": _json_float(last.val_acc) if last else None,
        }
        if self.per_pixel:  # val_acc is the pixel accuracy
            out["best_val_miou"] = _json_float(best.val_miou) if best else None
            out["final_val_miou"] = _json_float(last.val_miou) if last else None
        out["ranks_max_diff"] = self.ranks_max_diff
        return task_results(out, self.task, best, self.test)


def task_results(
    out: dict[str, Any], task: Task | None, best: EpochRecord | None, test: dict | None
) -> dict[str, Any]:
    """result.json's task part: the task, the best epoch's validation metrics, the test set's."""
    if task is not None:
        out["task"] = task.kind
        out["best_val"] = {
            k: _json_float(v) for k, v in (best.val_metrics() if best else {}).items()
        }
        out["test"] = {k: _json_float(v) for k, v in test.items()} if test else None
    return out


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


class TrainingDiverged(NetspecError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class _State:
    """The part of a run that a resume must restore, besides model and optimizer."""

    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped: str | None = None


# --- pieces of the loop ------------------------------------------------------------------


objective = cross_entropy  # single-label and per-pixel classes (netspec.train.tasks)


def labelled(y: torch.Tensor) -> torch.Tensor:
    """The number of labels a loss averaged over: examples, or the labelled pixels."""
    if y.dim() > 1:
        return (y != IGNORE).sum()
    return torch.tensor(len(y), device=y.device)


class Penalty:
    """The L1/L2 weight penalties of the layers whose class is `penalized` (conv, fc, embedding;
    Keras' kernel_regularizer).

    A layer's own ``l1=``/``l2=`` argument, when nonzero, replaces the global value for that
    layer. Only weights are penalized (not biases or batch norm), and frozen weights are not.
    """

    def __init__(self, terms: Sequence[tuple[torch.Tensor, float, float]]) -> None:
        self.terms = terms

    @classmethod
    def build(cls, graph: Graph, model: nn.Module, l1: float, l2: float) -> Penalty:
        terms = []
        for node in graph.nodes:
            layer = node.layer
            if not layer.penalized:
                continue
            weight = model.get_parameter(f"{node.id}.weight")
            a = float(getattr(layer, "l1", 0.0) or l1)
            b = float(getattr(layer, "l2", 0.0) or l2)
            if (a or b) and weight.requires_grad:
                terms.append((weight, a, b))
        return cls(terms)

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.terms[0][0].device)
        for weight, a, b in self.terms:
            w = weight.float()
            if a:
                total = total + a * w.abs().sum()
            if b:
                total = total + b * w.square().sum()
        return total


def freeze(model: nn.Module, graph: Graph, patterns: tuple[str, ...]) -> list[str]:
    """Stop the gradients of every layer whose id matches a pattern.

    Returns:
        The ids of the frozen layers that hold weights.
    """
    frozen = []
    for layer in frozen_layers(graph, patterns):
        module = _submodule(model, layer)
        params = list(module.parameters()) if module is not None else []
        for p in params:
            p.requires_grad_(False)
        if params:
            frozen.append(layer)
    return frozen


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None  # a layer without weights (relu, pool) has no module


def make_optimizer(s: TrainSettings, params: list[Any]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over the trainable parameters (or over
    parameter groups: dicts with `params` and their own `lr`)."""
    if not params:
        raise NetspecError(
            "nothing to train: every layer with weights is frozen", hint="freeze fewer layers"
        )
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay
        )
    cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)


def make_scheduler(s: TrainSettings, optimizer: torch.optim.Optimizer) -> Any:
    """The per-epoch learning-rate schedule, or None for a constant rate."""
    if s.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=s.epochs, eta_min=s.min_lr
        )
    return None


def epoch_seed(*parts: int) -> int:
    """A seed derived from ``(seed, epoch, rank, stream)``: every epoch restartable on its own."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def batches(
    n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    """This process's batches of one epoch: a seeded shuffle shared by all ranks, each rank
    taking every world-th example of an equal share. A last batch of one example is dropped
    (batch norm cannot train on it)."""
    order = torch.randperm(n, generator=generator)
    share = order[: n // world * world][rank::world]
    size = batch_size // world
    out = list(share.split(size))
    if len(out) > 1 and len(out[-1]) == 1:
        out.pop()
    return out


class _Logits(nn.Module):
    """`forward` = the model's logits, so a DDP wrapper sees (and synchronizes) the call. With
    side heads, in training mode: every head's logits, the main head's first (`all_logits`)."""

    def __init__(self, model: NetspecModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        if self.training and self.model.head_names:
            return self.model.all_logits(x)
        return self.model.logits(x)


# --- the run -------------------------------------------------------------------------------


def train_here(job: Job, console: Console | None = None) -> RunResult:
    """Train in this process (`netspec.train.launch.train` starts several for `nproc > 1`).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
        NetspecError: for settings that do not fit the network or the data.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(job.threads))
    try:
        return run(job, console=console)
    finally:
        torch.set_num_threads(threads)


def cpu_threads(threads: int | None, nproc: int = 1) -> int:
    """Intra-op threads for each of `nproc` processes on CPU: `threads` when given, else the
    cores that other processes leave idle (by the 1-minute load average), shared out.

    torch's OpenMP threads meet at the end of every op, and a thread whose core another
    process holds stalls them all: on this project's 2-core machine a training step of
    cifar_vgg_bn (mnist_cnn) is 1.7x (1.2x) faster on two threads than on one when the machine
    is idle, and 2.2x (1.7x) slower beside one busy process. The count changes the order of
    floating-point sums, so a run records it (settings.json) and its resume reuses it.
    """
    if threads:
        return threads
    cores = max(1, torch.get_num_threads() // nproc)
    try:
        idle = round((os.cpu_count() or 1) - os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        return cores
    return max(1, min(cores, idle // nproc))


def run(job: Job, rank: int = 0, world: int = 1, console: Console | None = None) -> RunResult:
    """The training loop of one process (rank `rank` of `world`)."""
    return _Run(job, rank, world, console or Console()).loop()


class _Run:
    """One process's share of a run: the model, its optimizer and schedule, epoch by epoch."""

    def __init__(self, job: Job, rank: int, world: int, console: Console) -> None:
        s, graph = job.settings, job.graph
        if world > 1 and s.batch_size % world:
            raise NetspecError(f"batch_size {s.batch_size} does not divide among {world} processes")
        self.job, self.s, self.rank, self.world, self.console = job, s, rank, world, console
        self.out = Path(job.out)
        self.lead = rank == 0
        self.show = self.lead and not job.quiet
        self.runtime = pick_runtime(
            job.device, rank, image_input=len(graph.input.shape) == 3, precision=s.precision
        )
        self.task = job.task or fit_statistics(resolve_task(graph, s.task, s.loss), job.data.train)
        self.objective = loss_function(self.task)
        self.test: dict[str, float] | None = None  # the test set's metrics, at the end
        if self.lead and not job.resume:
            write_task(self.out, self.task)  # what `eval` needs: the task, its statistics
        if self.show and self.runtime.notice:
            console.print(f"note: {self.runtime.notice}", highlight=False, soft_wrap=True)
        model, frozen = self._model(job)
        self.model = model
        self.penalty = Penalty.build(graph, model, s.l1, s.l2)
        self.stages = Stages(graph, model, s, frozen)  # two-stage fine-tuning, when set
        self.optimizer = make_optimizer(
            s,
            self.stages.groups()
            if self.stages.active
            else [p for p in model.parameters() if p.requires_grad],
        )
        self.scheduler = make_scheduler(s, self.optimizer)
        self.state = (
            _restore(self.out, model, self.optimizer, self.scheduler, s, rank, world)
            if job.resume
            else _State()
        )
        self.net: nn.Module = _Logits(model)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.runtime.device.type == "cuda"
            self.net = DistributedDataParallel(
                self.net, device_ids=[self.runtime.device.index] if cuda else None
            )
        self.augment = parse_augment(s.augment)
        self.per_pixel = job.data.train.per_pixel
        self.started = time.perf_counter()
        self.plot_seconds, self.plotted = 0.0, 0  # time spent drawing curves.png; its epoch
        self.ranks_max_diff: float | None = None  # data-parallel: measured at the end

    def _model(self, job: Job) -> tuple[NetspecModule, list[str]]:
        """The model on its device: built, its batch norm synchronised (data-parallel with
        sync_bn), --init loaded (said), --freeze applied (said); and the frozen layers."""
        from netspec.backends.lower_torch import build

        s, graph, world, console = job.settings, job.graph, self.world, self.console
        model = build(training_graph(graph, self.task), seed=s.seed)
        if world > 1 and job.sync_bn:  # before anything holds its batch norm layers
            from netspec.train.sync_bn import synchronise_batch_norm

            synchronise_batch_norm(model, cuda=self.runtime.device.type == "cuda")
        if job.init and not job.resume:
            mapping = load_init(graph, job.init, partial=job.init_partial)
            mapping.apply(model)
            if self.show and not job.init_shown:
                console.print("\n".join(summary_lines(mapping)), highlight=False)
        frozen = freeze(model, graph, s.freeze)
        if self.show and frozen:
            console.print(f"frozen: {', '.join(frozen)}", highlight=False, soft_wrap=True)
        self.frozen_bn = [  # frozen batch norm keeps its running statistics too
            m
            for layer in frozen
            for m in model.get_submodule(layer).modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        model.to(self.runtime.device)
        if self.runtime.channels_last:
            # torch's stubs lack Module.to(memory_format=...), which torch has
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model, frozen

    def loop(self) -> RunResult:
        s, state = self.s, self.state
        self.started = time.perf_counter()
        if self.show and self.loss_note:
            self.console.print(f"note: {self.loss_note}", highlight=False, soft_wrap=True)
        try:
            with EpochProgress(self.console, s.epochs, enabled=self.show) as progress:
                for epoch in range(state.epoch + 1, s.epochs + 1):
                    record = self.epoch(epoch, progress)
                    progress.finish(record)
                    if state.stopped:
                        progress.note(
                            f"early stopping: the validation loss has not improved for "
                            f"{s.patience} epochs (best: epoch {state.best_epoch})"
                        )
                        break
        except KeyboardInterrupt:
            if self.lead and state.history:
                self.write_results("interrupted", final=True)
            raise
        if self.world > 1:
            self.ranks_max_diff = _ranks_max_diff(self.model)
        self.test = self.test_metrics()
        result = self.result(state.stopped or "completed")
        if self.lead:
            self.write_results(result.stopped, final=True)
            _finish(result, self.job.graph.name, self.console, self.show, loss_note=self.loss_note)
        return result

    def result(self, stopped: str) -> RunResult:
        state = self.state
        return RunResult(
            self.out,
            state.history,
            state.best_epoch,
            stopped,
            ranks_max_diff=self.ranks_max_diff,
            per_pixel=self.per_pixel,
            task=self.task,
            test=self.test,
        )

    def epoch(self, epoch: int, progress: EpochProgress) -> EpochRecord:
        """Train one epoch, validate, step the schedule, checkpoint; return the metrics."""
        s, state = self.s, self.state
        started = time.perf_counter()
        for hook in EPOCH_HOOKS:
            hook(epoch)
        train_loss, train_metrics = self.train_epoch(epoch, progress)
        if not math.isfinite(train_loss):
            raise _diverged(self.job, state, epoch, train_loss, self.console, self.show, self.lead)
        if self.world > 1:
            _broadcast_buffers(self.model)  # every rank validates with rank 0's statistics
        val_loss, val_metrics = self.validate(self.job.data.val)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        seconds = time.perf_counter() - started
        record = EpochRecord.of(
            epoch, train_loss, train_metrics, val_loss, val_metrics, lr, seconds
        )
        state.epoch, state.history = epoch, [*state.history, record]
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
        else:
            state.bad_epochs += 1
        if s.patience and state.bad_epochs >= s.patience and not math.isnan(val_loss):
            state.stopped = "early stopping"
        if self.lead:
            _checkpoint(self.out, self.model, self.optimizer, self.scheduler, state, improved)
            self.write_results(state.stopped or "running")
        if self.world > 1:  # no rank starts an epoch before its checkpoint is whole on disk
            _barrier()
        return record

    @property
    def loss_note(self) -> str | None:
        """What the loss columns sum, with side heads (train and val alike)."""
        heads = self.model.head_names
        if not heads:
            return None
        return (
            f"loss = main + {self.s.aux_weight:g} x each side head's ({', '.join(heads)}), "
            "train and val alike"
        )

    def validate(self, data: Dataset) -> tuple[float, dict[str, float]]:
        """The loss and the task's metrics on `data` (NaN without examples)."""
        return _validate(
            self.model,
            self.task,
            data,
            self.runtime,
            (self.s.batch_size, self.s.aux_weight),
            (self.rank, self.world),
        )

    def test_metrics(self) -> dict[str, float] | None:
        """The test set's loss and metrics with the best weights (the last without a
        validation set to pick them); None without a test set."""
        data = self.job.data.test
        if data is None:
            return None
        if self.state.best_epoch is not None:
            self.model.load_state_dict(ckpt.load_weights(self.out / ckpt.BEST))
        loss, metrics = self.validate(data)
        weights = "best" if self.state.best_epoch is not None else "last"
        return {"loss": loss, **metrics, "examples": float(len(data))} | (
            {"last_weights": 1.0} if weights == "last" else {}
        )

    def write_results(self, stopped: str, final: bool = False) -> None:
        """result.json after every epoch, so a killed run keeps it; curves.png too, unless
        drawing it (about 0.3 s) would take over a tenth of the time trained so far, in which
        case it waits for a later epoch, an interruption or the end (`final`)."""
        state = self.state
        result = self.result(stopped)
        trained = time.perf_counter() - self.started
        curves = final or self.plotted == 0 or self.plot_seconds <= _PLOT_SHARE * trained
        if self.job.curves and curves and state.history and self.plotted != state.epoch:
            began = time.perf_counter()
            plot_curves(
                result.out / CURVES, state.history, f"{self.job.graph.name}: learning curves"
            )
            self.plot_seconds += time.perf_counter() - began
            self.plotted = state.epoch
        ckpt.write_text(result.out / RESULT, json.dumps(result.to_json(), indent=2) + "\n")

    def train_epoch(self, epoch: int, progress: EpochProgress) -> tuple[float, dict[str, float]]:
        """One pass over this process's share of the training set: the mean loss (per pixel
        for a dense output) and the task's metrics (`netspec.train.metrics`)."""
        s, runtime, data = self.s, self.runtime, self.job.data.train
        dense = data.per_pixel
        torch.manual_seed(epoch_seed(s.seed, epoch, self.rank, 2))  # dropout
        order = torch.Generator().manual_seed(epoch_seed(s.seed, epoch))
        aug = torch.Generator(device=runtime.device).manual_seed(
            epoch_seed(s.seed, epoch, self.rank, 1)
        )
        steps = batches(len(data), s.batch_size, order, self.rank, self.world)
        progress.start(epoch, len(steps))
        self.net.train()
        for m in self.frozen_bn + (self.stages.enter(epoch) if self.stages.active else []):
            m.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
        count = torch.zeros((), dtype=torch.int64, device=runtime.device)
        meter = Meter(self.task, runtime.device)
        every = max(1, len(steps) // 50)
        for step, index in enumerate(steps, 1):
            x = runtime.batch(data.x[index])
            y = data.y[index].to(runtime.device, non_blocking=True)
            if self.augment.enabled() and dense:
                x, y = augment_pair(x, y, self.augment, aug)
            elif self.augment.enabled():
                x = augment_batch(x, self.augment, aug)
            with runtime.autocast():
                logits = self.net(x)
            if isinstance(logits, tuple):  # side heads: their losses weighted by aux_weight
                heads = logits[1:]
                logits = logits[0]
                loss = self.objective(logits, y)
                for head in heads:
                    loss = loss + s.aux_weight * self.objective(head, y)
            else:
                loss = self.objective(logits, y)
            if self.penalty:
                loss = loss + self.penalty()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            units = labelled(y) if dense else torch.tensor(len(y), device=y.device)
            loss_sum += loss.detach().double() * units
            meter.add(logits, y)
            count += units
            if step % every == 0 or step == len(steps):
                mean = float(loss_sum) / max(int(count), 1)
                progress.update(step, mean, *meter.running())
                if self.world == 1 and not math.isfinite(mean):
                    break  # alone only: every rank must take the same number of steps
        totals = _all_sum(torch.stack([loss_sum, count.double()]), self.world)
        metrics = meter.result(lambda t: _all_sum(t, self.world))
        return (float(totals[0] / totals[1]) if totals[1] else math.nan), metrics


@torch.no_grad()
def _validate(
    model: NetspecModule,
    task: Task,
    data: Dataset,
    runtime: Runtime,
    sizes: tuple[int, float],
    ranks: tuple[int, int] = (0, 1),
) -> tuple[float, dict[str, float]]:
    """The mean loss and the task's metrics on `data` (NaN without examples), sharded across
    ranks; a task whose metrics need every score (mAP) evaluates the whole set in each rank.
    With side heads the loss sums theirs, weighted (`sizes`: batch size, aux weight), as in
    training."""
    (batch_size, aux_weight), (rank, world) = sizes, ranks
    model.eval()
    meter = Meter(task, runtime.device, keep_scores=True)
    shard = world if not meter.keep_scores else 1
    x, y = data.x[rank::shard], data.y[rank::shard]
    objective = loss_function(task)
    loss = torch.zeros((), dtype=torch.float64, device=runtime.device)
    count = torch.zeros((), dtype=torch.float64, device=runtime.device)
    step = max(batch_size, 256)
    for start in range(0, len(y), step):
        xb = runtime.batch(x[start : start + step])
        yb = y[start : start + step].to(runtime.device)
        with runtime.autocast():
            outs = model.all_logits(xb) if model.head_names else (model.logits(xb),)
        out = outs[0]
        batch_loss = objective(out.float(), yb)
        for head in outs[1:]:
            batch_loss = batch_loss + aux_weight * objective(head.float(), yb)
        units = labelled(yb) if data.per_pixel else torch.tensor(len(yb), device=yb.device)
        loss += batch_loss.double() * units
        count += units
        meter.add(out, yb)
    reduce = (lambda t: _all_sum(t, world)) if shard > 1 else None
    totals = torch.stack([loss, count]) if reduce is None else reduce(torch.stack([loss, count]))
    if float(totals[1]) == 0:
        return math.nan, {name: math.nan for name in meter.result()}
    return float(totals[0] / totals[1]), meter.result(reduce)


def _checkpoint(
    out: Path, model: nn.Module, optimizer: Any, scheduler: Any, state: _State, improved: bool
) -> None:
    """Write best (when improved), last, the resumable state and the metrics, each atomically."""
    weights = ckpt.cpu_state(model)
    if improved:
        ckpt.save_weights(out / ckpt.BEST, weights, state.epoch)
    ckpt.save_weights(out / ckpt.WEIGHTS, weights, state.epoch)
    ckpt.save_state(
        out / ckpt.STATE,
        {
            "epoch": state.epoch,
            "model": weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": [list(vars(r).values()) for r in state.history],
            "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs,
            "stopped": state.stopped,
            # No RNG state: every epoch reseeds from (seed, epoch, rank), see epoch_seed.
        },
    )
    write_metrics(out / METRICS, state.history)


def _restore(
    out: Path,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    s: TrainSettings,
    rank: int = 0,
    world: int = 1,
) -> _State:
    """Load the last checkpoint of the run in `out` into the model, optimizer and schedule.
    With several processes rank 0 reads it and sends it to the others (whose machines may
    not see the run folder)."""
    path = out / ckpt.STATE
    saved: Any = None
    if rank == 0:
        saved = _read_state(out)
    if world > 1:
        saved = from_rank0(saved)
    damaged = NetspecError(
        f"{path} is not the training state of this run",
        hint="it is written by `netspec train`; restore it, or start a new run "
        "(--init RUN_DIR keeps the weights)",
    )
    try:
        state = _State(
            epoch=int(saved["epoch"]),
            history=[EpochRecord(*row) for row in saved["history"]],
            best_val_loss=float(saved["best_val_loss"]),
            best_epoch=saved["best_epoch"],
            bad_epochs=int(saved["bad_epochs"]),
            stopped=saved["stopped"],
        )
        if not isinstance(saved["model"], dict) or not isinstance(saved["optimizer"], dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise damaged from None
    if state.stopped:
        raise NetspecError(
            f"the run in {out} already ended ({state.stopped} after epoch {state.epoch})"
        )
    if state.epoch >= s.epochs:
        raise NetspecError(
            f"the run in {out} already finished its {s.epochs} epochs",
            hint="pass --epochs with a larger number to train further",
        )
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        damaged.notes = [str(err).strip().splitlines()[0][:300]]
        raise damaged from None
    stretch_schedule(scheduler, optimizer, s.epochs)
    return state


def _read_state(out: Path) -> Any:
    path = out / ckpt.STATE
    if not path.is_file():
        raise NetspecError(
            f"nothing to resume in {out}: it has no {ckpt.STATE}",
            hint="a run can resume once its first epoch has finished",
        )
    return ckpt.load_state(path)


def stretch_schedule(scheduler: Any, optimizer: Any, epochs: int) -> None:
    """`--resume RUN --epochs N` may lengthen a run: a cosine schedule then follows the curve
    of an N-epoch run from where it stands (its closed form at the current epoch), rather
    than restarting from 0 at the old end and climbing back up."""
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        return
    if scheduler.T_max == epochs:
        return
    scheduler.T_max = epochs
    t = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        low = scheduler.eta_min
        group["lr"] = low + (base - low) * (1 + math.cos(math.pi * t / epochs)) / 2
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _diverged(
    job: Job, state: _State, epoch: int, loss: float, console: Console, show: bool, lead: bool
) -> TrainingDiverged:
    out = Path(job.out)
    if lead:
        _finish(
            RunResult(
                out,
                state.history,
                state.best_epoch,
                "diverged",
                per_pixel=job.data.train.per_pixel,
            ),
            job.graph.name,
            console,
            show,
            written=False,
            curves=job.curves,
        )
    kept = (
        f"the last good checkpoint is kept: {out / ckpt.WEIGHTS} (epoch {state.epoch})"
        if state.epoch
        else "no checkpoint was written (it diverged in the first epoch)"
    )
    return TrainingDiverged(
        f"training diverged: the loss became {loss} in epoch {epoch}; stopped",
        notes=[kept],
        hint=f"lower the learning rate (lr={job.settings.lr:g}), add batch norm, or clip the inputs",
    )


def _write_results(result: RunResult, name: str, curves: bool = True) -> None:
    """The learning curves (unless not `curves`) and result.json, each written atomically."""
    if curves and result.history:
        plot_curves(result.out / CURVES, result.history, f"{name}: learning curves")
    ckpt.write_text(result.out / RESULT, json.dumps(result.to_json(), indent=2) + "\n")


def _finish(
    result: RunResult,
    name: str,
    console: Console,
    show: bool,
    written: bool = True,
    loss_note: str | None = None,
    curves: bool = True,
) -> None:
    """The end of a run: the learning curves (as `Job.curves` says) and result.json (unless
    `written` already), and on a terminal the per-epoch table (elsewhere each epoch was
    printed once, as a line)."""
    if not written:
        _write_results(result, name, curves)
    if show and result.history and console.is_terminal:
        title = f"{name}: {result.stopped}"
        console.print(epoch_table(result.history, result.best_epoch, title, loss_note))


# --- data-parallel helpers (no-ops in a single process) -------------------------------------


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every rank (all ranks call it)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _broadcast_buffers(model: nn.Module) -> None:
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _ranks_max_diff(model: nn.Module) -> float:
    """The largest difference of any weight or buffer between ranks (0.0 when identical)."""
    import torch.distributed as dist

    flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max()) if flat.numel() else 0.0
