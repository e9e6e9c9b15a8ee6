"""`netspec draw`: boxes and edges follow the IR; collapse keeps every subtotal; Graphviz lays
it out (the tests that run `dot` skip, saying so, where Graphviz is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers.skips import needs_dot

from netspec import draw
from netspec.errors import NetspecError
from netspec.ir.build import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SVG = "{http://www.w3.org/2000/svg}"


def graph(name: str):
    return load_spec(SPECS / f"{name}.ns").instantiate()


def svg_titles(svg: bytes) -> list[str]:
    """The node names in an SVG drawn by dot (each node is a <g class="node"> with a title)."""
    root = ET.fromstring(svg)
    return [
        g.find(f"{SVG}title").text
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "node" and g.find(f"{SVG}title") is not None
    ]


def test_one_box_per_layer_and_every_input_an_edge():
    g = graph("resnet18")
    d = draw.build(g)
    assert [b.key for b in d.boxes] == [n.id for n in g.nodes]
    expected = {(src, n.id) for n in g.nodes for src in n.inputs}
    assert set(d.edges) == expected
    # the residual skip is drawn: the block's input feeds its addition directly
    assert ("pool1", "layer1.basic1.add1") in d.edges
    assert ("layer1.basic2.relu2", "layer2.basic1.shortcut.conv1") in d.edges


def test_box_shows_name_kind_arguments_and_shape():
    g = graph("resnet18")
    source = draw.to_dot(draw.build(g))
    assert (
        "<B>conv1</B><BR/>CONV(64, kernel=7, stride=2, padding=3, bias=off)<BR/>64x112x112"
        in source
    )
    # scopes (named groups, block calls) are clusters, nested
    assert "subgraph cluster_layer1 {" in source
    assert 'subgraph "cluster_layer1.basic1" {' in source


def test_branches_are_branches_googlenet():
    g = graph("googlenet")
    d = draw.build(g, depth=2)
    concat = g.node("inception3a.concat1")
    branches = [f"inception3a.branch{i}" for i in range(1, 5)]
    assert len(concat.inputs) == 4
    assert [e for e in d.edges if e[1] == "inception3a.concat1"] == [
        (b, "inception3a.concat1") for b in branches
    ]
    assert {e[1] for e in d.edges if e[0] == "maxpool2"} == set(branches)


def test_implicit_layers_are_marked():
    g = load_spec_text(
        "input [1, 28, 28]\nclasses 10\nINPUT -> CONV(4) -> RELU -> FC(10) -> SOFTMAX"
    ).instantiate()
    implicit = [n.id for n in g.nodes if n.implicit]
    assert implicit == ["flatten1"]
    d = draw.build(g)
    box = next(b for b in d.boxes if b.key == "flatten1")
    assert box.implicit
    source = draw.to_dot(d)
    line = next(x for x in source.splitlines() if x.strip().startswith("flatten1 "))
    assert "dashed" in line and "(implicit)" in line
    other = next(x for x in source.splitlines() if x.strip().startswith("conv1 "))
    assert "dashed" not in other and "(implicit)" not in other


@pytest.mark.parametrize("name", ["resnet50", "resnet152", "googlenet", "vgg16"])
@pytest.mark.parametrize("depth", [None, 1, 2])
def test_collapse_keeps_every_layer_once_and_its_subtotals(name, depth):
    g = graph(name)
    d = draw.build(g, depth=depth, collapse=True)
    ids = [n.id for b in d.boxes for n in b.nodes]
    assert ids == [n.id for n in g.nodes]  # each layer in exactly one box, in order
    for metric, total in (("params", g.totals.params), ("macs", g.totals.macs)):
        assert sum(b.figure(metric) for b in d.boxes) == total


def test_collapse_fits_resnet152_on_a_page():
    g = graph("resnet152")
    d = draw.build(g, collapse=True)
    assert len(g.nodes) > 500 and len(d.boxes) <= 15
    layer3 = next(b for b in d.boxes if b.key == "layer3")
    nodes = [n for n in g.nodes if n.id.startswith("layer3.")]
    assert layer3.figure("params") == sum(n.params for n in nodes)
    label = draw._label(layer3, d)
    assert f"params {draw.compact(sum(n.params for n in nodes))}" in label
    assert f"MACs {draw.compact(sum(n.macs for n in nodes))}" in label
    # the collapsed groups' edges follow the chain
    assert ("layer2", "layer3") in d.edges and ("layer3", "layer4") in d.edges


def test_depth_keeps_scopes_down_to_n():
    g = graph("resnet50")
    keys = [b.key for b in draw.build(g, depth=2).boxes]
    assert "layer3.bottleneck6" in keys and "layer1" not in keys
    assert not any(k.count(".") > 1 for k in keys)
    with pytest.raises(NetspecError, match="--depth takes 1 or more"):
        draw.build(g, depth=0)


def test_unnamed_repetitions_fold_into_one_box():
    g = graph("vgg16")
    d = draw.build(g, collapse=True)
    first = d.boxes[1]
    assert first.kind == "repeat"
    assert [n.id for n in first.nodes] == ["conv1", "relu1", "conv2", "relu2"]
    assert first.detail == "[CONV(64) -> RELU] x2"
    # arguments that differ between the iterations (`for i`) show the kind only
    family = load_spec_text(
        "input [3, 32, 32]\nclasses 10\n"
        "INPUT -> [CONV(8 * 2**i) -> RELU]*3 for i -> FC(10) -> SOFTMAX"
    ).instantiate()
    boxes = draw.build(family, collapse=True).boxes
    assert boxes[1].detail == "[CONV -> RELU] x3"


def test_color_shades_by_share_with_a_legend():
    g = graph("resnet50")
    d = draw.build(g, collapse=True, color="macs")
    top = max(d.boxes, key=lambda b: b.figure("macs"))
    assert top.key == "layer3" and d.levels["layer3"] == 9
    assert d.levels["softmax1"] == 1  # no MACs: the lightest shade
    source = draw.to_dot(d)
    assert 'fillcolor="/oranges9/9"' in source
    assert "__legend__" in source and "macs</B><BR/>total 4.09G" in source
    with pytest.raises(NetspecError, match="--color takes one of"):
        draw.build(g, color="flops")


@needs_dot
def test_render_svg_png_and_dot():
    g = graph("googlenet")
    svg = draw.draw(g, "svg")
    assert sorted(svg_titles(svg)) == sorted(n.id for n in g.nodes)
    assert draw.draw(g, "png", collapse=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert draw.draw(g, "dot").decode() == draw.to_dot(draw.build(g))


@needs_dot
def test_fast_svg_has_the_same_boxes_and_edges():
    """The playground's SVG (Graphviz's own font metrics, no Pango) draws the same diagram."""
    g = graph("googlenet")
    source = draw.to_dot(draw.build(g, depth=2))
    plugins = draw.core_plugins(shutil.which("dot"))
    assert plugins is not None and any(p.name.startswith("config") for p in plugins.iterdir())
    fast, full = draw.render(source, "svg", fast=True), draw.render(source, "svg")
    assert fast != full  # really laid out differently (text measured without Pango)
    assert svg_titles(fast) == svg_titles(full)
    edges = [
        g_.find(f"{SVG}title").text
        for svg in (fast, full)
        for g_ in ET.fromstring(svg).iter(f"{SVG}g")
        if g_.get("class") == "edge"
    ]
    assert edges[: len(edges) // 2] == edges[len(edges) // 2 :]


def test_without_graphviz_a_clear_error(monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    g = graph("lenet5")
    with pytest.raises(NetspecError) as info:
        draw.draw(g, "svg")
    assert "`dot` program is not installed" in info.value.message
    assert "apt-get install graphviz" in info.value.hint
    assert draw.draw(g, "dot").startswith(b"digraph")  # DOT text needs no Graphviz


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netspec", *args], capture_output=True, text=True, cwd=ROOT
    )


@needs_dot
def test_cli_draws_svg(tmp_path):
    out = tmp_path / "g.svg"
    r = run_cli("draw", "specs/googlenet.ns", "-o", str(out), "--depth", "2", "--color", "params")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "64 boxes, 199 layers" in r.stdout
    titles = svg_titles(out.read_bytes())
    assert "inception4a.branch2" in titles and "__legend__" in titles


def test_cli_mistakes_exit_2_and_write_nothing(tmp_path):
    out = tmp_path / "net.xyz"
    r = run_cli("draw", "specs/googlenet.ns", "-o", str(out))
    assert r.returncode == 2 and "cannot tell the format" in r.stderr and not out.exists()
    bad = tmp_path / "bad.ns"
    bad.write_text("input [1, 8, 8]\nclasses 2\nINPUT -> CONVV(4) -> FC(2) -> SOFTMAX\n")
    out = tmp_path / "bad.svg"
    r = run_cli("draw", str(bad), "-o", str(out))
    assert r.returncode == 2 and not out.exists()
    assert "bad.ns:3:10: error: unknown layer `CONVV`" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_dot_without_graphviz(tmp_path):
    """`-o net.dot` writes the DOT text; the CLI never needs Graphviz for it."""
    from netspec.cli import main

    out = tmp_path / "net.dot"
    real = draw.shutil.which
    try:
        draw.shutil.which = lambda name: None  # type: ignore[assignment]
        assert main(["draw", str(SPECS / "lenet5.ns"), "-o", str(out)]) == 0
        assert main(["draw", str(SPECS / "lenet5.ns"), "-o", str(tmp_path / "n.svg")]) == 2
    finally:
        draw.shutil.which = real  # type: ignore[assignment]
    assert out.read_text().startswith("digraph lenet5")
    assert not (tmp_path / "n.svg").exists()


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.ns")), ids=lambda p: p.stem)
def test_every_zoo_spec_draws(path):
    """Every spec (a family at its first member) draws, in full and collapsed: each layer in
    one box, every input an edge between boxes or inside one."""
    spec = load_spec(path)
    g, _ = spec.instantiate({n: d.values[0] for n, d in spec.free.items()}, collect=True)
    assert g is not None
    for d in (draw.build(g), draw.build(g, collapse=True, color="memory")):
        owner = {n.id: b.key for b in d.boxes for n in b.nodes}
        assert sorted(owner) == sorted(n.id for n in g.nodes)
        expected = {(owner[s], owner[n.id]) for n in g.nodes for s in n.inputs}
        assert set(d.edges) == {e for e in expected if e[0] != e[1]}
        assert draw.to_dot(d).startswith("digraph")
    if shutil.which("dot") and len(g.nodes) < 1000:
        assert svg_titles(draw.draw(g, "svg", collapse=True))
