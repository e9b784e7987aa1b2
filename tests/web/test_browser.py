"""End to end: the dashboard in headless Chromium, against two live worker processes.

The page must load, show every task with its owner, keep refreshing, and, after one
worker is SIGKILLed, show its tasks under the other worker; its pause button must ask
before it pauses a kind (a second page, driven over the DevTools protocol, clicks it). Chromium is Debian's
``chromium`` package (``.ci/run`` installs it); it is driven simply, one fresh page load
per look (``--dump-dom``), polling with a deadline. Screenshots are saved under
``test-artifacts/`` at the repository's root.

Without Chromium this test fails under CI (``CI`` set) and skips loudly elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

import tenure
from tenure.models import WorkerLoad

from .procs import Procs, procs, wait_until

__all__ = ["procs"]  # the fixture, used by name

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token-7e1d"  # noqa: S105 - a test token
CITIES = ["barcelona", "lisbon", "porto", "madrid", "sevilla", "Saint-Étienne/nord"]


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        message = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(f"BROWSER TEST NOT RUN: {message}")
    return path


class Browser:
    """Headless Chromium, one process per look, with its own throw-away profile."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile

    def _run(self, url: str, *args: str) -> str:
        argv = [
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", *args, url,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
        return done.stdout

    def dom(self, url: str) -> Page:
        """Load the page, let it poll the API a few times (virtual time), return its DOM."""
        return Page(self._run(url, "--virtual-time-budget=5000", "--dump-dom"))

    def screenshot(self, url: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._run(url, f"--screenshot={path}", "--window-size=1280,900", "--virtual-time-budget=5000")
        assert path.exists(), f"no screenshot at {path}"
        assert path.stat().st_size > 10_000, f"an empty screenshot at {path}"


class Page(HTMLParser):
    """What the dumped DOM shows: task rows (task -> owner), worker rows, failover rows, polls."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.owners: dict[str, str] = {}
        self.workers: dict[str, str] = {}
        self.worker_kinds: dict[str, str] = {}
        self.worker_load: dict[str, str] = {}
        self.polls = 0
        self.failover_text: list[str] = []
        self._in_failovers = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-task" in a:
            self.owners[a["data-task"]] = a.get("data-owner", "")
        if tag == "tr" and "data-worker" in a:
            self.workers[a["data-worker"]] = a.get("data-state", "")
            self.worker_kinds[a["data-worker"]] = a.get("data-kinds", "")
            self.worker_load[a["data-worker"]] = a.get("data-load", "")
        if a.get("id") == "updated":
            self.polls = int(a.get("data-polls", "0"))
        if tag == "table":
            self._in_failovers = a.get("id") == "failovers"

    def handle_data(self, data: str) -> None:
        if self._in_failovers and data.strip():
            self.failover_text.append(data.strip())


@pytest.mark.slow
def test_dashboard_in_chromium_follows_a_failover(procs: Procs, tmp_path: Path) -> None:
    browser = Browser(chromium(), tmp_path / "chromium-profile")
    a = procs.worker("w-a")
    b = procs.worker("w-b")
    wait_until(lambda: procs.run("tasks", "add", "dispatch", CITIES[0]).returncode == 0, within=20, what="the kind")
    for city in CITIES[1:]:
        assert procs.run("tasks", "add", "dispatch", city).returncode == 0
    dash = procs.start("dashboard", "dashboard", "--port", "0", "--log-format", "json")
    url = dash.wait_for_url()
    tasks = {f"dispatch/{c}" for c in CITIES}

    def owners_via_api() -> dict[str, str]:
        return {f"{t['kind']}/{t['key']}": t["owner"] for t in httpx.get(url + "api/tasks", timeout=5).json()}

    # Both workers hold their fair share (3 each) and have run them.
    wait_until(
        lambda: (
            sorted(owners_via_api().values()) == ["w-a"] * 3 + ["w-b"] * 3
            and len(httpx.get(url + "api/runs?limit=200", timeout=5).json()) >= 12
        ),
        within=30,
        what="a fair share on both workers",
    )

    page = browser.dom(url)
    assert set(page.owners) == tasks, page.html[-2000:]
    assert page.owners == owners_via_api()
    assert sorted(page.owners.values()) == ["w-a"] * 3 + ["w-b"] * 3
    assert page.workers == {"w-a": "live", "w-b": "live"}
    assert page.worker_kinds == {"w-a": "dispatch", "w-b": "dispatch"}
    assert page.polls >= 2, "the page did not keep refreshing"
    browser.screenshot(url, ARTIFACTS / "dashboard-two-workers.png")

    b.signal(signal.SIGKILL)
    b.proc.wait(10)

    def all_on_a() -> Page | None:
        p = browser.dom(url)
        done = p.owners == dict.fromkeys(tasks, "w-a") and p.workers.get("w-b") == "expired"
        return p if done and any("w-b → w-a" in text for text in p.failover_text) else None

    page = wait_until(all_on_a, within=45, what="the page to show every task on w-a", every=0.5)
    assert page.owners == owners_via_api()
    assert "expired" in page.failover_text
    browser.screenshot(url, ARTIFACTS / "dashboard-after-failover.png")
    assert a.proc.poll() is None
    assert a.stop() == 0
    assert dash.stop() == 0


@pytest.mark.slow
def test_dashboard_shows_which_worker_is_over_capacity(procs: Procs, tmp_path: Path) -> None:
    """Each worker's load as published with its last renewal: over capacity (how many runs
    wait, the oldest's age, the cap), ok, or nothing yet."""
    browser = Browser(chromium(), tmp_path / "chromium-profile")

    async def seed() -> None:
        async with tenure.App(procs.url) as admin:
            store = admin.store
            for wid in ("w-busy", "w-calm", "w-new"):
                await store.register_worker(worker_id=wid, host="host-a", pid=1, ttl=600.0)
            await store.renew_lease("w-busy", 600.0, WorkerLoad(waiting=340, oldest_waiting=2.1, concurrency=100))
            await store.renew_lease("w-calm", 600.0, WorkerLoad(waiting=0, oldest_waiting=0.0, concurrency=100))

    asyncio.run(seed())
    dash = procs.start("dashboard", "dashboard", "--port", "0", "--log-format", "json")
    page = browser.dom(dash.wait_for_url())
    assert page.worker_load == {"w-busy": "over", "w-calm": "ok", "w-new": ""}, page.html[-2000:]
    assert "340 waiting, oldest 2.10s (cap 100)" in page.html
    browser.screenshot(dash.wait_for_url(), ARTIFACTS / "dashboard-over-capacity.png")
    assert dash.stop() == 0


class DevTools:
    """One headless Chromium page driven over the DevTools protocol, to click buttons and
    answer the page's confirmation dialogs (``--dump-dom`` can only look)."""

    def __init__(self, executable: str, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        argv = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        active = profile / "DevToolsActivePort"
        port = wait_until(
            lambda: active.exists() and active.read_text().split("\n")[0].strip(), within=30, what="DevTools"
        )
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        (page,) = [p for p in pages if p["type"] == "page"]
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self._id = 0
        self.dialogs: list[str] = []
        self.call("Page.enable")

    def send(self, method: str, **params: Any) -> int:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        return self._id

    def reply(self, call_id: int, *, dialog: bool | None = None) -> dict[str, Any]:
        """Read until the answer to ``call_id``; a confirmation dialog opening meanwhile is
        recorded and accepted (``dialog`` True) or dismissed (False)."""
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Page.javascriptDialogOpening":
                assert dialog is not None, f"an unexpected dialog: {msg['params']['message']}"
                self.dialogs.append(msg["params"]["message"])
                self.send("Page.handleJavaScriptDialog", accept=dialog)
            elif msg.get("id") == call_id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.reply(self.send(method, **params))

    def js(self, expression: str, *, dialog: bool | None = None) -> Any:
        call_id = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        result = self.reply(call_id, dialog=dialog)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.slow
def test_dashboard_pause_button_asks_then_pauses_and_resumes(procs: Procs, tmp_path: Path) -> None:
    executable = chromium()
    procs.worker("w-a")
    wait_until(lambda: procs.run("tasks", "add", "dispatch", "lisbon").returncode == 0, within=20, what="the kind")
    dash = procs.start(
        "dashboard", "dashboard", "--port", "0", "--log-format", "json", env={"TENURE_ADMIN_TOKEN": TOKEN}
    )
    url = dash.wait_for_url()

    def paused() -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = httpx.get(url + "api/status", timeout=5).json()["paused"]
        return body

    page = DevTools(executable, tmp_path / "devtools-profile")
    try:
        page.call("Page.navigate", url=url)
        wait_until(lambda: page.js("document.readyState") == "complete", within=20, what="the page to load")
        # The operator types the token into the page's token box.
        page.js(
            f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
            "document.getElementById('tokenbox').requestSubmit(); true"
        )
        ready = "document.body.classList.contains('can-act') && document.getElementById('pausekind').value"
        assert wait_until(lambda: page.js(ready), within=20, what="the pause controls") == "dispatch"

        click = "document.getElementById('pausekindbtn').click(); true"
        page.js(click, dialog=False)  # the operator thinks again: nothing is paused
        assert "Pause kind dispatch?" in page.dialogs[-1]
        assert paused() == []
        page.js(click, dialog=True)
        (p,) = wait_until(paused, within=20, what="the pause to reach the store")
        assert (p["kind"], p["cancel"]) == ("dispatch", False)
        assert p["by"].startswith("http admin token from 127.0.0.1")
        row = "document.querySelector('#pauses tr[data-pause=\"dispatch\"]') !== null"
        wait_until(lambda: page.js(row), within=20, what="the page to show the pause")
        # What is paused, since when, by whom, and what happens to runs in progress.
        cells = "[...document.querySelectorAll('#pauses tr[data-pause=\"dispatch\"] td')].map((td) => td.textContent)"
        what, since, by, runs, _ = page.js(cells)
        assert what.endswith("kind dispatch"), what
        assert since.endswith(" ago"), since
        assert by == p["by"]
        assert runs == "end on their own"
        shot = page.call("Page.captureScreenshot")["data"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "dashboard-paused.png").write_bytes(base64.b64decode(shot))

        resume = "document.querySelector('#pauses tr[data-pause=\"dispatch\"] button').click(); true"
        page.js(resume, dialog=True)
        assert "Resume kind dispatch?" in page.dialogs[-1]
        wait_until(lambda: paused() == [], within=20, what="the resume to reach the store")
    finally:
        page.close()
    assert dash.stop() == 0
