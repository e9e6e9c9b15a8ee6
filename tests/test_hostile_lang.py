"""Issue 19's non-server holes: deep unary operators, spec text accepted though wrong, an
unbounded `draw`, and temporary files left by killed processes. Each case failed (a
RecursionError traceback, a silent acceptance, a hang, a leftover) before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers.skips import skip_unless_ci

from netspec import draw as diagram
from netspec import io
from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text
from netspec.zoo import path_of

ROOT = Path(__file__).resolve().parents[1]
HEAD = "input [4, 8, 8]\nclasses 2\n"


def error_of(text: str) -> NetspecError:
    with pytest.raises(NetspecError) as info:
        load_spec_text(text, "t.ns").instantiate({})
    return info.value


@pytest.mark.parametrize(
    "expr",
    [
        "N = " + "-" * 1000 + "1",
        "N = " + "not " * 1000 + "true",
        "N = 2 if " + "not " * 999 + "v else 1",
    ],
    ids=["minus", "not", "not_in_if"],
)
def test_a_thousand_unary_operators_are_a_located_error(expr):
    e = error_of(f"v = on\n{expr}\n{HEAD}INPUT -> FC(2) -> SOFTMAX\n")
    assert "more than 200 operations" in e.message
    assert e.span is not None and e.span.line == 2


def test_unary_operators_inside_a_layer_argument():
    e = error_of(HEAD + "INPUT -> FC(" + "-" * 1000 + "2) -> SOFTMAX\n")
    assert "more than 200 operations" in e.message
    assert (e.span.line, e.span.file) == (3, "t.ns")


def test_expressions_below_the_limit_still_evaluate():
    # 198 minus signs: an even count, so the value is +2; the deepest legal nesting evaluates
    graph = load_spec_text(
        HEAD + "INPUT -> FC(" + "-" * 198 + "2) -> SOFTMAX\n", "t.ns"
    ).instantiate({})
    assert graph.node("fc1").layer.units == 2


def test_deep_expressions_inside_deeply_nested_brackets_do_not_exhaust_the_stack():
    depth = 95  # the parser refuses past 100
    chain = "[" * depth + "FC(" + "-" * 198 + "2)" + "]" * depth
    graph = load_spec_text(f"{HEAD}INPUT -> {chain} -> SOFTMAX\n", "t.ns").instantiate({})
    assert graph.totals.params == 4 * 8 * 8 * 2 + 2


@pytest.mark.parametrize(
    "args, name",
    [("when=(true), when=(false)", "when"), ("project=on, project=off", "project")],
)
def test_a_residual_argument_given_twice_is_refused(args, name):
    line = f"INPUT -> residual(CONV(4), {args}) -> FC(2) -> SOFTMAX"
    e = error_of(HEAD + line + "\n")
    first, second = line.index(f"{name}="), line.rindex(f"{name}=")
    assert e.message == f"argument `{name}` of residual(...) is given twice"
    assert (e.span.line, e.span.col) == (3, second + 1)
    assert e.notes == [f"first given at t.ns:3:{first + 1}"]


@pytest.mark.parametrize(
    "chain",
    ["residual(CONV(4), when=(3))", "CONV(4)?(1)", "residual(CONV(4), when=(0.5))"],
)
def test_a_number_is_not_a_condition(chain):
    e = error_of(HEAD + f"INPUT -> {chain} -> FC(2) -> SOFTMAX\n")
    assert "must be true or false" in e.message
    assert e.hint is not None and "compare it" in e.hint


def test_conditions_that_are_conditions_still_work():
    on = load_spec_text(
        HEAD + "INPUT -> residual(CONV(4), when=(1 == 1)) -> FC(2) -> SOFTMAX\n", "t.ns"
    ).instantiate({})
    off = load_spec_text(
        HEAD + "INPUT -> residual(CONV(4), when=(1 == 2)) -> FC(2) -> SOFTMAX\n", "t.ns"
    ).instantiate({})
    assert any(n.kind == "add" for n in on.nodes) and not any(n.kind == "add" for n in off.nodes)


@pytest.mark.parametrize("limit", ["1MB", "2 * 1KiB", "1GB"])
@pytest.mark.parametrize("metric", ["params", "trainable", "macs", "flops"])
def test_a_byte_unit_on_a_count_is_refused(metric, limit):
    e = error_of(f"{HEAD}budget {metric} <= {limit}\nINPUT -> FC(2) -> SOFTMAX\n")
    assert e.message == f"`{metric}` is a count, but its limit is written in bytes"
    assert e.span.line == 3 and "drop the B" in (e.hint or "")


def test_bytes_on_memory_and_plain_counts_stay_accepted():
    graph = load_spec_text(
        f"{HEAD}budget memory <= 1MB, params <= 1M\nINPUT -> FC(2) -> SOFTMAX\n", "t.ns"
    ).instantiate({})
    assert [b.ok for b in graph.budgets] == [True, True]


def test_softmax_of_probabilities_is_refused():
    e = error_of(HEAD + "INPUT -> FC(2) -> SOFTMAX -> SOFTMAX\n")
    assert "already probabilities" in e.message
    assert (e.span.line, e.span.col) == (3, 30)


def test_a_huge_zoo_name_is_not_echoed_whole():
    with pytest.raises(NetspecError) as info:
        path_of("a" * 100_000)
    assert len(str(info.value)) < 200 and "..." in info.value.message


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "netspec", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_draw_to_a_name_ending_in_a_slash_writes_nothing(tmp_path):
    done = run_cli("draw", "zoo:mnist_cnn", "-o", "x.svg/", cwd=tmp_path)
    assert done.returncode == 2 and "names a folder" in done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def test_draw_refuses_a_diagram_too_big_to_lay_out_before_running_graphviz():
    graph = load_spec_text(
        "input [8]\nclasses 8\nINPUT -> [FC(8) -> RELU]*6000 -> SOFTMAX\n", "t.ns"
    )
    built = graph.instantiate({})
    with pytest.raises(NetspecError) as info:
        diagram.draw(built, "svg")
    assert "12,002 boxes" in info.value.message and "--collapse" in (info.value.hint or "")
    # collapsed, the same network is three boxes
    assert b"<svg" in diagram.draw(built, "svg", collapse=True)


def test_draw_layout_time_is_limited(tmp_path):
    if diagram.shutil.which("dot") is None:
        skip_unless_ci("Graphviz is not installed")
    done = run_cli("draw", "zoo:resnet50", "-o", "r.svg", "--timeout", "0.001", cwd=tmp_path)
    assert done.returncode == 2 and "Graphviz took longer than 0.001 s" in done.stderr
    assert list(tmp_path.iterdir()) == []


# ---- temporary files of killed processes


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def tagged(pid: int) -> str:
    return io.owner_tag().rsplit("-", 1)[0] + f"-{pid}"


def test_sweep_removes_what_dead_processes_left_and_never_a_live_ones(tmp_path):
    dead = tmp_path / f".m.onnx.{tagged(dead_pid())}.abc{io.TEMP_SUFFIX}"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "fp32.onnx").write_bytes(b"x" * 10)
    dead_file = tmp_path / f".m.onnx.{tagged(dead_pid())}.def{io.TEMP_SUFFIX}"
    dead_file.write_bytes(b"x")
    live = tmp_path / f".m.onnx.{io.owner_tag()}.ghi{io.TEMP_SUFFIX}"
    live.mkdir()
    old_untagged = tmp_path / f".m.onnx.jkl{io.TEMP_SUFFIX}"
    old_untagged.mkdir()
    hour_ago = old_untagged.stat().st_mtime - 2 * io.STALE_AFTER_S
    os.utime(old_untagged, (hour_ago, hour_ago))
    fresh_untagged = tmp_path / f".m.onnx.mno{io.TEMP_SUFFIX}"
    fresh_untagged.write_bytes(b"x")
    # another host's folder on a shared disk: its process cannot be seen from here
    other_host = tmp_path / f".m.onnx.nst-elsewhere-{dead_pid()}.pqr{io.TEMP_SUFFIX}"
    other_host.mkdir()

    assert io.clean_stale_temps(tmp_path) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([live.name, fresh_untagged.name, other_host.name])


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from netspec import io
    from netspec.deploy import files
    where = Path(sys.argv[1])
    with files.staging(where / "model.onnx") as stage:
        (stage / "model.onnx").write_bytes(b"fp32 weights")
        with io.temp_folder("netspec-graphviz-", where):
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_what_a_kill_9_leaves_is_swept_by_the_next_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], env=env)
    assert done.returncode == -9
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2  # the staging folder and the work folder: kill -9 ran no cleanup
    io.atomic_write(tmp_path / "other.onnx", b"next run")  # any write to the folder sweeps it
    with io.temp_folder("netspec-graphviz-", tmp_path) as mine:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other.onnx", mine.name])
    assert [p.name for p in tmp_path.iterdir()] == ["other.onnx"]
