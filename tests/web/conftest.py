"""Fixtures of the HTTP tests: a seeded SQLite store and HTTP clients on the ASGI app.

The ASGI app is driven in-process through httpx's ASGI transport, on the test's own
event loop, against a real store: what the app reads and changes is the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import tenure
from support.storeapi import publish_kinds
from tenure.models import Outcome, Pause, Run, Task, WorkerInfo
from tenure.web import create_app

TOKEN = "s3cret-token-for-tests"  # noqa: S105 - a test token
Snapshot = tuple[list[Task], list[WorkerInfo], list[Run], list[Pause]]


@dataclass
class Seeded:
    """The seeded store: its URL, an admin App on it (what the HTTP interface uses), and
    what the seed put there."""

    url: str
    admin: tenure.App
    #: The dispatch task that moved from the expired worker to the live one: Saint-Étienne/nord.
    moved: str
    terms: dict[str, int]

    async def snapshot(self) -> Snapshot:
        store = self.admin.store
        return (
            await store.list_tasks(),
            await store.list_workers(),
            await store.list_runs(limit=1000),
            await store.list_pauses(),
        )


def _run(task: Task, worker: str, term: int, at: float, outcome: Outcome, error: str | None = None) -> Run:
    return Run(
        kind=task.kind,
        key=task.key,
        worker=worker,
        term=term,
        scheduled_at=at,
        started_at=at + 0.25,
        ended_at=at + 0.5,
        outcome=outcome,
        error=error,
    )


@pytest.fixture
async def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Seeded]:
    """Four tasks (one with a slash and an accent in its key, one disabled cron task), a
    worker whose lease expired after it ran one task, a live worker that took that task
    over (a failover) and owns the enabled ones, and their runs, one of them a failure."""
    for name in ("TENURE_STORE", "TENURE_PROTECT_READS", "TENURE_LOG_FORMAT", *tenure.config.ENV_NAMES.values()):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    await publish_kinds(url)
    admin = tenure.App(url)
    await admin.open(migrate=False)
    try:
        await admin.add_task("dispatch", "barcelona")
        await admin.add_task("dispatch", "lisbon", every=2.5, params={"zone": "west"})
        await admin.add_task("dispatch", "Saint-Étienne/nord", every=10)
        await admin.add_task("report", "daily", cron="0 6 * * *", enabled=False)
        store = admin.store
        await store.register_worker(worker_id="w-gone", host="old-host", pid=7, ttl=0.2, kinds=["dispatch"])
        (first,) = await store.claim_tasks("w-gone", kinds=["dispatch"], limit=1)
        assert first.task.key == "Saint-Étienne/nord"  # claims go in kind, key order
        now = await store.now()
        runs = [_run(first.task, "w-gone", first.term, now - 30 + i, Outcome.OK) for i in range(3)]
        await asyncio.sleep(0.3)  # w-gone's lease expires
        await store.register_worker(worker_id="w-live", host="host-a", pid=4242, ttl=60, kinds=["dispatch", "report"])
        claims = await store.claim_tasks("w-live", kinds=["dispatch", "report"], limit=10)
        assert len(claims) == 3
        terms = {c.task.key: c.term for c in claims}
        now = await store.now()
        for c in claims:
            runs += [_run(c.task, "w-live", c.term, now - 10 + i, Outcome.OK) for i in range(2)]
        lisbon = next(c.task for c in claims if c.task.key == "lisbon")
        runs.append(_run(lisbon, "w-live", terms["lisbon"], now - 5, Outcome.ERROR, "RuntimeError: <b>boom</b>"))
        await store.record_runs(runs, [])
        yield Seeded(url=url, admin=admin, moved=first.task.key, terms=terms)
    finally:
        await admin.close()


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for(seeded: Seeded) -> ClientFactory:
    """``async with client_for(token=..., protect_reads=...) as http:``: a client of the app
    over the seeded store, configured with that admin token (default: ``TOKEN``)."""

    @asynccontextmanager
    async def make(
        *, token: str | None = TOKEN, protect_reads: bool = False, store_metrics: bool = True
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = tenure.Settings(admin_token=token)
        asgi = create_app(seeded.admin, settings, protect_reads=protect_reads, store_metrics=store_metrics)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http

    return make


@pytest.fixture
async def http(client_for: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with reads open and the admin token ``TOKEN`` configured."""
    async with client_for() as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def unchanged(seeded: Seeded, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Make a call that must fail; check the store is exactly as before it."""
    before = await seeded.snapshot()
    response = await call()
    assert response.status_code >= 400, response.text
    assert await seeded.snapshot() == before, "a refused call changed the store"
    return response
