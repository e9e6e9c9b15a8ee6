"""The parser's tables: shipped as JSON, never a pickle from a shared folder."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import lark
import pytest

from netspec.frontend import parser, tables

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.ns"))


class _Planted:
    """Unpickling this runs code: it writes a marker file, as an attacker's payload would."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_shipped_tables_match_the_grammar():
    grammar = (ROOT / "grammars" / "netspec.lark").read_text(encoding="utf-8")
    doc = (ROOT / "grammars" / "netspec.tables.json").read_text(encoding="utf-8")
    assert tables.grammar_key(grammar) in doc, "stale tables: run python tools/gen_parser_tables.py"


@pytest.mark.skipif(
    f'"lark":"{lark.__version__}"' not in (ROOT / "grammars" / "netspec.tables.json").read_text(),
    reason="tables were generated with another Lark version; netspec builds from the grammar then",
)
def test_shipped_tables_parse_like_the_grammar():
    grammar = (ROOT / "grammars" / "netspec.lark").read_text(encoding="utf-8")
    loaded = tables.load(ROOT / "grammars" / "netspec.tables.json", grammar)
    assert loaded is not None
    built = tables.build(grammar)
    for spec in SPECS:
        text = spec.read_text(encoding="utf-8")
        assert loaded.parse(text) == built.parse(text), spec.name


def test_stale_or_damaged_tables_fall_back_to_the_grammar(tmp_path):
    grammar = (ROOT / "grammars" / "netspec.lark").read_text(encoding="utf-8")
    assert tables.load(tmp_path / "missing.json", grammar) is None
    (tmp_path / "bad.json").write_text("{not json")
    assert tables.load(tmp_path / "bad.json", grammar) is None
    good = (ROOT / "grammars" / "netspec.tables.json").read_text()
    (tmp_path / "stale.json").write_text(good)
    assert tables.load(tmp_path / "stale.json", grammar + "\n// edited\n") is None


def test_a_cache_planted_in_the_temp_folder_is_never_loaded(tmp_path, monkeypatch):
    # Make Lark's own cache file exactly where Lark (cache=True) would look for it, then
    # replace it with a payload. Old netspec unpickled it on the first parse.
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    grammar = parser._grammar_text()
    lark.Lark(grammar, cache=True, **tables.OPTIONS)
    planted = list(tmp_path.glob(".lark_cache_*"))
    assert planted, "Lark's cache naming changed; plant by its new name"
    marker = tmp_path / "marker"
    for f in planted:
        header = f.read_bytes().split(b"\n", 1)[0]  # Lark checks this hash line, then unpickles
        f.write_bytes(header + b"\n" + pickle.dumps(_Planted(str(marker))))
    parser._parser.cache_clear()
    parser._terminal_text.cache_clear()
    real_load = pickle.load
    unpickled: list[object] = []

    def spy(*a, **k):
        unpickled.append(a)
        return real_load(*a, **k)

    monkeypatch.setattr(pickle, "load", spy)
    try:
        parser.parse_text(
            "input [1, 8, 8]\nclasses 2\nINPUT -> CONV(4) -> RELU -> FC(2) -> SOFTMAX\n"
        )
    finally:
        monkeypatch.setattr(pickle, "load", real_load)
        parser._parser.cache_clear()
        parser._terminal_text.cache_clear()
    assert not marker.exists(), "a planted cache file ran code"
    assert not unpickled, "netspec must not unpickle anything while parsing"
