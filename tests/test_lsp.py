"""The language server as an editor drives it: `python -m netspec lsp` spawned, JSON-RPC over
its stdin/stdout with a small client (issue 27)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.fuzz_specs import generated_spec, mutated_spec

from netspec.ir import receptive
from netspec.ir.build import load_spec_text
from netspec.lsp.analysis import completions
from netspec.zoo import names

pytest.importorskip("pygls")

ROOT = Path(__file__).resolve().parents[1]
RESNET = (ROOT / "specs" / "resnet18.ns").read_text()
URI = "file:///tmp/netspec-lsp-test/resnet18.ns"


class Client:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # A file, not a pipe: a chatty server never blocks; closed by the fixture.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netspec", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        self.next_id = 0
        self.notes: list[dict] = []
        self.version = 1

    def send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def read(self) -> dict:
        assert self.proc.stdout is not None
        length = 0
        while (line := self.proc.stdout.readline().strip()) != b"":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        assert length, "the server closed its output"
        return json.loads(self.proc.stdout.read(length))

    def request(self, method: str, params: dict) -> object:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = self.read()
            if msg.get("id") == self.next_id and "method" not in msg:
                assert "error" not in msg, msg
                return msg.get("result")
            if "method" in msg and "id" in msg:  # a request from the server: answer it
                self.send({"id": msg["id"], "result": None})
            elif "method" in msg:
                self.notes.append(msg)

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def diagnostics(self) -> list[dict]:
        """The diagnostics published after the last change (a round trip flushes them)."""
        self.notes.clear()
        self.request("textDocument/documentSymbol", {"textDocument": {"uri": URI}})
        published = [n for n in self.notes if n["method"] == "textDocument/publishDiagnostics"]
        assert published, "no diagnostics published"
        return published[-1]["params"]["diagnostics"]

    def open(self, text: str) -> None:
        self.version += 1
        doc = {"uri": URI, "languageId": "netspec", "version": self.version, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": doc})

    def change(self, text: str) -> None:
        self.version += 1
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": URI, "version": self.version},
                "contentChanges": [{"text": text}],
            },
        )

    def close(self) -> None:
        self.request("shutdown", {})
        self.notify("exit", {})
        self.proc.wait(timeout=10)


def _started() -> Client:
    c = Client()
    c.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    c.notify("initialized", {})
    return c


@pytest.fixture(scope="module")
def client():
    """One server for the module's tests (each opens its document afresh): it starts in seconds."""
    c = _started()
    yield c
    if c.proc.poll() is None:
        c.close()
    c.log.close()


def _pos(text: str, needle: str, delta: int = 0) -> dict:
    off = text.index(needle) + delta
    line = text[:off].count("\n")
    return {"line": line, "character": off - (text[:off].rfind("\n") + 1)}


def test_diagnostic_quick_fix_hover_completion_format(client: Client) -> None:
    client.open(RESNET)
    assert client.diagnostics() == []

    broken = RESNET.replace("-> GAP", "-> GAPP")
    client.change(broken)
    (diag,) = client.diagnostics()
    start = _pos(broken, "GAPP")
    assert diag["range"]["start"] == start
    assert diag["range"]["end"] == {**start, "character": start["character"] + 4}
    assert "GAPP" in diag["message"]

    actions = client.request(
        "textDocument/codeAction",
        {"textDocument": {"uri": URI}, "range": diag["range"], "context": {"diagnostics": [diag]}},
    )
    assert isinstance(actions, list)
    fix = next(a for a in actions if a["edit"]["changes"][URI][0]["newText"] == "GAP")
    edit = fix["edit"]["changes"][URI][0]
    lines = broken.split("\n")
    r = edit["range"]
    line = lines[r["start"]["line"]]
    lines[r["start"]["line"]] = (
        line[: r["start"]["character"]] + edit["newText"] + line[r["end"]["character"] :]
    )
    fixed = "\n".join(lines)
    assert fixed == RESNET
    client.change(fixed)
    assert client.diagnostics() == []

    hov = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": URI}, "position": _pos(fixed, "POOL(3, stride=2", 1)},
    )
    assert isinstance(hov, dict) and "[64, 56, 56]" in hov["contents"]["value"]
    field = receptive.compute(load_spec_text(RESNET).instantiate())["pool1"]
    assert f"receptive field: {field.size[0]} input pixels" in hov["contents"]["value"]

    call = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": URI}, "position": _pos(fixed, "basic(128, 2", 1)},
    )
    graph = load_spec_text(RESNET).instantiate()
    params = sum(n.params for n in graph.nodes if n.id.startswith("layer2.basic1."))
    assert isinstance(call, dict) and "layer2.basic1" in call["contents"]["value"]
    assert f"({params:,})" in call["contents"]["value"]

    typed = fixed.replace("-> GAP", "-> CO")
    client.change(typed)
    done = client.request(
        "textDocument/completion",
        {"textDocument": {"uri": URI}, "position": _pos(typed, "-> CO", 5)},
    )
    assert isinstance(done, dict)
    labels = {item["label"] for item in done["items"]}
    assert {"CONV", "CONV1D", "CONVTRANSPOSE"} <= labels and "POOL" not in labels

    messy = "input [1,8,8]\nINPUT->CONV(4)  ->RELU\n"
    client.change(messy)
    edits = client.request(
        "textDocument/formatting",
        {"textDocument": {"uri": URI}, "options": {"tabSize": 2, "insertSpaces": True}},
    )
    assert isinstance(edits, list)
    assert edits[0]["newText"] == "input [1, 8, 8]\nINPUT -> CONV(4) -> RELU\n"


def test_quick_fix_replaces_only_the_misspelled_argument(client: Client) -> None:
    broken = RESNET.replace("stride=2, padding=3", "strde=2, padding=3")
    client.open(broken)
    (diag,) = client.diagnostics()
    start = _pos(broken, "strde")
    assert diag["range"] == {"start": start, "end": {**start, "character": start["character"] + 5}}
    assert diag["data"] == {"fixes": ["stride"]}


def test_definition_references_symbols_inlay(client: Client) -> None:
    client.open(RESNET)
    at = {"textDocument": {"uri": URI}, "position": _pos(RESNET, "basic(128", 1)}
    where = client.request("textDocument/definition", at)
    assert isinstance(where, dict)
    assert where["range"]["start"] == _pos(RESNET, "basic(c")
    refs = client.request(
        "textDocument/references", {**at, "context": {"includeDeclaration": True}}
    )
    assert isinstance(refs, list) and len(refs) == 9
    syms = client.request("textDocument/documentSymbol", {"textDocument": {"uri": URI}})
    assert isinstance(syms, list) and [s["name"] for s in syms] == ["basic"]
    hints = client.request(
        "textDocument/inlayHint",
        {
            "textDocument": {"uri": URI},
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 99, "character": 0}},
        },
    )
    assert isinstance(hints, list)
    assert any(h["label"] == " [64, 112, 112]" for h in hints)
    folds = client.request("textDocument/foldingRange", {"textDocument": {"uri": URI}})
    assert isinstance(folds, list)
    block = _pos(RESNET, "block basic")["line"]
    assert {"startLine": block, "endLine": block + 2} in folds


def test_signature_help(client: Client) -> None:
    text = RESNET.replace("-> GAP", "-> CONV(64, 3, pad")
    client.open(text)
    sig = client.request(
        "textDocument/signatureHelp",
        {"textDocument": {"uri": URI}, "position": _pos(text, "CONV(64, 3, pad", 15)},
    )
    assert isinstance(sig, dict)
    (info,) = sig["signatures"]
    assert info["label"].startswith("CONV(channels=")
    assert [p["label"].split("=")[0] for p in info["parameters"]][:4] == [
        "channels",
        "kernel",
        "stride",
        "padding",
    ]
    assert sig["activeParameter"] == 2  # the third positional argument is being typed


def test_check_and_fmt_do_not_import_pygls() -> None:
    code = (
        "import sys; from netspec.cli import main; main(['check', 'specs/lenet5.ns', '--brief']);"
        "main(['fmt', '--check', 'specs/lenet5.ns']); print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('pygls', 'lsprotocol', 'torch')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert out.stdout.decode().strip().splitlines()[-1] == "[]"


def test_half_typed_text_never_crashes_the_server() -> None:
    client = _started()  # its own server, whose log is read at the end
    r = random.Random(27)
    texts = [RESNET] + [generated_spec(r) for _ in range(2)] + [mutated_spec(r)]
    client.open("")
    changes = 0
    for text in texts:
        for cut in range(0, len(text), 10):
            client.change(text[:cut])
            changes += 1
        assert isinstance(client.diagnostics(), list)
        hov = client.request(
            "textDocument/hover",
            {"textDocument": {"uri": URI}, "position": {"line": 1, "character": 3}},
        )
        assert hov is None or "contents" in hov
    assert changes > 50 and client.proc.poll() is None
    client.close()
    client.log.seek(0)
    log = client.log.read().decode()
    client.log.close()
    assert "Traceback" not in log and "failed" not in log, log[-2000:]


def test_completion_of_arguments_names_and_zoo() -> None:
    text = "c = 4\nblock stem(c) = CONV(c)\nINPUT -> CONV(64, st"
    end = (2, len("INPUT -> CONV(64, st"))
    assert ("stride=", "CONV argument") in completions(text, end)
    assert {label for label, _ in completions(text + "\n-> s", (3, 4))} >= {"stem", "SOFTMAX"}
    assert {label for label, _ in completions("# zoo:", (0, 6))} == set(names())
    resnets = {label for label, _ in completions("# zoo:resn", (0, 10))}
    assert resnets == {n for n in names() if n.startswith("resn")} and "resnet18" in resnets
