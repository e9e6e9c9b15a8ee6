"""Text -> syntax tree. Loads `grammars/netspec.lark` once and maps Lark's errors to ours."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from netspec.errors import NetspecError, Span, clip, register_source
from netspec.frontend import ast, tables

GRAMMAR_FILE = "netspec.lark"
TABLES_FILE = "netspec.tables.json"

# Limits that keep hostile input from exhausting the interpreter (RecursionError) or memory.
MAX_NESTING = 100  # brackets of any kind, nested
MAX_EXPR_DEPTH = 200  # operators nested in one expression (`1 + 1 + ...`, `- - 1`, `not not x`)
MAX_NUMBER = 10**18  # the largest number a spec may write or compute
# Tokens a spec may hold: parsing costs some 10-25 microseconds a token, so 50,000 parse in
# about a second (the largest bundled spec has under 2,000; repetitions and blocks keep
# even a 100,000-layer network short).
MAX_TOKENS = 50_000
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_0-9.]+|->|\*\*|//|[<>=!]=|\S')

# How the grammar's terminals read in an error message.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "string"',
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "COLON": "`:`",
    "EQUAL": "`=`",
    "STAR": "`*`",
    "QMARK": "`?`",
    "MINUS": "`-`",
    "CMP": "a comparison",
    "ADDOP": "`+`",
    "MULOP": "`*`",
    "POW": "`**`",
    "$END": "the end of the file",
}

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


def _grammar_dir() -> Path:
    # Source tree (and editable installs) keep grammars/ beside the package; wheels map it in
    # as netspec/_grammars (see pyproject.toml).
    here = Path(__file__).resolve().parents[2] / "grammars"
    if (here / GRAMMAR_FILE).is_file():
        return here
    return Path(__file__).resolve().parents[1] / "_grammars"


def _grammar_text() -> str:
    return (_grammar_dir() / GRAMMAR_FILE).read_text(encoding="utf-8")


@functools.cache
def _parser() -> Lark:
    # The LALR tables ship as JSON beside the grammar (netspec/frontend/tables.py says why
    # Lark's pickle cache is never used); stale or missing tables mean a build from the grammar.
    grammar = _grammar_text()
    return tables.load(_grammar_dir() / TABLES_FILE, grammar) or tables.build(grammar)


def read_spec_file(path: str | Path) -> str:
    """Read a spec file as text, refusing missing, unreadable, binary or non-UTF-8 files, and
    anything but a regular file of at most `SPEC_MAX_BYTES` (1 MiB), before reading it."""
    from netspec.io import SPEC_MAX_BYTES, read_input

    p = Path(path)
    if not p.exists():
        raise NetspecError(
            f"no such file: {path}", hint="check the path, or list specs/ for the bundled specs"
        )
    if p.is_dir():
        raise NetspecError(f"{path} is a directory, not a spec file")
    start = Span(file=str(path), line=1, col=1, end_line=1, end_col=1)
    try:
        data = read_input(p, "spec file", SPEC_MAX_BYTES)
    except NetspecError as e:
        e.span = e.span or start
        raise
    if b"\x00" in data:
        raise NetspecError(
            f"{path} is a binary file, not a netspec spec (NUL byte at offset {data.index(0)})",
            hint="a spec is a text file such as specs/vgg16.ns",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NetspecError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None


def parse_file(path: str | Path) -> ast.Module:
    return parse_text(read_spec_file(path), str(path))


def parse_text(text: str, path: str = "<spec>") -> ast.Module:
    """Parse spec text into a syntax tree; errors point at the offending text."""
    register_source(path, text)
    _check_size(text, path)
    _check_brackets(text, path)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, path) from None
    try:
        module = _ToAst(path).transform(tree)
    except VisitError as e:  # Lark wraps what a transformer raises
        if isinstance(e.orig_exc, NetspecError):
            raise e.orig_exc from None
        raise
    module.text = text
    if not module.statements:
        raise NetspecError(
            "empty spec: nothing to compile",
            Span(file=path, line=1, col=1, end_line=1, end_col=2),
            hint="a minimal spec: `input [1, 28, 28]`, `classes 10`, `INPUT -> CONV(16) -> RELU -> FC(10) -> SOFTMAX`",
        )
    return module


def _span(
    path: str, line: int, col: int, end_line: int | None = None, end_col: int | None = None
) -> Span:
    return Span(
        file=path, line=line, col=col, end_line=end_line or line, end_col=end_col or col + 1
    )


def _check_size(text: str, path: str) -> None:
    """Refuse a text too long to parse quickly, at the token past the limit, before parsing."""
    if len(text) < MAX_TOKENS:  # fewer characters than the limit: fewer tokens too
        return
    count = 0
    for match in _TOKEN.finditer(text):
        if match.group().startswith("#"):
            continue
        count += 1
        if count > MAX_TOKENS:
            start = match.start()
            line = text.count("\n", 0, start) + 1
            col = start - (text.rfind("\n", 0, start) + 1) + 1
            raise NetspecError(
                f"the spec is longer than {MAX_TOKENS:,} tokens, netspec's limit",
                _span(path, line, col),
                hint="write repeated layers as a repetition `[...]*N` or a block; "
                "the limit keeps a check within about a second",
            )


def _check_brackets(text: str, path: str) -> None:
    """Match brackets first: "unclosed `[` opened here" beats any LALR message."""
    stack: list[tuple[str, int, int]] = []
    line, col = 1, 0
    in_comment = in_string = escaped = False
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            in_comment = in_string = escaped = False
            continue
        if in_comment:
            continue
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                in_string = ch != '"'
            continue
        if ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in _OPENERS:
            stack.append((ch, line, col))
            if len(stack) > MAX_NESTING:
                raise NetspecError(
                    f"brackets nested more than {MAX_NESTING} deep",
                    _span(path, line, col),
                    hint="name the inner part as a block or a constant",
                )
        elif ch in _CLOSERS:
            if not stack:
                raise NetspecError(
                    f"`{ch}` closes nothing",
                    _span(path, line, col),
                    hint="remove it, or add the matching `" + _CLOSERS[ch] + "` before it",
                )
            opener, oline, ocol = stack.pop()
            if _OPENERS[opener] != ch:
                raise NetspecError(
                    f"`{ch}` does not match `{opener}` opened at {oline}:{ocol}",
                    _span(path, line, col),
                    hint=f"close `{opener}` with `{_OPENERS[opener]}` first",
                )
    if stack:
        opener, oline, ocol = stack[-1]
        raise NetspecError(
            f"unclosed `{opener}`",
            _span(path, oline, ocol),
            hint=f"add the matching `{_OPENERS[opener]}`",
        )


@functools.cache
def _terminal_text() -> dict[str, str]:
    """Terminal name -> how it reads: `->` for the anonymous arrow, `a name` for NAME."""
    out = {}
    for term in _parser().terminals:
        pattern = term.pattern
        literal = pattern.value if pattern.type == "str" else None
        out[term.name] = _TERMINAL_WORDS.get(term.name) or (
            f"`{literal}`" if literal else term.name.lower()
        )
    return out


def _expected(names: Iterable[str]) -> str:
    text = _terminal_text()
    words = sorted({text.get(n, n.lower()) for n in names}, key=lambda w: (w != "`->`", w))
    if not words:
        return ""
    if len(words) > 8:
        words = words[:8] + ["..."]
    return "expected " + ", ".join(words)


def _syntax_error(e: UnexpectedInput, text: str, path: str) -> NetspecError:
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream  # typed Optional; the lexer sets it on every error it raises
        ch = text[pos] if pos is not None and pos < len(text) else "?"
        return NetspecError(
            f"unexpected character `{ch}`",
            _span(path, e.line, e.column),
            hint=_expected(e.allowed) or None,
        )
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        tok: Token = e.token
        line, col = _position(tok)
        end_col = (tok.end_column or col + len(tok)) if tok.end_line == line else None
        hint = _expected(getattr(e, "accepts", None) or e.expected)
        if hint.startswith("expected `->`") and tok.type == "NAME":
            hint = "join layers with `->`; " + hint
        return NetspecError(
            f"unexpected `{tok}`",
            _span(path, line, col, tok.end_line, end_col),
            hint=hint or None,
        )
    # The file ended too soon.
    lines = text.rstrip().splitlines() or [""]
    line = len(lines)
    col = len(lines[-1]) + 1
    expected = e.expected if isinstance(e, UnexpectedToken | UnexpectedEOF) else set()
    return NetspecError(
        "unexpected end of file",
        _span(path, line, max(col - 1, 1), line, col),
        hint=_expected(expected) or None,
    )


def _position(tok: Token) -> tuple[int, int]:
    """A lexed token's line and column. Lark types them Optional (a token made by hand has
    none), but its lexer sets both on every token it makes: a token without them is a bug here,
    never the user's mistake."""
    if tok.line is None or tok.column is None:
        raise AssertionError(f"lark token {tok.type} {str(tok)!r} carries no position")
    return tok.line, tok.column


def _meta_span(path: str, meta) -> Span:
    return Span(
        file=path, line=meta.line, col=meta.column, end_line=meta.end_line, end_col=meta.end_column
    )


def _tok_span(path: str, tok: Token) -> Span:
    line, col = _position(tok)
    return _span(path, line, col, tok.end_line, tok.end_column)


def _number(text: str) -> int | float:
    """`140M` -> 140_000_000, `2GiB` -> 2*2**30, `1e-3` -> 0.001; a trailing B (bytes) is dropped."""
    body = text
    scale = 1
    if body.endswith("B"):
        body = body[:-1]
    for suffix, factor in (
        ("Ki", 2**10),
        ("Mi", 2**20),
        ("Gi", 2**30),
        ("Ti", 2**40),
        ("k", 10**3),
        ("K", 10**3),
        ("M", 10**6),
        ("G", 10**9),
        ("T", 10**12),
    ):
        if body.endswith(suffix):
            body, scale = body[: -len(suffix)], factor
            break
    if not body[-1:].isdigit():
        raise ValueError(f"unknown number suffix in `{clip(text, 24)}`")
    if len(body) > 40:  # far past MAX_NUMBER; never hand Python a 4,300-digit literal
        return math.inf
    if any(c in body for c in ".eE"):
        value = float(body) * scale
        return int(value) if scale != 1 and value.is_integer() else value
    return int(body) * scale


_SUFFIX_HINT = "suffixes: K M G T (powers of 1000), Ki Mi Gi Ti (powers of 1024), B for bytes"


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Tree -> dataclasses. Aliases in the grammar map one-to-one onto these methods."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._depths: dict[int, int] = {}  # id(expr) -> operator depth, for MAX_EXPR_DEPTH

    def _s(self, meta) -> Span:
        return _meta_span(self.path, meta)

    # ---- statements
    def start(self, meta, items):
        stmts = [ast.ChainStmt(i.span, i) if isinstance(i, ast.Chain) else i for i in items]
        return ast.Module(path=self.path, text="", statements=stmts)

    def network(self, meta, items):
        name, desc = items
        return ast.NetworkDecl(
            self._s(meta), str(name), self._text(desc) if desc is not None else None
        )

    def input_tensor(self, meta, items):
        return ast.InputDecl(self._s(meta), shape=items[0][0], tokens=None)

    def input_tokens(self, meta, items):
        return ast.InputDecl(self._s(meta), shape=None, tokens=[a for a in items if a is not None])

    def classes_decl(self, meta, items):
        return ast.ClassesDecl(self._s(meta), items[0], per_pixel=items[1] is not None)

    def per_pixel(self, meta, items):
        return True

    def budget_item(self, meta, items):
        metric, op, limit = items
        return ast.BudgetItem(
            str(metric), str(op), limit, self._s(meta), _tok_span(self.path, metric)
        )

    def budget_decl(self, meta, items):
        return ast.BudgetDecl(self._s(meta), list(items))

    def dtype_decl(self, meta, items):
        return ast.DtypeDecl(self._s(meta), str(items[0]))

    def defaults_decl(self, meta, items):
        return ast.DefaultsDecl(self._s(meta), list(items))

    def const_def(self, meta, items):
        return ast.ConstDef(self._s(meta), str(items[0]), items[1])

    def free_range(self, meta, items):
        return ast.FreeParam(self._s(meta), str(items[0]), low=items[1], high=items[2])

    def free_set(self, meta, items):
        return ast.FreeParam(self._s(meta), str(items[0]), choices=list(items[1:]))

    def block_param(self, meta, items):
        return ast.BlockParam(str(items[0]), items[1], self._s(meta))

    def block_def(self, meta, items):
        name, *params, body = items
        return ast.BlockDef(self._s(meta), str(name), [p for p in params if p is not None], body)

    def head_decl(self, meta, items):
        name, (at, at_span), chain = items
        return ast.HeadDecl(
            self._s(meta), str(name), _tok_span(self.path, name), at, at_span, chain
        )

    def dotted(self, meta, items):
        return (".".join(str(i) for i in items), self._s(meta))

    def train_decl(self, meta, items):
        return ast.TrainDecl(self._s(meta), list(items))

    def setting(self, meta, items):
        return ast.Setting(str(items[0]), items[1], self._s(meta), _tok_span(self.path, items[0]))

    def value_call(self, meta, items):
        name, *args = items
        return ast.ValueCall(str(name), [_as_arg(a) for a in args if a is not None], self._s(meta))

    def value_list(self, meta, items):
        return ast.ValueList([i for i in items if i is not None], self._s(meta))

    # ---- chains
    def chain(self, meta, items):
        return ast.Chain(list(items), self._s(meta))

    def element(self, meta, items):
        primary, *posts = items
        el = ast.Element(primary, self._s(meta))
        for post in posts:
            if post is None:
                continue
            kind, payload = post
            if kind == "repeat":
                el.repeat, el.index_var = payload
            elif kind == "optional":
                el.optional, el.condition = True, payload
            elif kind == "assertion":
                if el.assertion is not None:
                    raise NetspecError("a second shape assertion on one element", payload[1])
                el.assertion, el.assertion_span = payload
            elif kind == "label":
                if el.label is not None:
                    raise NetspecError("a second `as` name on one element", el.span)
                el.label = payload
        return el

    def repeat(self, meta, items):
        count, var = items
        return ("repeat", (count, str(var) if var is not None else None))

    def optional(self, meta, items):
        return ("optional", items[0])

    def assertion(self, meta, items):
        return ("assertion", (items[0][0], self._s(meta)))

    def label(self, meta, items):
        return ("label", str(items[0]))

    def shape_list(self, meta, items):
        return (list(items), self._s(meta))

    def call(self, meta, items):
        name, *args = items
        return ast.Call(
            str(name),
            [_as_arg(a) for a in args if a is not None],
            self._s(meta),
            _tok_span(self.path, name),
        )

    def kwarg(self, meta, items):
        return ast.Arg(str(items[0]), items[1], self._s(meta))

    def group(self, meta, items):
        return ast.Group(items[0], self._s(meta))

    def branch_args(self, meta, items):
        return list(items)

    def _branches(self, op, meta, items):
        args = items[0]
        chains = [a for a in args if isinstance(a, ast.Chain)]
        kwargs = [a for a in args if isinstance(a, ast.Arg)]
        return ast.Branches(op, chains, kwargs, self._s(meta))

    def concat(self, meta, items):
        return self._branches("concat", meta, items)

    def add(self, meta, items):
        return self._branches("add", meta, items)

    def residual(self, meta, items):
        return self._branches("residual", meta, items)

    def mul(self, meta, items):
        return self._branches("mul", meta, items)

    # ---- expressions
    def number(self, meta, items):
        tok = items[0]
        try:
            value = _number(str(tok))
        except ValueError as e:
            raise NetspecError(str(e), self._s(meta), hint=_SUFFIX_HINT) from None
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise NetspecError(
                f"number `{clip(str(tok), 24)}` is too large",
                self._s(meta),
                hint=f"numbers in a spec are at most {MAX_NUMBER:.0e}",
            )
        return ast.Num(self._s(meta), value, str(tok))

    def string(self, meta, items):
        return ast.Str(self._s(meta), self._text(items[0]))

    def _text(self, tok: Token) -> str:
        try:
            return _unquote(tok)
        except ValueError as e:
            raise NetspecError(str(e), _tok_span(self.path, tok), hint=_ESCAPE_HINT) from None

    def name(self, meta, items):
        return ast.Name(self._s(meta), str(items[0]))

    def in_attr(self, meta, items):
        # `in.c`: one name, which only a block body defines (netspec.ir.expand.block).
        return ast.Name(self._s(meta), f"in.{items[0]}")

    def block_attr(self, meta, items):
        # `cnblock.index`, `cnblock.count`: one name each, which the builder defines (the
        # running counter of a block's calls; netspec.ir.counter). ParsedSpec checks the
        # block and the attribute exist.
        return ast.Name(self._s(meta), f"{items[0]}.{items[1]}")

    def tuple(self, meta, items):
        return ast.TupleExpr(self._s(meta), [i for i in items if i is not None])

    def binop(self, meta, items):
        left, op, right = items
        return self._depth(ast.BinOp(self._s(meta), str(op), left, right), left, right)

    def _depth(self, node: ast.Expr, *children: ast.Expr) -> ast.Expr:
        """Refuse expressions deep enough to exhaust Python's recursion when evaluated: every
        operator (unary `-` and `not` too) counts one level; returns `node`."""
        depth = 1 + max(self._depths.get(id(c), 0) for c in children)
        if depth > MAX_EXPR_DEPTH:
            raise NetspecError(
                f"expression has more than {MAX_EXPR_DEPTH} operations in a row",
                node.span,
                hint="split it into named constants",
            )
        self._depths[id(node)] = depth
        return node

    def neg(self, meta, items):
        return self._depth(ast.Neg(self._s(meta), items[0]), items[0])

    def not_(self, meta, items):
        return self._depth(ast.Not(self._s(meta), items[0]), items[0])

    def and_(self, meta, items):
        return self._depth(ast.BoolOp(self._s(meta), "and", items[0], items[1]), *items)

    def or_(self, meta, items):
        return self._depth(ast.BoolOp(self._s(meta), "or", items[0], items[1]), *items)

    def ifexp(self, meta, items):
        then, cond, other = items
        return self._depth(ast.IfExp(self._s(meta), then, cond, other), *items)

    def compare(self, meta, items):
        left, op, right = items
        return self._depth(ast.Compare(self._s(meta), str(op), left, right), left, right)


def _as_arg(item) -> ast.Arg:
    if isinstance(item, ast.Arg):
        return item
    return ast.Arg(None, item, item.span)


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_ESCAPE_HINT = 'strings know the escapes \\" \\\\ \\n and \\t'


def _unquote(tok) -> str:
    """The text of a "string" token: the escapes \\" \\\\ \\n \\t, UTF-8 kept as it is."""
    s = str(tok)[1:-1]
    if "\\" not in s:
        return s
    out: list[str] = []
    chars = iter(s)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt not in _ESCAPES:
            raise ValueError(f"unknown escape `\\{nxt}` in a string")
        out.append(_ESCAPES[nxt])
    return "".join(out)


__all__ = ["parse_file", "parse_text", "read_spec_file"]
