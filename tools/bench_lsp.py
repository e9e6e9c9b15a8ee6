"""Language server latency on resnet152 (issue 27's goals: diagnostics < 50 ms after a change,
hover and completion < 20 ms).

Two measures, side by side: the analysis functions the handlers call, in this process (wall
and CPU time: on a loaded machine the CPU time is what the code costs), and the real server
(`python -m netspec lsp`) over JSON-RPC: didChange -> publishDiagnostics, hover, completion
requests, round trip. Prints medians of N runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from netspec.lsp import analysis as an

N = 15
ROOT = Path(__file__).resolve().parents[1]
URI = "file:///bench/resnet152.ns"


def _median_ms(fn) -> tuple[float, float]:
    wall, cpu = [], []
    for k in range(N):
        w, c = time.perf_counter(), time.process_time()
        fn(k)
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def _changed(text: str, k: int) -> str:
    # A different text each run (a constant added), so no cached analysis answers it.
    return text.replace("budget", f"x{k} = {k}\nbudget", 1)


class _Server:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "netspec", "lsp"]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.n = 0

    def send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        assert self.p.stdin is not None
        self.p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.p.stdin.flush()

    def read(self) -> dict:
        assert self.p.stdout is not None
        length = 0
        while (line := self.p.stdout.readline().strip()) != b"":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.p.stdout.read(length))

    def request(self, method: str, params: dict) -> object:
        self.n += 1
        self.send({"id": self.n, "method": method, "params": params})
        while (msg := self.read()).get("id") != self.n or "method" in msg:
            pass
        return msg.get("result")

    def wait_for(self, method: str) -> None:
        while self.read().get("method") != method:
            pass


def _server_figures(text: str, pos: tuple[int, int]) -> tuple[float, float, float]:
    s = _Server()
    s.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    s.send({"method": "initialized", "params": {}})
    doc = {"uri": URI, "languageId": "netspec", "version": 1, "text": text}
    s.send({"method": "textDocument/didOpen", "params": {"textDocument": doc}})
    s.wait_for("textDocument/publishDiagnostics")

    def change(k: int) -> None:
        params = {
            "textDocument": {"uri": URI, "version": k + 2},
            "contentChanges": [{"text": _changed(text, k)}],
        }
        s.send({"method": "textDocument/didChange", "params": params})
        s.wait_for("textDocument/publishDiagnostics")

    diag, _ = _median_ms(change)
    at = {"textDocument": {"uri": URI}, "position": {"line": pos[0], "character": pos[1]}}
    hov, _ = _median_ms(lambda k: s.request("textDocument/hover", at))
    comp, _ = _median_ms(lambda k: s.request("textDocument/completion", at))
    s.request("shutdown", {})
    s.send({"method": "exit", "params": {}})
    s.p.wait(timeout=10)
    return diag, hov, comp


def main() -> None:
    text = (ROOT / "specs" / "resnet152.ns").read_text()
    an.analyse(text, "resnet152.ns")  # warm: grammar tables, layer registry
    diag = _median_ms(lambda k: an.analyse(_changed(text, k), "resnet152.ns"))
    a = an.analyse(text, "resnet152.ns")
    pos = next((n.span.line - 1, n.span.col) for n in a.graph.nodes if n.span)
    hov = _median_ms(lambda k: an.hover(a, pos))
    comp = _median_ms(lambda k: an.completions(text, pos))
    served = _server_figures(text, pos)
    print(
        f"resnet152: {len(a.graph.nodes)} nodes, medians of {N}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':28}{'in-process wall':>16}{'CPU':>9}{'server round trip':>19}   goal")
    rows = [("diagnostics after a change", diag, served[0], 50)]
    rows += [("hover on a layer", hov, served[1], 20), ("completion", comp, served[2], 20)]
    for name, (wall, cpu), trip, goal in rows:
        print(f"{name:28}{wall:13.1f} ms{cpu:6.1f} ms{trip:16.1f} ms   {goal} ms")


if __name__ == "__main__":
    main()
