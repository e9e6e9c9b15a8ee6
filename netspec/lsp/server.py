"""`netspec lsp`: the language server over stdio (pygls 2.x). The knowledge lives in
netspec/lsp/analysis.py; this module maps it onto LSP messages. Every handler catches what
it raises, so a half-typed file never takes the server down."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types as t
from pygls.lsp.server import LanguageServer

from netspec import __version__
from netspec.errors import NetspecError
from netspec.frontend.format import format_text
from netspec.lsp import analysis as an

server = LanguageServer("netspec", __version__)
_cache: OrderedDict[tuple[str, str], an.Analysis] = OrderedDict()
_log = logging.getLogger(__name__)


def _safe(default: Any) -> Callable:
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(ls: LanguageServer, params: Any) -> Any:
            try:
                return fn(ls, params)
            except Exception:  # a handler's failure must not end the session
                _log.exception("netspec lsp: %s failed", fn.__name__)
                return default

        return run

    return wrap


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def _analysis(ls: LanguageServer, uri: str) -> an.Analysis:
    text = ls.workspace.get_text_document(uri).source
    key = (uri, text)
    if key not in _cache:
        _cache[key] = an.analyse(text, _path(uri))
        while len(_cache) > 8:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    return _cache[key]


def _range(r: an.Range) -> t.Range:
    return t.Range(start=t.Position(*r[0]), end=t.Position(*r[1]))


def _publish(ls: LanguageServer, uri: str) -> None:
    a = _analysis(ls, uri)
    diags = []
    for p in a.problems:
        message = p.message + (f"\nhint: {p.hint}" if p.hint else "")
        data = {"fixes": p.fixes} if p.fixes else None
        diags.append(
            t.Diagnostic(
                range=_range(p.range),
                message=message,
                severity=t.DiagnosticSeverity.Error,
                source="netspec",
                data=data,
            )
        )
    ls.text_document_publish_diagnostics(t.PublishDiagnosticsParams(uri=uri, diagnostics=diags))


@server.feature(t.TEXT_DOCUMENT_DID_OPEN)
@_safe(None)
def did_open(ls: LanguageServer, params: t.DidOpenTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)


@server.feature(t.TEXT_DOCUMENT_DID_CHANGE)
@_safe(None)
def did_change(ls: LanguageServer, params: t.DidChangeTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)


@server.feature(t.TEXT_DOCUMENT_DID_SAVE)
@_safe(None)
def did_save(ls: LanguageServer, params: t.DidSaveTextDocumentParams) -> None:
    _publish(ls, params.text_document.uri)


@server.feature(t.TEXT_DOCUMENT_HOVER)
@_safe(None)
def hover(ls: LanguageServer, params: t.HoverParams) -> t.Hover | None:
    a = _analysis(ls, params.text_document.uri)
    text = an.hover(a, (params.position.line, params.position.character))
    if text is None:
        return None
    return t.Hover(contents=t.MarkupContent(kind=t.MarkupKind.Markdown, value=text))


@server.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions(trigger_characters=["(", ",", ":"]))
@_safe(None)
def completion(ls: LanguageServer, params: t.CompletionParams) -> t.CompletionList:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    items = [
        t.CompletionItem(label=label, detail=what, kind=_KIND.get(what, t.CompletionItemKind.Text))
        for label, what in an.completions(text, (params.position.line, params.position.character))
    ]
    return t.CompletionList(is_incomplete=False, items=items)


_KIND = {
    "layer": t.CompletionItemKind.Class,
    "block": t.CompletionItemKind.Function,
    "variable": t.CompletionItemKind.Variable,
    "keyword": t.CompletionItemKind.Keyword,
    "zoo spec": t.CompletionItemKind.File,
}


@server.feature(t.TEXT_DOCUMENT_CODE_ACTION)
@_safe([])
def code_action(ls: LanguageServer, params: t.CodeActionParams) -> list[t.CodeAction]:
    uri = params.text_document.uri
    actions: list[t.CodeAction] = []
    for diag in params.context.diagnostics:
        fixes = (diag.data or {}).get("fixes", []) if isinstance(diag.data, dict) else []
        for fix in fixes:
            edit = t.WorkspaceEdit(changes={uri: [t.TextEdit(range=diag.range, new_text=fix)]})
            actions.append(
                t.CodeAction(
                    title=f"Change to `{fix}`",
                    kind=t.CodeActionKind.QuickFix,
                    diagnostics=[diag],
                    edit=edit,
                    is_preferred=len(actions) == 0,
                )
            )
    return actions


@server.feature(t.TEXT_DOCUMENT_DEFINITION)
@_safe(None)
def definition(ls: LanguageServer, params: t.DefinitionParams) -> t.Location | None:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    hit = an.word_at(text, (params.position.line, params.position.character))
    found = an.definitions(text).get(hit[0]) if hit else None
    if found is None:
        return None
    return t.Location(uri=params.text_document.uri, range=_range(found[1]))


@server.feature(t.TEXT_DOCUMENT_REFERENCES)
@_safe(None)
def references(ls: LanguageServer, params: t.ReferenceParams) -> list[t.Location] | None:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    hit = an.word_at(text, (params.position.line, params.position.character))
    if hit is None or hit[0] not in an.definitions(text):
        return None
    uri = params.text_document.uri
    return [t.Location(uri=uri, range=_range(r)) for r in an.occurrences(text, hit[0])]


@server.feature(t.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@_safe([])
def document_symbol(ls: LanguageServer, params: t.DocumentSymbolParams) -> list[t.DocumentSymbol]:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    kinds = {
        "block": t.SymbolKind.Function,
        "variable": t.SymbolKind.Variable,
        "head": t.SymbolKind.Field,
        "train": t.SymbolKind.Namespace,
    }
    return [
        t.DocumentSymbol(
            name=name, kind=kinds[what], range=_range(r), selection_range=_range(r), detail=what
        )
        for name, what, r in an.symbols(text)
    ]


@server.feature(t.TEXT_DOCUMENT_INLAY_HINT)
@_safe([])
def inlay_hint(ls: LanguageServer, params: t.InlayHintParams) -> list[t.InlayHint]:
    a = _analysis(ls, params.text_document.uri)
    lo, hi = params.range.start.line, params.range.end.line
    return [
        t.InlayHint(position=t.Position(*pos), label=label, kind=t.InlayHintKind.Type)
        for pos, label in an.inlay_hints(a)
        if lo <= pos[0] <= hi
    ]


@server.feature(t.TEXT_DOCUMENT_FORMATTING)
@_safe(None)
def formatting(ls: LanguageServer, params: t.DocumentFormattingParams) -> list[t.TextEdit] | None:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    try:
        new = format_text(text, _path(params.text_document.uri))
    except NetspecError:
        return None  # does not parse: the diagnostics say why
    if new == text:
        return []
    end = an.pos_of(text, len(text))
    return [t.TextEdit(range=_range(((0, 0), end)), new_text=new)]


@server.feature(
    t.TEXT_DOCUMENT_SIGNATURE_HELP, t.SignatureHelpOptions(trigger_characters=["(", ","])
)
@_safe(None)
def signature_help(ls: LanguageServer, params: t.SignatureHelpParams) -> t.SignatureHelp | None:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    found = an.signature(text, (params.position.line, params.position.character))
    if found is None:
        return None
    label, names, active = found
    info = t.SignatureInformation(
        label=label, parameters=[t.ParameterInformation(label=n) for n in names]
    )
    return t.SignatureHelp(signatures=[info], active_signature=0, active_parameter=active)


@server.feature(t.TEXT_DOCUMENT_FOLDING_RANGE)
@_safe([])
def folding_range(ls: LanguageServer, params: t.FoldingRangeParams) -> list[t.FoldingRange]:
    text = ls.workspace.get_text_document(params.text_document.uri).source
    return [t.FoldingRange(start_line=a, end_line=b) for a, b in an.folding(text)]


def main() -> None:
    server.start_io()
