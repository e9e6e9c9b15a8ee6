"""The playground's heavy jobs, explore and export: one at a time, in a worker thread, off
the compile lock, within a time budget, and stopped when their client disconnects.

A compile holds `compile.LOCK` for milliseconds; a job takes it only to parse and build the
IR, so the page's compiles go on while a job runs. A second job while one runs is refused
(`Busy`: the server answers 429 with Retry-After). Explore asks its `Job` before each member
(`Job.check`), which raises `Stopped` once the client has gone or the time is spent; export
is bounded by size instead, refused from the IR's figures before any weight is made.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
from starlette.requests import Request

from netspec.errors import NetspecError
from netspec.io import temp_folder
from netspec.serve import compile as comp
from netspec.serve.settings import Settings

T = TypeVar("T")
# work folders, tagged with this process and swept once it is gone (a killed server's too)
WORK_PREFIX = "netspec-serve-"
HISTORY = 20  # finished jobs remembered (name, outcome): what a test or a curious user reads


class Busy(Exception):
    """Another heavy job is running; `retry_after`: seconds until its time is spent."""

    def __init__(self, running: str, retry_after: int) -> None:
        super().__init__(f"an {running} is running; try again when it is done")
        self.running, self.retry_after = running, retry_after


class Stopped(Exception):
    """A job ended before its end: `reason` is `client gone` or `time spent`."""

    def __init__(self, reason: str, steps: int) -> None:
        super().__init__(reason)
        self.reason, self.steps = reason, steps


class Job:
    """One running job's controls, shared between the event loop and its worker thread."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds
        self.deadline = time.monotonic() + seconds
        self.gone = threading.Event()  # set by the event loop when the client disconnects
        self.steps = 0  # members evaluated or built so far

    def check(self) -> None:
        """Called by the worker between steps: raise Stopped when the job must end."""
        if self.gone.is_set():
            raise Stopped("client gone", self.steps)
        if time.monotonic() > self.deadline:
            raise Stopped("time spent", self.steps)
        self.steps += 1


class Jobs:
    """The one heavy-job slot of a server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: Job | None = None
        self.history: list[tuple[str, str]] = []  # (name, outcome), newest last

    async def run(self, request: Request, name: str, work: Callable[[Job], T]) -> T:
        """Run `work(job)` in a worker thread, watching `request` for a disconnect.

        Raises:
            Busy: another job is running (nothing is started).
            Stopped: the client left, or the time budget was spent.
        """
        running = self.current
        if running is not None:
            left = max(1, math.ceil(running.deadline - time.monotonic()))
            raise Busy(running.name, left)
        job = self.current = Job(name, self.settings.job_seconds)
        outcome = "failed"
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_watch, request, job)
                # the worker's exception is raised outside the group (not as a group of one)
                result, err = await anyio.to_thread.run_sync(_attempt, work, job)
                tasks.cancel_scope.cancel()
            if isinstance(err, Stopped):
                outcome = f"stopped: {err.reason} after {err.steps:,} steps"
            if err is not None:
                raise err
            outcome = "done"
            return cast(T, result)
        finally:
            self.current = None
            self.history = [*self.history[-HISTORY + 1 :], (name, outcome)]


def _attempt(work: Callable[[Job], T], job: Job) -> tuple[T | None, Exception | None]:
    try:
        return work(job), None
    except Exception as e:
        return None, e


async def _watch(request: Request, job: Job) -> None:
    """Wait for the client to disconnect (its body is read already), then tell the job."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.gone.set()
            return


def stopped_message(name: str, e: Stopped, settings: Settings) -> NetspecError:
    if e.reason == "client gone":
        return NetspecError(f"{name} stopped: the page went away")
    return NetspecError(
        f"{name} stopped after {settings.job_seconds:g} s (the server's time limit for one job), "
        f"{e.steps:,} members in",
        hint="narrow the family (fewer values per parameter), run `netspec explore SPEC` in a "
        "terminal, or start the playground with a larger `--job-seconds`",
    )


def _graph(text: str, bindings: str) -> Any:
    from netspec.io import parse_bindings
    from netspec.ir.build import load_spec_text

    with comp.LOCK:
        return load_spec_text(text, comp.SOURCE_NAME).instantiate(
            parse_bindings((bindings,)) if bindings.strip() else {}
        )


def export_size(graph: Any) -> int:
    """Bytes of the fp32 weights and buffers an export of `graph` holds, from the IR."""
    return 4 * (graph.totals.params + graph.totals.buffers)


def export_onnx(text: str, bindings: str, settings: Settings, job: Job) -> tuple[str, bytes]:
    """The spec's ONNX model with seeded initial weights, checked as `netspec export` checks;
    a model over `settings.max_export_mb` is refused before any weight is made."""
    graph = _graph(text, bindings)
    size, limit = export_size(graph), settings.max_export_mb
    if size > limit * 2**20:
        raise NetspecError(
            f"the model holds {size / 2**20:,.1f} MiB of fp32 weights "
            f"({graph.totals.params:,} parameters, {graph.totals.buffers:,} buffers), over the "
            f"playground's export limit of {limit:g} MiB",
            hint="export it with `netspec export SPEC -o model.onnx`, or start the playground "
            f"with `netspec serve --max-export-mb {math.ceil(size / 2**20)}`",
        )
    job.check()
    from netspec import deploy  # onnx: imported only for a model to export

    with temp_folder(WORK_PREFIX) as folder:
        path = Path(folder) / "model.onnx"
        # as `netspec export` does (a failed check raises); one file, whose bytes are sent
        deploy.export(graph, path, seed=0, external_data=False)
        return graph.name, path.read_bytes()


def explore_json(text: str, settings: Settings, job: Job) -> dict[str, Any]:
    """Explore the spec's design space (a random sample of `settings.explore_max_members`
    when larger): counts, the Pareto front and its plot as a PNG."""
    from netspec import explore as ex
    from netspec.ir.build import load_spec_text

    with comp.LOCK:  # parsing registers the text for error messages: under the lock
        spec = load_spec_text(text, comp.SOURCE_NAME)
    # the Spec is this thread's own: evaluating its members needs no lock
    space_size = ex.Space.of(spec, None).size if spec.free else 0
    cap = settings.explore_max_members
    sample = cap if space_size > cap else None
    result = ex.explore(spec, sample=sample, seed=0, stop=job.check)
    with temp_folder(WORK_PREFIX) as folder:
        png = Path(folder) / "front.png"
        ex.plot(result, png)
        image = base64.b64encode(png.read_bytes()).decode()
    return {
        "ok": True,
        "members": len(result.members),
        "space": space_size,
        "sampled": result.sampled,
        "valid": len(result.valid),
        "fitting": len(result.fitting),
        "front": [
            {
                "number": m.number,
                "bindings": m.label(),
                "params": m.params,
                "macs": m.macs,
                "memory": m.memory,
                "fits": m.fits,
            }
            for m in result.front[:50]
        ],
        "seconds": round(result.seconds, 3),
        "plot": "data:image/png;base64," + image,
    }
