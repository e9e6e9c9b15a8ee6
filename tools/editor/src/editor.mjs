// The playground's code editor: CodeMirror 6 with netspec highlighting and diagnostics.
// Built into netspec/serve/static/editor.js by tools/editor/build.sh (esbuild, minified).
import {EditorState} from "@codemirror/state";
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, highlightSpecialChars,
} from "@codemirror/view";
import {defaultKeymap, history, historyKeymap, indentWithTab} from "@codemirror/commands";
import {
  StreamLanguage, HighlightStyle, syntaxHighlighting, bracketMatching,
} from "@codemirror/language";
import {setDiagnostics, lintGutter} from "@codemirror/lint";
import {tags} from "@lezer/highlight";

const KEYWORDS = new Set([
  "network", "input", "classes", "budget", "dtype", "defaults", "block", "train", "for",
  "in", "as", "if", "else", "not", "and", "or", "tokens",
]);
const ATOMS = new Set(["on", "off", "true", "false", "yes", "no", "auto", "same", "valid"]);
const STRUCTURE = new Set(["concat", "add", "residual"]);

const netspecLanguage = StreamLanguage.define({
  name: "netspec",
  token(stream) {
    if (stream.eatSpace()) return null;
    if (stream.match(/^#.*/)) return "comment";
    if (stream.match(/^"(?:[^"\\]|\\.)*"?/)) return "string";
    if (stream.match(/^\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:[KMGT]i?)?B?/)) return "number";
    if (stream.match(/^(?:->|\*\*|\/\/|\.\.|<=|>=|==|!=|[*?:=<>+\-\/%])/)) return "operator";
    const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
    if (word) {
      const w = word[0];
      if (/^[A-Z][A-Z0-9_]*$/.test(w) && w.length > 1) return "typeName";
      if (KEYWORDS.has(w)) return "keyword";
      if (ATOMS.has(w)) return "atom";
      if (STRUCTURE.has(w)) return "macroName";
      return "variableName";
    }
    stream.next();
    return null;
  },
  languageData: {commentTokens: {line: "#"}},
});

const style = HighlightStyle.define([
  {tag: tags.comment, color: "#6a737d", fontStyle: "italic"},
  {tag: tags.string, color: "#22863a"},
  {tag: tags.number, color: "#005cc5"},
  {tag: tags.keyword, color: "#d73a49", fontWeight: "bold"},
  {tag: tags.atom, color: "#6f42c1"},
  {tag: tags.typeName, color: "#b31d28", fontWeight: "bold"},
  {tag: tags.macroName, color: "#e36209", fontWeight: "bold"},
  {tag: tags.operator, color: "#d73a49"},
  {tag: tags.variableName, color: "#24292e"},
]);

function offset(doc, line, col) {
  const l = doc.line(Math.min(Math.max(line, 1), doc.lines));
  return Math.min(l.from + Math.max(col - 1, 0), l.to);
}

export function create(parent, text, onChange) {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: text,
      extensions: [
        lineNumbers(), highlightActiveLineGutter(), highlightSpecialChars(), history(),
        drawSelection(), bracketMatching(), highlightActiveLine(), lintGutter(),
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        netspecLanguage, syntaxHighlighting(style),
        EditorView.updateListener.of((u) => { if (u.docChanged) onChange(u.state.doc.toString()); }),
        EditorView.theme({"&": {height: "100%"}, ".cm-scroller": {fontFamily: "monospace"}}),
      ],
    }),
  });
  return view;
}

export function getText(view) {
  return view.state.doc.toString();
}

export function setText(view, text) {
  view.dispatch({changes: {from: 0, to: view.state.doc.length, insert: text}});
}

// errors: [{message, hint, span: {line, col, end_line, end_col} | null}], 1-based, end exclusive
export function setErrors(view, errors) {
  const doc = view.state.doc;
  const diagnostics = [];
  for (const e of errors) {
    if (!e.span) continue;
    const from = offset(doc, e.span.line, e.span.col);
    let to = offset(doc, e.span.end_line, e.span.end_col);
    if (to <= from) to = Math.min(from + 1, doc.length);
    const message = e.message + (e.hint ? "\nhint: " + e.hint : "");
    diagnostics.push({from, to, severity: "error", message});
  }
  view.dispatch(setDiagnostics(view.state, diagnostics));
}

export function select(view, line, col) {
  const at = offset(view.state.doc, line, col);
  view.dispatch({selection: {anchor: at}, scrollIntoView: true});
  view.focus();
}
