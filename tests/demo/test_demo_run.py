"""``tenure demo`` end to end: real worker processes, real signals, the checker's verdict.

- A short seeded run with chaos passes on every store under test (``store_url``): the
  monkey pauses a worker in the middle of a dispatch (always its first fault), whose
  stale commit is refused when it wakes up, then kills one (always its second).
- The same run with fencing turned off (``TENURE_DEMO_UNFENCED=1``, read only by the
  demo's domain) fails: the paused worker wakes up and writes its stale plan, and the
  checker catches it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenure.demo import checker, domain
from tenure.demo.chaos import schedule

pytestmark = pytest.mark.slow

TIMING = checker.Timing(period=domain.PERIOD, lease_ttl=domain.SETTINGS.lease_ttl, poll=domain.SETTINGS.poll)


def run_demo(url: str, tmp: Path, *args: str, unfenced: bool = False) -> subprocess.CompletedProcess[str]:
    """``tenure demo --store url args``; its folder of worker logs goes under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != domain.UNFENCED_ENV}
    env["TMPDIR"] = str(tmp)
    if unfenced:
        env[domain.UNFENCED_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "tenure.cli", "demo", "--store", url, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def test_every_schedule_begins_with_a_pause_then_a_kill() -> None:
    for seed in range(50):
        faults = schedule(seed, 28.0)
        assert [f.kind for f in faults[:2]] == ["pause", "kill"]
        assert 4.0 <= faults[0].at <= 5.0
        assert all(f.at < 28.0 - 8.0 for f in faults)


def test_demo_with_chaos_passes(store_url: str, tmp_path: Path) -> None:
    result = run_demo(store_url, tmp_path, "--duration", "28", "--seed", "3")
    assert result.returncode == 0, explain(result)
    out = result.stdout
    assert "verdict: PASS (4 of 4 checks hold)" in out, explain(result)
    for shown in ("SIGSTOP", "in the middle of dispatching", "SIGCONT", "SIGKILL", "lease expired", "REFUSED:"):
        assert shown in out, f"{shown!r} not shown\n{explain(result)}"

    history = asyncio.run(checker.load(store_url, TIMING))
    assert checker.check(history).ok
    # The paused worker tried to commit the plan it made before the pause: refused.
    assert history.refusals, explain(result)
    # Its cities and the killed worker's changed owner, at higher terms.
    terms = {(d.city, d.term) for d in history.dispatches}
    cities = {d.city for d in history.dispatches}
    assert len(terms) - len(cities) >= 2
    assert history.assignments, "no courier was ever dispatched"
    assert any(a.done_at is not None for a in history.assignments), "no delivery was ever completed"


def test_checker_catches_the_demo_without_fencing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unfenced.db'}"
    result = run_demo(url, tmp_path, "--duration", "18", "--seed", "5", unfenced=True)
    assert result.returncode == 1, explain(result)
    out = result.stdout
    assert "FENCING OFF" in out
    assert "verdict: FAIL" in out, explain(result)
    assert "[FAILED] every stale commit was refused" in out, explain(result)

    history = asyncio.run(checker.load(url, TIMING))
    verdict = checker.check(history)
    stale = next(c for c in verdict.checks if c.name == "every stale commit was refused")
    assert not stale.ok
    assert not history.refusals, "nothing refuses without the fence"
    # The stale writer is the paused worker, w1..w3, with an older term than the city's owner by then.
    assert any("accepted" in p for p in stale.problems), stale.problems


def _demo_workers(parent: int) -> list[int]:
    """The pids of ``parent``'s child processes running a demo worker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"tenure.demo.worker" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_demo_stopped_with_sigterm_stops_its_workers(tmp_path: Path) -> None:
    """SIGTERM (a `timeout`, a `kill`, a closed terminal's SIGHUP) ended the demo at once
    and left its worker processes running, a SIGSTOPped one frozen for good."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "tenure.cli", "demo", "--store", f"sqlite:///{tmp_path / 'd.db'}"),
            *("--workers", "2", "--cities", "2", "--duration", "60", "--no-chaos"),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(workers := _demo_workers(demo.pid)) < 2:
            assert demo.poll() is None, f"the demo ended early: {demo.returncode}"
            assert time.monotonic() < deadline, "the demo's workers did not start"
            time.sleep(0.1)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 128 + signal.SIGTERM
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert alive == [], "demo workers left running after the demo ended"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
