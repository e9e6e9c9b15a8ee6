"""The columns people expect from peers in `netspec check` (issue 25): which layers train after
`freeze` (the spec's train section or `--freeze`), the trainable and frozen params, and the
shape each layer takes (`--columns input`)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from click.testing import CliRunner

from netspec.cli import cli, main
from netspec.ir.build import load_spec_text
from netspec.summary import summary, totals_rows
from netspec.train.freeze import frozen_layers

SPEC = """network fz
input [1, 8, 8]
classes 10
train { freeze = ["conv1"] }
INPUT -> CONV(4) -> RELU -> [CONV(8) -> BN] as stage -> concat(IDENTITY, IDENTITY) -> GAP -> FC(10)
"""


def _graph():
    spec = load_spec_text(SPEC)
    return spec if hasattr(spec, "nodes") else spec.instantiate({})


def test_frozen_params_are_counted_apart_and_each_layer_says_whether_it_trains() -> None:
    graph = _graph()
    frozen = set(frozen_layers(graph, ("conv1", "stage.*")))
    rows = {label: (value, note) for label, value, note in totals_rows(graph, frozen=frozen)}
    held = 40 + 296 + 16  # conv1, stage.conv1, stage.bn1
    assert rows["frozen params"][0] == f"{held:,}"
    assert rows["trainable params"][0] == f"{graph.totals.trainable_params - held:,}"
    table = csv.DictReader(io.StringIO(summary(graph, "csv", frozen=frozen)))
    state = {r["layer"]: r["trainable"] for r in table}
    assert state["conv1"] == state["stage.conv1"] == "frozen" and state["fc1"] == "yes"
    assert state["relu1"] == ""  # no weights: nothing to freeze
    collapsed = summary(graph, depth=1, frozen={"stage.conv1"})
    assert "partly" in next(line for line in collapsed.splitlines() if line.startswith("stage"))


def test_input_column_gives_the_shape_each_layer_takes() -> None:
    rows = list(csv.DictReader(io.StringIO(summary(_graph(), "csv", inputs=True))))
    by_id = {r["layer"]: r["input"] for r in rows}
    assert by_id["conv1"] == "1x8x8" and by_id["stage.conv1"] == "4x8x8"
    assert by_id["concat1"] == "8x8x8 + 8x8x8" and by_id["input"] == ""


def test_check_reads_the_specs_freeze_and_takes_freeze_and_input(tmp_path, capsys) -> None:
    path = tmp_path / "fz.ns"
    path.write_text(SPEC)
    runner = CliRunner()
    out = runner.invoke(cli, ["check", str(path)]).output
    assert "trainable" in out.splitlines()[2] and "frozen params" in out  # train { freeze }
    result = runner.invoke(cli, ["check", str(path), "--freeze", "fc*", "--columns", "input"])
    header = result.output.splitlines()[2].split()
    assert header[:5] == ["layer", "kind", "kernel", "input", "output"]
    assert re.search(r"^frozen params +170 ", result.output, re.M)  # fc1: 16 x 10 + 10
    assert main(["check", str(path), "--freeze", "cnv"]) == 2
    assert "did you mean `conv1`" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter (~2 s)
def test_check_with_freeze_does_not_import_torch(tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "fz.ns"
    path.write_text(SPEC)
    code = (
        "import sys\nfrom netspec.cli import main\n"
        f"main(['check', {str(path)!r}, '--freeze', 'conv1', '--format', 'csv'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
