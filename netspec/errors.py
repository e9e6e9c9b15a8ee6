"""User-facing errors: every mistake in a spec carries a span and renders like a compiler's.

A `NetspecError` is a user's mistake (bad spec, bad flag, bad data file), never a bug: the CLI
prints it without a traceback and exits with status 2. An error may carry a `Span` into a
source file; `render` then shows ``file:line:col``, the source line and the span underlined.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

# Source texts by file name, so an error can show its line long after parsing.
_SOURCES: dict[str, str] = {}


def register_source(name: str, text: str) -> None:
    """Remember a source text so errors pointing into it can show the offending line."""
    _SOURCES[name] = text


def source_text(name: str) -> str | None:
    return _SOURCES.get(name)


class Span(BaseModel):
    """A region of a source file. Lines and columns are 1-based; `end_col` is exclusive."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class NetspecError(Exception):
    """A mistake in the user's input: rendered with its span and hint, exit status 2."""

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        hint: str | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.notes = list(notes)
        # Where in the expanded network it happened, when a full build knows: the node's id,
        # and the loop indices (`for i`) in force.
        self.node: str | None = None
        self.indices: dict[str, int] | None = None

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}{self.message}"

    def render(self, color: bool = False) -> str:
        return render_error(self, color=color)


class SpecErrors(NetspecError):
    """Several errors found in one pass, reported together."""

    def __init__(self, errors: list[NetspecError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, first.span, first.hint, first.notes)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def render(self, color: bool = False) -> str:
        parts = [render_error(e, color=color) for e in self.errors]
        if len(self.errors) > 1:
            parts.append(f"{len(self.errors)} errors")
        return "\n\n".join(parts)


def _style(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def render_error(err: NetspecError, color: bool = False) -> str:
    """Render one error like a compiler: location, message, source line, underline, hint."""
    head = _style("error", "1;31", color) + ": " + err.message
    lines = [f"{err.span}: {head}" if err.span else head]
    span = err.span
    text = source_text(span.file) if span else None
    if span and text is not None:
        src_lines = text.splitlines()
        if 1 <= span.line <= len(src_lines):
            src = src_lines[span.line - 1].expandtabs(1)
            end = span.end_col if span.end_line == span.line else len(src) + 1
            width = max(1, end - span.col)
            gutter = f"{span.line:>4} | "
            lines.append(gutter + src)
            marks = " " * (span.col - 1) + "^" * width
            lines.append(" " * (len(gutter) - 2) + "| " + _style(marks, "1;31", color))
    lines.extend(f"  {note}" for note in err.notes)
    if err.hint:
        lines.append("  " + _style("hint", "1;36", color) + ": " + err.hint)
    return "\n".join(lines)


def clip(text: str, width: int = 60) -> str:
    """`text` cut to `width` characters with "..." when longer: user input echoed in a message
    (a 100 KB name) stays one readable line."""
    return text if len(text) <= width else text[: width - 3] + "..."


# A name longer than this is no misspelling of a known one (and difflib's cost grows with it).
_MISSPELLING_MAX = 256


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelled name, or None when nothing is close."""
    if len(name) > _MISSPELLING_MAX:
        return None
    pool = list(choices)
    by_lower = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return None
    names = [by_lower[c] for c in close]
    return "did you mean " + " or ".join(f"`{n}`" for n in names) + "?"
