"""A worker short of thousands of tasks claims them in chunks, one round after another
without waiting for its next poll, and runs them (issue 12 item 3: adopting them all at
once held the event loop for the whole batch)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
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
