"""Data-parallel training on PyTorch's own launcher: `torchrun` on one or many machines, and
`netspec train --nproc N` on this one through the same elastic agent (`elastic_launch`).

Every worker runs the same path, `worker`: it joins the process group from the environment
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), checks that every rank
was given the same job (a hash exchanged at start), then runs `trainer.run` on its share of
every batch. Only rank 0 writes the run folder. Collectives use gloo on CPU and NCCL on CUDA,
with a timeout (`--timeout`, 5 minutes by default) so a stalled rank ends the job with a
message instead of hanging it for gloo's half hour.

Faults end the job with exit status 3 (`WorkerLost`), one line naming the rank, and the
command that resumes the run; result.json records how it stopped. Under `torchrun
--max-restarts` the restarted workers resume from the last checkpoint by themselves.

A single-process run never imports this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import hashlib
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from netspec.errors import NetspecError
from netspec.io import temp_folder
from netspec.train.device import pick_runtime
from netspec.train.trainer import Job, RunResult, TrainingDiverged, cpu_threads, from_rank0, run

LOST_EXIT = 3  # the exit status of a job that lost (or stopped hearing from) a worker
DEFAULT_TIMEOUT_S = 300.0
FAULT_ENV = "NETSPEC_FAULT"  # testing hook: "rank=1,epoch=2,action=kill|hang[,restart=0]"
_ERROR_DIR_ENV = "NETSPEC_ERROR_DIR"  # where --nproc workers leave a user-facing error


class WorkerLost(NetspecError):
    """A worker died or stopped answering; the run keeps its last checkpoint (exit 3)."""

    exit_code = LOST_EXIT


@dataclass(frozen=True)
class Group:
    """This process's place in a data-parallel job, as torchrun's environment says."""

    rank: int
    world: int
    local_rank: int
    restart: int  # TORCHELASTIC_RESTART_COUNT: 0 on the first attempt
    max_restarts: int
    run_id: str


def launched() -> Group | None:
    """The torchrun job this process is a worker of, or None when it was not launched so
    (or launched alone: WORLD_SIZE 1 trains as a single process)."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        group = Group(
            rank=int(env["RANK"]),
            world=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            restart=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
            max_restarts=int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")),
            run_id=env.get("TORCHELASTIC_RUN_ID", ""),
        )
    except ValueError:
        raise NetspecError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None
    return group if group.world > 1 else None


# --- the workers -------------------------------------------------------------------------


def join(group: Group, device: str, threads: int | None, timeout: float) -> None:
    """Join the process group torchrun describes (env:// rendezvous), on the loopback
    interface unless told otherwise, with `timeout` seconds on every collective."""
    _use_loopback()
    cuda = pick_runtime(device, group.local_rank).device.type == "cuda"
    if not cuda:
        torch.set_num_threads(cpu_threads(threads, _local_world()))
    wait = datetime.timedelta(seconds=timeout)
    store, _, _ = next(dist.rendezvous("env://", group.rank, group.world, timeout=wait))
    # Keys of this attempt only: a restarted job can meet the store of its first attempt, whose
    # peers' addresses are stale (a restarted rank then dialled a dead one: connection refused)
    attempt = dist.PrefixStore(f"netspec/attempt_{group.restart}", store)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        store=attempt,
        rank=group.rank,
        world_size=group.world,
        timeout=wait,
    )


def leave() -> None:
    """Free the DDP wrapper's hold on the group, then leave it (a group left for the
    interpreter's exit to tear down can abort the process in gloo's threads)."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def agree(payload: Any) -> list[Any]:
    """Every rank's `payload`, in rank order (all ranks call it)."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, payload)
    return out


def job_hash(job: Job) -> str:
    """What every rank must agree on: the spec (source and bindings), the settings, the data
    and the starting weights. A rank given another spec or flag is refused at start."""
    data = job.data
    facts = {
        "source_hash": job.graph.source_hash,
        "bindings": job.graph.bindings,
        "settings": job.settings.to_json(),
        "init": job.init,
        "sync_bn": job.sync_bn,
        "data": [len(data.train), len(data.val), list(data.train.class_names)],
    }
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_job(job: Job) -> None:
    """Refuse, on every rank with one message, a job whose ranks were given different specs,
    settings or data."""
    hashes = agree(job_hash(job))
    if len(set(hashes)) == 1:
        return
    odd = [r for r, h in enumerate(hashes) if h != hashes[0]]
    raise NetspecError(
        f"rank(s) {', '.join(map(str, odd))} were given another spec, settings or data than "
        "rank 0: every worker must run the same job",
        hint="start every node with the same spec, --set values, flags and data",
        notes=[f"rank {r}: job hash {h}" for r, h in enumerate(hashes)],
    )


def worker(job: Job) -> RunResult | None:
    """One worker of an `--nproc` job (the elastic agent's entry point): join, check, train.
    A user-facing error is left for the parent (`_ERROR_DIR_ENV`) and ends this worker with
    status 2, upon which the agent stops the others."""
    group = launched()
    assert group is not None, "started by the elastic agent, which sets RANK and WORLD_SIZE"
    try:
        join(group, job.device, job.threads, job.timeout)
        check_same_job(job)
        result = train_worker(job, group)
    except NetspecError as err:
        _leave_error(group.rank, err)
        sys.exit(getattr(err, "exit_code", 2))
    finally:
        leave()
    return result if group.rank == 0 else None


def train_worker(job: Job, group: Group) -> RunResult:
    """Train this rank's share; a collective that fails or times out (a lost or stalled
    peer) becomes `WorkerLost`, naming what is known."""
    _arm_fault(group)
    try:
        result = run(job, rank=group.rank, world=group.world)
        dist.barrier()
    except RuntimeError as err:
        if not _peer_failure(err):
            raise  # a bug, not a lost worker: its traceback is the report
        raise lost(job, group, str(err)) from None
    return result


def _peer_failure(err: RuntimeError) -> bool:
    """A collective that failed because another process went away or stopped answering."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return any(word in text for word in ("third_party/gloo", "NCCL", "Connection", "Timed out"))


def lost(job: Job, group: Group, detail: str) -> WorkerLost:
    """The error of a job that lost a worker: which rank saw it, the resume command."""
    first = detail.strip().splitlines()[0][:200] if detail.strip() else "no detail"
    timed_out = "timed out" in detail.lower() or "timeout" in detail.lower()
    what = (
        f"no answer from another worker within {job.timeout:g} s"
        if timed_out
        else "another worker went away"
    )
    return WorkerLost(what, hint=f"resume it: {resume_command(job.out)}", notes=[first])


def resume_command(out: Path) -> str:
    return f"netspec train --resume {out}"


# --- a torchrun worker ---------------------------------------------------------------------


@dataclass
class GroupRun:
    """What a torchrun worker trained: the job (with rank 0's run folder) and rank 0's
    result (None on the other ranks)."""

    job: Job
    result: RunResult | None


class GroupError(NetspecError):
    """Errors the ranks met before training, gathered: rank 0 prints them once, each with
    the ranks it came from; the other ranks print nothing."""

    def __init__(self, texts: list[str | None], rank: int, exit_code: int = 2) -> None:
        super().__init__("the job was refused before training")
        self.texts, self.rank, self.exit_code = texts, rank, exit_code

    def render(self, color: bool = False) -> str:
        if self.rank != 0:
            return ""
        by_text: dict[str, list[int]] = {}
        for r, text in enumerate(self.texts):
            if text is not None:
                by_text.setdefault(text, []).append(r)
        if len(by_text) == 1 and len(next(iter(by_text.values()))) == len(self.texts):
            return next(iter(by_text))  # every rank met the same error: say it once
        return "\n".join(
            f"rank {', '.join(map(str, ranks))}: {text}" for text, ranks in by_text.items()
        )


def train_in_group(
    group: Group,
    prepare: Callable[[], Job],
    open_folder: Callable[[Job], Job],
    device: str,
    timeout: float,
) -> GroupRun:
    """One torchrun worker, start to end: `prepare` the job (every rank: checks, data),
    join the group, agree that every rank is ready with the same job, let rank 0
    `open_folder` (make it, or find the one a restarted job resumes), then train.

    Raises:
        GroupError: some rank's job was refused (printed once, by rank 0).
        WorkerLost: a worker died or stalled (exit status 3).
    """
    job: Job | None = None
    error: str | None = None
    try:
        job = prepare()
    except NetspecError as err:
        error = err.render()
    join(group, device, job.threads if job else None, timeout)
    try:
        texts = agree(error)
        if any(t is not None for t in texts):
            raise GroupError(texts, group.rank)
        assert job is not None
        check_same_job(job)
        job = _rank0_folder(job, open_folder, group)
        if group.rank == 0:
            signal.signal(signal.SIGTERM, _stopped_by_launcher(job, group))
        result = train_worker(job, group)
    except NetspecError as err:
        if group.rank != 0 and not isinstance(err, GroupError):
            err = GroupError([None] * group.world, group.rank, getattr(err, "exit_code", 2))
        raise err from None
    finally:
        leave()
    return GroupRun(job, result if group.rank == 0 else None)


def _rank0_folder(job: Job, open_folder: Callable[[Job], Job], group: Group) -> Job:
    """Rank 0 makes (or finds) the run folder and tells the others where it is; a refusal
    there (an --out already in use) reaches every rank."""
    opened: Job | None = None
    refusal: str | None = None
    if group.rank == 0:
        try:
            opened = open_folder(job)
        except NetspecError as err:
            refusal = err.render()
    refusal = from_rank0(refusal)
    if refusal is not None:
        raise GroupError([refusal] * group.world, group.rank)
    where = from_rank0((opened.out, opened.resume) if opened else None)
    assert where is not None
    out, resume = where
    return opened if opened is not None else dataclasses.replace(job, out=out, resume=resume)


def _stopped_by_launcher(job: Job, group: Group) -> Callable[[int, Any], None]:
    """Rank 0's SIGTERM handler: torchrun stops the other workers when one fails; record
    it in result.json and say what happens next (a restart, or how to resume)."""

    def handler(signum: int, frame: Any) -> None:
        restarts_left = group.max_restarts - group.restart
        if restarts_left > 0:
            message = (
                f"a worker was lost; torchrun restarts the job ({restarts_left} restart(s) "
                "left), which resumes from the last checkpoint"
            )
        else:
            message = f"a worker was lost; the job stopped. Resume: {resume_command(job.out)}"
        _mark_stopped(job.out, "worker lost (stopped by torchrun)")
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(LOST_EXIT)

    return handler


# --- --nproc N on this machine -------------------------------------------------------------


def launch_local(job: Job) -> RunResult:
    """Run `job` in `job.nproc` workers on this machine through torch's elastic agent (the
    launcher torchrun uses) and return rank 0's result.

    Raises:
        NetspecError: a user-facing error raised in any worker (e.g. training diverged).
        WorkerLost: a worker died or stalled; result.json says so, and how to resume.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    pick_runtime(job.device, rank=job.nproc - 1)  # too few GPUs: refused before any start
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=job.nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # any free port, on loopback only
        max_restarts=0,
        start_method="spawn",
        monitor_interval=0.1,
    )
    _quiet_launcher_logs()
    with temp_folder("netspec-ddp-") as errors:
        os.environ[_ERROR_DIR_ENV] = str(errors)
        try:
            results = elastic_launch(config, worker)(job)
        except ChildFailedError as failed:
            raise _failure(job, failed.failures, errors) from None
        finally:
            os.environ.pop(_ERROR_DIR_ENV, None)
    result = results.get(0)
    if not isinstance(result, RunResult):
        raise WorkerLost("rank 0 returned no result", hint=resume_command(job.out))
    return result


def _failure(job: Job, failures: dict[int, Any], errors: Path) -> NetspecError:
    """The one error of a failed `--nproc` job: a worker's own user-facing error when one
    left it (the lowest rank's), else the lost worker, named, with result.json updated."""
    left = {}
    for path in sorted(errors.glob("rank*.pickle")):
        left[int(path.stem[4:])] = pickle.loads(path.read_bytes())
    user = [payload for payload in left.values() if payload[0] != "lost"]
    if user:
        kind, message, hint, notes = user[0]
        cls = TrainingDiverged if kind == "diverged" else NetspecError
        return cls(message, hint=hint, notes=notes)
    # the culprit: a worker that ended otherwise than by noticing a lost peer, else (a
    # stall: the others timed out on it, then the agent ended it) one that said nothing
    culprits = {r: f for r, f in failures.items() if r not in left}
    silent = [r for r in range(job.nproc) if r not in left]
    code = getattr(culprits[min(culprits)], "exitcode", None) if culprits else None
    if culprits and code != -signal.SIGTERM:
        what = f"rank {min(culprits)} {_how_it_ended(code)}"
    elif silent:
        what = f"rank {silent[0]} stalled: no answer from it within {job.timeout:g} s"
    else:
        what = f"rank {min(left)}: {left[min(left)][1]}"
    _mark_stopped(job.out, f"worker lost: {what}")
    return WorkerLost(
        f"{what}; the job stopped",
        hint=f"resume it: {resume_command(job.out)}",
        notes=[
            f"rank {r} saw: {payload[1]}" + (f" ({payload[3][0][:160]})" if payload[3] else "")
            for r, payload in sorted(left.items())
        ],
    )


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _leave_error(rank: int, err: NetspecError) -> None:
    folder = os.environ.get(_ERROR_DIR_ENV)
    if not folder:
        return
    kind = (
        "diverged"
        if isinstance(err, TrainingDiverged)
        else "lost"
        if isinstance(err, WorkerLost)
        else "error"
    )
    payload = pickle.dumps((kind, err.message, err.hint, err.notes))
    Path(folder, f"rank{rank:05d}.pickle").write_bytes(payload)


def _mark_stopped(out: Path, stopped: str) -> None:
    """Record in result.json (written by rank 0 after every epoch) how the job stopped."""
    from netspec.train import checkpoint as ckpt
    from netspec.train.trainer import RESULT

    path = Path(out) / RESULT
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {"epochs_run": 0}
    if not isinstance(result, dict):
        result = {}
    result["stopped"] = stopped
    if Path(out).is_dir():
        ckpt.write_text(path, json.dumps(result, indent=2) + "\n")


# --- helpers --------------------------------------------------------------------------------


def _quiet_launcher_logs() -> None:
    """The elastic agent logs every worker's failure with a traceback: netspec says it once."""
    for name in (
        "torch.distributed.elastic",
        "torch.distributed.launcher",
        "torch.multiprocessing",
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _local_world() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _use_loopback() -> None:
    """Keep gloo's and NCCL's sockets on the loopback interface (127.0.0.1) on one machine;
    across machines (MASTER_ADDR not a loopback address) the default route is used."""
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if master not in ("127.0.0.1", "localhost", "::1"):
        return
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if names:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", names[0])
        os.environ.setdefault("NCCL_SOCKET_IFNAME", names[0])


def _arm_fault(group: Group) -> None:
    """A testing hook (`NETSPEC_FAULT`): make one rank die or hang at the start of an epoch,
    so the fault paths can be tested without racing a `kill` against the training."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    fields = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if int(fields.get("rank", -1)) != group.rank:
        return
    if "restart" in fields and int(fields["restart"]) != group.restart:
        return
    from netspec.train import trainer

    trainer.EPOCH_HOOKS.append(_fault_at(int(fields.get("epoch", 1)), fields.get("action", "kill")))


def _fault_at(epoch: int, action: str) -> Callable[[int], None]:
    def hook(current: int) -> None:
        if current != epoch:
            return
        if action == "hang":
            time.sleep(10**6)
        os.kill(os.getpid(), signal.SIGKILL)

    return hook
