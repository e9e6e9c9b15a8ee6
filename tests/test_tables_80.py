"""Tables at 80 columns (issue 25): zoo, bench, explore and eval fit the terminal, cutting a
description or dropping a column a reader can spare (never a figure) and saying so; `--wide`
prints the whole table. (`netspec layers`: tests/test_layer_text.py.)"""

from __future__ import annotations

import torch
from click.testing import CliRunner
from rich.console import Console

from netspec.cli import cli
from netspec.deploy.bench import Bench
from netspec.terminal import WIDE
from netspec.timing import Timing
from netspec.train.evaluate import Evaluation

COLUMNS = 80


def _lines(text: str) -> list[str]:
    return text.rstrip("\n").splitlines()


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": str(COLUMNS)})
    assert result.exit_code in (0, 2), result.output
    return result.output


def test_zoo_fits_80_columns() -> None:
    narrow = _run("zoo")
    assert max(map(len, _lines(narrow))) <= COLUMNS
    assert "61,100,840" in narrow and "--wide" in narrow  # netspec's figures stay
    # --wide: tests/test_zoo_cli.py reads the whole table


def test_bench_fits_80_columns_and_names_what_it_left_out(capsys, monkeypatch) -> None:
    from netspec.commands import bench as command

    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    timing = Timing(0.57947, 0.6, 5)
    bench = Bench(
        [(1, {"torch": timing, "ort": timing}), (8, "needs ~9.0 GiB, 4.0 GiB available")],
        "onnxruntime on CPU",
        "cpu",
        2,
        None,
        torch_threads=2,
        onnx_nodes=10,
    )
    command._print_spec(bench, "tiny", 2.0)
    out = capsys.readouterr().out
    assert max(map(len, _lines(out))) <= COLUMNS
    assert "579.47 ms" in out and "torch p90" in out.split("not shown")[1]
    assert "batch 8 skipped: needs ~9.0 GiB" in out  # the reason under the table, whole
    command._print_spec(bench, "tiny", 2.0, wide=True)
    wide = capsys.readouterr().out
    assert "torch p90" in wide and "not shown" not in wide
    monkeypatch.delenv("COLUMNS")  # to a pipe: whole, as check's table
    command._print_spec(bench, "tiny", 2.0)
    assert "not shown" not in capsys.readouterr().out


def test_explore_cuts_the_reason_at_80_columns() -> None:
    out = _run("explore", "zoo:cs231n_family")
    table = out[out.index("invalid members") : out.index("Pareto front")]
    assert max(map(len, _lines(table))) <= COLUMNS and "…" in table and "--wide" in table
    wide = _run("explore", "zoo:cs231n_family", "--wide")
    assert "collapses to 0" in wide and "…" not in wide


def test_eval_numbers_the_matrix_columns_when_names_do_not_fit() -> None:
    from netspec.train.report import eval_tables

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    names.append("truck")
    result = Evaluation(0.5, torch.eye(len(names), dtype=torch.long) * 7, names)
    narrow = Console(width=COLUMNS, record=True)
    for table in eval_tables(result, "t", narrow):
        narrow.print(table)
    text = narrow.export_text()
    assert max(map(len, _lines(text))) <= COLUMNS and "9 truck" in text
    wide = Console(width=WIDE, record=True)
    for table in eval_tables(result, "t", wide):
        wide.print(table)
    assert "automobile │" in wide.export_text()


def test_explore_front_prints_whole_into_a_pipe_however_narrow() -> None:
    # CliRunner's output is not a terminal: with COLUMNS set narrow, the front (figures only)
    # is widened to its natural width rather than cut (terminal.print_whole)
    result = CliRunner().invoke(cli, ["explore", "zoo:cs231n_family"], env={"COLUMNS": "30"})
    assert result.exit_code in (0, 2), result.output
    out = result.output
    front = _lines(out[out.index("Pareto front") : out.index("write one as a spec")])
    wide = _run("explore", "zoo:cs231n_family", "--wide")
    assert front == _lines(wide[wide.index("Pareto front") : wide.index("write one as a spec")])
    assert max(map(len, front)) > 30
