"""The dashboard page as served, /metrics parsed with Prometheus' own parser, and a
worker's HTTP interface started and stopped with the worker (in-process, real sockets)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

import tenure
from tenure.web import WorkerHTTP
from tenure.worker import Worker

from .conftest import ClientFactory, Seeded

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a /metrics answer, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def wait_for(check: Callable[[], object], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.05)


# -- the page --------------------------------------------------------------------------------


async def test_the_page_is_self_contained_and_locked_down(http: httpx.AsyncClient) -> None:
    r = await http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    # The CSP allows exactly the inline script and style, by hash.
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp
    # Nothing is loaded from elsewhere, and data is never written as HTML.
    assert not re.search(r"\b(src|href)\s*=", html)
    for never in ("@import", "url(", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert never not in html, never
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    for endpoint in ("/api/status", "/api/tasks", "/api/runs", "/api/failovers"):
        assert endpoint in html


# -- /metrics --------------------------------------------------------------------------------


async def test_metrics_parse_and_carry_the_store_gauges(http: httpx.AsyncClient) -> None:
    r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    assert got["tenure_store_up", ()] == 1
    tasks = {state: got["tenure_store_tasks", (("state", state),)] for state in ("enabled", "disabled", "owned")}
    assert tasks == {"enabled": 3, "disabled": 1, "owned": 3}
    assert got["tenure_store_tasks", (("state", "unowned"),)] == 1
    assert got["tenure_store_workers", (("state", "live"),)] == 1
    assert got["tenure_store_workers", (("state", "expired"),)] == 1
    assert got["tenure_store_workers", (("state", "draining"),)] == 0
    # The process's own registry is there too (a worker's metrics; idle in this process).
    families = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"tenure_runs", "tenure_run_lag_seconds", "tenure_tasks_held", "tenure_fenced_commits_refused"} <= families


async def test_metrics_without_store_gauges(client_for: ClientFactory) -> None:
    async with client_for(store_metrics=False) as http:
        text = (await http.get("/metrics")).text
    assert "tenure_store_" not in text
    assert "tenure_tasks_held" in text


async def test_metrics_say_when_the_store_is_down(tmp_path: Path, seeded: Seeded) -> None:
    # An App on a SQLite file with no schema: every read fails with a StoreError.
    (tmp_path / "empty.db").touch()
    broken = tenure.App(f"sqlite:///{tmp_path / 'empty.db'}")
    from tenure.web import create_app

    transport = httpx.ASGITransport(app=create_app(broken, tenure.Settings()))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.get("/metrics")
            assert r.status_code == 200
            got = samples(r.text)
            assert got["tenure_store_up", ()] == 0
            assert not any(name.startswith("tenure_store_tasks") for name, _ in got)
            r = await http.get("/api/status")
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "store_unavailable"
    finally:
        await broken.close()


async def test_metrics_counters_move_as_a_worker_runs(tmp_path: Path, client_for: ClientFactory) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}?synchronous=normal"
    app = tenure.App(url)
    ran: list[str] = []

    @app.task("tick", every=0.1)
    async def tick(ctx: tenure.Context) -> None:
        ran.append(ctx.key)

    await app.open()
    admin = tenure.App(url)
    await admin.add_task("tick", "a")
    await admin.add_task("tick", "b")
    settings = tenure.Settings(lease_ttl=2.0, heartbeat=0.4, poll=0.2, trust_margin=0.3, worker_id="w-metrics")
    from tenure.web import create_app

    transport = httpx.ASGITransport(app=create_app(admin, settings))
    worker = Worker(store=app.store, kinds=app.kinds, settings=settings, store_url=url)
    running = asyncio.create_task(worker.run(handle_signals=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:

            async def scrape() -> Samples:
                r = await http.get("/metrics")
                assert r.status_code == 200
                return samples(r.text)

            ok = ("tenure_runs_total", (("kind", "tick"), ("outcome", "ok")))
            lag = ("tenure_run_lag_seconds_count", (("kind", "tick"),))
            before = await scrape()
            latest: Samples = before

            async def moved() -> bool:
                nonlocal latest
                latest = await scrape()
                return latest.get(ok, 0) >= before.get(ok, 0) + 10 and latest[("tenure_tasks_held", ())] == 2

            deadline = time.monotonic() + 15
            while not await moved():
                assert time.monotonic() < deadline, f"counters did not move: {latest.get(ok)} after {before.get(ok)}"
                await asyncio.sleep(0.1)
            assert latest[lag] >= before.get(lag, 0) + 10
            assert latest[("tenure_store_tasks", (("state", "owned"),))] == 2
            assert latest[("tenure_store_workers", (("state", "live"),))] == 1
            assert latest[("tenure_term_changes_total", (("how", "new"),))] >= 2
            assert latest[("tenure_lease_renew_seconds_count", ())] >= 1
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 10)
        await app.close()
        await admin.close()
    assert {"a", "b"} <= set(ran)


# -- a worker's HTTP interface ----------------------------------------------------------------


async def test_a_worker_serves_http_until_it_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app = tenure.App(url)

    @app.task("tick", every=0.2)
    async def tick(ctx: tenure.Context) -> None:
        pass

    await app.open()
    await app.add_task("tick", "a")
    settings = tenure.Settings(
        lease_ttl=2.0,
        heartbeat=0.4,
        poll=0.2,
        trust_margin=0.3,
        worker_id="w-http",
        admin_token="tok",  # noqa: S106 - a test token
    )
    http = WorkerHTTP("127.0.0.1", 0)
    base = http.url
    assert base.startswith("http://127.0.0.1:")
    assert not base.endswith(":0/")  # the port the system chose
    worker = Worker(store=app.store, kinds=app.kinds, settings=settings, sidecars=[http], store_url=url)
    running = asyncio.create_task(worker.run(handle_signals=False))
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            status: dict[str, object] = {}

            async def serving() -> bool:
                nonlocal status
                try:
                    r = await client.get("/api/status")
                except httpx.TransportError:
                    return False
                status = r.json()
                return status["tasks"] == {"total": 1, "enabled": 1, "disabled": 0, "owned": 1, "unowned": 0}

            deadline = time.monotonic() + 10
            while not await serving():
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.05)
            assert status["served_by"] == "w-http"
            assert status["actions"] is True
            metrics = samples((await client.get("/metrics")).text)
            assert metrics[("tenure_tasks_held", ())] == 1
            assert not any(name.startswith("tenure_store_") for name, _ in metrics)  # a worker leaves them out
            r = await client.post("/api/tasks/tick/a/trigger", headers={"Authorization": "Bearer tok"})
            assert r.status_code == 200, r.text
            assert (await client.get("/")).status_code == 200
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 10)
        await app.close()
    # Stopped with the worker: the address no longer answers.
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        try:
            await client.get("/api/status")
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the worker's HTTP interface still answers after the worker stopped")
    assert http.sock.fileno() == -1  # closed
