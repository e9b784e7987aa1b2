"""Real ``tenure`` processes for the HTTP tests: started with JSON logs to a file, read
back by their log lines, and always reaped (the ``procs`` fixture SIGKILLs leftovers)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
#: A worker app for these tests: ``dispatch`` every 0.5 s, doing nothing; key ``bad`` raises.
APP_SOURCE = """\
import tenure

app = tenure.App()

@app.task("dispatch", every=0.5)
async def dispatch(ctx: tenure.Context) -> None:
    if ctx.key == "bad":
        raise RuntimeError("bad city")
"""
#: Fast leases, so a killed worker's tasks move within about two seconds.
FAST = ["--ttl", "1.5", "--heartbeat", "0.3", "--poll", "0.25", "--grace", "1"]


def wait_until(check: Callable[[], T | None], *, within: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something other than None/False; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


class Proc:
    """One ``tenure`` process, its stderr in a file."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tenure.cli", *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (other lines are skipped)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return out

    def wait_for_url(self, within: float = 20.0) -> str:
        """The http://host:port/ the process logged it serves on."""

        def find() -> str | None:
            assert self.proc.poll() is None, f"{self.name} exited early:\n{self.log()}"
            for rec in self.records():
                m = re.search(r"(http://\S+?:\d+/)", str(rec.get("message", "")))
                if m and rec.get("logger") == "tenure.web":
                    return m.group(1)
            return None

        return wait_until(find, within=within, what=f"{self.name} to log its address")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, within: float = 15.0) -> int:
        """SIGTERM, then the exit status."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(within)

    def reap(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


class Procs:
    """Every process a test starts, on one store, in one folder (holding ``webapp.py``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = f"sqlite:///{folder / 'tenure.db'}?synchronous=normal"
        (folder / "webapp.py").write_text(APP_SOURCE)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
        self.env["TENURE_STORE"] = self.url
        self.env["PYTHONPATH"] = str(folder)
        self.all: list[Proc] = []

    def start(self, name: str, *argv: str, env: Mapping[str, str] | None = None) -> Proc:
        p = Proc(name, list(argv), cwd=self.folder, env={**self.env, **(env or {})})
        self.all.append(p)
        return p

    def worker(self, worker_id: str, *extra: str) -> Proc:
        return self.start(worker_id, "worker", "webapp:app", "--id", worker_id, "--log-format", "json", *FAST, *extra)

    def run(self, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short ``tenure`` command to its end."""
        return subprocess.run(
            [sys.executable, "-m", "tenure.cli", *argv],
            cwd=self.folder,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def reap(self) -> None:
        for p in self.all:
            p.reap()
            print(f"=== {p.name} (exit {p.proc.returncode}) log tail ===")
            print(p.log()[-3000:])


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """A store and an app module in a scratch folder; every process started is reaped at the end."""
    p = Procs(tmp_path)
    assert p.run("migrate").returncode == 0
    try:
        yield p
    finally:
        p.reap()
