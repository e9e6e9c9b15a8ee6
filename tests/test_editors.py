"""The VS Code extension's files hang together (the .vsix itself is built by
tools/build_vsix.sh, which needs npm): the manifest's paths exist, the TextMate grammar's
patterns compile and give the expected scopes on a zoo line."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "editors" / "vscode"


def _patterns(node: object):
    if isinstance(node, dict):
        for key in ("match", "begin", "end"):
            if key in node:
                yield node.get("name") or node.get("captures"), node[key]
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def test_manifest_points_at_real_files() -> None:
    manifest = json.loads((EXT / "package.json").read_text())
    assert (EXT / manifest["main"]).is_file()
    (lang,) = manifest["contributes"]["languages"]
    assert lang["extensions"] == [".ns"]
    assert json.loads((EXT / lang["configuration"]).read_text())["comments"]["lineComment"] == "#"
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["language"] == lang["id"] and (EXT / grammar["path"]).is_file()
    assert "vscode-languageclient" in manifest["dependencies"]
    assert '"lsp"' in (EXT / "extension.js").read_text()


def test_grammar_scopes_a_spec_line() -> None:
    grammar = json.loads((EXT / "syntaxes" / "netspec.tmLanguage.json").read_text())
    rules = grammar["repository"]
    for _name, pattern in _patterns(grammar):
        re.compile(pattern)  # the patterns use nothing Python's re lacks

    line = "  -> CONV(64, 7, stride=2) -> RELU : [64, 112, 112]  # stem"
    assert re.search(rules["arrow"]["match"], line).group() == "->"
    layers = re.findall(rules["layer"]["match"], line.split("#")[0])
    assert layers == ["CONV", "RELU"]
    assert re.search(rules["kwarg"]["match"], line).group(1) == "stride"
    assert re.search(rules["comment"]["match"], line).group() == "# stem"
    numbers = re.finditer(rules["number"]["match"], "budget params <= 12M, macs <= 2G")
    assert [m.group() for m in numbers] == ["12M", "2G"]
