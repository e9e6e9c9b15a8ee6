"""Structure recovery (netspec.recover): a flat graph of layers back to the spec a person
would write. Pure: built by hand here, compiled by netspec to check the text means the graph."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netspec import compile_spec
from netspec.recover.graph import INPUT, ImportError_, Op, nest_concats, to_tree, walk
from netspec.recover.write import write_spec


def conv(i: str, src: str, c: int, cin: int, k: int = 3, s: int = 1) -> Op:
    args = (
        ("channels", c),
        ("kernel", k),
        ("stride", s),
        ("padding", k // 2),
        ("dilation", 1),
        ("groups", 1),
        ("bias", False),
    )
    return Op(i, "CONV", args, (src,), (f"{i}.w",), in_shape=(cin, 8, 8), shape=(c, 8, 8))


def act(i: str, src: str, c: int) -> Op:
    return Op(i, "RELU", (), (src,), in_shape=(c, 8, 8), shape=(c, 8, 8))


def test_vgg_like_stages_fold_into_nested_repetitions() -> None:
    ops, prev = [], INPUT
    for stage in range(2):
        for j in range(2):
            ops += [conv(f"c{stage}{j}", prev, 8, 8), act(f"r{stage}{j}", f"c{stage}{j}", 8)]
            prev = f"r{stage}{j}"
    text = write_spec(to_tree(ops, prev), "vgg", (8, 8, 8), "test").text
    assert "[CONV(8, 3) -> RELU]*4" in text
    assert "defaults CONV(bias=off)" in text  # most convs have no bias
    assert compile_spec(text).totals.params == 4 * 8 * 8 * 9


def test_residual_units_become_one_block_called_with_repetition() -> None:
    ops, prev = [], INPUT
    for b in range(3):
        ops += [
            conv(f"b{b}c1", prev, 8, 8),
            act(f"b{b}r", f"b{b}c1", 8),
            conv(f"b{b}c2", f"b{b}r", 8, 8),
        ]
        ops += [Op(f"b{b}add", "add", (), (f"b{b}c2", prev)), act(f"b{b}out", f"b{b}add", 8)]
        prev = f"b{b}out"
    written = write_spec(to_tree(ops, prev), "res", (8, 8, 8), "test")
    assert [b.name for b in written.blocks] == ["res"]
    assert "res*3" in written.text
    assert "residual(CONV(8, 3) -> RELU -> CONV(8, 3)) -> RELU" in written.text
    graph = compile_spec(written.text)
    assert [n.kind for n in graph.nodes].count("add") == 3


def test_varying_channels_become_block_parameters_and_multiples() -> None:
    ops, prev, cin = [], INPUT, 8
    for b, w in enumerate((4, 8)):
        ops += [conv(f"b{b}a", prev, w, cin, k=1), conv(f"b{b}b", f"b{b}a", 2 * w, w, k=1)]
        ops += [Op(f"b{b}j", "concat", (), (prev, f"b{b}b"))]
        prev, cin = f"b{b}j", cin + 2 * w
    text = write_spec(to_tree(ops, prev), "d", (8, 8, 8), "test").text
    assert "block mixed(c) =" in text or "block dense_layer(c) =" in text
    assert "CONV(2 * c, 1)" in text
    assert compile_spec(text).output_shape == (32, 8, 8)


def test_growing_concatenations_nest_into_a_chain() -> None:
    ops = [conv("a", INPUT, 4, 4), conv("b", "a", 4, 4)]
    ops += [Op("cat1", "concat", (), (INPUT, "a")), conv("b2", "cat1", 4, 8)]
    ops += [Op("cat2", "concat", (), (INPUT, "a", "b2"))]
    del ops[1]
    tree = to_tree(nest_concats(ops), "cat2")
    assert [op.id for op in walk(tree)] == ["a", "cat1", "b2", "cat2"]


def test_a_graph_that_is_no_chain_of_branches_is_refused_naming_the_node() -> None:
    ops = [conv("a", INPUT, 4, 4), conv("b", "a", 4, 4), conv("c", "a", 4, 4)]
    ops += [Op("d", "add", (), ("b", "c")), Op("e", "add", (), ("d", "b"))]  # b read twice
    with pytest.raises(ImportError_, match="node `b`"):
        to_tree(ops, "e")


def test_flat_writes_one_layer_a_line() -> None:
    ops = [conv("c1", INPUT, 8, 8), act("r1", "c1", 8), conv("c2", "r1", 8, 8), act("r2", "c2", 8)]
    text = write_spec(to_tree(ops, "r2"), "f", (8, 8, 8), "test", flat=True).text
    assert text.count("-> CONV") == 2 and "*" not in text


def test_the_writer_imports_neither_onnx_nor_torch() -> None:
    code = (
        "import sys\n"
        "from netspec.recover.graph import INPUT, Op, to_tree\n"
        "from netspec.recover.write import write_spec\n"
        "ops = [Op('r', 'RELU', (), (INPUT,), shape=(4,))]\n"
        "write_spec(to_tree(ops, 'r'), 'n', (4,), 'x')\n"
        "print([m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_join_too_long_for_a_line_gets_a_line_per_branch_with_repetitions_inside() -> None:
    ops, prev, cin = [], INPUT, 8
    for j in range(8):
        ops += [conv(f"c{j}", prev, 8 + j, cin), act(f"r{j}", f"c{j}", 8 + j)]
        prev, cin = f"r{j}", 8 + j
    ops += [conv("s1", INPUT, 8, 8, k=1), act("t1", "s1", 8), conv("s2", "t1", 8, 8, k=1)]
    ops += [act("t2", "s2", 8), Op("cat", "concat", (), (prev, "t2"))]
    text = write_spec(to_tree(ops, "cat"), "wide", (8, 8, 8), "test").text
    assert "  -> concat(\n       CONV(8, 3) -> RELU\n" in text
    assert "\n       [CONV(8, 1) -> RELU]*2)\n" in text
    assert compile_spec(text).output_shape == (23, 8, 8)
