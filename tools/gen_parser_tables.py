"""Regenerate grammars/netspec.tables.json from grammars/netspec.lark.

Run after every grammar change (a test fails while the tables are stale):

    python tools/gen_parser_tables.py
"""

from __future__ import annotations

from pathlib import Path

from netspec.frontend import tables

ROOT = Path(__file__).resolve().parents[1]
GRAMMAR = ROOT / "grammars" / "netspec.lark"
TABLES = ROOT / "grammars" / "netspec.tables.json"


def main() -> None:
    grammar = GRAMMAR.read_text(encoding="utf-8")
    TABLES.write_text(tables.dump(tables.build(grammar), grammar), encoding="utf-8")
    print(f"wrote {TABLES.relative_to(ROOT)} for grammar {tables.grammar_key(grammar)[:12]}")


if __name__ == "__main__":
    main()
