"""The playground server against hostile requests (issue 19): another web page the user
visits, a DNS-rebinding page, and a client that sends too much, too deep, too slowly, or
starts heavy work and leaves.

A browser's cross-site request is replayed as the browser sends it (the headers a page on
another origin cannot choose: Origin, Sec-Fetch-Site; the body types it may send without a
preflight). Where the ASGI test client cannot show it (Host and Origin as they arrive over
TCP, a client that disconnects), the real server runs in a thread on a free loopback port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
from helpers.wait import until

pytest.importorskip("httpx", reason="starlette's test client needs httpx (pip install httpx)")
uvicorn = pytest.importorskip("uvicorn")
import httpx  # noqa: E402

with warnings.catch_warnings():  # starlette 1.x suggests a renamed httpx; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from netspec.io import owner_tag  # noqa: E402
from netspec.ir.build import load_spec_text  # noqa: E402
from netspec.serve.app import create_app  # noqa: E402
from netspec.serve.guard import MAX_JSON_DEPTH, hostname, json_depth  # noqa: E402
from netspec.serve.jobs import WORK_PREFIX  # noqa: E402
from netspec.serve.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "launch-token"
TINY = "network tiny\ninput [1, 28, 28]\nclasses 10\nINPUT -> CONV(8) -> RELU -> POOL -> FC(10) -> SOFTMAX\n"
# the 90-byte request: hours of work before, a job that stops now
HOSTILE_FAMILY = "N in 1..60000\ninput [8]\nclasses 8\nINPUT -> [FC(8) -> RELU]*N -> SOFTMAX\n"
PAGE = {"Content-Type": "application/json", "X-Netspec-Token": TOKEN}
CAPTURED = {"capture_output": True, "text": True, "timeout": 60, "check": True}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1"):
    """`app` served by uvicorn in a thread on a free port of `host`; yields (server, port).
    uvicorn logs to the root logger here (log_config=None), so `caplog` sees its errors."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_keep_alive=5))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until(lambda: srv.started or not thread.is_alive(), "the server to start")
    assert srv.started, "the playground server did not start"
    try:
        yield srv, port
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def raw_request(
    port: int, path: str, body: bytes, headers: dict[str, str], sent: int | None = None
):
    """A socket that has sent a POST (only `sent` bytes of its body when given)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:sent])
    return conn


def read_all(conn: socket.socket) -> bytes:
    out = b""
    while chunk := conn.recv(65536):
        out += chunk
    return out


# ---- the cross-site write ---------------------------------------------------------------


def test_a_cross_site_save_is_refused_and_the_file_is_unchanged(tmp_path):
    """The issue's attack as a browser sends it: text/plain (no preflight), the right base,
    from a page on another origin. 403, and the file is as it was."""
    spec = tmp_path / "net.ns"
    spec.write_text(TINY)
    body = json.dumps({"text": "pwned", "base": digest(TINY)})
    with serving(create_app(spec, token=TOKEN)) as (_, port):
        url = f"http://127.0.0.1:{port}/api/save"
        attack = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
        r = httpx.post(url, content=body, headers={**attack, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403 and r.json()["ok"] is False
        assert "cross-site" in r.json()["errors"][0]["message"]
        # an older browser sends no Sec-Fetch-Site: the Origin alone refuses it
        r = httpx.post(url, content=body, headers=attack)
        assert r.status_code == 403 and "evil.example" in r.json()["errors"][0]["message"]
        assert spec.read_text() == TINY
        # the page itself saves (same origin, JSON, its token): the guard lets the page through
        page = {**PAGE, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        edited = TINY.replace("CONV(8)", "CONV(16)")
        ok = httpx.post(url, json={"text": edited, "base": digest(TINY)}, headers=page)
        assert ok.status_code == 200 and spec.read_text() == edited


ENDPOINTS = {
    "/api/save": {"text": TINY, "base": digest(TINY)},
    "/api/compile": {"text": TINY},
    "/api/export": {"text": TINY},
    "/api/explore": {"text": HOSTILE_FAMILY},
}
REFUSED = {
    "text/plain": {**PAGE, "Content-Type": "text/plain"},
    "form": {**PAGE, "Content-Type": "application/x-www-form-urlencoded"},
    "no type": {"X-Netspec-Token": TOKEN},
    "foreign origin": {**PAGE, "Origin": "http://evil.example"},
    "null origin": {**PAGE, "Origin": "null"},
    "other port": {**PAGE, "Origin": "http://127.0.0.1:1"},
    "cross-site": {**PAGE, "Sec-Fetch-Site": "cross-site"},
    "same-site": {**PAGE, "Sec-Fetch-Site": "same-site"},
    "no token": {"Content-Type": "application/json"},
    "wrong token": {**PAGE, "X-Netspec-Token": TOKEN[:-1] + "X"},
}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_post_needs_same_origin_json_and_the_token(tmp_path, path):
    """Each protection alone refuses each endpoint that writes or starts work (403, JSON),
    before anything runs: no file written, no job started."""
    spec = tmp_path / "net.ns"
    spec.write_text(TINY)
    # tiny job limits: the page's own export and explore below end fast, refused by them
    settings = Settings(max_export_mb=0.001, job_seconds=0.2)
    app = create_app(spec, token=TOKEN, settings=settings)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for name, headers in REFUSED.items():
            r = client.post(path, content=json.dumps(ENDPOINTS[path]), headers=headers)
            assert r.status_code == 403, name
            assert r.json()["errors"][0]["message"].startswith("refused"), name
        assert spec.read_text() == TINY
        assert app.state.playground.jobs.history == []
        # the page's own request passes the guard (so the refusals above are the guard's)
        page = {**PAGE, "Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}
        r = client.post(path, json=ENDPOINTS[path], headers=page)
        assert r.status_code in (200, 400) and r.json()["ok"] is (r.status_code == 200)
        assert path in ("/api/save", "/api/compile") or app.state.playground.jobs.history


def test_the_page_carries_the_launchs_token_and_each_launch_has_its_own():
    pages = []
    for _ in range(2):
        with TestClient(create_app(), base_url="http://127.0.0.1") as client:
            page = client.get("/")
            assert page.headers["cache-control"] == "no-store"
            pages.append(re.search(r'name="netspec-token" content="([^"]+)"', page.text))
    assert all(pages) and len(pages[0][1]) >= 32 and pages[0][1] != pages[1][1]


def test_a_save_must_be_a_spec(tmp_path):
    spec = tmp_path / "net.ns"
    spec.write_text(TINY)
    with TestClient(create_app(spec, token=TOKEN), base_url="http://127.0.0.1") as client:
        r = client.post("/api/save", json={"text": "pwned", "base": digest(TINY)}, headers=PAGE)
        assert r.status_code == 400
        errors = r.json()["errors"]
        assert errors[0]["span"]["line"] == 1 and errors[0]["rendered"].startswith("<editor>:1:")
        assert spec.read_text() == TINY


# ---- Host: DNS rebinding ----------------------------------------------------------------


def test_host_names_parse_with_ipv6():
    assert hostname("127.0.0.1:8000") == "127.0.0.1"
    assert hostname("[::1]:8000") == hostname("[0:0::1]") == "::1"
    assert hostname("LocalHost.:80") == "localhost"
    for bad in ("[::1", "[::1]x", "[evil]:1", "a b", "", "x:y", "evil.example:80:80"):
        assert hostname(bad) is None, bad


def test_a_foreign_host_is_refused_on_every_request():
    with serving(create_app(token=TOKEN)) as (_, port):
        url = f"http://127.0.0.1:{port}"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert httpx.get(url + "/api/start", headers={"Host": host}).status_code == 200
        for host in (f"evil.example:{port}", "127.0.0.1.evil.example", f"[::2]:{port}", "[::1"):
            r = httpx.get(url + "/api/start", headers={"Host": host})
            assert r.status_code == 400 and "Host" in r.json()["errors"][0]["message"], host
            r = httpx.post(
                url + "/api/compile", json={"text": TINY}, headers={**PAGE, "Host": host}
            )
            assert r.status_code == 400, host


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_serve_on_ipv6_checks_the_host():
    """`netspec serve --host ::1` used to skip the Host check (DNS rebinding to every
    endpoint, reads included)."""
    with cli_server("--host", "::1") as (url, _):
        port = url.rsplit(":", 1)[1].strip("/")
        assert httpx.get(url + "api/start", timeout=30).status_code == 200
        for host in ("evil.example", f"evil.example:{port}"):
            r = httpx.get(url + "api/start", headers={"Host": host}, timeout=30)
            assert r.status_code == 400, host


@contextlib.contextmanager
def cli_server(*args: str):
    """`netspec serve` as a user runs it; yields the URL it prints and the process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspec", "serve", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://\S+/", line)
        assert match, line + proc.stderr.read()
        url = match.group(0)
        until(lambda: _answers(url), "the served page")
        yield url, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_listening_beyond_this_machine_needs_allow_remote_and_warns():
    r = subprocess.run(
        [sys.executable, "-m", "netspec", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--allow-remote" in r.stderr and "Traceback" not in r.stderr
    with cli_server("--host", "0.0.0.0", "--allow-remote") as (url, proc):
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(local + "api/start", timeout=30).status_code == 200
        foreign = httpx.get(local + "api/start", headers={"Host": "evil.example"}, timeout=30)
        assert foreign.status_code == 400  # still no DNS rebinding
    assert "warning: listening on 0.0.0.0" in proc.stderr.read()


def test_allow_remote_answers_addresses_and_still_refuses_foreign_names():
    settings = Settings(hosts=("0.0.0.0",), allow_remote=True)
    with TestClient(create_app(settings=settings), base_url="http://127.0.0.1") as client:
        assert client.get("/", headers={"Host": "192.168.1.20:8000"}).status_code == 200
        assert client.get("/", headers={"Host": "evil.example:8000"}).status_code == 400


# ---- bodies: too deep, half sent, too slow -----------------------------------------------


def test_json_nested_too_deep_is_400_not_a_recursion_error():
    assert json_depth(json.loads('{"text": "[[[[{{{{", "a": [1, {"b": []}]}')) == 4
    assert json_depth("[[") == 0 and json_depth(json.loads("[" * 900 + "]" * 900)) == 900
    with TestClient(create_app(token=TOKEN), base_url="http://127.0.0.1") as client:
        deep = b"[" * 100_000 + b"]" * 100_000
        r = client.post("/api/compile", content=deep, headers=PAGE)
        assert r.status_code == 400 and "nested deeper" in r.json()["errors"][0]["message"]
        inner = {"text": TINY}
        for _ in range(MAX_JSON_DEPTH):
            inner = {"x": inner}
        assert client.post("/api/compile", json=inner, headers=PAGE).status_code == 400
        # brackets inside the spec text are text: a spec full of them compiles
        text = TINY + "# " + "[" * 5000 + "\n"
        assert client.post("/api/compile", json={"text": text}, headers=PAGE).json()["ok"]


def test_a_client_leaving_mid_body_is_quiet(caplog):
    caplog.set_level(logging.INFO)
    with serving(create_app(token=TOKEN)) as (srv, port):
        conn = raw_request(port, "/api/compile", json.dumps({"text": TINY}).encode(), PAGE, 10)
        until(lambda: srv.server_state.tasks, "the request to reach the app")
        conn.close()
        until(lambda: not srv.server_state.tasks, "the request to end")
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], logged
    assert "Traceback" not in logged and "ClientDisconnect" not in logged


def test_a_half_sent_body_times_out_and_the_connection_closes():
    settings = Settings(body_seconds=0.5)
    with serving(create_app(token=TOKEN, settings=settings)) as (_, port):
        conn = raw_request(port, "/api/save", json.dumps({"text": TINY}).encode(), PAGE, 10)
        with conn:
            answer = read_all(conn)  # returns only once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"not received within 0.5 s" in answer


# ---- heavy jobs: bounded, cancellable, one at a time ---------------------------------------


@pytest.mark.slow
def test_a_compile_answers_while_an_explore_runs_and_the_explore_stops_when_its_client_leaves():
    """The issue's explore (`N in 1..60000` over `[FC(8) -> RELU]*N`): the page's compiles go
    on while it runs, a second heavy job gets 429, and the explore stops when its client
    disconnects."""
    app = create_app(token=TOKEN, settings=Settings(job_seconds=3600))
    jobs = app.state.playground.jobs
    with serving(app) as (_, port):
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"text": HOSTILE_FAMILY}).encode()
        conn = raw_request(port, "/api/explore", body, PAGE)
        until(lambda: jobs.current is not None and jobs.current.steps >= 2, "the explore to run")
        job = jobs.current
        r = httpx.post(
            url + "/api/compile",
            json={"text": HOSTILE_FAMILY, "bindings": "N=3"},
            headers=PAGE,
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["ok"]
        assert r.json()["graph"]["totals"]["params"] == 3 * (8 * 8 + 8)
        assert jobs.current is job  # answered while the explore was still running
        for path in ("/api/explore", "/api/export"):
            busy = httpx.post(url + path, json={"text": TINY}, headers=PAGE, timeout=120)
            assert busy.status_code == 429, path
            assert int(busy.headers["retry-after"]) >= 1
            assert "an explore is running" in busy.json()["errors"][0]["message"]
        conn.close()
        until(lambda: jobs.current is None, "the explore to stop")
        name, outcome = jobs.history[-1]
        assert name == "explore" and outcome.startswith("stopped: client gone")
        steps = int(re.search(r"after ([\d,]+) steps", outcome)[1].replace(",", ""))
        assert 2 <= steps < Settings().explore_max_members
        # the slot is free again: the next explore runs
        family = "N in 1..4\ninput [8]\nclasses 8\nINPUT -> [FC(8) -> RELU]*N -> SOFTMAX\n"
        r = httpx.post(url + "/api/explore", json={"text": family}, headers=PAGE, timeout=120)
        assert r.status_code == 200 and r.json()["members"] == 4


def test_an_explore_stops_at_its_time_budget_and_samples_at_its_member_cap():
    settings = Settings(job_seconds=0.2, explore_max_members=7)
    app = create_app(token=TOKEN, settings=settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/api/explore", json={"text": HOSTILE_FAMILY}, headers=PAGE)
        assert r.status_code == 400
        error = r.json()["errors"][0]
        assert error["message"].startswith("explore stopped after 0.2 s")
        assert "--job-seconds" in error["hint"]
        assert app.state.playground.jobs.history[-1][1].startswith("stopped: time spent")
    small = "N in 1..50\ninput [8]\nclasses 8\nINPUT -> [FC(8) -> RELU]*N -> SOFTMAX\n"
    # a space past sys.maxsize members (random.sample's limit) is sampled too, not a 500
    huge = "".join(f"{n} in 1..100000000\n" for n in "ABCDE") + TINY
    app = create_app(token=TOKEN, settings=Settings(explore_max_members=7))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        data = client.post("/api/explore", json={"text": small}, headers=PAGE).json()
        assert (data["space"], data["members"], data["sampled"]) == (50, 7, True)
        data = client.post("/api/explore", json={"text": huge}, headers=PAGE).json()
        assert (data["space"], data["members"], data["sampled"]) == (10**40, 7, True)


def test_an_export_over_the_size_limit_is_refused_before_any_weight_is_made(monkeypatch):
    from netspec.deploy import weights

    made = []
    monkeypatch.setattr(weights, "initial_weights", lambda *a, **k: made.append(a))
    text = "network wide\ninput [12000]\nclasses 12000\nINPUT -> FC(12000) -> SOFTMAX\n"
    graph = load_spec_text(text).instantiate()
    mib = 4 * (graph.totals.params + graph.totals.buffers) / 2**20
    with TestClient(create_app(token=TOKEN), base_url="http://127.0.0.1") as client:
        r = client.post("/api/export", json={"text": text}, headers=PAGE)
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert f"{mib:,.1f} MiB" in error["message"] and "limit of 256 MiB" in error["message"]
    assert f"--max-export-mb {int(mib) + 1}" in error["hint"]
    assert made == []  # refused from the IR's figures: no weight was made


def test_a_killed_servers_work_folders_are_swept_by_the_next_job():
    """Explore and export work in tagged temporary folders: one left by a process that is
    gone is removed when the next job starts; a live process's is kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **CAPTURED)
    where = Path(tempfile.gettempdir())
    host_tag = owner_tag().rsplit("-", 1)[0]  # nst-HOST
    left = where / f"{WORK_PREFIX}{host_tag}-{int(dead.stdout)}-test"
    live = where / f"{WORK_PREFIX}{owner_tag()}-test"
    try:
        for folder in (left, live):
            folder.mkdir()
            (folder / "model.onnx").write_bytes(b"weights")
        family = "N in 1..2\ninput [8]\nclasses 8\nINPUT -> [FC(8) -> RELU]*N -> SOFTMAX\n"
        with TestClient(create_app(token=TOKEN), base_url="http://127.0.0.1") as client:
            assert client.post("/api/explore", json={"text": family}, headers=PAGE).json()["ok"]
        assert not left.exists() and live.exists()
        # the job's own folder went when it ended
        assert sorted(where.glob(f"{WORK_PREFIX}{owner_tag()}-*")) == [live]
    finally:
        for folder in (left, live):
            shutil.rmtree(folder, ignore_errors=True)
