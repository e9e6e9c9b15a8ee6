"""Data-parallel training: `nproc` processes on this machine, one DDP replica each.

The processes start with `torch.multiprocessing.spawn` and meet through a file store in a
temporary folder (no TCP rendezvous); collectives use gloo on CPU and NCCL on CUDA, bound to
the loopback interface. Each process runs `trainer.run` on its share of every batch; rank 0
writes the run folder and reports back through a queue. A single-process run never imports
this module.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from netspec.errors import NetspecError
from netspec.train.device import pick_runtime
from netspec.train.trainer import Job, RunResult, TrainingDiverged, cpu_threads, run


def spawn(job: Job) -> RunResult:
    """Run `job` in `job.nproc` data-parallel processes and return rank 0's result.

    Raises:
        NetspecError: a user-facing error raised in any process (e.g. training diverged).
    """
    pick_runtime(job.device, rank=job.nproc - 1)  # too few GPUs: refused before any start
    queue = mp.get_context("spawn").SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="netspec-ddp-") as folder:
        store = Path(folder) / "store"
        # mp.spawn warns as it stops the other processes after a failed one: the error says it
        logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
        try:
            mp.spawn(_worker, args=(job, str(store), queue), nprocs=job.nproc, join=True)
        except mp.ProcessExitedException:
            if queue.empty():
                raise  # a crash, not a user's mistake
    status, payload = queue.get()
    if status == "error":
        kind, message, hint, notes = payload
        cls = TrainingDiverged if kind == "diverged" else NetspecError
        raise cls(message, hint=hint, notes=notes)
    return payload


def _worker(rank: int, job: Job, store: str, queue: Any) -> None:
    """One process: join the group, train, report. A user-facing error in any rank is queued
    and ends that process with status 2, upon which `mp.spawn` stops the others (which
    might otherwise wait forever in a collective the failed rank never reaches)."""
    world = job.nproc
    _use_loopback()
    cuda = pick_runtime(job.device, rank).device.type == "cuda"
    if not cuda:
        torch.set_num_threads(cpu_threads(job.threads, world))
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"file://{store}", rank=rank, world_size=world
    )
    try:
        result = run(job, rank=rank, world=world)
        # The DDP wrapper holds the process group; a group left for the interpreter's exit
        # to tear down can abort the process (gloo's threads), so free it, then leave together.
        gc.collect()
        dist.barrier()
    except NetspecError as err:
        kind = "diverged" if isinstance(err, TrainingDiverged) else "error"
        queue.put(("error", (kind, err.message, err.hint, err.notes)))
        sys.exit(2)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(("ok", result))


def _use_loopback() -> None:
    """Keep gloo's and NCCL's sockets on the loopback interface (127.0.0.1) unless told otherwise."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if names:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", names[0])
        os.environ.setdefault("NCCL_SOCKET_IFNAME", names[0])
