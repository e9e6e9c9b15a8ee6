"""Stage 3: the best candidates trained for real, with successive halving through Optuna.

    trials = train_top(spec, ranked[:8], Trials(budget=600, data="digits"))
    trials.results      # member number -> Measured (accuracy, epochs, state, latency)
    measured_front(trials.results.values())

Each candidate is one Optuna trial (`netspec.explore_study`), trained by netspec's own
trainer (`netspec.train.launch.train`) on the chosen data, one rung at a time: 1 epoch, then
(if `SuccessiveHalvingPruner` keeps it among the best half of the trials that reached that
rung) 2, then 4, ... up to `epochs`, each rung resuming the run folder of the last. A trial
reports the validation accuracy of every epoch; its result is the best one reached.

Budget: before the work, one training step of the first candidate is timed and an epoch
estimated from it (steps per epoch x step, plus validation); a budget smaller than one epoch
of it is refused then. While working, a process starts no trial and no rung that its
estimate says would end past the budget (estimates scale with each member's MACs and are
corrected by every epoch measured).

Latency is measured here, after the training, with ONNX Runtime on this host (batch 1, one
thread: stated in the output), for every member trained to its end.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError
from netspec.explore import Member
from netspec.ir.build import Spec

# tests: `MEMBER:EPOCH` (`*:EPOCH`: any member) kills this process there, after that epoch
# trained and before it is reported (SIGKILL: no cleanup, as a machine lost)
FAULT_ENV = "NETSPEC_EXPLORE_KILL"
LATENCY_BATCH, LATENCY_THREADS = 1, 1
LATENCY_NOTE = (
    f"latency: ONNX Runtime on this host, batch {LATENCY_BATCH}, {LATENCY_THREADS} thread"
)


@dataclass(frozen=True)
class Trials:
    """How stage 3 runs (`netspec explore --train-top K --budget TIME ...`)."""

    budget: float  # seconds this process may spend
    data: str = "digits"
    epochs: int = 4  # the longest a trial trains (rungs at 1, 2, 4, ... epochs)
    storage: str | None = None  # None: SQLite at `default_storage`
    default_storage: Path = Path("explore.db")
    study: str | None = None  # None: named after the spec and the candidates
    workers: int = 1
    heartbeat: int = 10
    limit: int | None = None  # training examples kept (None: all)
    latency: bool = True


@dataclass
class Measured:
    """One trained member: what training measured, and its latency on this host."""

    number: int
    accuracy: float  # the best validation accuracy reached (NaN: diverged)
    epochs: int
    state: str  # "complete" (trained to the last rung), "pruned", "failed"
    seconds: float
    latency_ms: float | None = None
    error: str | None = None


@dataclass
class TrialsResult:
    study: str
    storage: str
    results: dict[int, Measured] = field(default_factory=dict)  # member number -> Measured
    trained_here: int = 0
    estimate: str = ""  # how the first epoch was estimated
    stopped_by_budget: bool = False
    failed_runs: int = 0  # trials killed with their process, rerun


def study_name(spec: Spec, candidates: Sequence[int], t: Trials) -> str:
    import hashlib

    key = f"{spec.text}\n{list(candidates)}\n{t.epochs}\n{t.data}\n{t.limit}"
    return f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def train_top(
    spec: Spec, candidates: Sequence[Member], t: Trials, console: Any = None
) -> TrialsResult:
    """Train `candidates` (in that order of promise) with successive halving; this process and
    `t.workers - 1` more share the study with any other process on the same storage."""
    start = time.monotonic()
    if len(candidates) < 2:
        raise NetspecError(
            f"there is {len(candidates)} member to train: successive halving compares members",
            hint="widen the family (or its --grid), or raise --train-top to at least 2",
        )
    if t.budget <= 0:
        raise NetspecError(f"--budget takes a positive time; received {t.budget:g} s")
    if t.epochs < 1:
        raise NetspecError(f"--epochs takes a positive number; received {t.epochs}")
    from netspec.explore_study import check_storage, open_storage, open_study

    numbers = [m.number for m in candidates]
    url = check_storage(t.storage, t.default_storage)  # a quick error, before any work
    work = _Work(spec, t)
    per_epoch, how = work.estimate(candidates[0])
    if per_epoch > t.budget:
        raise NetspecError(
            f"the budget of {t.budget:g} s is too small for one trial: one epoch of member "
            f"#{candidates[0].number} is estimated at {per_epoch:.1f} s ({how})",
            hint=f"give --budget {math.ceil(per_epoch * 2 * t.epochs)} or more, or fewer training examples (--train-limit)",
        )
    storage = open_storage(url, t.heartbeat)
    name = t.study or study_name(spec, numbers, t)
    study = open_study(storage, name, numbers, t.epochs)
    out = TrialsResult(name, url, estimate=how)
    procs = _spawn_workers(spec, t, name, start) if t.workers > 1 else []
    try:
        work.run(study, start, out, console)
    finally:
        for p in procs:
            p.join()
    out.failed_runs = sum(1 for x in study.get_trials(deepcopy=False) if _killed(x))
    out.results = collect(study, {m.number: m for m in candidates}, spec, t)
    return out


def _killed(trial: Any) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and "error" not in trial.user_attrs


class _Work:
    """One process's share: data loaded once per input shape, trials popped until none is left."""

    def __init__(self, spec: Spec, t: Trials) -> None:
        self.spec, self.t = spec, t
        self.data: dict[tuple[Any, ...], Any] = {}
        self.sec_per_mac_epoch: float | None = None  # from the estimate, corrected by each epoch

    def job(self, m: Member, out: Path, epochs: int, resume: bool) -> Any:
        from netspec.train.settings import resolve_settings
        from netspec.train.trainer import Job

        graph, errors = self.spec.instantiate(m.bindings, collect=True)
        if graph is None:
            raise NetspecError(f"member #{m.number} does not build: {errors[-1].message}")
        flags: dict[str, Any] = {"data": self.t.data, "epochs": epochs, "patience": 0}
        if self.t.limit is not None:
            flags["limit"] = self.t.limit
        settings = resolve_settings(graph.train, flags, spans=graph.train_spans)
        return Job(
            graph,
            settings,
            self._data(graph, settings),
            out,
            "cpu",
            resume=resume,
            quiet=True,
            threads=1,
            curves=False,  # the folder is temporary: drawing took 1.2 s of a 1.7 s rung
        )

    def _data(self, graph: Any, s: Any) -> Any:
        from netspec.train.data import load_data

        key = (tuple(graph.input.shape), graph.classes, graph.input.vocab)
        if key not in self.data:
            split = load_data(
                s.data,
                graph.input.shape,
                graph.class_count("training"),
                val_split=s.val_split,
                seed=s.seed,
                limit=s.limit,
                vocab=graph.input.vocab,
            )
            if len(split.train) < s.batch_size:
                raise NetspecError(
                    f"the data set {s.data!r} has {len(split.train)} training example(s), too few for one batch of {s.batch_size}",
                    hint="give more data (or a larger --train-limit), or a smaller batch_size in the spec's train section",
                )
            if len(split.val) == 0:
                raise NetspecError(
                    f"the data set {s.data!r} leaves no validation examples to measure accuracy on"
                )
            self.data[key] = split
        return self.data[key]

    def estimate(self, m: Member) -> tuple[float, str]:
        """Seconds one epoch of `m` takes, from one timed training step (after a warm-up one)."""
        import torch

        from netspec.backends.lower_torch import build

        with tempfile.TemporaryDirectory() as tmp:
            job = self.job(m, Path(tmp), 1, False)
        s, data = job.settings, job.data
        torch.set_num_threads(1)
        model = build(job.graph, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x, y = data.train.x[: s.batch_size], data.train.y[: s.batch_size]
        step = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model.logits(x), y).backward()
            opt.step()
            step = time.perf_counter() - t0
        steps = math.ceil(len(data.train) / s.batch_size)
        val = math.ceil(len(data.val) / s.batch_size) * step / 3  # forward only
        epoch = steps * step + val
        self.sec_per_mac_epoch = epoch / max(m.macs, 1)
        how = (
            f"measured one training step of {s.batch_size} examples: {step * 1e3:.1f} ms; "
            f"x {steps} steps per epoch, plus validation, one thread"
        )
        return epoch, how

    def epoch_seconds(self, m: Member) -> float:
        return (self.sec_per_mac_epoch or 0.0) * max(m.macs, 1)

    def run(self, study: Any, start: float, out: TrialsResult, console: Any) -> None:
        from netspec.explore_study import pop_trial

        members = {m.number: m for m in _members(self.spec, study)}
        while True:
            left = self.t.budget - (time.monotonic() - start)
            if left <= 0:
                out.stopped_by_budget = True
                return
            if not _outstanding(study):
                return
            waiting = _first_waiting(study)
            if waiting is not None and self.epoch_seconds(members[waiting]) > left:
                out.stopped_by_budget = True  # the next trial's first rung would not end in time
                return
            trial = pop_trial(study)
            if trial is None:  # others are training the last ones (or died: wait for the heartbeat)
                if not _running_or_waiting(study):
                    return  # what is left failed more often than the retries allow
                time.sleep(min(1.0, self.t.heartbeat / 4))
                continue
            self.trial(study, trial, members[int(trial.user_attrs["member"])], start, console)
            out.trained_here += 1

    def trial(self, study: Any, trial: Any, m: Member, start: float, console: Any) -> None:
        from optuna.storages._heartbeat import get_heartbeat_thread
        from optuna.trial import TrialState

        from netspec.train.launch import train

        kill = os.environ.get(FAULT_ENV, "")
        first_try = "failed_trial" not in study._storage.get_trial(trial._trial_id).system_attrs
        t0 = time.monotonic()
        rung, best, epochs, state = 1, -math.inf, 0, TrialState.COMPLETE
        with (
            tempfile.TemporaryDirectory() as tmp,
            get_heartbeat_thread(trial._trial_id, study._storage),
        ):
            try:
                while epochs < self.t.epochs:
                    target = min(rung, self.t.epochs)
                    left = self.t.budget - (time.monotonic() - start)
                    if epochs and (target - epochs) * self.epoch_seconds(m) > left:
                        trial.set_user_attr("stopped", "budget")
                        state = TrialState.PRUNED
                        break
                    e0 = time.monotonic()
                    result = train(self.job(m, Path(tmp), target, epochs > 0))
                    self._learn(m, (time.monotonic() - e0) / (target - epochs))
                    for record in result.history[epochs:]:
                        if (
                            kill in (f"{m.number}:{record.epoch}", f"*:{record.epoch}")
                            and first_try
                        ):
                            os.kill(os.getpid(), signal.SIGKILL)
                        acc = record.val_acc if math.isfinite(record.val_acc) else 0.0
                        best = max(best, acc)
                        trial.report(acc, step=record.epoch)
                    epochs = target
                    if epochs < self.t.epochs and trial.should_prune():
                        state = TrialState.PRUNED
                        break
                    rung *= 2
            except NetspecError as err:  # diverged, or settings that do not fit this member
                trial.set_user_attr("error", err.message)
                trial.set_user_attr("epochs", epochs)
                study.tell(trial, state=TrialState.FAIL)
                _say(console, f"member #{m.number}: failed after {epochs} epoch(s): {err.message}")
                return
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", time.monotonic() - t0)
        if state == TrialState.PRUNED:
            study.tell(trial, state=state)
        else:
            study.tell(trial, best)
        word = "pruned" if state == TrialState.PRUNED else "trained"
        _say(
            console,
            f"member #{m.number}: {word} after {epochs} epoch(s), best val acc {best:.3f} ({time.monotonic() - t0:.1f} s)",
        )

    def _learn(self, m: Member, seconds_per_epoch: float) -> None:
        self.sec_per_mac_epoch = seconds_per_epoch / max(m.macs, 1)


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text, highlight=False)


def _members(spec: Spec, study: Any) -> list[Member]:
    from netspec.explore import Space, evaluate

    space = Space.of(spec)
    return [evaluate(spec, n, space.member(n))[0] for n in study.user_attrs["candidates"]]


def _done_members(study: Any) -> set[int]:
    from optuna.trial import TrialState

    return {
        int(x.user_attrs["member"])
        for x in study.get_trials(deepcopy=False)
        if x.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (x.state == TrialState.FAIL and "error" in x.user_attrs)
    }


def _outstanding(study: Any) -> bool:
    return set(study.user_attrs["candidates"]) - _done_members(study) != set()


def _running_or_waiting(study: Any) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def _first_waiting(study: Any) -> int | None:
    from optuna.trial import TrialState

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return int(waiting[0].user_attrs["member"]) if waiting else None


def _spawn_workers(spec: Spec, t: Trials, name: str, start: float) -> list[Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    left = t.budget - (time.monotonic() - start)
    sub = replace(t, study=name, workers=1, budget=left)
    procs = [
        ctx.Process(target=_worker, args=(spec.text, spec.path, sub), daemon=False)
        for _ in range(t.workers - 1)
    ]
    for p in procs:
        p.start()
    return procs


def _worker(text: str, path: str, t: Trials) -> None:
    """A `--workers` process: the same loop on the same study (an error said in one line)."""
    try:
        _work(text, path, t)
    except NetspecError as err:
        import sys

        print(f"error: worker {os.getpid()}: {err.message}", file=sys.stderr)
        sys.exit(2)


def _work(text: str, path: str, t: Trials) -> None:
    from netspec.explore_study import check_storage, open_storage, open_study
    from netspec.ir.build import load_spec_text

    spec = load_spec_text(text, path)
    storage = open_storage(check_storage(t.storage, t.default_storage), t.heartbeat)
    study = open_study(storage, t.study or "", _candidates(storage, t.study or ""), t.epochs)
    work = _Work(spec, t)
    members = _members(spec, study)
    work.estimate(members[0])
    work.run(study, time.monotonic(), TrialsResult(study.study_name, ""), None)


def _candidates(storage: Any, name: str) -> list[int]:
    import optuna

    return list(optuna.load_study(study_name=name, storage=storage).user_attrs["candidates"])


# ---- results -------------------------------------------------------------------------------


def collect(study: Any, members: dict[int, Member], spec: Spec, t: Trials) -> dict[int, Measured]:
    """Each candidate's counted trial (completed, pruned, or failed by its own error) and, for
    those trained, their latency on this host."""
    from optuna.trial import TrialState

    out: dict[int, Measured] = {}
    for x in study.get_trials(deepcopy=False):
        n = int(x.user_attrs["member"])
        if x.state in (TrialState.COMPLETE, TrialState.PRUNED):
            values = [v for v in x.intermediate_values.values() if math.isfinite(v)]
            acc = max(values) if values else math.nan
            state = "complete" if x.state == TrialState.COMPLETE else "pruned"
        elif x.state == TrialState.FAIL and "error" in x.user_attrs:
            acc, state = math.nan, "failed"
        else:
            continue
        out[n] = Measured(
            n,
            acc,
            int(x.user_attrs.get("epochs", len(x.intermediate_values))),
            state,
            float(x.user_attrs.get("seconds", 0.0)),
            error=x.user_attrs.get("error"),
        )
    if t.latency:
        for n, r in out.items():
            if n in members and r.state != "failed":
                r.latency_ms = latency_ms(spec, members[n])
    return out


def latency_ms(spec: Spec, m: Member) -> float:
    """Median latency of `m` in ONNX Runtime on this host (batch 1, one thread; seeded
    weights: latency does not depend on their values)."""
    import torch

    from netspec.backends.lower_torch import build
    from netspec.deploy.lowering import lower
    from netspec.deploy.runtime import example_input, open_session
    from netspec.timing import measure

    graph, _ = spec.instantiate(m.bindings, collect=True)
    assert graph is not None
    module = build(graph, seed=0).eval()
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    session = open_session(lower(graph, weights).to_bytes(), "cpu", LATENCY_THREADS)
    x = example_input(graph.input.shape, graph.input.vocab, LATENCY_BATCH)
    del torch
    return measure(lambda: session.run(x), seconds=0.2, min_runs=10).median * 1e3


def measured_front(members: Iterable[Member]) -> list[int]:
    """Numbers of the trained members (`Member.measured`) no other beats on every one of
    accuracy (higher), MACs, params and latency (lower); a diverged member never."""
    pts = [
        ((-d["accuracy"], m.macs, m.params, d.get("latency_ms") or 0.0), m.number)
        for m in members
        if (d := m.measured) and d.get("accuracy") is not None
    ]
    front = []
    for p, n in pts:
        if not any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q, _ in pts):
            front.append(n)
    return sorted(front)
