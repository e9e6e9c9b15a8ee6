"""The parser's LALR tables, shipped as JSON beside the grammar instead of cached at run time.

Lark's own `cache=True` pickles its tables into the shared temp folder under a predictable
name and unpickles whatever it finds there: anyone able to write that file runs code as the
next user to parse a spec. netspec never loads a pickle. The tables are generated from the
grammar by `tools/gen_parser_tables.py`, stored read-only in the package as plain JSON (which
cannot carry code), and used only when their recorded grammar hash and Lark version match the
running ones; otherwise the parser is built from the grammar (about 45 ms).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef

# Options every netspec parser is built with; part of the tables' key.
OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "propagate_positions": True,
    "maybe_placeholders": True,
}

_INT_KEYS = "#int"  # JSON object keys are strings: dicts keyed by ints travel as pairs


def grammar_key(grammar: str) -> str:
    """What the tables depend on: the grammar text and the options."""
    blob = grammar + "\n" + json.dumps(OPTIONS, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build(grammar: str) -> Lark:
    return Lark(grammar, **OPTIONS)


def dump(parser: Lark, grammar: str) -> str:
    """Serialise a built parser's tables as JSON text (no pickle)."""
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    doc = {
        "grammar_sha256": grammar_key(grammar),
        "lark": lark.__version__,
        "tables": _encode({"data": data, "memo": memo}),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"


def load(path: Path, grammar: str) -> Lark | None:
    """The parser from shipped tables, or None when they are absent, stale or unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), object_hook=_decode_hook)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("grammar_sha256") != grammar_key(grammar) or doc.get("lark") != lark.__version__:
        return None
    try:
        return Lark.load(doc["tables"])  # a dict: Lark deserialises it without pickle
    except Exception:  # tables from a damaged file: rebuild rather than fail
        return None


def _encode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):
            return {_INT_KEYS: [[k, _encode(v)] for k, v in obj.items()]}
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(x) for x in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in the parser tables")


def _decode_hook(d: dict[str, Any]) -> Any:
    if len(d) == 1 and _INT_KEYS in d:
        return {k: v for k, v in d[_INT_KEYS]}
    return d
