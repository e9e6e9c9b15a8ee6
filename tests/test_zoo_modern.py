"""The modern zoo (issue 9): each spec held to its hand-written torch reference.

The ground truth is `tests/modern_refs.py` (modules mirroring torchvision's source, built by
hand because torchvision does not install here) and its MAC counter, which follows torchvision's
"GFLOPS" convention (multiply-adds). Each spec in `MODERN` must have:

- exactly the reference's parameter count, and exactly the MACs `count_macs` counts on it;
- the reference's weights: the same multiset of weight shapes (trailing 1-dims dropped, so a
  per-position Linear [out, in] and its 1x1 convolution [out, in, 1, 1] read alike).

The published figures (torchvision's params exactly, its GMACs within 0.5%) live once in
`netspec/zoo.py`'s PUBLISHED, which tests/test_zoo.py holds every spec to; the torch build equal
to the IR at every node and ONNX Runtime parity at batch 1 and 2 come with every spec in specs/
(tests/test_lower_torch.py, tests/test_onnx.py).

To add a network: its spec in specs/, its reference builder in tests/modern_refs.py named like
the spec (and known to test_modern_refs' `run`), its published figures in netspec/zoo.py (if
any), and a row here.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import modern_refs as R
import pytest
import torch
from test_modern_refs import run

import netspec
from netspec.backends.lower_torch import build
from netspec.ir.graph import Graph
from netspec.zoo import PUBLISHED

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs"

# spec name: what the reference is (its builder in modern_refs is named like the spec).
MODERN: dict[str, str] = {
    "resnext50_32x4d": "torchvision's ResNet with groups=32, width_per_group=4",
    "wide_resnet50_2": "torchvision's ResNet with width_per_group=128",
    "convnext_tiny": "torchvision's ConvNeXt, stochastic depth 0.1, layer scale 1e-6",
    # Not new: the machinery checked on a network test_zoo already holds.
    "resnet50": "torchvision's ResNet-50",
}


@functools.cache
def graph(name: str) -> Graph:
    return netspec.compile_spec(SPEC_DIR / f"{name}.ns")


def weight_shapes(state: dict[str, torch.Size] | dict[str, tuple[int, ...]]) -> Counter:
    """The multiset of weight shapes, trailing 1-dims dropped; running statistics left out."""
    out: Counter = Counter()
    for key, shape in state.items():
        if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        dims = list(shape)
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()
        out[tuple(dims)] += 1
    return out


@pytest.mark.parametrize("name", sorted(MODERN))
def test_params_and_macs_equal_the_reference(name: str) -> None:
    g, ref = graph(name), run(name)
    assert (g.totals.params, g.totals.macs) == (ref.params, ref.macs)


@pytest.mark.parametrize("name", sorted(MODERN))
def test_published_figures_agree_with_the_reference(name: str) -> None:
    # tests/test_zoo.py holds the spec to these; here, they must be the reference's too.
    published, ref = PUBLISHED[name], run(name)
    assert published.params == ref.params
    assert published.gmacs is not None
    assert round(ref.macs / 1e9, len(published.gmacs.split(".")[1])) == float(published.gmacs)


@pytest.mark.parametrize("name", sorted(MODERN))
def test_weights_have_the_reference_shapes(name: str) -> None:
    g = graph(name)
    ref = getattr(R, name)()  # the builder named like the spec
    ours = {k: tuple(v.shape) for k, v in build(g).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert weight_shapes(ours) == weight_shapes(theirs)


# --- per-network checks ------------------------------------------------------------------------


def test_convnext_blocks_follow_torchvision() -> None:
    g = graph("convnext_tiny")
    # Stochastic depth grows linearly over the 18 blocks: block i drops with 0.1 * i / 17.
    rates = [n.args["p"] for n in g.nodes if n.kind == "drop_path"]
    assert rates == pytest.approx([0.1 * i / 17 for i in range(18)])
    assert {n.args["eps"] for n in g.nodes if n.kind == "layernorm"} == {1e-6}
    assert {n.args["init"] for n in g.nodes if n.kind == "layer_scale"} == {1e-6}
    assert {n.args["approximate"] for n in g.nodes if n.kind == "gelu"} == {"none"}
    # A block: 8 c^2 + 58 c parameters (79,296 at c = 96); the first stage 237,888.
    stage1 = sum(n.params for n in g.nodes if n.id.startswith("stage1."))
    assert stage1 == 3 * (8 * 96**2 + 58 * 96) == 237_888


@pytest.mark.parametrize(("name", "groups"), [("resnext50_32x4d", 32), ("wide_resnet50_2", 1)])
def test_bottleneck_widths_and_groups(name: str, groups: int) -> None:
    g = graph(name)
    grouped = [n for n in g.nodes if n.kind == "conv" and n.args["kernel"] == 3]
    assert {n.args["groups"] for n in grouped} == {groups}
    assert sorted({n.shape[0] for n in grouped}) == [128, 256, 512, 1024]
    # A projection shortcut in the first block of each stage, and only there.
    shortcuts = [n.id for n in g.nodes if n.id.endswith(".shortcut.conv1")]
    assert shortcuts == [f"layer{s}.bottleneck1.shortcut.conv1" for s in range(1, 5)]
