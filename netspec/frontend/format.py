"""The one canonical layout of a spec (`netspec fmt`, the language server's formatting).

The formatter works on the token stream of Lark's contextual lexer (so `*` the repetition
and `*` the product, `-` the negation and `-` the difference are told apart) and changes
only the whitespace between tokens: the formatted text has exactly the tokens of the input,
so it means the same thing. Comments, which the parser drops, are found in the gaps between
tokens and stay where they were: a comment on its own line stays on its own line before the
token that followed it, a comment after code stays at the end of that code's line.

The layout:
- one space around `->`, `=` (outside brackets), binary operators (`**` excepted) and `:`
  assertions, one after a comma, none inside brackets, `CONV(64, 3, stride=2)`;
- a chain stays on one line while it fits in `WIDTH` columns; it breaks before a `->`
  where the author broke it (before or after the arrow) and wherever the next element
  would not fit; continued lines are indented two spaces past the chain's start;
- a bracket with a line break just inside it or after one of its commas, or too long to
  fit, opens a block: one argument a line, indented two spaces, the closer on its own line;
- a block's body goes on the next line, indented two spaces, when the author put it there;
- one blank line at most between statements, where the author left one; trailing comments
  on consecutive lines are aligned, and so are the `: [shape]` assertions ending
  consecutive lines of a chain.
Running it on its own output changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lark import Token
from lark.exceptions import UnexpectedInput

from netspec.errors import NetspecError
from netspec.frontend.parser import _parser, parse_text

WIDTH = 100
INDENT = 2
_COMMENT = re.compile(r"#[^\n]*")
_BLANK = re.compile(r"\n[ \t\r]*\n")
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = set(_OPENERS.values())
_CALLS = {"NAME", "CONCAT", "ADD", "MUL", "RESIDUAL", "TOKENS", "QMARK"}
_TIGHT = {"STAR", "POW", "DOT", ".."}  # no space on either side


@dataclass
class _Tok:
    type: str
    text: str
    start: int
    end: int
    nl_before: bool = False  # the source had a line break before this token
    blank_before: bool = False  # an empty line between its last comment (if any) and it
    # (text, on its own line, after an empty line)
    comments: list[tuple[str, bool, bool]] = field(default_factory=list)


@dataclass
class _Frame:
    opener: int  # index of the opening token
    block: bool  # one argument a line
    indent: int  # of the arguments (block) or of continued chain lines (inline)
    outer: int  # indent of the line the opener is on
    train: bool = False


@dataclass
class _Line:
    indent: int
    code: str = ""
    comment: str | None = None
    assertion: int | None = None  # where a trailing `: [shape]` starts in code
    stmt: int = 0  # the statement's first token (-1: an empty line)
    pad: int = 0  # the column of an aligned trailing comment


def format_text(text: str, path: str = "<spec>") -> str:
    """The canonical layout of `text`; raises the parser's located error if it does not parse."""
    parse_text(text, path)  # the located error, as `check` gives it
    try:
        toks, starts = _lex(text)
    except UnexpectedInput as e:  # pragma: no cover - parse_text accepted it
        raise NetspecError(f"cannot format {path}: {e}") from None
    return _Printer(toks, starts).run()


def _lex(text: str) -> tuple[list[_Tok], list[tuple[int, str]]]:
    """Typed tokens with the comments and line breaks before each, and where each top-level
    statement starts (token index, rule name)."""
    ip = _parser().parse_interactive(text)
    raw: list[Token] = list(ip.iter_parse())
    tree = ip.resume_parse()
    toks: list[_Tok] = []
    pos = 0
    for t in raw + [Token("$END", "", start_pos=len(text), end_pos=len(text))]:
        start = t.start_pos or 0
        tok = _Tok(t.type if t.value not in ("->", "..") else t.value, str(t.value), start, 0)
        tok.end = t.end_pos if t.end_pos is not None else start
        _gap(text[pos:start], tok, pos == 0)
        toks.append(tok)
        pos = tok.end
    by_pos = {t.start: i for i, t in enumerate(toks)}
    starts = [(by_pos[c.meta.start_pos], c.data) for c in tree.children if not c.meta.empty]
    return toks, starts


def _gap(gap: str, tok: _Tok, file_start: bool) -> None:
    last = 0
    for m in _COMMENT.finditer(gap):
        before = gap[last : m.start()]
        own = "\n" in before or (file_start and last == 0)
        tok.comments.append((m.group().rstrip(), own, bool(_BLANK.search(before))))
        last = m.end()
    tok.nl_before = "\n" in gap
    tok.blank_before = bool(_BLANK.search(gap[last:]))


class _Printer:
    def __init__(self, toks: list[_Tok], starts: list[tuple[int, str]]) -> None:
        self.toks = toks
        self.starts = dict(starts)
        self.lines: list[_Line] = []
        self.line: _Line | None = None
        self.stack: list[_Frame] = []
        self.kind = ""
        self.stmt = 0
        self.match = _matching(toks)

    # ---- output -------------------------------------------------------------------------
    def _newline(self, indent: int) -> None:
        self._flush()
        self.line = _Line(indent, stmt=self.stmt)

    def _flush(self) -> None:
        if self.line is not None and (self.line.code or self.line.comment is not None):
            self.lines.append(self.line)
        self.line = None

    def _blank(self) -> None:
        self._flush()
        if self.lines and self.lines[-1].stmt != -1:
            self.lines.append(_Line(0, stmt=-1))

    def _col(self) -> int:
        assert self.line is not None
        return self.line.indent + len(self.line.code)

    # ---- the walk -----------------------------------------------------------------------
    def run(self) -> str:
        for i, tok in enumerate(self.toks):
            if i in self.starts or tok.type == "$END":
                self._statement_gap(i, tok)
                if tok.type == "$END":
                    break
                self.kind, self.stmt, self.stack = self.starts[i], i, []
                self._newline(0)
                self._put(i, "")
                continue
            self._comments(i, tok)
            self._token(i, tok)
        self._flush()
        return _render(self.lines)

    def _statement_gap(self, i: int, tok: _Tok) -> None:
        for text, own, blank in tok.comments:
            if not own and self.line is not None and self.line.code:
                self.line.comment = text
                continue
            if blank:
                self._blank()
            self._newline(0)
            assert self.line is not None
            self.line.comment = text
        if tok.type != "$END" and tok.blank_before:
            self._blank()

    def _comments(self, i: int, tok: _Tok) -> None:
        for text, own, _blank in tok.comments:
            assert self.line is not None
            if own or not self.line.code:
                self._newline(self._indent_for(i, tok))
            assert self.line is not None
            self.line.comment = text
            self._newline(self._indent_for(i, tok))

    def _token(self, i: int, tok: _Tok) -> None:
        assert self.line is not None
        fresh = not self.line.code
        brk = self._break_before(i, tok)
        if brk is not None and not fresh:
            self._newline(brk)
        elif fresh:
            self.line.indent = self._indent_for(i, tok)
        assert self.line is not None
        self._put(i, "" if not self.line.code else self._space(i, tok))

    def _put(self, i: int, space: str) -> None:
        tok, line = self.toks[i], self.line
        assert line is not None
        if not self.stack and tok.type == "COLON" and not self._is_head_colon(i):
            line.assertion = len(line.code) if line.assertion is None else -1
        elif not self.stack and tok.type != "LSQB" and line.assertion is not None:
            line.assertion = -1  # more code after the assertion: not aligned
        line.code += space + tok.text
        if tok.type in _OPENERS:
            self._open(i)
        elif tok.type in _CLOSERS and self.stack:
            self.stack.pop()

    def _open(self, i: int) -> None:
        assert self.line is not None
        j = self.match.get(i, i)
        train = self.toks[i].type == "LBRACE" and self.toks[i - 1].type == "TRAIN"
        commas = [k for k in range(i + 1, j) if self._level(i, k) and self._sep(k, train)]
        src = self.toks[i + 1].nl_before or self.toks[j].nl_before
        src = src or any(self.toks[k + 1].nl_before for k in commas if self.toks[k].type == "COMMA")
        src = src or any(self.toks[k].comments for k in range(i + 1, j + 1) if self._level(i, k))
        long = self._col() + self._flat(i + 1, j + 1) > WIDTH and bool(commas)
        block = (src or long) and j > i + 1
        outer = self.line.indent
        self.stack.append(_Frame(i, block, outer + INDENT, outer, train))

    def _level(self, opener: int, k: int) -> bool:
        """Whether token k sits directly inside the bracket opened at `opener`."""
        return self._owner(k) == opener

    def _owner(self, k: int) -> int | None:
        depth, j = 0, k - 1
        while j >= 0:
            t = self.toks[j].type
            if t in _CLOSERS:
                depth += 1
            elif t in _OPENERS:
                if depth == 0:
                    return j
                depth -= 1
            j -= 1
        return None

    def _sep(self, k: int, train: bool) -> bool:
        t = self.toks[k]
        if t.type == "COMMA":
            return True
        return train and t.type == "NAME" and self.toks[k + 1].type == "EQUAL"

    def _is_head_colon(self, i: int) -> bool:
        if self.kind != "head_decl":
            return False
        return not any(t.type == "COLON" for t in self.toks[self.stmt : i])

    # ---- decisions ----------------------------------------------------------------------
    def _break_before(self, i: int, tok: _Tok) -> int | None:
        """The indent of a new line before token i, or None to stay on this line."""
        frame = self.stack[-1] if self.stack else None
        prev = self.toks[i - 1]
        if frame is not None and frame.block:
            if tok.type in _CLOSERS and self.match.get(frame.opener) == i:
                return frame.outer
            if i == frame.opener + 1:
                return frame.indent
            if prev.type == "COMMA" and self._level(frame.opener, i - 1):
                return frame.indent
            if frame.train and self._sep(i, True) and prev.type != "COMMA":
                return frame.indent
        if tok.type == "->":
            nxt = self.toks[i + 1]
            if tok.nl_before or nxt.nl_before or self._col() + 4 + self._element(i + 1) > WIDTH:
                return self._chain_indent(frame)
        if not self.stack and self._is_body_start(i) and tok.nl_before:
            return INDENT
        return None

    def _is_body_start(self, i: int) -> bool:
        prev = self.toks[i - 1]
        if self.kind == "block_def" and prev.type == "EQUAL":
            return True
        return self.kind == "head_decl" and prev.type == "COLON" and self._is_head_colon(i - 1)

    def _chain_indent(self, frame: _Frame | None) -> int:
        if frame is None:
            return INDENT
        return frame.indent if frame.block else frame.outer + INDENT

    def _indent_for(self, i: int, tok: _Tok) -> int:
        brk = self._break_before(i, tok)
        if brk is not None:
            return brk
        frame = self.stack[-1] if self.stack else None
        if frame is None:
            return INDENT
        return frame.indent

    def _space(self, i: int, tok: _Tok) -> str:
        prev = self.toks[i - 1]
        frame = self.stack[-1] if self.stack else None
        a, b = prev.type, tok.type
        if b in ("RPAR", "RSQB", "COMMA", "QMARK") or a in ("LPAR", "LSQB", "MINUS"):
            return ""
        if a == "LBRACE" or b == "RBRACE":
            return " " if frame is not None and frame.train else ""
        if b == "LPAR" and a in _CALLS:
            return ""
        if a in _TIGHT or b in _TIGHT:
            return ""
        if b == "EQUAL" or a == "EQUAL":
            inside = frame is not None and not frame.train
            return "" if inside else " "
        if b == "COLON" and self._is_head_colon(i):
            return ""
        return " "

    def _element(self, i: int) -> int:
        """Flat width of the chain element starting at token i (up to the next arrow, comma or
        closer at its own level)."""
        depth, j = 0, i
        while j < len(self.toks) and self.toks[j].type != "$END":
            t = self.toks[j].type
            if j in self.starts:
                break
            if t in _OPENERS:
                depth += 1
            elif t in _CLOSERS:
                depth -= 1
                if depth < 0:
                    break
            elif depth == 0 and t in ("->", "COMMA"):
                break
            j += 1
        return self._flat(i, j)

    def _flat(self, i: int, j: int) -> int:
        n = 0
        for k in range(i, j):
            n += len(self.toks[k].text) + (1 if k > i and self._flat_space(k) else 0)
        return n

    def _flat_space(self, k: int) -> bool:
        a, b = self.toks[k - 1].type, self.toks[k].type
        if b in ("RPAR", "RSQB", "COMMA", "QMARK", "RBRACE") or a in ("LPAR", "LSQB", "MINUS"):
            return False
        if (b == "LPAR" and a in _CALLS) or a in _TIGHT or b in _TIGHT:
            return False
        return not (a == "EQUAL" or b == "EQUAL")


def _matching(toks: list[_Tok]) -> dict[int, int]:
    out: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(toks):
        if t.type in _OPENERS:
            stack.append(i)
        elif t.type in _CLOSERS and stack:
            out[stack.pop()] = i
    return out


def _render(lines: list[_Line]) -> str:
    _align(lines, lambda ln: ln.assertion if ln.assertion and ln.assertion > 0 else None, True)
    _align(lines, lambda ln: len(ln.code) if ln.code and ln.comment is not None else None, False)
    out = []
    for ln in lines:
        text = " " * ln.indent + ln.code if ln.code else ""
        if ln.comment is not None:
            pad = " " * max(2, ln.pad - len(text))
            text = (text + pad if ln.code else " " * ln.indent) + ln.comment
        out.append(text.rstrip())
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _align(lines: list[_Line], where, assertion: bool) -> None:
    """Align a column over runs of consecutive lines (of one statement, for assertions)."""
    run: list[_Line] = []
    for ln in [*lines, None]:
        at = where(ln) if ln is not None else None
        same = not run or ln is None or not assertion or ln.stmt == run[-1].stmt
        if at is not None and same:
            run.append(ln)  # type: ignore[arg-type]
            continue
        if (
            assertion
            and ln is not None
            and run
            and ln.stmt == run[-1].stmt
            and ln.assertion is None
        ):
            continue  # a line of the same chain without an assertion: the run goes on
        _align_run(run, where, assertion)
        run = [ln] if at is not None and ln is not None else []


def _align_run(run: list[_Line], where, assertion: bool) -> None:
    if len(run) < 2:
        return
    if assertion:
        col = max(ln.indent + len(ln.code[: where(ln)].rstrip()) for ln in run) + 1
        for ln in run:
            at = where(ln)
            head = ln.code[:at].rstrip()
            pad = col - ln.indent - len(head)
            ln.code = head + " " * pad + ln.code[at:].lstrip()
        return
    col = max(ln.indent + len(ln.code) for ln in run) + 2
    for ln in run:
        ln.pad = col
