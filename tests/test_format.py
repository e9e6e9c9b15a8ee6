"""`netspec fmt`: the canonical layout keeps every token and comment, compiles to the same
graph, and is idempotent, over the zoo and the fuzzer's specs (issue 27)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from helpers.fuzz_specs import generated_spec, mutated_spec

from netspec.cli import main
from netspec.errors import NetspecError
from netspec.frontend.format import WIDTH, format_text
from netspec.ir.build import load_spec_text

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.ns"))
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_0-9.]+|->|\*\*|//|[<>=!]=|\S')


def _meaning(text: str) -> str | None:
    """The graph the text compiles to, without source positions (None if it does not)."""
    try:
        spec = load_spec_text(text, "<spec>")
        bindings = {name: domain.values[0] for name, domain in spec.free.items()}
        graph, _errors = spec.instantiate(bindings, collect=True)
    except NetspecError:
        return None
    if graph is None:
        return None
    return repr(_without_spans(graph.model_dump(exclude={"source", "source_hash"})))


def _without_spans(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_spans(v) for k, v in value.items() if k != "span"}
    if isinstance(value, list):
        return [_without_spans(v) for v in value]
    return value


def _same_program(before: str, after: str) -> None:
    assert _TOKEN.findall(before) == _TOKEN.findall(after)  # comments included, in order
    assert format_text(after) == after  # idempotent
    assert _meaning(before) == _meaning(after)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_zoo_formats_to_the_same_graph(path: Path) -> None:
    text = path.read_text()
    out = format_text(text, str(path))
    _same_program(text, out)
    assert _meaning(out) is not None
    code = [line for line in out.splitlines() if "#" not in line and '"' not in line]
    assert max(len(line) for line in code) <= WIDTH  # comments and strings cannot break


@pytest.mark.slow
def test_fuzzer_specs_format_to_the_same_graph() -> None:
    r = random.Random(27)
    formatted = 0
    for _ in range(80):
        text = generated_spec(r) if r.random() < 0.5 else mutated_spec(r)
        try:
            out = format_text(text)
        except NetspecError:
            continue  # does not parse: fmt leaves it alone (tested below)
        _same_program(text, out)
        formatted += 1
    assert formatted > 25


def test_canonical_layout() -> None:
    messy = (
        "network t   # tiny\ninput [1,28,28]\nclasses 10\n\n\n"
        "block b(c,k=3)=CONV(c,k,padding=same)->RELU\n"
        "INPUT->b(8)->[CONV(8)  ->RELU]*2->POOL:[8,14,14]\n"
        "   # the head\n->FC(10)->SOFTMAX\n"
    )
    assert format_text(messy) == (
        "network t  # tiny\ninput [1, 28, 28]\nclasses 10\n\n"
        "block b(c, k=3) = CONV(c, k, padding=same) -> RELU\n"
        "INPUT -> b(8) -> [CONV(8) -> RELU]*2 -> POOL : [8, 14, 14]\n"
        "  # the head\n  -> FC(10) -> SOFTMAX\n"
    )


def test_comments_and_blank_lines_stay() -> None:
    text = (
        "# head\n\n\n# more\ninput [1,8,8]  # trailing\n"
        "block b(c) = # body next\n  CONV(c) -> RELU\n"
        "INPUT -> concat(CONV(4), # a\n CONV(4)) -> FC(2) # end\n\n# tail\n"
    )
    assert format_text(text) == (
        "# head\n\n# more\ninput [1, 8, 8]  # trailing\n"
        "block b(c) =     # body next\n  CONV(c) -> RELU\n"  # trailing comments aligned
        "INPUT -> concat(\n  CONV(4),  # a\n  CONV(4)\n) -> FC(2)  # end\n\n# tail\n"
    )
    _same_program(text, format_text(text))


def test_long_chain_breaks_at_arrows() -> None:
    text = "input [3, 8, 8]\nINPUT" + " -> CONV(16, 3, padding=same) -> RELU" * 6 + "\n"
    out = format_text(text)
    lines = out.splitlines()
    assert len(lines) > 3 and all(len(line) <= WIDTH for line in lines)
    assert all(line.startswith("  -> ") for line in lines[2:])
    _same_program(text, out)


def test_cli_check_diff_and_write(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.ns"
    messy = tmp_path / "messy.ns"
    good.write_text("input [1, 4, 4]\nINPUT -> FC(2)\n")
    messy.write_text("input [1,4,4]\nINPUT->FC(2)\n")
    assert main(["fmt", "--check", str(good), str(messy)]) == 1
    assert messy.read_text() == "input [1,4,4]\nINPUT->FC(2)\n"
    assert main(["fmt", "--diff", str(messy)]) == 1
    assert "+INPUT -> FC(2)" in capsys.readouterr().out
    assert main(["fmt", str(messy)]) == 0
    assert messy.read_text() == good.read_text()
    assert main(["fmt", "--check", str(good), str(messy)]) == 0


def test_cli_refuses_a_file_that_does_not_parse(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.ns"
    bad.write_text("input [1,4,4]\nINPUT->FC(2\n")
    assert main(["fmt", str(bad)]) == 2
    assert bad.read_text() == "input [1,4,4]\nINPUT->FC(2\n"
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "unclosed `(`" in err
