"""Speed checks that hold on a loaded machine: CPU time, not wall time.

A busy machine stretches the wall clock of every test, not the work a test does. The
refusals these checks guard against (a billion layers expanded, a huge range listed) cost
minutes of CPU, so a CPU bound catches them with a wide margin and never fails because a
neighbour is busy. Speed goals proper (throughput, latency) live in tools/bench_*.py.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator


def cpu_seconds(children: bool = False) -> float:
    """CPU seconds (user + system) used so far by this process, all its threads, or with
    `children`, by its finished and waited-for child processes."""
    if not children:
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def cpu_limit(seconds: float, children: bool = False) -> Iterator[None]:
    """Fails when the block used `seconds` of CPU or more (the child processes' instead, with
    `children`: for work done by a `subprocess.run` inside the block)."""
    start = cpu_seconds(children)
    yield
    used = cpu_seconds(children) - start
    assert used < seconds, f"took {used:.2f} s of CPU, over the {seconds:g} s allowed"


# A subprocess's wall-clock guard against a hang (a blocked read, a deadlock), not a speed
# check: long enough that no loaded machine trips it, short enough that CI ends.
HANG_S = 600
