"""The Optuna study that stage 3's trained trials share (imported only for `--train-top`).

A study holds one trial per candidate member, enqueued once by the process that creates the
study; every process (`--workers`, or another machine with the same `--storage` and `--study`)
pops waiting trials until none is left. Storage:

- no `--storage`: SQLite in a file next to the output (`check_storage(None, default_path)`);
- `sqlite:///x.db`, `postgresql://...`, `mysql://...`: Optuna's `RDBStorage`, with its
  heartbeat: a trial whose process died is marked failed by the next process that looks
  (`optuna.storages.fail_stale_trials`) and enqueued again by `RetryHeartbeatStaleTrialCallback`;
- `journal:PATH`: Optuna's `JournalStorage` on a journal file (a shared filesystem without a
  database server). Optuna 5.1's journal storage has no heartbeat, so `_JournalHeartbeat`
  adds one through the trials' system attributes: the same `fail_stale_trials` and retry.

A URL that names a server is probed with a TCP connection first, so a server that does not
answer is a quick error, not a long hang inside a database driver.
"""

from __future__ import annotations

import contextlib
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from netspec.errors import NetspecError

PROBE_S = 5.0  # seconds a database server has to accept a connection
READY_S = 60.0  # seconds a joining process waits for the creator to enqueue the candidates
HEARTBEAT_KEY = "netspec_heartbeat"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Heartbeats and their retry callback are "experimental" in Optuna (since 2.8/2.9);
    netspec pins the version it was tested with, so the warning says nothing to a user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class _JournalHeartbeat(JournalStorage, BaseHeartbeat):
    """A journal storage with a heartbeat (time.time() in a system attribute per trial)."""

    def __init__(self, backend: Any, interval: int, grace: int) -> None:
        super().__init__(backend)
        self._interval, self._grace = interval, grace
        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=3)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [
            t._trial_id
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if now - float(t.system_attrs.get(HEARTBEAT_KEY, now)) > self._grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._retry


def check_storage(url: str | None, default: Path) -> str:
    """The storage URL (SQLite at `default` when None), checked without creating anything:
    a folder that exists, a server that answers."""
    if url is None:
        url = f"sqlite:///{default}"
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        if not path.parent.is_dir():
            raise NetspecError(
                f"--storage {url}: no folder {path.parent} for the journal file",
                hint="e.g. --storage journal:/shared/study.log on a filesystem every machine mounts",
            )
        return url
    scheme = urlsplit(url).scheme
    if "://" not in url or not scheme:
        raise NetspecError(
            f"--storage takes a database URL or journal:PATH; received {url!r}",
            hint="e.g. --storage sqlite:///study.db, --storage postgresql://host/db, --storage journal:study.log",
        )
    if scheme.startswith("sqlite"):
        folder = Path(url.split(":///", 1)[-1]).parent
        if not folder.is_dir():
            raise NetspecError(f"--storage {url}: no folder {folder} for the database file")
    else:
        _probe(url)
    return url


def open_storage(url: str, heartbeat: int = 10) -> BaseStorage:
    """The storage `url` names (checked by `check_storage`), with a heartbeat every
    `heartbeat` seconds and a trial silent for 3 heartbeats taken as dead and retried."""
    grace = 3 * heartbeat
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        with _quiet():
            return _JournalHeartbeat(JournalFileBackend(str(path)), heartbeat, grace)
    scheme = urlsplit(url).scheme
    kwargs = {"connect_args": {"timeout": 60}} if scheme.startswith("sqlite") else {}
    lock = (
        _file_lock(Path(url.split(":///", 1)[-1] + ".lock"))
        if scheme.startswith("sqlite")
        else contextlib.nullcontext()
    )
    try:
        with lock:
            return _rdb(url, kwargs, heartbeat, grace)
    except (ImportError, ModuleNotFoundError) as err:
        raise NetspecError(
            f"--storage {url}: its database driver is not installed ({err})",
            hint="install the driver SQLAlchemy names, or use sqlite:///FILE or journal:PATH",
        ) from None
    except Exception as err:  # SQLAlchemy's errors: a bad URL, a refused login, ...
        raise NetspecError(
            f"--storage {url} does not open: {str(err).strip().splitlines()[0][:300]}"
        ) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Processes on one machine create a SQLite database's tables one at a time."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rdb(url: str, kwargs: dict[str, Any], heartbeat: int, grace: int) -> RDBStorage:
    for attempt in range(5):
        try:
            with _quiet():
                return RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        except Exception as err:  # two processes creating the tables at once: one waits
            if attempt == 4 or not any(
                w in str(err)
                for w in ("already exists", "locked", "UNIQUE constraint", "Duplicate")
            ):
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _probe(url: str) -> None:
    """A quick TCP connection to the server a URL names: a clear error, not a driver's hang."""
    parts = urlsplit(url)
    if not parts.hostname:
        return  # a local socket or an unusual URL: the driver decides
    port = parts.port or {"postgresql": 5432, "mysql": 3306}.get(parts.scheme.split("+")[0])
    if port is None:
        return
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_S):
            pass
    except OSError as err:
        raise NetspecError(
            f"--storage {url}: the server {parts.hostname}:{port} does not answer ({err.strerror or err})",
            hint="check that the database server runs and that this machine reaches it; "
            "on one machine, leave --storage out (SQLite)",
        ) from None


def open_study(
    storage: BaseStorage, name: str, candidates: Sequence[int], max_epochs: int
) -> optuna.Study:
    """The study `name`, created with one waiting trial per candidate member if it is new,
    else joined (after its creator has enqueued them). Successive halving: Optuna's
    `SuccessiveHalvingPruner`, rungs at 1, 2, 4, ... epochs, the best half promoted."""
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=2, min_early_stopping_rate=0
    )
    # Every trial is enqueued, so the sampler only answers "the enqueued member".
    sampler = optuna.samplers.RandomSampler(seed=0)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", pruner=pruner, sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner, sampler=sampler)
        _wait_ready(study, list(candidates), max_epochs)
        return study
    for number in candidates:
        study.enqueue_trial({"member": number}, user_attrs={"member": number})
    study.set_user_attr("max_epochs", max_epochs)
    study.set_user_attr("candidates", list(candidates))  # last: the study is ready
    return study


def _wait_ready(study: optuna.Study, candidates: list[int], max_epochs: int) -> None:
    deadline = time.monotonic() + READY_S
    while "candidates" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise NetspecError(
                f"study {study.study_name!r} exists but holds no candidates: the process that "
                "created it stopped before enqueuing them",
                hint="give another --study NAME (or delete this one)",
            )
        time.sleep(0.2)
    attrs = study.user_attrs
    if attrs["candidates"] != candidates or attrs.get("max_epochs") != max_epochs:
        raise NetspecError(
            f"study {study.study_name!r} trains other members or epochs than this command "
            f"(its candidates: {', '.join(f'#{n}' for n in attrs['candidates'][:8])}; "
            f"{attrs.get('max_epochs')} epochs)",
            hint="run the same command (spec, --score, --train-top, --epochs, --data) on every "
            "machine, or give this exploration another --study NAME",
        )


def pop_trial(study: optuna.Study) -> optuna.Trial | None:
    """A waiting trial, now running in this process (None when none waits). The state change
    WAITING -> RUNNING is the storage's, so two processes never pop the same trial."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)  # dead processes' trials: failed, enqueued again
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        except Exception as err:  # SQLite's "database is locked": another process won
            if "locked" not in str(err):
                raise
    return None
