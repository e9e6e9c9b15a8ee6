"""How long mapping resnet50's weights takes (issue 21's goal: under a second).

Measures, side by side in one run: reading a torchvision-layout state dict of resnet50 from a
.pth file (torch.load, weights_only), mapping it onto zoo:resnet50 by structure, and applying
it to the built module; beside them, building the module itself (seeded initialization), as a
yardstick on this machine. The state dict is netspec's own resnet50 under torchvision's names
shape for shape (netspec never downloads), renamed so that nothing matches by name.

    python tools/bench_weights.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import netspec
from netspec.weights.mapper import map_weights
from netspec.weights.sources import read_source


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    graph = netspec.compile_spec("zoo:resnet50")
    model = netspec.build(graph, seed=0)
    layers: dict[str, str] = {}
    state = {}
    for key, value in model.state_dict().items():
        prefix, _, suffix = key.rpartition(".")
        state[f"{layers.setdefault(prefix, f'm{len(layers):03d}')}.{suffix}"] = value
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "resnet50.pth"
        torch.save(state, file)
        source = read_source(str(file))
        build = _median(lambda: netspec.build(graph, seed=0), args.repeat)
        read = _median(lambda: read_source(str(file)), args.repeat)
        mapping = map_weights(graph, source)
        match = _median(lambda: map_weights(graph, source), args.repeat)
        apply = _median(lambda: mapping.apply(model), args.repeat)
    total = read + match + apply
    print(f"resnet50: {len(mapping.entries)} layers with weights, {graph.totals.params:,} params")
    print(f"  read .pth       {read * 1000:8.1f} ms")
    print(f"  map (structure) {match * 1000:8.1f} ms")
    print(f"  apply           {apply * 1000:8.1f} ms")
    print(f"  total           {total * 1000:8.1f} ms  (goal: under 1000 ms)")
    print(
        f"  yardstick: building the module {build * 1000:.1f} ms; total / build = {total / build:.2f}"
    )


if __name__ == "__main__":
    main()
