"""/healthz and /readyz: on a real worker process (blocked loop, drain, stop) and on the
dashboard's ASGI app (store up, store down)."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

import tenure
from tenure.web import create_app

from .conftest import Seeded
from .procs import FAST, Procs, procs, wait_until

__all__ = ["procs"]  # the fixture, used by name

#: An app whose ``dispatch/sleeper`` task blocks the worker's event loop once for 3 s
#: (an async handler calling time.sleep), far past the trusted span of FAST leases (0.5 s).
BLOCKING_APP = """\
import time
import tenure

app = tenure.App()
blocked = False

@app.task("dispatch", every=0.5)
async def dispatch(ctx: tenure.Context) -> None:
    global blocked
    if ctx.key == "sleeper" and not blocked:
        blocked = True
        time.sleep(3)
"""


def get(http: httpx.Client, path: str) -> tuple[int, dict[str, Any]]:
    r = http.get(path)
    assert r.headers["cache-control"] == "no-store"
    return r.status_code, r.json()


def wait_status(http: httpx.Client, path: str, status: int, *, what: str) -> dict[str, Any]:
    """The body of the first answer of ``path`` with ``status``."""

    def check() -> dict[str, Any] | None:
        got, body = get(http, path)
        return body if got == status else None

    return wait_until(check, within=20, what=what)


@pytest.mark.slow
def test_worker_probes_follow_its_loop_its_lease_and_its_drain(procs: Procs) -> None:
    (procs.folder / "blockapp.py").write_text(BLOCKING_APP)
    worker = procs.start(
        "w-block", "worker", "blockapp:app", "--id", "w-block", "--log-format", "json", *FAST, "--http", "127.0.0.1:0"
    )
    url = worker.wait_for_url()
    with httpx.Client(base_url=url, timeout=5) as http:
        ready = wait_status(http, "/readyz", 200, what="the worker to be ready")
        assert ready["ready"] is True
        assert ready["reasons"] == []
        assert ready["worker"] == "w-block"
        assert ready["store"] == {"answers": True, "error": None}
        assert ready["lease"]["trusted_for"] > 0
        status, health = get(http, "/healthz")
        assert status == 200
        assert health["status"] == "ok", health
        assert health["loop"]["limit"] == pytest.approx(0.5)  # lease_ttl 1.5 - trust_margin 1

        assert procs.run("tasks", "add", "dispatch", "sleeper").returncode == 0
        # The interface has a thread of its own: it answers while the handler holds the loop.
        health = wait_status(http, "/healthz", 503, what="/healthz to see the blocked loop")
        assert health["status"] == "blocked"
        assert health["loop"]["blocked_for"] > 0.5
        assert "handler of dispatch/sleeper" in health["loop"]["blocked_by"]
        status, ready = get(http, "/readyz")
        assert status == 503  # at once, whatever the lease's trusted deadline says yet
        assert any(r.startswith("event loop blocked for ") for r in ready["reasons"]), ready
        wait_until(
            lambda: any("no trusted lease" in r for r in get(http, "/readyz")[1]["reasons"]),
            within=20,
            what="/readyz to see the untrusted lease",
        )

        # Once the loop turns again the worker fences itself, rejoins and is ready again.
        wait_status(http, "/healthz", 200, what="the loop to turn again")
        ready = wait_status(http, "/readyz", 200, what="the worker to rejoin")
        assert ready["lease"]["self_fences"] >= 1

        assert procs.run("workers", "drain", "w-block").returncode == 0
        ready = wait_status(http, "/readyz", 503, what="/readyz to see the drain")
        assert ready["draining"] is True
        assert any(r.startswith("draining") for r in ready["reasons"]), ready
        assert get(http, "/healthz")[0] == 200  # draining is not a reason to restart
    assert worker.stop() == 0


async def test_dashboard_probes_report_the_store(seeded: Seeded) -> None:
    app = create_app(seeded.admin, seeded.admin.settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        r = await http.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        r = await http.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {"ready": True, "reasons": [], "store": {"answers": True, "error": None}}


async def test_dashboard_readyz_is_503_with_the_reason_when_the_store_is_down() -> None:
    down = tenure.App("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=1")
    app = create_app(down, down.settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
            r = await http.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["ready"] is False
            assert body["store"]["answers"] is False
            assert body["reasons"] == [f"the store does not answer: {body['store']['error']}"]
            assert (await http.get("/healthz")).status_code == 200  # the process itself is fine
    finally:
        await down.close()


#: An app whose ``dispatch/long`` run awaits for a minute (cancelled by a stop's grace),
#: and says when it has started.
LONG_RUN_APP = """\
import asyncio
from pathlib import Path
import tenure

app = tenure.App()

@app.task("dispatch", every=0.5, timeout=120)
async def dispatch(ctx: tenure.Context) -> None:
    if ctx.key == "long":
        Path("long-started").touch()
        await asyncio.sleep(60)
"""


@pytest.mark.slow
def test_worker_readyz_says_stopping_during_its_grace(procs: Procs) -> None:
    """Between SIGTERM and exit (its grace, a run in progress) a worker is not ready: it
    hands its tasks over. /healthz stays 200: a stop is not a reason to restart."""
    (procs.folder / "longapp.py").write_text(LONG_RUN_APP)
    grace = ["--grace", "30"]  # the run holds the stop for its grace: time enough to look
    worker = procs.start(
        "w-long",
        "worker",
        "longapp:app",
        "--id",
        "w-long",
        "--log-format",
        "json",
        *FAST,
        *grace,
        "--http",
        "127.0.0.1:0",
    )
    url = worker.wait_for_url()
    with httpx.Client(base_url=url, timeout=5) as http:
        wait_status(http, "/readyz", 200, what="the worker to be ready")
        assert procs.run("tasks", "add", "dispatch", "long").returncode == 0
        wait_until(lambda: (procs.folder / "long-started").exists(), within=20, what="the long run to start")
        worker.signal(signal.SIGTERM)
        ready = wait_status(http, "/readyz", 503, what="/readyz to see the stop")
        assert ready["stopping"] is True
        assert "stopping: handing its tasks over" in ready["reasons"], ready
        assert get(http, "/healthz")[0] == 200
    worker.signal(signal.SIGTERM)  # a second one cancels the run at once
    assert worker.proc.wait(15) == 0
