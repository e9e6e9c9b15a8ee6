"""The playground in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against the real server.

Skipped, with the reason, only where Chromium cannot start. Screenshots go to
$NETSPEC_SCREENSHOTS when set (CI keeps them), else to pytest's temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers.cpu import cpu_limit

from netspec.ir.build import load_spec, load_spec_text

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (pip install selenium)"
)
uvicorn = pytest.importorskip("uvicorn")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from netspec.serve.app import create_app  # noqa: E402

SPECS = Path(__file__).resolve().parents[1] / "specs"
TINY = "network tiny\ninput [1, 28, 28]\nclasses 10\nINPUT -> CONV(8) -> RELU -> POOL -> FC(10) -> SOFTMAX"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if Path(f"/usr/lib/chromium/{name}").exists() else None
        )
        if found:
            return found
    return None


@contextlib.contextmanager
def serving(app):
    """`app` on a free loopback port, served by uvicorn in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:  # uvicorn either starts or its thread ends with the error
        if not thread.is_alive():
            pytest.fail("the playground server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server():
    with serving(create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("NETSPEC_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cannot_start(reason: str) -> None:
    """Skip, saying why; CI sets NETSPEC_REQUIRE_BROWSER=1 so that there it fails instead."""
    if os.environ.get("NETSPEC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"Chromium cannot start (NETSPEC_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(f"Chromium cannot start: {reason}")


@pytest.fixture(scope="module")
def browser(downloads):
    binary, driver = _which(CHROMIUM), _which(DRIVER)
    if binary is None or driver is None:
        cannot_start(
            "`chromium` or `chromedriver` is not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    try:
        service = webdriver.ChromeService(executable_path=driver)
        drv = webdriver.Chrome(service=service, options=options)
    except Exception as e:  # any failure to start the browser is the one reason to skip
        cannot_start(f"{type(e).__name__}: {str(e).splitlines()[0]}")
    drv.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    yield drv
    drv.quit()


def updates(drv) -> int:
    return int(
        drv.execute_script("return window.netspecPlayground ? window.netspecPlayground.updates : 0")
    )


def wait_update(drv, since: int, timeout: float = 30) -> dict:
    """Wait for the page to show a compile newer than `since`; return what the server sent."""
    WebDriverWait(drv, timeout).until(
        lambda d: (
            updates(d) > since and not d.execute_script("return window.netspecPlayground.busy")
        )
    )
    return drv.execute_script("return window.netspecPlayground.state.result")


def table_ids(drv) -> list[str]:
    return [
        r.get_attribute("data-id") for r in drv.find_elements(By.CSS_SELECTOR, "#table tbody tr")
    ]


def editor(drv):
    return drv.find_element(By.CSS_SELECTOR, "#editor .cm-content")


def type_keys(drv, *keys) -> None:
    el = editor(drv)
    el.send_keys(*keys)


def test_playground_in_chromium(server, browser, shots, downloads):
    drv = browser
    drv.get(server + "/")
    # 1. The page opens with a zoo spec, compiled: the table is the IR's.
    wait_update(drv, 0)
    graph = load_spec(SPECS / "mnist_cnn.ns").instantiate()
    assert table_ids(drv) == [n.id for n in graph.nodes]
    assert f"{graph.totals.params:,}" in drv.find_element(By.ID, "totals").text
    assert drv.find_elements(By.CSS_SELECTOR, "#diagram svg g.node")
    assert not any(
        "http" in (s.get_attribute("src") or "") and server not in s.get_attribute("src")
        for s in drv.find_elements(By.CSS_SELECTOR, "script, link, img")
    )
    drv.save_screenshot(str(shots / "1-opened.png"))

    # 2. Type a spec with the keyboard: the table follows, exactly the IR's rows and totals.
    editor(drv).click()
    before = updates(drv)
    type_keys(drv, Keys.CONTROL, "a")
    type_keys(drv, Keys.DELETE)
    for line in TINY.split("\n"):
        type_keys(drv, line, Keys.ENTER)
    result = wait_update(drv, before)
    tiny = load_spec_text(TINY).instantiate()
    WebDriverWait(drv, 30).until(lambda d: table_ids(d) == [n.id for n in tiny.nodes])
    assert f"{tiny.totals.params:,}" in drv.find_element(By.ID, "totals").text
    assert result["graph"]["totals"]["macs"] == tiny.totals.macs
    assert "ok" in drv.find_element(By.ID, "status").get_attribute("class")
    drv.save_screenshot(str(shots / "2-typed.png"))

    # 3. A typo: CONV -> CONVV on line 4. The error sits at line 4, column 10, underlined in
    # the editor over exactly the misspelt name, with check's message and hint.
    before = updates(drv)
    type_keys(drv, Keys.CONTROL, Keys.END)
    type_keys(drv, Keys.UP, Keys.HOME, *([Keys.RIGHT] * len("INPUT -> CONV")), "V")
    WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#errors .error"))
    err = drv.find_element(By.CSS_SELECTOR, "#errors .error")
    assert (err.get_attribute("data-line"), err.get_attribute("data-col")) == ("4", "10")
    assert "unknown layer `CONVV`" in err.text and "did you mean `CONV`" in err.text
    wait_update(drv, before)
    marks = drv.find_elements(By.CSS_SELECTOR, ".cm-lintRange-error")
    assert [m.text for m in marks] == ["CONVV"]
    lines = drv.find_elements(By.CSS_SELECTOR, "#editor .cm-line")
    assert lines[3].find_elements(By.CSS_SELECTOR, ".cm-lintRange-error")
    assert "bad" in drv.find_element(By.ID, "status").get_attribute("class")
    assert "stale" in drv.find_element(By.ID, "table").get_attribute("class")
    # hovering the underline shows check's message and hint in the editor
    ActionChains(drv).move_to_element(marks[0]).perform()
    tip = WebDriverWait(drv, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".cm-tooltip-lint")
    )[0]
    assert "unknown layer `CONVV`" in tip.text and "hint: did you mean `CONV`" in tip.text
    drv.save_screenshot(str(shots / "3-typo.png"))

    # 4. Fix it: the error and the underline go, the table is live again.
    type_keys(drv, Keys.BACKSPACE)
    WebDriverWait(drv, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#errors .error"))
    WebDriverWait(drv, 30).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, ".cm-lintRange-error")
    )
    WebDriverWait(drv, 30).until(
        lambda d: "stale" not in d.find_element(By.ID, "table").get_attribute("class")
    )
    assert table_ids(drv) == [n.id for n in tiny.nodes]
    # a row selects its layer in the spec: pool1 is written at line 4, column 25
    drv.find_element(By.CSS_SELECTOR, '#table tr[data-id="pool1"]').click()
    head = drv.execute_script(
        "const v = window.netspecPlayground.view; const h = v.state.selection.main.head;"
        "const l = v.state.doc.lineAt(h); return [l.number, h - l.from + 1];"
    )
    assert head == [4, TINY.split("\n")[3].index("POOL") + 1]
    drv.save_screenshot(str(shots / "4-fixed.png"))

    # 5. Export: the browser downloads an ONNX model whose weights are the IR's parameters.
    drv.find_element(By.ID, "export").click()
    target = downloads / "tiny.onnx"
    WebDriverWait(drv, 120).until(lambda d: target.exists() and target.stat().st_size > 0)
    import onnx

    model = onnx.load(str(target))
    weights = sum(int(__import__("math").prod(t.dims)) for t in model.graph.initializer)
    assert weights == tiny.totals.params
    assert "exported tiny.onnx" in drv.find_element(By.ID, "status").text
    drv.save_screenshot(str(shots / "5-exported.png"))


def test_hostile_repetition_in_chromium(server, browser, shots):
    """`[CONV]*1000000000` typed into the page: check's fast error, and the page stays live."""
    drv = browser
    drv.get(server + "/")
    wait_update(drv, 0)
    editor(drv).click()
    type_keys(drv, Keys.CONTROL, "a")
    type_keys(drv, Keys.DELETE)
    text = "input [3, 32, 32]\nclasses 10\nINPUT -> [CONV]*1000000000 -> SOFTMAX"
    before = updates(drv)
    # The server runs in a thread of this process: its CPU time is the compile's work
    # (typing's share is small); a billion layers expanded would take minutes.
    with cpu_limit(10):
        for line in text.split("\n"):
            type_keys(drv, line, Keys.ENTER)
        wait_update(drv, before)
    err = drv.find_element(By.CSS_SELECTOR, "#errors .error")
    expected = load_spec_text(text).instantiate(collect=True)[1][0].message
    assert "over netspec's limit" in expected and expected in err.text  # check's own error
    assert (err.get_attribute("data-line"), err.get_attribute("data-col")) == ("3", "17")
    drv.save_screenshot(str(shots / "6-hostile.png"))
    # The server still answers: pick a zoo network from the menu.
    before = updates(drv)
    Select(drv.find_element(By.ID, "zoo")).select_by_value("resnet50")
    wait_update(drv, before)
    graph = load_spec(SPECS / "resnet50.ns").instantiate()
    WebDriverWait(drv, 30).until(lambda d: table_ids(d) == [n.id for n in graph.nodes])
    drv.save_screenshot(str(shots / "7-resnet50.png"))
    # A family: Explore shows the Pareto front that `netspec explore` finds, and its plot.
    before = updates(drv)
    Select(drv.find_element(By.ID, "zoo")).select_by_value("cs231n_family")
    wait_update(drv, before)
    drv.find_element(By.ID, "explore").click()
    WebDriverWait(drv, 120).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#explore-result img[src^='data:image/png']")
    )
    from netspec.explore import explore

    front = explore(load_spec(SPECS / "cs231n_family.ns")).front
    rows = drv.find_elements(By.CSS_SELECTOR, "#front tr")[1:]
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == [str(m.number) for m in front]
    drv.save_screenshot(str(shots / "8-explore.png"))


def test_numbers_are_written_as_the_cli_writes_them(server, browser):
    """The page's compact numbers are `netspec.units.compact`'s (issue 25: a 140M budget read
    "14M"), over sizes from 0 to past 10^12, the roundings up to the next unit (999,999 -> 1M)
    and the halves (1,125,000 -> 1.13M)."""
    import random

    from netspec.units import compact

    drv = browser
    drv.get(server + "/")
    wait_update(drv, 0)
    r = random.Random(25)
    values = [0, 1, 7, 999, 0.5, 140_000_000, 1_000, 999_999, 999_999_999, 3_211_264]
    values += [k * 10**e for k in (1, 14, 105, 125, 995, 1125, 9995) for e in range(11)]
    values += [r.randint(0, 10 ** r.randint(1, 14)) for _ in range(400)]
    values += [-v for v in values[:20]]
    got = drv.execute_script("return arguments[0].map(window.netspecPlayground.compact)", values)
    assert got == [compact(v) for v in values]
    # and where a reader sees it: mnist_cnn's budget of 10K (the old formatter wrote "1K")
    assert "budget params <= 10K" in drv.find_element(By.ID, "totals").text


def test_save_with_ctrl_s_in_chromium(browser, shots, tmp_path):
    """`netspec serve SPEC`: edits mark the page unsaved; Ctrl+S writes the file back."""
    spec = tmp_path / "tiny.ns"
    spec.write_text(TINY + "\n")
    with serving(create_app(spec)) as url:
        drv = browser
        drv.get(url + "/")
        wait_update(drv, 0)
        button = drv.find_element(By.ID, "save")
        assert button.is_displayed() and button.text == "Save"
        before = updates(drv)
        type_keys(drv, Keys.CONTROL, Keys.END)
        type_keys(drv, "# edited in the page")
        wait_update(drv, before)
        assert button.text == "Save \u2022"
        type_keys(drv, Keys.CONTROL, "s")
        WebDriverWait(drv, 30).until(lambda d: button.text == "Save")
        assert spec.read_text() == TINY + "\n# edited in the page"
        assert "saved" in drv.find_element(By.ID, "status").text
        drv.save_screenshot(str(shots / "9-saved.png"))
