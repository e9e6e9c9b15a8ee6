"""Where a training job runs: in this process, or in `job.nproc` data-parallel processes
through torch's elastic agent (`netspec.train.distributed`, imported only then)."""

from __future__ import annotations

from rich.console import Console

from netspec.train.trainer import Job, RunResult, train_here
from netspec.train.validate import validate


def train(job: Job, console: Console | None = None) -> RunResult:
    """Train as the job says, in this process or in `job.nproc` data-parallel processes.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
        WorkerLost: a data-parallel worker died or stalled (exit status 3; resumable).
        NetspecError: for settings that do not fit the network or the data (the checks of
            `netspec.train.validate`, which `netspec train` makes too).
    """
    validate(job.graph, job.settings, nproc=job.nproc, examples=len(job.data.train))
    if job.nproc > 1:
        from netspec.train.distributed import launch_local

        return launch_local(job)
    return train_here(job, console)


__all__ = ["train"]
