"""Timing for the benchmarks (`netspec bench`, tools/): repeated runs taking turns, so that a
machine whose load drifts weighs on every contender alike, and a warning when it is busy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Latencies of repeated runs, in seconds."""

    median: float
    p90: float
    runs: int

    def throughput(self, batch: int) -> float:
        return batch / self.median


def measure(
    fn: Callable[[], object],
    seconds: float = 2.0,
    min_runs: int = 5,
    max_runs: int = 200,
    warmup: int = 2,
) -> Timing:
    """Time `fn` after `warmup` calls: at least `min_runs` runs, more while within `seconds`."""
    return measure_side_by_side({"fn": fn}, seconds, min_runs, max_runs, warmup)["fn"]


def measure_side_by_side(
    fns: Mapping[str, Callable[[], object]],
    seconds: float = 2.0,
    min_runs: int = 5,
    max_runs: int = 200,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Time several functions taking turns, one call each per round, so that a machine whose
    load drifts weighs on all of them alike. `seconds` is each function's share of the time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    budget = seconds * len(fns)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_runs and (rounds < min_runs or time.perf_counter() - start < budget):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: _timing(t) for name, t in times.items()}


def _timing(times: list[float]) -> Timing:
    times = sorted(times)
    return Timing(
        statistics.median(times),
        times[min(len(times) - 1, round(0.9 * (len(times) - 1)))],
        len(times),
    )


def busy_note(threads: int) -> str | None:
    """A warning when other processes keep this machine's cores busy: multi-threaded timings
    then stall at every parallel region whose threads are not all running (torch's OpenMP
    worst of all), and mean little."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = os.cpu_count() or 1
    if threads > 1 and load > cores - threads + 0.5:
        return (
            f"note: this machine is busy (load {load:.1f} on {cores} cores): timings with {threads} threads "
            "are unreliable; --threads 1 measures steadily"
        )
    return None


def cpu_threads() -> int:
    """The threads a benchmark uses: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


__all__ = ["Timing", "busy_note", "cpu_threads", "measure", "measure_side_by_side"]
