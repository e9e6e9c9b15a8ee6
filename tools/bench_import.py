"""Benchmark of `netspec import` (issue 22's goals), printed as tables:

1. Round trip of the zoo: each spec exported to ONNX by netspec and imported back; the same
   layer sequence (kinds and shapes, dropout aside), the same params and MACs, outputs within
   1e-5, and the imported spec's line count over the hand-written one's (goal <= 1.5x).
2. Coverage of torchvision's classification and segmentation models (exported by torch.onnx,
   batch norms folded): imported exactly, or the first node that stops them; with the line
   counts of resnet50, mobilenet_v2 and densenet121 (goal <= 30 each).
3. The time to import resnet152 from ONNX in one process (goal < 2 s): read, recover, write,
   compile and name the weights, then the output check on its own.

    python tools/bench_import.py [--zoo-only] [--models resnet50,densenet121]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

from netspec import compile_spec
from netspec.cli import main as cli
from netspec.deploy.importer.pipeline import import_onnx, ort_runner, verify_outputs
from netspec.deploy.importer.sources import import_any
from netspec.errors import NetspecError
from netspec.zoo import names, path_of

SKIP_KINDS = {"dropout", "identity", "drop_path"}
CLASSIFICATION = [
    "alexnet",
    "vgg11",
    "vgg16",
    "vgg11_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "squeezenet1_0",
    "squeezenet1_1",
    "densenet121",
    "densenet161",
    "densenet169",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mnasnet0_5",
    "mnasnet1_0",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "efficientnet_b1",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "convnext_tiny",
]
SEGMENTATION = [
    "fcn_resnet50",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]
STRUCTURE_GOALS = {"resnet50": 30, "mobilenet_v2": 30, "densenet121": 30}


def sequence(graph) -> list[tuple[str, tuple[int, ...]]]:
    return [(n.kind, n.shape) for n in graph.nodes if n.kind not in SKIP_KINDS]


def canonical(seq: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
    """The sequence as ONNX can hold it: ONNX has no adaptive pooling, so an
    ADAPTIVEAVGPOOL(1) -> FLATTEN exports as GlobalAveragePool + Flatten (read back as GAP) and
    any other ADAPTIVEAVGPOOL as an AveragePool (read back as AVGPOOL); and no depthwise conv
    apart from a Conv whose groups are its channels (read back as DWCONV, however written)."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for kind, shape in seq:
        kind = "conv" if kind == "dwconv" else kind
        if kind == "flatten" and out and out[-1] == ("adaptive_avg_pool", (*shape, 1, 1)):
            out[-1] = ("global_pool", shape)
        elif kind == "adaptive_avg_pool":
            out.append(("pool" if shape[1:] != (1, 1) else "adaptive_avg_pool", shape))
        else:
            out.append((kind, shape))
    return out


def code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def zoo_round_trip(folder: Path) -> None:
    print("Round trip of the zoo (netspec export -> netspec import); seq yes*: equal as ONNX")
    print("holds it (no adaptive pooling, no depthwise kind in ONNX); side heads (training only,")
    print("not exported) left out; lines: non-blank, imported/hand-written")
    print(
        f"{'spec':22} {'layers':>7} {'seq':>4} {'params':>6} {'MACs':>5} {'outputs':>8} "
        f"{'lines':>11} {'ratio':>5}"
    )
    for name in names():
        try:
            original = compile_spec(f"zoo:{name}").main_path()  # side heads: training only
        except NetspecError:
            print(
                f"{name:22} does not compile as written (by design: a failing table or a "
                "design space)"
            )
            continue
        onnx_path = folder / f"{name}.onnx"
        with _quiet():
            rc = cli(["export", f"zoo:{name}", "-o", str(onnx_path)])
        if rc != 0:
            print(f"{name:22} export refused (rc {rc})")
            continue
        try:
            imported = import_any(str(onnx_path))
        except NetspecError as e:
            print(f"{name:22} FAILED: {e.message[:100]}")
            continue
        seq = sequence(imported.graph) == sequence(original)
        same = canonical(sequence(imported.graph)) == canonical(sequence(original))
        checks = {what: ok for what, ok, _ in imported.checks}
        mine = code_lines(imported.written.text)
        hand = code_lines(path_of(name).read_text())
        macs = imported.graph.totals.macs == original.totals.macs
        params = imported.graph.totals.params == original.totals.params
        print(
            f"{name:22} {len(sequence(original)):7} {'yes' if seq else 'yes*' if same else 'NO':>4} {_yn(params):>6} "
            f"{_yn(macs):>5} {_yn(checks.get('outputs', False)):>8} "
            f"{mine:5}/{hand:<5} {mine / hand:5.2f}"
        )
        if not same:
            a, b = sequence(imported.graph), sequence(original)
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            print(
                f"{'':22} first difference at layer {first}: imported "
                f"{a[first] if first < len(a) else '-'} vs {b[first] if first < len(b) else '-'}"
            )


def torchvision_coverage(folder: Path, names: list[str]) -> None:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("meta"))
    import torch
    import torchvision

    print("\nCoverage: torchvision models exported by torch.onnx (opset 17, eval, BN folded)")
    print(f"{'model':30} {'result':8} {'lines':>5}  detail")
    exact = 0
    for name in names:
        seg = name in SEGMENTATION
        factory = getattr(torchvision.models.segmentation if seg else torchvision.models, name)
        kwargs = {"weights": None, "weights_backbone": None} if seg else {"weights": None}
        if seg:
            kwargs["aux_loss"] = False
        size = 299 if name == "inception_v3" else 224
        path = folder / f"tv_{name}.onnx"
        try:
            with _quiet():
                net = factory(**kwargs).eval()
                if seg:
                    net = _SegOut(net)
                torch.onnx.export(
                    net, (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17
                )
        except Exception as e:  # noqa: BLE001 (an export torch refuses is reported, not fatal)
            print(f"{name:30} {'export':8} {'':>5}  torch.onnx refused: {str(e)[:70]}")
            continue
        try:
            imported = import_any(str(path))
        except NetspecError as e:
            print(f"{name:30} {'stops':8} {'':>5}  {e.message[:110]}")
            continue
        ok = imported.ok
        exact += ok
        lines = code_lines(imported.written.text)
        goal = STRUCTURE_GOALS.get(name)
        note = f"goal <= {goal}: {'met' if lines <= goal else 'MISSED'}" if goal else ""
        print(f"{name:30} {'exact' if ok else 'MISMATCH':8} {lines:5}  {note}")
    print(f"imported exactly: {exact} of {len(names)}")


class _SegOut:
    """A segmentation model's `out` tensor (torchvision returns a dict)."""

    def __new__(cls, net):  # a real nn.Module, built here so torch loads only when used
        import torch

        class Out(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)["out"]

        return Out()


def resnet152_time(folder: Path) -> None:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("meta"))
    import torch
    import torchvision

    path = folder / "tv_resnet152.onnx"
    if not path.exists():
        with _quiet():
            torch.onnx.export(
                torchvision.models.resnet152(weights=None).eval(),
                (torch.randn(1, 3, 224, 224),),
                str(path),
                dynamo=False,
                opset_version=17,
            )
    import_onnx(path)  # once to load the modules the import needs (lark, the IR, numpy)
    start, cpu = time.perf_counter(), time.process_time()
    imported = import_onnx(path)
    mid, cpu = time.perf_counter(), time.process_time() - cpu
    verify_outputs(imported, ort_runner(__import__("onnx").load(str(path))), batch=1)
    end = time.perf_counter()
    lines = code_lines(imported.written.text)
    print(
        f"\nresnet152 from ONNX: import {mid - start:.2f} s wall, {cpu:.2f} s CPU (goal < 2 s; "
        f"read, recover, write, compile, weights), output check {end - mid:.2f} s more; "
        f"{lines} lines; {'exact' if imported.ok else 'MISMATCH'}"
    )


def _yn(ok: bool) -> str:
    return "yes" if ok else "NO"


class _quiet:
    """Silence torch's and the CLI's chatter around a call."""

    def __enter__(self):
        self._out, self._err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.StringIO()
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._out, self._err
        self._w.__exit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-only", action="store_true")
    parser.add_argument("--models", default=",".join(CLASSIFICATION + SEGMENTATION))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        zoo_round_trip(folder)
        if args.zoo_only:
            return
        torchvision_coverage(folder, args.models.split(","))
        resnet152_time(folder)


if __name__ == "__main__":
    main()
