"""The zoo by name and output that never cuts a number, through the real command line.

Every zoo spec is checked with stdout to a file and COLUMNS=80 (a CI log, `> out.txt`): each
layer's output shape, memory, params and MACs, and every total, must appear whole on its row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import run_cli
from helpers.cpu import HANG_S
from helpers.graphs import spec_graph

import netspec
from netspec.ir.graph import Graph
from netspec.layers import fmt_shape
from netspec.summary import totals_rows
from netspec.weights.pretrained import for_spec
from netspec.zoo import PUBLISHED, names, path_of

ROOT = Path(__file__).resolve().parents[1]


def netspec_cli(*args: str, columns: int = 80, stdout: Path | None = None):
    """Run the CLI with COLUMNS set; stdout to a pipe, or to a file (then read back)."""
    env = {**os.environ, "COLUMNS": str(columns)}
    cmd = [sys.executable, "-m", "netspec", *args]
    if stdout is None:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=HANG_S, cwd=ROOT, env=env
        )
    with stdout.open("w") as f:
        proc = subprocess.run(
            cmd, stdout=f, stderr=subprocess.PIPE, text=True, timeout=HANG_S, cwd=ROOT, env=env
        )
    proc.stdout = stdout.read_text()
    return proc


def free_bindings(name: str) -> list[str]:
    from netspec.ir.build import load_spec

    spec = load_spec(path_of(name))
    return [f"{k}={_word(d.values[0])}" for k, d in spec.free.items()]


def _word(value: object) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def assert_whole(graph: Graph, out: str) -> None:
    """Every per-layer figure on its layer's row, every total, as whole tokens."""
    rows = {}
    for line in out.splitlines():
        first = line.split(" ", 1)[0]
        rows.setdefault(first, line)
    for node in graph.nodes:
        line = rows.get(node.id)
        assert line is not None, f"no row for {node.id}"
        tokens = line.split()
        assert "…" not in line and "..." not in line, line
        assert fmt_shape(node.shape) in tokens, (node.id, line)
        for figure in (node.memory, node.params, node.macs):
            assert (f"{figure:,}" if figure else "-") in tokens, (node.id, figure, line)
    t = graph.totals
    tokens = out.split()
    for figure in (t.params, t.buffers, t.macs, t.flops, t.memory_elements, t.memory_bytes):
        assert f"{figure:,}" in tokens, figure


@pytest.mark.parametrize("name", names())
def test_check_never_cuts_a_number(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"  # `netspec check zoo:NAME > out.txt` at COLUMNS=80
    proc = netspec_cli("check", f"zoo:{name}", *free_bindings(name), stdout=out)
    assert "Traceback" not in proc.stderr
    graph = spec_graph(path_of(name))
    assert graph is not None
    assert proc.returncode == (0 if graph.budgets_ok and name != "alexnet_table" else 2)
    assert_whole(graph, proc.stdout)


def test_the_zoo_spec_that_cut_most_before() -> None:
    # The example: `netspec check specs/resnet50.ns > out.txt` cut 248 cells,
    # `118,01…` among them; VGG16 printed `1,849,688,0…`.
    out = netspec_cli("check", "specs/vgg16.ns").stdout
    assert "1,849,688,064" in out.split()
    assert not re.search(r"\d…", out)


def test_a_narrow_terminal_folds_or_drops_the_description_before_any_number() -> None:
    from netspec.summary import summary

    graph = netspec.compile_spec("zoo:resnet50")
    for width in (40, 80, 120, 150):
        text = summary(graph, width=width)
        assert_whole(graph, text)
        natural = summary(graph)
        table = [ln for ln in text.splitlines()[2:] if ln][: len(graph.nodes) + 2]
        if max(map(len, natural.splitlines()[2:])) > width:
            # Narrower than the natural table: descriptions fold onto more lines or go.
            assert len(text.splitlines()) > len(natural.splitlines()) or "kind" not in table[0]
    # The natural table is 164 columns; at 150 the description column folds and stays.
    folded = summary(graph, width=150).splitlines()
    assert "kind" in folded[2]
    assert "padding=3, bias=off)" in [ln.strip() for ln in folded]  # conv1's, on its own line
    assert max(len(ln) for ln in folded[2 : 4 + len(graph.nodes)]) <= 150


def test_zoo_names_work_in_every_command_that_takes_a_spec() -> None:
    proc = netspec_cli("check", "zoo:mnist_cnn", "--brief")
    assert proc.returncode == 0, proc.stderr
    assert "7,135" in proc.stdout.split()
    # Every command reads its spec argument through the zoo: a misspelt name is the zoo's error.
    for command in ("export", "train", "eval", "bench", "explore", "draw", "serve"):
        proc = run_cli(command, "zoo:mnist_cnnn")  # in this process: torch imported once
        assert proc.returncode == 2, (command, proc.stderr)
        assert "no spec named `mnist_cnnn` in the zoo" in proc.stderr, command
        assert "did you mean `mnist_cnn`" in proc.stderr, command


def test_export_takes_a_zoo_name(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = run_cli("export", "zoo:mnist_cnn", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_an_unknown_zoo_name_is_an_error_with_a_hint() -> None:
    proc = netspec_cli("check", "zoo:resnt50")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no spec named `resnt50` in the zoo" in proc.stderr
    assert "`resnet50`" in proc.stderr


def test_netspec_zoo_lists_published_beside_computed() -> None:
    proc = netspec_cli("zoo", "--wide")
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()[2:]}
    assert sorted(lines) == [f"zoo:{n}" for n in names()]
    for name, pub in PUBLISHED.items():
        line = lines[f"zoo:{name}"]
        computed = netspec.compile_spec(f"zoo:{name}").totals.params
        agree, pretrained = line.split()[-2:]  # the last columns: agree, pretrained weights
        assert pretrained == (",".join(w.name for w in for_spec(name)) or "-"), line
        if pub.reference:  # no published figure: the torch reference's, never shown as published
            assert line.split().count(f"{pub.params:,}") == 1 and agree == "reference", line
            assert f"{pub.gmacs}G" not in line.split()
            continue
        assert line.split().count(f"{pub.params:,}") == (2 if computed == pub.params else 1)
        assert agree == "yes", line
        if pub.gmacs:
            assert f"{pub.gmacs}G" in line.split()
    assert "check fails" in lines["zoo:alexnet_table"]
    assert lines["zoo:unet"].split()[-2:] == ["reference", "-"]  # issue 25: it said "yes"
    assert lines["zoo:resnet50"].split()[-1] == "IMAGENET1K_V2,IMAGENET1K_V1"


def test_format_csv_has_raw_numbers_per_layer() -> None:
    graph = netspec.compile_spec("zoo:resnet18")
    proc = netspec_cli("check", "zoo:resnet18", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["layer"] for r in rows] == [n.id for n in graph.nodes]
    assert [int(r["params"]) for r in rows] == [n.params for n in graph.nodes]
    assert [int(r["macs"]) for r in rows] == [n.macs for n in graph.nodes]
    assert sum(float(r["params_pct"]) for r in rows) == pytest.approx(100, abs=0.01)


def test_format_markdown_and_json() -> None:
    graph = netspec.compile_spec("zoo:mnist_cnn")
    md = netspec_cli("check", "zoo:mnist_cnn", "--format", "markdown").stdout
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(graph.nodes) + 1 + len(totals_rows(graph))
    assert "| conv2 | CONV(16, padding=valid) | 16x16x3x3 | 16x11x11 | 1,936 | 2,320 |" in md
    as_json = netspec_cli("check", "zoo:mnist_cnn", "--json").stdout
    assert netspec_cli("check", "zoo:mnist_cnn", "--format", "json").stdout == as_json
    assert Graph.model_validate(json.loads(as_json)) == graph


def test_print_graph_is_the_check_table() -> None:
    out = netspec_cli("check", "specs/resnet18.ns").stdout
    graph = netspec.compile_spec(ROOT / "specs" / "resnet18.ns")
    assert str(graph) == graph.summary() == out


def test_a_bad_train_section_is_reported_and_the_table_still_prints(tmp_path: Path) -> None:
    spec = tmp_path / "t.ns"
    spec.write_text("input [4]\nclasses 2\ntrain { optimiser = sgd }\nINPUT -> FC(2) -> SOFTMAX\n")
    proc = netspec_cli("check", str(spec))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fc1" in proc.stdout and "not estimated: unknown training setting" in proc.stdout
    assert "t.ns:3:9: error: unknown training setting `optimiser`" in proc.stderr
    assert "did you mean `optimizer`?" in proc.stderr
