"""The modern zoo (issue 9): each spec held to its hand-written torch reference.

The ground truth is `tests/helpers/modern_refs.py` (modules mirroring torchvision's source, built by
hand because torchvision does not install here) and its MAC counter, which follows torchvision's
"GFLOPS" convention (multiply-adds). Each spec in `MODERN` must have:

- exactly the reference's parameter count, and exactly the MACs `count_macs` counts on it;
- the reference's computation: with the reference's weights loaded layer by layer (the same
  shapes, trailing 1-dims aside), the same logits.

The published figures (torchvision's params exactly, its GMACs within 0.5%) live once in
`netspec/zoo.py`'s PUBLISHED, which tests/test_zoo.py holds every spec to; the torch build equal
to the IR at every node and ONNX Runtime parity at batch 1 and 2 come with every spec in specs/
(tests/test_lower_torch.py, tests/test_onnx.py).

To add a network: its spec in specs/, its reference builder in tests/helpers/modern_refs.py named like
the spec (and known to helpers/published.py's `run`), its published figures in netspec/zoo.py (if
any), and a row here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import helpers.modern_refs as R
import pytest
import torch
from helpers.parity import rel_error
from helpers.published import assert_gmacs, run

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
    "mobilenet_v3_large": "torchvision's MobileNetV3-Large (its _make_divisible SE widths)",
    "mobilenet_v3_small": "torchvision's MobileNetV3-Small",
    "unet": "the paper's U-Net with padded convs (Ronneberger et al. 2015), 1x256x256",
}


@functools.cache
def graph(name: str) -> Graph:
    return netspec.compile_spec(SPEC_DIR / f"{name}.ns")


def squeezed(shape: torch.Size) -> tuple[int, ...]:
    """A weight's shape with trailing 1-dims dropped: a per-position Linear [out, in] and its 1x1
    convolution [out, in, 1, 1] read alike."""
    dims = list(shape)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


@pytest.mark.parametrize("name", sorted(MODERN))
def test_params_and_macs_equal_the_reference(name: str) -> None:
    g, ref = graph(name), run(name)
    assert (g.totals.params, g.totals.macs) == (ref.params, ref.macs)


def test_every_reference_figure_is_a_references() -> None:
    """A figure `netspec zoo` calls the reference's (nothing published) is a reference's here."""
    assert {n for n, p in PUBLISHED.items() if p.reference} <= set(MODERN)


@pytest.mark.parametrize("name", sorted(MODERN))
def test_published_figures_agree_with_the_reference(name: str) -> None:
    # tests/test_zoo.py holds the spec to these; here, they must be the reference's too.
    published, ref = PUBLISHED[name], run(name)
    assert published.params == ref.params
    assert published.gmacs is not None
    assert round(ref.macs / 1e9, len(published.gmacs.split(".")[1])) == float(published.gmacs)


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


# --- the same network: the reference's weights loaded into the spec's module -------------------


def reference_keys(name: str, keys: list[str]) -> list[str]:
    """The reference's state_dict keys in the order of the spec's layers. ConvNeXt's block holds
    `layer_scale` itself, so torch lists it before the block's layers; it comes after them."""
    if name != "convnext_tiny":
        return keys
    out: list[str] = []
    held: dict[str, str] = {}
    for key in keys:
        if key.endswith(".layer_scale"):
            held[key.rsplit(".", 1)[0]] = key
            continue
        out.append(key)
        if key.endswith(".block.5.bias"):  # the block's last layer
            out.append(held.pop(key.rsplit(".", 3)[0]))
    assert not held
    return out


@pytest.mark.parametrize("name", sorted(MODERN))
def test_the_spec_computes_the_reference(name: str) -> None:
    """With the reference's weights, layer by layer in order, the spec's module gives the
    reference's logits (eval mode): the spec is that network, not only its counts."""
    torch.manual_seed(0)
    ref = getattr(R, name)().eval()
    ours = build(graph(name)).eval()
    theirs = randomized(ref.state_dict())
    mine = ours.state_dict()
    order = reference_keys(name, list(theirs))
    assert len(order) == len(mine)
    loaded = {}
    for key, their_key in zip(mine, order, strict=True):
        assert squeezed(mine[key].shape) == squeezed(theirs[their_key].shape), (key, their_key)
        loaded[key] = theirs[their_key].reshape(mine[key].shape)
    ours.load_state_dict(loaded)
    x = torch.randn(1, *graph(name).input.shape, generator=torch.Generator().manual_seed(1))
    ref.load_state_dict(theirs)
    with torch.no_grad():
        want = ref(x)
        assert rel_error(ours.logits(x).numpy(), want.numpy()) <= 1e-4
        assert want.std() > 1e-3  # a network that computes something


def randomized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel tensors drawn away from their initial values (batch norm statistics, norm
    and layer-scale weights, biases), so that every layer's part shows in the output: at its
    initial 1e-6, ConvNeXt's layer scale would hide each block's branch."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("running_var", "layer_scale") or (leaf == "weight" and value.ndim == 1):
            value = torch.rand(value.shape, generator=gen) + 0.5
        elif leaf in ("running_mean", "bias"):
            value = torch.randn(value.shape, generator=gen) * 0.2
        out[key] = value
    return out


# --- googlenet_aux: side heads -------------------------------------------------------------


def test_googlenet_aux_is_the_reference_with_its_heads() -> None:
    """13,004,888 params in all (tests/helpers/modern_refs.py's GoogLeNet with aux_logits=True), the
    main path torchvision's published googlenet: 6,624,904 params, 1.50 GMACs; the heads'
    MACs only in the training totals."""
    g = graph("googlenet_aux")
    ref = R.googlenet(aux_logits=True)
    assert g.totals.params == R.n_params(ref) == 13_004_888
    assert g.main_totals is not None
    main = run("googlenet")  # the reference without its heads, forwarded and counted
    assert (g.main_totals.params, g.main_totals.macs) == (main.params, main.macs)
    assert_gmacs(g.main_totals.macs, "1.50")
    heads = {h.name: (h.at, g.node(h.output).shape) for h in g.heads}
    assert heads == {
        "aux1": ("inception4a.concat1", (1000,)),
        "aux2": ("inception4d.concat1", (1000,)),
    }
    per_head = {name: sum(n.params for n in g.nodes if g.head_of(n.id) == name) for name in heads}
    assert per_head == {"aux1": 3_188_968, "aux2": 3_191_016}
    ref.train()
    with torch.no_grad(), R.count_macs(ref) as counter:
        ref(torch.zeros(2, 3, 224, 224))
    assert g.totals.macs == counter.macs == 1_506_748_416  # train mode: the heads run


def test_googlenet_aux_train_mode_outputs_equal_the_reference() -> None:
    """The reference's weights moved onto ours (state_dicts align once torchvision's aux heads,
    registered before `fc`, are moved after it), dropout off: the main logits and both heads'
    equal the reference's (logits, aux_logits2, aux_logits1) in training mode (batch
    statistics), and the eval-mode output is the main head alone."""
    g = graph("googlenet_aux")
    torch.manual_seed(0)
    ref = R.googlenet(aux_logits=True)
    model = build(g)
    state = ref.state_dict()
    order = [k for k in state if not k.startswith("aux")] + [
        k for k in state if k.startswith("aux")
    ]
    ours = model.state_dict()
    assert [tuple(state[k].shape) for k in order] == [tuple(v.shape) for v in ours.values()]

    def transplant() -> None:
        state = ref.state_dict()
        model.load_state_dict(dict(zip(ours, (state[k] for k in order), strict=True)))

    transplant()
    for m in [*model.modules(), *ref.modules()]:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = torch.randn(2, 3, 224, 224)
    model.train()
    ref.train()
    with torch.no_grad():
        want = ref(x)
        got = model.all_logits(x)
        assert got._fields == ("logits", "aux1", "aux2")
        for a, b in (
            (got.logits, want.logits),
            (got.aux1, want.aux_logits1),
            (got.aux2, want.aux_logits2),
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        outputs = model(x)
        torch.testing.assert_close(
            outputs.output, torch.softmax(want.logits, 1), rtol=1e-4, atol=1e-5
        )
        model.eval()
        ref.eval()
        transplant()  # our second train-mode pass moved the running statistics once more
        torch.testing.assert_close(model(x), torch.softmax(ref(x), 1), rtol=1e-4, atol=1e-5)


# --- a family over width multipliers: explore ----------------------------------------------


def _mobilenet_v3_large_at(width: float) -> torch.nn.Module:
    """The reference at torchvision's `width_mult`: every width make_divisible(w * width, 8)."""

    def adjust(c: int) -> int:
        return R._make_divisible(c * width, 8)

    setting = [
        R.Bneck(
            adjust(b.cin),
            b.kernel,
            adjust(b.expanded),
            adjust(b.cout),
            b.use_se,
            b.activation,
            b.stride,
        )
        for b in R.MOBILENET_V3_LARGE
    ]
    return R.MobileNetV3(setting, adjust(1280))


def test_explore_a_width_family_member_by_member() -> None:
    """`explore` over specs/mobilenet_family.ns: every member valid, each member's params and
    MACs those of the reference built at its width; width 1.0 is mobilenet_v3_large."""
    from netspec import explore as ex
    from netspec.ir.build import load_spec

    spec = load_spec(SPEC_DIR / "mobilenet_family.ns")
    exp = ex.explore(spec)
    assert len(exp.members) == 3 and len(exp.valid) == 3
    assert all(m.verified for m in exp.front)
    for m in exp.members:
        ref = _mobilenet_v3_large_at(float(m.bindings["width"])).eval()
        with torch.no_grad(), R.count_macs(ref) as counter:
            ref(torch.zeros(1, 3, 224, 224))
        assert (m.params, m.macs) == (R.n_params(ref), counter.macs), m.label()
    full = next(m for m in exp.members if m.bindings["width"] == 1.0)
    assert (full.params, full.macs) == (5_483_032, 216_589_760)
    text, member, g = ex.pick(spec, 2)  # width 0.75, written as a plain spec
    assert "width = 0.75" in text and g.totals.params == member.params
