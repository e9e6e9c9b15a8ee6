"""Playground update latency for resnet50, measured side by side in one run.

    python tools/bench_serve.py [--spec specs/resnet50.ns] [--repeat 15] [--no-browser]

The server runs as `netspec serve --port 0` in its own process, as a user runs it. Each
figure is the median (and p90) over --repeat edits that each type one more letter after the
network's name (`network resnet50a`, `resnet50ab`, ...): every edit is a new spec, so each
update parses, builds and draws in full, and the diagram cache never hits.
  1. server, summary:        POST /api/compile without the diagram, over HTTP;
  2. server, diagram:        the same spec's diagram (Graphviz dot, SVG), its 2nd request;
  3. browser, keystroke to the summary and errors painted, in headless Chromium;
  4. browser, keystroke to the diagram painted.
(3) and (4) include the page's 20 ms pause detection and need chromium and chromedriver.
The target is 100 ms; the ratios print against it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_MS = 100.0


def start_server():
    """`netspec serve --port 0` in a child process; returns it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspec", "serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://\S+/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    url = match.group(0).rstrip("/")
    import httpx

    for _ in range(200):  # wait for the start-up compile
        try:
            httpx.get(url + "/api/zoo", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, url


def variant(text: str, i: int) -> str:
    """The spec with `i` more letters after the network's name."""
    return re.sub(r"^(network\s+\w+)", lambda m: m.group(1) + "x" * i, text, count=1, flags=re.M)


def stats(samples: list[float]) -> str:
    samples = sorted(samples)
    p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
    return f"median {statistics.median(samples):6.1f} ms   p90 {p90:6.1f} ms"


def server_side(url: str, text: str, repeat: int) -> tuple[list[float], ...]:
    """Round trips from this process (httpx) and the server's own time for each step."""
    import httpx

    summary, diagram, summary_ms, diagram_ms = [], [], [], []
    # every POST carries the launch's token, read from the page as the page reads it
    token = re.search(r'name="netspec-token" content="([^"]+)"', httpx.get(url + "/").text)
    assert token, "the served page carries no token"
    with httpx.Client(headers={"X-Netspec-Token": token.group(1)}) as client:
        for i in range(repeat + 2):
            body = {"text": variant(text, 1000 + i)}
            start = time.perf_counter()
            r = client.post(url + "/api/compile", json={**body, "diagram": False})
            mid = time.perf_counter()
            d = client.post(url + "/api/compile", json={**body, "summary": False})
            end = time.perf_counter()
            assert r.json()["graph"] is not None and d.json()["svg"], r.text[:300]
            if i >= 2:  # warm-up
                summary.append((mid - start) * 1000)
                diagram.append((end - mid) * 1000)
                summary_ms.append(r.json()["ms"])
                diagram_ms.append(d.json()["ms"])
    return summary, diagram, summary_ms, diagram_ms


def browser_side(url: str, name: str, repeat: int) -> tuple[list[float], list[float]] | str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        return "skipped: chromium or chromedriver not installed"
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    try:
        drv.get(url + "/")
        count = "return window.netspecPlayground ? window.netspecPlayground.updates : 0"
        idle = "return !window.netspecPlayground.busy"
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(count) > 0)
        before = drv.execute_script(count)
        Select(drv.find_element(By.ID, "zoo")).select_by_value(name)
        WebDriverWait(drv, 60).until(
            lambda d: d.execute_script(count) > before and d.execute_script(idle)
        )
        # the cursor after the network's name
        drv.execute_script(
            "const v = window.netspecPlayground.view; const t = v.state.doc.toString();"
            "const m = /^network\\s+\\w+/m.exec(t);"
            "v.dispatch({selection: {anchor: m.index + m[0].length}}); v.focus();"
        )
        editor = drv.find_element(By.CSS_SELECTOR, "#editor .cm-content")
        summary, diagram, parts, drawn = [], [], [], []
        for i in range(repeat + 2):
            before = drv.execute_script(count)
            editor.send_keys("x")
            WebDriverWait(drv, 60).until(
                lambda d, b=before: d.execute_script(count) > b and d.execute_script(idle)
            )
            result = drv.execute_script("return window.netspecPlayground.state.result")
            assert result["graph"] is not None, "the update lost its table"
            assert drv.find_elements(By.CSS_SELECTOR, "#diagram svg g.node"), "no diagram"
            page = drv.execute_script(
                "const p = window.netspecPlayground;"
                "return {latencyMs: p.latencyMs, diagramLatencyMs: p.diagramLatencyMs,"
                " timing: p.timing, diagramTiming: p.diagramTiming};"
            )
            if i >= 2:
                summary.append(float(page["latencyMs"]))
                diagram.append(float(page["diagramLatencyMs"]))
                parts.append(page["timing"])
                drawn.append(page["diagramTiming"])
        print(
            "  (browser, summary step: median "
            + ", ".join(
                f"{k} {statistics.median(p[k] for p in parts):.1f} ms"
                for k in ("wait", "request", "update", "frame")
            )
            + ")"
        )
        print(
            "  (browser, diagram step: median "
            + ", ".join(
                f"{k} {statistics.median(p[k] for p in drawn):.1f} ms"
                for k in ("request", "update", "frame")
            )
            + ")"
        )
        return summary, diagram
    finally:
        drv.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "resnet50.ns"))
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    text = Path(args.spec).read_text()
    proc, url = start_server()
    try:
        summary, diagram, summary_ms, diagram_ms = server_side(url, text, args.repeat)
        browser = (
            "skipped: --no-browser"
            if args.no_browser
            else browser_side(url, Path(args.spec).stem, args.repeat)
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    name = Path(args.spec).name
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{name}: playground update latency ({args.repeat} edits each; load average {load})")
    for label, samples in (
        ("server's own time, summary", summary_ms),
        ("server's own time, diagram", diagram_ms),
        ("round trip (httpx), summary", summary),
        ("round trip (httpx), diagram", diagram),
    ):
        print(f"  {label:<44}{stats(samples)}")
    print(
        f"    the diagram costs {statistics.median(diagram) / statistics.median(summary):.1f}x"
        " the summary"
    )
    if isinstance(browser, str):
        print(f"  {'browser':<44}{browser}")
        return
    for label, samples in (("summary and errors", browser[0]), ("diagram", browser[1])):
        med = statistics.median(samples)
        print(f"  {'browser, keystroke to ' + label + ' painted':<44}{stats(samples)}")
        print(
            f"    {med / TARGET_MS:.2f}x the {TARGET_MS:.0f} ms target"
            f" ({'within' if med <= TARGET_MS else 'OVER'} it at the median)"
        )


if __name__ == "__main__":
    main()
