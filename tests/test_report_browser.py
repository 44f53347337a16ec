"""The report in a real browser: headless Chromium, driven over the DevTools protocol,
opens ``index.html`` from disk, sees every section, logs no console error, renders a
non-blank page, and a ``<script>`` planted in a model output and a dataset name never runs."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PLANT = ("<script>document.title='pwned';window.__xss=1</script>"
         "<img src=x onerror=\"document.body.setAttribute('data-xss','1')\">")
EVIL_DATASET = "code<script>window.__xss2=1</script>"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="headless Chromium not installed (Debian: apt-get install -y chromium); "
           "the browser test of the report needs /usr/bin/chromium")


class DevTools:
    """A minimal DevTools-protocol session over one page's websocket."""

    def __init__(self, url: str):
        websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while time.monotonic() < deadline:
            for message in self.events[seen:]:
                if message.get("method") == event:
                    return message
            seen = len(self.events)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for m in self.events:
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:300])
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args"))[:300])
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"].get("text", "")[:300])
        return out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from sftlab.report import ReportOptions, build_report
    from sftlab.report.synthetic import SyntheticStudy, make_study

    root = tmp_path_factory.mktemp("browser")
    spec = SyntheticStudy(datasets=["alpaca", EVIL_DATASET, "math"], sizes=[1000, 20000],
                          methods=["full", "lora"], epochs=2, items=30, planted_output=PLANT)
    results = make_study(root, spec)
    build_report(results, root / "report", options=ReportOptions(study_name="browser-check", resamples=200))
    return root / "report" / "index.html"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1400,1800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = _devtools_port(proc)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        tools = DevTools(url)
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        yield tools
        tools.ws.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _devtools_port(proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode}")
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            return int(found.group(1))
    raise TimeoutError("chromium did not open its DevTools port")


def test_report_opens_in_chromium(report, page, tmp_path):
    page.call("Page.navigate", url=report.as_uri())
    page.wait_for("Page.loadEventFired")
    state = page.evaluate("""JSON.stringify({
        title: document.title,
        headings: [...document.querySelectorAll('section > h2')].map(h => h.textContent),
        xss: window.__xss || window.__xss2 || null,
        flag: document.body.getAttribute('data-xss'),
        scripts: document.scripts.length,
        images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
        planted: document.body.innerText.includes("window.__xss=1"),
        tables: document.querySelectorAll('table').length})""")
    state = json.loads(state)
    expected = ["Deltas vs the base model", "Score by epoch", "Model families",
                "Training data vs benchmark", "Benchmark x benchmark correlation",
                "Leave-one-out vs all", "Zero-shot vs few-shot", "LoRA vs full fine-tuning",
                "Small vs large training sets", "Category scores", "Synthetic data funnel",
                "Repeated sampling: pass@k, cons@k, maj@k against k",
                "RL: loss aggregation and reward by step", "Evaluation configs", "Example outputs"]
    assert [re.sub(r"^\d+\. ", "", h) for h in state["headings"]] == expected
    assert state["title"] == "sftlab report: browser-check"  # the planted script did not run
    assert state["xss"] is None and state["flag"] is None and state["scripts"] == 0
    assert state["planted"]  # ... yet the output is shown, as text
    assert state["images"] and all(state["images"])  # every figure loaded from disk
    assert state["tables"] >= 20
    assert page.errors() == []
    for file in report.parent.rglob("*"):
        if file.suffix in (".html", ".svg", ".md"):  # CSV keeps names as data
            assert "<script" not in file.read_text(encoding="utf-8").lower(), file

    shot = page.call("Page.captureScreenshot", format="png")
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.shape[0] > 500 and pixels.std() > 20  # text and tables, not a blank page
