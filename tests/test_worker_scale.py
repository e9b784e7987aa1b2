"""What keeps a worker with thousands of tasks from holding its event loop (issue 12 item
3): it claims them in chunks, one round after another without waiting for its next poll,
and a run that has ended leaves nothing of itself behind for the collector to scan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from pathlib import Path

import tenure
from tenure.store.sqlite import SQLiteStore

TASKS = 3 * SQLiteStore.claim_chunk + 17


async def test_a_worker_claims_thousands_of_tasks_in_chunks_within_a_few_polls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app, admin = tenure.App(url), tenure.App(url)
    ran: set[str] = set()

    @app.task("tick", every=3600.0)
    async def tick(ctx: tenure.Context) -> None:
        ran.add(ctx.key)

    await app.open()
    await admin.sync_tasks("tick", {f"k{i:05d}": None for i in range(TASKS)})
    # A long poll: without the chunks' at-once rounds, claiming all would take four polls.
    settings = tenure.Settings(worker_id="w1", lease_ttl=30.0, heartbeat=5.0, poll=20.0, trust_margin=1.0)
    worker = asyncio.create_task(app.run_worker(settings=settings, handle_signals=False))
    try:
        deadline = time.monotonic() + 15.0  # less than one poll interval
        while len(await admin.list_tasks(owner="w1")) < TASKS:
            assert not worker.done(), worker
            assert time.monotonic() < deadline, "the worker waited for its next poll to claim the rest"
            await asyncio.sleep(0.1)
        # Each round ran with the cyclic collector paused; it is back on after them.
        assert gc.isenabled()
    finally:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(worker, 30)
        await admin.close()


async def test_a_finished_run_is_not_kept_alive_until_its_deadline(tmp_path: Path) -> None:
    """A run's asyncio task (its coroutine, its context) is garbage once the run ends, not
    when its timeout would have come: kept for the timeout, 10,000 no-op runs a second
    filled the collector's oldest generation, whose full passes held the loop 30-40 ms."""
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app, admin = tenure.App(url), tenure.App(url)
    runs: list[weakref.ref[asyncio.Task[object]]] = []

    @app.task("tick", every=0.2, timeout=3600.0)
    async def tick(ctx: tenure.Context) -> None:
        me = asyncio.current_task()
        assert me is not None
        runs.append(weakref.ref(me))

    await app.open()
    await admin.add_task("tick", "a")
    settings = tenure.Settings(worker_id="w1", lease_ttl=10.0, heartbeat=2.0, poll=0.5, trust_margin=1.0)
    worker = asyncio.create_task(app.run_worker(settings=settings, handle_signals=False))
    try:
        deadline = time.monotonic() + 15.0
        while len(runs) < 3:
            assert not worker.done(), worker
            assert time.monotonic() < deadline, "the task did not run three times"
            await asyncio.sleep(0.05)
        gc.collect()
        # Every run but the latest (which may still be ending) has ended an hour before
        # its deadline.
        alive = [i for i, ref in enumerate(runs[:-1]) if ref() is not None]
        assert alive == [], f"runs {alive} of {len(runs)} still referenced after they ended"
    finally:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(worker, 30)
        await admin.close()


async def test_claim_rounds_leave_the_collector_off_if_the_app_turned_it_off(tmp_path: Path) -> None:
    """A claim round pauses the cyclic collector while it builds its tasks, and puts it
    back as it found it: an app that runs with the collector off keeps it off."""
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app, admin = tenure.App(url), tenure.App(url)

    @app.task("tick", every=3600.0)
    async def tick(ctx: tenure.Context) -> None:
        pass

    await app.open()
    await admin.sync_tasks("tick", {f"k{i:05d}": None for i in range(TASKS)})
    settings = tenure.Settings(worker_id="w1", lease_ttl=30.0, heartbeat=5.0, poll=20.0, trust_margin=1.0)
    gc.disable()
    worker = asyncio.create_task(app.run_worker(settings=settings, handle_signals=False))
    try:
        deadline = time.monotonic() + 15.0
        while len(await admin.list_tasks(owner="w1")) < TASKS:
            assert not worker.done(), worker
            assert time.monotonic() < deadline, "the worker did not claim every task"
            await asyncio.sleep(0.1)
        assert not gc.isenabled()
    finally:
        gc.enable()
        worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(worker, 30)
        await admin.close()
