"""How long mapping resnet50's weights takes (issue 21's goal: under a second).

Measures, side by side in one run: reading a torchvision-layout state dict of resnet50 from a
.pth file (torch.load, weights_only), mapping it onto zoo:resnet50 by structure, and applying
it to the built module; beside them, building the module itself (seeded initialization), as a
yardstick on this machine. The state dict is netspec's own resnet50 under torchvision's names
shape for shape (netspec never downloads), renamed so that nothing matches by name.

With --parity [NAME ...]: the parity figures per zoo spec with a torchvision twin instead (the
twin randomly initialised, its batch norms calibrated on one batch; see tests/helpers/twins.py):
the largest logit difference relative to the largest logit, netspec's module against the twin
in PyTorch, and `netspec export --weights` in ONNX Runtime against the twin; where the latter
passes 1e-4, the float32 floor beside it (the twin's float32 logits against float64). Needs
torchvision (`pip install --no-deps torchvision`).

    python tools/bench_weights.py [--repeat 5]
    python tools/bench_weights.py --parity [resnet18 inception_v3 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import netspec
from netspec.weights.mapper import map_weights
from netspec.weights.pretrained import TWINS
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
    parser.add_argument("--parity", nargs="*", metavar="NAME", help="parity figures per twin")
    args = parser.parse_args()
    if args.parity is not None:
        parity(args.parity or sorted(TWINS))
        return
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


def parity(names: list[str]) -> None:
    """Print, per zoo spec, its logits' largest relative difference from its torchvision twin's
    in PyTorch and in ONNX Runtime."""
    import contextlib
    import io

    from helpers.twins import (
        float32_floor,
        logits,
        mapped,
        onnx_logits,
        relative,
        sample,
        spec_graph,
        torchvision_models,
        twin,
    )

    models = torchvision_models()
    if models is None:
        raise SystemExit("--parity needs torchvision: pip install --no-deps torchvision")
    print("| spec | torchvision twin | params | torch | ONNX Runtime | torch fp32 vs fp64 |")
    print("|---|---|---|---|---|---|")
    for name in names:
        graph = spec_graph(name)
        ref = twin(models, name, graph.input.shape)
        model = mapped(graph, ref)
        x = sample(graph)
        want = logits(ref, x).numpy()
        with torch.no_grad():
            in_torch = relative(want, model.logits(x).numpy())
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            in_ort = relative(want, onnx_logits(name, model, x, Path(tmp)))
        floor = f"{float32_floor(ref, x):.1e}" if in_ort > 1e-4 else ""
        print(f"| {name} | {TWINS[name]} | {graph.totals.params:,} | {in_torch:.1e} | "
              f"{in_ort:.1e} | {floor} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
