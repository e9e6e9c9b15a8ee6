"""Blocks that call themselves, the running counter of a block's calls, and optional block calls
(issue 25, language items 1, 2 and 4)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from helpers.cpu import cpu_limit

import netspec
from netspec import explore as ex
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph
from netspec.serve.compile import compile_text

SPECS = Path(__file__).resolve().parents[1] / "specs"

# The zoo's U-Net before it was one recursive block: four levels written out by hand.
UNET_BY_LEVELS = """
network unet_levels
input [1, 256, 256]
classes 2 per pixel
block double(c) = CONV(c, 3) -> RELU -> CONV(c, 3) -> RELU
block up(c) = CONVTRANSPOSE(c, 2, stride=2)
INPUT
  -> double(64) as enc1
  -> concat(IDENTITY, POOL -> double(128) as enc2
     -> concat(IDENTITY, POOL -> double(256) as enc3
        -> concat(IDENTITY, POOL -> double(512) as enc4
           -> concat(IDENTITY, POOL -> double(1024) as bottleneck -> up(512) as up4)
           -> double(512) as dec4 -> up(256) as up3)
        -> double(256) as dec3 -> up(128) as up2)
     -> double(128) as dec2 -> up(64) as up1)
  -> double(64) as dec1
  -> CONV(2, 1) as head
  -> SOFTMAX
"""


def _layers(g: Graph) -> list[tuple]:
    """Each node's kind, arguments, shape and figures, and its inputs by position."""
    at = {n.id: i for i, n in enumerate(g.nodes)}
    return [
        (n.kind, n.args, n.shape, n.params, n.macs, tuple(at[i] for i in n.inputs)) for n in g.nodes
    ]


def _errors(text: str) -> list[NetspecError]:
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text).instantiate()
    return info.value.errors


# --- recursion ---------------------------------------------------------------------------------


def test_unet_is_one_recursive_block_with_the_hand_written_layers() -> None:
    rec = netspec.compile_spec(SPECS / "unet.ns")
    flat = load_spec_text(UNET_BY_LEVELS).instantiate()
    assert _layers(rec) == _layers(flat)
    assert (rec.totals.params, rec.totals.macs) == (31_030_658, 48_096_083_968)
    assert (flat.totals.params, flat.totals.macs) == (31_030_658, 48_096_083_968)
    text = (SPECS / "unet.ns").read_text()
    assert text.count("block level(") == 1 and "level(64, 4)" in text


def test_recursion_by_the_map_size_stops_where_the_shape_says() -> None:
    # The base case reads the input's height (the estimate cannot, the build does): a call
    # on an input over 8 pixels high makes one more level.
    g = netspec.compile_spec(
        "input [3, 64, 64]\n"
        "block down(c) = CONV(c, 3, stride=2) -> RELU -> down(2 * c)?(in.h > 8)\n"
        "INPUT -> down(8)"
    )
    assert [n.shape for n in g.nodes if n.kind == "conv"] == [
        (8, 32, 32),
        (16, 16, 16),
        (32, 8, 8),
        (64, 4, 4),
    ]


def test_an_hourglass_is_one_recursive_block() -> None:
    g = netspec.compile_spec(
        "input [16, 64, 64]\n"
        "block hourglass(c, depth) =\n"
        "  add(CONV(c, 3),\n"
        "      POOL -> CONV(c, 3) -> [hourglass(c, depth - 1)]?(depth > 1)\n"
        "      -> CONV(c, 3) -> UPSAMPLE(2))\n"
        "INPUT -> hourglass(16, 4) : [16, 64, 64]"
    )
    assert min(n.shape[1] for n in g.nodes) == 4  # four levels down: 64 / 2^4
    assert len([n for n in g.nodes if n.kind == "add"]) == 4


@pytest.mark.parametrize(
    ("blocks", "call"),
    [
        ("block f(c) = CONV(c) -> RELU -> f(c)", "f(8)"),  # no base case
        ("block f(d) = CONV(8) -> f(d + 1)?(d > 0)", "f(1)"),  # counts away from it
        ("block a(n) = CONV(8) -> b(n + 1)\nblock b(n) = RELU -> a(n)", "a(0)"),  # mutual
        ("block f(d) = CONV(8) -> f(d - 1)?(in.c > 0)", "f(0)"),  # a shape that never ends it
    ],
)
def test_endless_recursion_is_a_located_error_never_a_hang(blocks: str, call: str) -> None:
    with cpu_limit(5):
        errors = _errors(f"input [3, 32, 32]\n{blocks}\nINPUT -> {call} -> GAP")
    e = errors[-1]
    assert "calls itself" in e.message and "does not reach its base case" in e.message
    assert e.span is not None and e.span.line in (2, 3)
    assert "base case" in (e.hint or "") or "?(depth > 0)" in (e.hint or "")


def test_a_recursion_that_ends_but_is_too_large_is_refused_by_the_work_cap() -> None:
    with cpu_limit(5):
        errors = _errors(
            "input [3, 32, 32]\n"
            "block tree(d) = CONV(8) -> [add(tree(d - 1), tree(d - 1))]?(d > 0)\n"
            "INPUT -> tree(20) -> GAP"
        )
    e = errors[-1]
    assert "over netspec's limit of 220,000" in e.message
    assert e.span is not None and (e.span.line, e.span.col) == (3, 10)  # the call `tree(20)`


# --- the running counter -----------------------------------------------------------------------


def test_convnext_drop_rates_are_the_hand_worked_ones_block_by_block() -> None:
    g = netspec.compile_spec(SPECS / "convnext_tiny.ns")
    rates = [n.args["p"] for n in g.nodes if n.kind == "drop_path"]
    # The previous spec's offsets per stage, worked out by hand: bit for bit the same floats.
    by_hand = [
        0.1 * (start + i) / 17 for start, n in ((0, 3), (3, 3), (6, 9), (15, 3)) for i in range(n)
    ]
    assert rates == by_hand
    assert (g.totals.params, g.totals.macs) == (28_589_128, 4_455_531_264)
    assert "cnblock.index" in (SPECS / "convnext_tiny.ns").read_text()


def test_efficientnet_b0_counts_its_blocks_across_stages() -> None:
    g = netspec.compile_spec(SPECS / "efficientnet_b0.ns")
    assert g.totals.params == 5_288_548  # torchvision's
    assert round(g.totals.macs / 1e9, 3) == 0.386
    blocks = sorted(
        {n.id.split(".")[0] for n in g.nodes if n.id.startswith("mbconv")}, key=lambda s: int(s[6:])
    )
    assert len(blocks) == 16
    # torchvision: 0.2 * stage_block_id / 16, on the blocks with a skip only.
    rates = {n.id.split(".")[0]: n.args["p"] for n in g.nodes if n.kind == "drop_path"}
    skips = {n.id.split(".")[0] for n in g.nodes if n.kind == "add"}
    assert set(rates) == skips
    assert rates == {b: 0.2 * (int(b[6:]) - 1) / 16 for b in skips}


def test_a_count_that_depends_on_shapes_is_counted_again() -> None:
    # `s` calls `b` only where its input already has c channels: the text cannot tell.
    g = netspec.compile_spec(
        "input [3, 32, 32]\n"
        "block b(c) = CONV(c) -> DROPPATH(0.2 * b.index / b.count)\n"
        "block s(c) = b(c)?(in.c == c) -> b(c)\n"
        "INPUT -> [s(8) -> s(16)]*2 -> b(4)"
    )
    rates = [n.args["p"] for n in g.nodes if n.kind == "drop_path"]
    assert rates == pytest.approx([0.2 * k / 5 for k in range(5)])


def test_a_count_that_depends_on_itself_is_an_error() -> None:
    errors = _errors(
        "input [3, 32, 32]\nblock b(c) = CONV(c)\nINPUT -> b(8) -> b(8)?(b.count == 1) -> GAP"
    )
    assert "depends on `b.count` itself" in errors[-1].message
    assert errors[-1].span is not None and errors[-1].span.line == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("INPUT -> b(8) -> DROPPATH(b.index)", "`b.index` is read outside a call of `b`"),
        ("INPUT -> b(8) -> DROPPATH(0.1 * b.indx)", "a block has no `.indx`"),
        ("INPUT -> b(8) -> DROPPATH(0.1 * bb.count)", "`bb` is not a block of this spec"),
    ],
)
def test_counter_mistakes_are_located(text: str, message: str) -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec_text(f"input [3, 32, 32]\nblock b(c) = CONV(c)\n{text}").instantiate()
    e = info.value.errors[-1]
    assert message in e.message
    assert e.span is not None and e.span.line == 3 and e.span.col > 20


def test_light_builds_of_a_family_count_like_full_ones() -> None:
    # The counter is part of what an element does: a design-space build that reuses an
    # element's effect must not reuse it at another position of the counter.
    spec = load_spec_text(
        "input [3, 8, 8]\n"
        "n in 1..4\n"
        "block b(c) = CONV(c) -> DROPPATH(b.index / 3)\n"
        "INPUT -> b(4)*n -> GAP"
    )
    for n in (4, 2, 3, 1):
        light, _ = spec.instantiate({"n": n}, collect=True, light=True)
        full, _ = spec.instantiate({"n": n}, collect=True)
        assert (light is None) == (full is None) == (n == 4)  # DROPPATH(1.0) is refused
    exp = ex.explore(spec)
    assert [m.bindings["n"] for m in exp.members if m.valid] == [1, 2, 3]


# --- optional block calls ----------------------------------------------------------------------

OPTIONAL_CALL = "input [3, 8, 8]\nblock g(c=4) = CONV(c) -> RELU\n{bind}INPUT -> g? -> GAP\n"


def test_an_optional_call_is_a_switch_like_an_optional_layer() -> None:
    spec = load_spec_text(OPTIONAL_CALL.format(bind=""))
    assert spec.free["g"].switch
    with pytest.raises(SpecErrors, match=r"free parameters are not bound: `g` \(on\|off\)"):
        spec.instantiate()
    on, off = spec.instantiate({"g": True}), spec.instantiate({"g": "off"})
    assert on.totals.params == 3 * 4 * 9 + 4 and off.totals.params == 0


def test_an_optional_call_is_bound_in_the_spec() -> None:
    g = netspec.compile_spec(OPTIONAL_CALL.format(bind="g = off\n"))
    assert [n.kind for n in g.nodes] == ["input", "global_pool"]
    with pytest.raises(SpecErrors, match="`g` is defined twice"):
        load_spec_text("input [3, 8, 8]\nblock g(c=4) = CONV(c)\ng = off\nINPUT -> g -> GAP")


def test_explore_and_the_playground_see_an_optional_call() -> None:
    spec = load_spec_text(OPTIONAL_CALL.format(bind=""))
    exp = ex.explore(spec)
    assert sorted(m.bindings["g"] for m in exp.members if m.valid) == [False, True]
    page = compile_text(OPTIONAL_CALL.format(bind=""), "g=on", diagram=False)
    assert page["ok"] and page["free"] == ["g"]
    assert page["graph"]["totals"]["params"] == 3 * 4 * 9 + 4
    unbound = compile_text(OPTIONAL_CALL.format(bind=""), "", diagram=False)
    assert not unbound["ok"]
    assert unbound["errors"][0]["message"] == "free parameters are not bound: `g` (on|off)"


@pytest.mark.parametrize("light", [False, True])
def test_recursion_to_the_nesting_limit_with_deep_expressions_keeps_the_stack(light: bool) -> None:
    # 100 levels of the block (the most netspec nests), each with an expression 200 operators
    # deep: built, in full and light, without exhausting Python's stack; one more is refused.
    deep = "-" * 198 + "2"
    text = "input [4, 8, 8]\nblock f(d) = FC({}) -> f(d - 1)?(d > 0) as x\nINPUT -> f({}) as x\n"
    with cpu_limit(10):
        g = load_spec_text(text.format(deep, 99)).instantiate(light=light)
        assert g.totals.params == (4 * 8 * 8 * 2 + 2) + 99 * (
            2 * 2 + 2
        )  # FC(2) on the map, then on [2]
        with pytest.raises(SpecErrors, match="calls itself deeper than netspec expands"):
            load_spec_text(text.format(deep, 100)).instantiate(light=light)


def test_random_recursions_build_or_fail_located() -> None:
    """Recursive blocks put together at random (counting up or down, conditions on arguments
    or shapes, one or two recursive calls, counters read): each builds or fails with located
    errors, never a Python exception, and within a bounded time."""
    rng = random.Random(25)
    bodies = [
        "CONV(8) -> f({arg})?({cond})",
        "[concat(IDENTITY, POOL -> f({arg}) -> UPSAMPLE(2))]?({cond})",
        "add(IDENTITY, f({arg})?({cond}))",
        "[add(f({arg}), f({arg}))]?({cond})",
        "CONV(8) -> DROPPATH(0.5 * f.index / f.count) -> f({arg})?({cond})",
        "g({arg})?({cond})",
    ]
    args = ["d - 1", "d + 1", "d", "d // 2", "d - 2"]
    conds = ["d > 0", "d < 0", "in.h > 2", "in.c > 0", "d != 3", "d > 0 and in.h > 1"]
    for _ in range(40):
        body = rng.choice(bodies).format(arg=rng.choice(args), cond=rng.choice(conds))
        text = (
            "input [8, 16, 16]\n"
            f"block f(d) = {body}\n"
            f"block g(d) = RELU -> f({rng.choice(args)})?({rng.choice(conds)})\n"
            f"INPUT -> f({rng.randint(-2, 30)}) -> GAP\n"
        )
        with cpu_limit(10):
            try:
                load_spec_text(text).instantiate()
            except SpecErrors as e:
                assert all(err.span is not None for err in e.errors), text


def test_more_calls_than_the_text_tells_are_counted_by_building() -> None:
    # The repetition count reads the input's width: the text counts 1 call of `b` per `s`,
    # the build makes 4, then 2; with the walk's total the first rates would pass 1.
    g = netspec.compile_spec(
        "input [3, 8, 8]\n"
        "block b(c) = CONV(c) -> DROPPATH(0.5 * b.index / b.count)\n"
        "block s(c) = b(c)*(in.w // 2) -> POOL\n"
        "INPUT -> s(4) -> s(8)"
    )
    rates = [n.args["p"] for n in g.nodes if n.kind == "drop_path"]
    assert rates == pytest.approx([0.5 * k / 6 for k in range(6)])


def test_a_dotted_node_name_given_to_like_is_the_node_not_a_counter() -> None:
    g = netspec.compile_spec(
        "input [3, 16, 16]\nINPUT -> [CONV(4) -> RELU] as stem -> POOL -> UPSAMPLE(like=stem.conv1)"
    )
    assert g.nodes[-1].shape == (4, 16, 16)
