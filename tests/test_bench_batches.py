"""`netspec bench`'s batch sizes (issue 25): `-b 1 -b 8` skipped batch 8 as too slow to time,
estimated from batch 1; a size asked for is now always timed, and the estimate only trims the
default sweep. A size too big for memory is judged by the memory available, not merely free."""

from __future__ import annotations

from netspec.deploy import bench
from netspec.timing import Timing


def _slow(batch: int) -> dict[str, Timing]:
    """Ten seconds per example: batch 8 would take ~20 minutes by the estimate."""
    return {"torch": Timing(10.0 * batch, 10.0 * batch, 5), "ort": Timing(9.0 * batch, 9.0, 5)}


def test_a_batch_size_asked_for_is_timed() -> None:
    rows = bench._rows((8, 1), 2.0, 2, _slow, lambda batch: None)
    assert [b for b, _ in rows] == [1, 8]
    assert all(isinstance(timings, dict) for _, timings in rows)


def test_the_default_sweep_still_skips_what_would_take_too_long() -> None:
    rows = dict(bench._rows((), 2.0, 2, _slow, lambda batch: None))
    assert isinstance(rows[1], dict)
    assert isinstance(rows[8], str) and "would take" in rows[8] and "-b 8" in rows[8]


def test_memory_is_judged_by_what_is_available(monkeypatch) -> None:
    import netspec

    graph = netspec.compile_spec("zoo:mnist_cnn")
    assert (bench.available_memory() or 0) > 0
    monkeypatch.setattr(bench, "available_memory", lambda: 2**30)
    assert bench._memory_skip(graph, 1) is None
    why = bench._memory_skip(graph, 10**6)
    assert why is not None and "GiB available" in why
