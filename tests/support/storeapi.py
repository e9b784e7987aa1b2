"""Shortcuts over the store API for tests that drive a store directly (the store contract
suite, and the tests of the context, the CLI and tracing that set a store up by hand),
:func:`publish_kinds`, the kinds the admin, CLI and web tests find published, and
:func:`worker_in_loop`, a worker in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import tenure
from tenure.models import Lease, Task
from tenure.schedule import Every, Schedule
from tenure.store import Store, make_store

#: A lease short enough to wait out in a test, long enough to do a few statements first.
SHORT_TTL = 0.4
#: A lease that never runs out during a test.
LONG_TTL = 60.0


@asynccontextmanager
async def opened(url: str, *, migrate: bool = False) -> AsyncIterator[Store]:
    """The store at ``url``, opened (with ``migrate``, its schema created or upgraded)
    until the block ends."""
    s = make_store(url)
    await s.open(migrate=migrate)
    try:
        yield s
    finally:
        await s.close()


async def wait_past(store: Store, moment: float, *, within: float = 10.0) -> float:
    """Wait until the database's clock is past ``moment`` (a lease expiry); return its time.

    Polls ``store.now()`` against a deadline: the database decides, not a fixed sleep.
    """
    deadline = time.monotonic() + within
    while True:
        now = await store.now()
        if now > moment:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"database clock {now} did not pass {moment} within {within}s")
        await asyncio.sleep(0.02)


async def _never_run(ctx: tenure.Context) -> None:  # pragma: no cover - never run here
    raise AssertionError("registered only to publish its kind")


async def publish_kinds(url: str, *, report: bool = True, dispatch_timeout: float | None = None) -> None:
    """Open an App on ``url`` registering ``dispatch`` (every 5 s, timing out after ``dispatch_timeout``) and, with
    ``report``, ``report`` (no default schedule: its tasks must give one), then close it:
    that creates or upgrades the schema and publishes the kinds to the store."""
    app = tenure.App(url)
    app.task("dispatch", every=5.0, timeout=dispatch_timeout)(_never_run)
    if report:
        app.task("report")(_never_run)
    await app.open(migrate=True)
    await app.close()


async def register(store: Store, worker_id: str, ttl: float = LONG_TTL) -> Lease:
    return await store.register_worker(worker_id=worker_id, host="test-host", pid=4242, ttl=ttl)


async def add(
    store: Store,
    kind: str,
    key: str,
    *,
    schedule: Schedule | None = None,
    params_json: str = "{}",
    enabled: bool = True,
) -> Task:
    return await store.add_task(
        kind=kind, key=key, schedule=schedule or Every(5.0), params_json=params_json, enabled=enabled
    )


async def task_of(store: Store, kind: str, key: str) -> Task:
    task = await store.get_task(kind, key)
    assert task is not None, f"task {kind}/{key} is gone"
    return task


@asynccontextmanager
async def worker_in_loop(app: tenure.App, settings: tenure.Settings) -> AsyncIterator[asyncio.Task[None]]:
    """``app``'s worker running in this event loop (``App.run_worker``, no signal handlers);
    cancelled at the end, a forced stop, whatever the test did."""
    worker = asyncio.create_task(app.run_worker(settings=settings, handle_signals=False))
    try:
        yield worker
    finally:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(worker, 30)
