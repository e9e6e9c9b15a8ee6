"""The playground's server: what the page is sent equals `check`'s figures and errors; limits
on hostile input; loopback only; every asset shipped in the package."""

from __future__ import annotations

import io
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from helpers.cpu import cpu_limit
from helpers.skips import needs_dot

from netspec.ir.build import load_spec, load_spec_text

pytest.importorskip("httpx", reason="starlette's test client needs httpx (pip install httpx)")
with warnings.catch_warnings():  # starlette 1.x suggests a renamed httpx; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from netspec.serve import compile as comp  # noqa: E402
from netspec.serve.app import STATIC, create_app  # noqa: E402
from netspec.serve.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
MAX_BODY = Settings().max_body
PAGE = {"X-Netspec-Token": "test-token"}
TOKEN = PAGE["X-Netspec-Token"]  # the page's; test_serve_hostile.py sends requests without
TINY = "network tiny\ninput [1, 28, 28]\nclasses 10\nINPUT -> CONV(8) -> RELU -> POOL -> FC(10) -> SOFTMAX\n"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(token=TOKEN), base_url="http://127.0.0.1", headers=PAGE) as c:
        yield c


@needs_dot
def test_compile_sends_the_irs_rows_totals_budgets_and_diagram(client):
    text = (SPECS / "resnet18.ns").read_text()
    graph = load_spec(SPECS / "resnet18.ns").instantiate()
    r = client.post("/api/compile", json={"text": text})
    assert r.status_code == 200
    data = r.json()
    assert data["ok"] and data["errors"] == []
    g = data["graph"]
    assert [row["id"] for row in g["rows"]] == [n.id for n in graph.nodes]
    assert [(row["params"], row["macs"], row["memory"]) for row in g["rows"]] == [
        (n.params, n.macs, n.memory) for n in graph.nodes
    ]
    assert g["totals"]["params"] == graph.totals.params == 11_689_512
    assert g["totals"]["macs"] == graph.totals.macs
    assert [(b["metric"], b["ok"]) for b in g["budgets"]] == [
        (b.metric, b.ok) for b in graph.budgets
    ]
    assert data["svg"].startswith("<svg") and data["svg"].count('class="node"') == len(graph.nodes)
    # the page's two steps: summary only, then diagram only
    first = client.post("/api/compile", json={"text": text, "diagram": False}).json()
    second = client.post("/api/compile", json={"text": text, "summary": False}).json()
    assert first["svg"] is None and first["graph"] == g
    assert second["graph"] is None and second["svg"] == data["svg"]


def test_errors_at_the_character_with_hint_all_collected_as_check_does(client):
    text = TINY.replace("CONV(8)", "CONVV(8)")
    err = client.post("/api/compile", json={"text": text}).json()["errors"]
    assert len(err) == 1
    assert err[0]["span"] == {"line": 4, "col": 10, "end_line": 4, "end_col": 15}
    assert err[0]["message"] == "unknown layer `CONVV`"
    assert "did you mean `CONV`" in err[0]["hint"]
    assert err[0]["rendered"].startswith("<editor>:4:10: error: unknown layer `CONVV`")
    # several errors after the table (an assertion and a budget), as `check` collects them
    text = TINY.replace("classes 10", "classes 10\nbudget params <= 1K") + ""
    text = text.replace("-> POOL ->", "-> POOL : [8, 13, 13] ->")
    data = client.post("/api/compile", json={"text": text}).json()
    _, expected = load_spec_text(text, comp.SOURCE_NAME).instantiate(collect=True)
    assert [e["message"] for e in data["errors"]] == [e.message for e in expected]
    assert len(data["errors"]) == 2 and data["graph"] is not None and not data["ok"]


def test_bindings_and_families(client):
    text = (SPECS / "cs231n_family.ns").read_text()
    free = client.post("/api/compile", json={"text": text, "diagram": False}).json()
    assert free["free"] and free["errors"]  # unbound free parameters: check's error
    bound = client.post(
        "/api/compile",
        json={"text": text, "bindings": "N=2 M=3 K=1 width=16 pool=on", "diagram": False},
    ).json()
    graph = load_spec(SPECS / "cs231n_family.ns").instantiate(
        {"N": 2, "M": 3, "K": 1, "width": 16, "pool": True}
    )
    assert bound["ok"] and bound["graph"]["totals"]["params"] == graph.totals.params


def test_a_billion_layers_is_refused_fast_and_the_server_still_answers(client):
    text = "input [3, 32, 32]\nclasses 10\nINPUT -> [CONV]*1000000000 -> SOFTMAX\n"
    with cpu_limit(2.0):  # the app runs in this process (the test client's thread)
        data = client.post("/api/compile", json={"text": text}).json()
    # check's own error for the same text, from the compiler (the limit is the compiler's)
    _, expected = load_spec_text(text, comp.SOURCE_NAME).instantiate(collect=True)
    assert data["errors"][0]["message"] == expected[0].message
    assert "over netspec's limit" in expected[0].message
    assert data["errors"][0]["span"]["line"] == 3
    assert client.get("/api/zoo").status_code == 200


def test_request_bodies_are_capped(client):
    big = {"text": "#" * (MAX_BODY + 10)}
    r = client.post("/api/compile", json=big)
    assert r.status_code == 413 and "over the limit" in r.json()["errors"][0]["message"]

    def chunks():  # no Content-Length: the server counts while reading
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    r = client.post("/api/compile", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    as_json = {"Content-Type": "application/json"}
    assert client.post("/api/compile", content=b"[1, 2]", headers=as_json).status_code == 400
    assert client.post("/api/compile", content=b"{not json", headers=as_json).status_code == 400
    assert client.post("/api/compile", json={"text": 3}).status_code == 400
    assert client.post("/api/compile", json={"text": TINY, "depth": 0}).status_code == 400
    assert client.post("/api/compile", json={"text": TINY, "color": "x"}).status_code == 400


def test_only_this_machine_by_host(client):
    assert client.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 400


def test_zoo_menu_and_specs(client):
    zoo = client.get("/api/zoo").json()
    names = [z["name"] for z in zoo]
    assert "resnet50" in names and "googlenet" in names
    assert next(z for z in zoo if z["name"] == "resnet50")["title"].startswith("ResNet-50")
    r = client.get("/api/zoo/resnet50").json()
    assert r["text"] == (SPECS / "resnet50.ns").read_text()
    assert client.get("/api/zoo/nope").status_code == 404
    assert client.get("/api/zoo/..%2F..%2Fsetup").status_code == 404
    start = client.get("/api/start").json()
    assert start["name"] == "mnist_cnn" and "network" in start["text"]


def test_every_asset_is_shipped_and_nothing_is_loaded_from_the_network(client):
    page = client.get("/").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(ref.startswith("/static/") for ref in refs)
    for ref in refs:
        assert client.get(ref).status_code == 200
    for name in ("app.js", "style.css", "index.html"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://", text), name
    # the editor is CodeMirror 6, bundled, with its license beside it
    bundle = (STATIC / "editor.js").read_text()
    assert "NetspecEditor" in bundle and "cm-lintRange" in bundle
    assert "MIT" in (STATIC / "editor.LICENSE.txt").read_text()
    assert not re.search(r"""(?:import\(|fetch\()\s*["']https?://""", bundle)


def test_export_downloads_the_checked_onnx_model(client):
    onnx = pytest.importorskip("onnx")
    r = client.post("/api/export", json={"text": TINY})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="tiny.onnx"'
    model = onnx.load(io.BytesIO(r.content))
    graph = load_spec_text(TINY).instantiate()
    assert sum(math.prod(t.dims) for t in model.graph.initializer) == graph.totals.params
    bad = client.post("/api/export", json={"text": TINY.replace("CONV(8)", "CONVV(8)")})
    assert bad.status_code == 400 and bad.json()["errors"][0]["span"]["line"] == 4


def test_explore_returns_the_front_and_its_plot(client):
    text = (SPECS / "cs231n_family.ns").read_text()
    data = client.post("/api/explore", json={"text": text}).json()
    assert data["ok"] and data["members"] == data["space"] > 0
    assert data["plot"].startswith("data:image/png;base64,")
    from netspec.explore import explore

    expected = explore(load_spec(SPECS / "cs231n_family.ns"))
    assert [m["number"] for m in data["front"]] == [m.number for m in expected.front]
    not_family = client.post("/api/explore", json={"text": TINY})
    assert not_family.status_code == 400
    assert "no free parameters" in not_family.json()["errors"][0]["message"]


def test_serve_binds_loopback_and_stays_responsive(tmp_path):
    """`netspec serve` as a user runs it: 127.0.0.1 by default; a heavy compile in flight
    does not stop the server answering."""
    httpx = pytest.importorskip("httpx")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspec", "serve", str(SPECS / "lenet5.ns"), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read()
        url = match.group(0)
        port = int(match.group(1))
        for _ in range(200):
            try:
                start = httpx.get(url + "api/start", timeout=10).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert start["text"] == (SPECS / "lenet5.ns").read_text()
        # not reachable on another address of this machine
        other = socket.gethostbyname(socket.gethostname())
        if other != "127.0.0.1":
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
        heavy = "input [1, 8, 8]\nclasses 2\nINPUT -> [CONV(2) -> RELU]*15000 -> FC(2) -> SOFTMAX"
        # the page's token, as the page reads it
        token = re.search(r'name="netspec-token" content="([^"]+)"', httpx.get(url).text)
        assert token, "the served page carries no token"
        page = {"X-Netspec-Token": token.group(1)}
        done = {}
        thread = threading.Thread(
            target=lambda: done.setdefault(
                "r",
                httpx.post(url + "api/compile", json={"text": heavy}, headers=page, timeout=120),
            )
        )
        thread.start()
        time.sleep(0.1)
        assert httpx.get(url + "api/zoo", timeout=10).status_code == 200
        assert thread.is_alive()  # answered while the heavy compile was still running
        thread.join(timeout=120)
        data = done["r"].json()
        assert data["graph"]["layers"] == 30_004  # the first MAX_ROWS rows travel
        assert len(data["graph"]["rows"]) == comp.MAX_ROWS
        assert data["note"] == "30,004 layers: drawn collapsed" and data["svg"]
        # Ctrl+C stops it cleanly: no traceback, exit status 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_refuses_a_missing_spec():
    r = subprocess.run(
        [sys.executable, "-m", "netspec", "serve", "nope.ns", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no such spec file: nope.ns" in r.stderr


def test_save_writes_only_the_served_file_and_never_over_a_change(tmp_path, client):
    spec = tmp_path / "net.ns"
    spec.write_text(TINY)
    app = create_app(spec, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", headers=PAGE) as c:
        start = c.get("/api/start").json()
        assert start["name"] == "net.ns" and start["text"] == TINY and start["saves"]
        edited = TINY.replace("CONV(8)", "CONV(16)")
        r = c.post("/api/save", json={"text": edited, "base": start["saves"]})
        assert r.status_code == 200 and spec.read_text() == edited
        assert not list(tmp_path.glob("*.netspec-tmp"))  # written atomically, no temp left
        # the page's base is now stale: someone else's change on disk is never overwritten
        spec.write_text(TINY + "# changed by another editor\n")
        r = c.post("/api/save", json={"text": edited, "base": start["saves"]})
        assert r.status_code == 409 and "changed on disk" in r.json()["errors"][0]["message"]
        assert spec.read_text().endswith("# changed by another editor\n")
    # a zoo spec given by name opens read-only; a page opened on the zoo has no file either
    app = create_app(spec, writable=False, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1", headers=PAGE) as c:
        assert c.get("/api/start").json()["saves"] is None
        assert c.post("/api/save", json={"text": "", "base": "x"}).status_code == 404
    assert client.get("/api/start").json()["saves"] is None
    r = client.post("/api/save", json={"text": TINY, "base": "x"})
    assert r.status_code == 404


@needs_dot
def test_spec_text_never_becomes_markup_in_the_diagram(client):
    """The SVG goes into the page as markup: a description holding HTML stays text."""
    text = TINY.replace("network tiny", 'network tiny "<script>alert(1)</script><img src=x>"')
    svg = client.post("/api/compile", json={"text": text}).json()["svg"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x&gt;" in svg
    assert "<script" not in svg and "<img" not in svg


def test_serve_opens_a_zoo_spec_by_name_read_only():
    httpx = pytest.importorskip("httpx")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspec", "serve", "zoo:lenet5", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line + proc.stderr.read()
        for _ in range(200):
            try:
                start = httpx.get(match.group(0) + "api/start", timeout=10).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert start["name"] == "lenet5.ns" and start["saves"] is None
        assert start["text"] == (SPECS / "lenet5.ns").read_text()
    finally:
        proc.kill()
        proc.wait(timeout=10)
