"""End to end: the dashboard in headless Chromium, against two live worker processes.

The page must load, show every task with its owner, keep refreshing, and, after one
worker is SIGKILLed, show its tasks under the other worker. Chromium is Debian's
``chromium`` package (``.ci/run`` installs it); it is driven simply, one fresh page load
per look (``--dump-dom``), polling with a deadline. Screenshots are saved under
``test-artifacts/`` at the repository's root.

Without Chromium this test fails under CI (``CI`` set) and skips loudly elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from .procs import Procs, procs, wait_until

__all__ = ["procs"]  # the fixture, used by name

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
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
