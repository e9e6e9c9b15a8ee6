"""Benchmark: `netspec show` rendering, measured on this machine's CPU.

    python tools/bench_show.py [--repeat N] [--threads N]

Goal (issue 24): rendering a 64-filter grid, and resnet18's feature maps for one image, each
under 2 s. Four figures, median of N repeats each, wall clock and CPU time side by side:

1. filters: resnet18's conv1 (64 kernels 7x7, colour) as arrays, figure and PNG.
2. maps: resnet18's default stages for one 224x224 image (64 + 64 + 128 + 256 + 512 tiles):
   forward pass with hooks, mosaics, figure and PNG.
3. the same maps without the forward pass (render only), to show where the time goes.
4. receptive fields of resnet50 from the IR (no torch), for the check column.

The model is built once (seeded init weights: the pictures' cost does not depend on training).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import netspec
from netspec.ir.receptive import receptive_fields
from netspec.show import feature_maps, filters, filters_figure, load, maps_figure, save


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `work` over `repeat` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = load("zoo:resnet18")
    x = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    grids = feature_maps(net, x)
    graph = netspec.compile_spec("zoo:resnet50")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cases = {
            "filters: resnet18 conv1, 64 kernels": lambda: save(
                filters_figure(filters(net)), out / "f.png"
            ),
            "maps: resnet18, 1 image, 5 stages, 1024 tiles": lambda: save(
                maps_figure(feature_maps(net, x), "bench"), out / "m.png"
            ),
            "maps, render only (no forward pass)": lambda: save(
                maps_figure(grids, "bench"), out / "m2.png"
            ),
            "receptive fields: resnet50 IR, 175 nodes": lambda: receptive_fields(graph),
        }
        load_avg = os.getloadavg()[0]
        print(
            f"netspec show, median of {args.repeat}, {args.threads} torch thread(s), "
            f"{os.cpu_count()} cores, load average {load_avg:.1f}"
        )
        print("(on a loaded machine wall time exceeds CPU time: the goal is read on both)")
        print(f"{'case':48s} {'wall s':>8s} {'cpu s':>8s}  goal < 2 s")
        for name, work in cases.items():
            wall, cpu = timed(work, args.repeat)
            verdict = ""
            if name.startswith(("filters", "maps:")):
                verdict = f"wall {'ok' if wall < 2 else 'OVER'}, cpu {'ok' if cpu < 2 else 'OVER'}"
            print(f"{name:48s} {wall:8.3f} {cpu:8.3f}  {verdict}")


if __name__ == "__main__":
    main()
