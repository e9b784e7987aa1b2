"""What keeps a worker with thousands of tasks from holding its event loop (issue 12 item
3): it claims them in chunks, one round after another without waiting for its next poll,
with the collector paused while a round builds its tasks, and a run that has ended leaves
nothing of itself behind for the collector to scan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import tenure
from support.storeapi import worker_in_loop
from tenure.store.sqlite import SQLiteStore
from tenure.worker.rebalancer import RELEASE_CHUNK

TASKS = 3 * SQLiteStore.claim_chunk + 17
#: A long poll: without the chunks' at-once rounds, claiming all would take four polls.
LONG_POLL = tenure.Settings(worker_id="w1", lease_ttl=30.0, heartbeat=5.0, poll=20.0, trust_margin=1.0)


@contextlib.asynccontextmanager
async def worker_of(app: tenure.App, admin: tenure.App, settings: tenure.Settings) -> AsyncIterator[asyncio.Task[None]]:
    """``app``'s worker running in this loop; cancelled at the end, and ``admin`` closed."""
    try:
        async with worker_in_loop(app, settings) as worker:
            yield worker
    finally:
        await admin.close()


async def until(worker: asyncio.Task[None], check: Callable[[], Awaitable[bool]], failure: str) -> None:
    """Wait until ``check`` holds, at most 15 s (less than :data:`LONG_POLL`'s poll)."""
    deadline = time.monotonic() + 15.0
    while not await check():
        assert not worker.done(), worker
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.05)


Runs = list[weakref.ref[asyncio.Task[object]]]


async def apps_with_ticks(
    tmp_path: Path, keys: list[str], *, every: float, run_timeout: float | None = None
) -> tuple[tenure.App, tenure.App, Runs]:
    """A worker's app with a ``tick`` kind, an admin app that has
    added ``keys``, and a weak reference to each run's asyncio task, in run order."""
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app, admin = tenure.App(url), tenure.App(url)
    runs: Runs = []

    @app.task("tick", every=every, timeout=run_timeout)
    async def tick(ctx: tenure.Context) -> None:
        me = asyncio.current_task()
        assert me is not None
        runs.append(weakref.ref(me))

    await app.open()
    await admin.sync_tasks("tick", dict.fromkeys(keys))
    return app, admin, runs


def fast(worker_id: str) -> tenure.Settings:
    return tenure.Settings(worker_id=worker_id, lease_ttl=10.0, heartbeat=1.0, poll=0.5, trust_margin=1.0)


@contextlib.asynccontextmanager
async def handed_half(app: tenure.App, admin: tenure.App, tasks: int) -> AsyncIterator[None]:
    """``app``'s worker w1 claims all ``tasks``, then a second worker w2 joins; the block
    runs once w2 holds its half (both workers still running)."""
    second = tenure.App(str(app.store_url))
    second.task("tick", every=3600.0)(lambda ctx: None)

    async def w1_holds_all() -> bool:
        return len(await admin.list_tasks(owner="w1")) == tasks

    async def shared_fairly() -> bool:
        return len(await admin.list_tasks(owner="w2")) == tasks // 2

    async with worker_of(app, admin, fast("w1")) as w1:
        await until(w1, w1_holds_all, "w1 did not claim every task")
        await second.open()
        try:
            async with worker_in_loop(second, fast("w2")) as w2:
                await until(w2, shared_fairly, "w2 did not get its share")
                yield
        finally:
            await second.close()


async def test_a_worker_claims_thousands_of_tasks_in_chunks_within_a_few_polls(tmp_path: Path) -> None:
    app, admin, _ = await apps_with_ticks(tmp_path, [f"k{i:05d}" for i in range(TASKS)], every=3600.0)

    async def holds_all() -> bool:
        return len(await admin.list_tasks(owner="w1")) == TASKS

    async with worker_of(app, admin, LONG_POLL) as worker:
        await until(worker, holds_all, "the worker waited for its next poll to claim the rest")
        # Each round ran with the cyclic collector paused; it is back on after them.
        assert gc.isenabled()


async def test_claim_rounds_leave_the_collector_off_if_the_app_turned_it_off(tmp_path: Path) -> None:
    """A claim round pauses the cyclic collector while it builds its tasks, and puts it
    back as it found it: an app that runs with the collector off keeps it off."""
    app, admin, _ = await apps_with_ticks(tmp_path, [f"k{i:05d}" for i in range(TASKS)], every=3600.0)

    async def holds_all() -> bool:
        return len(await admin.list_tasks(owner="w1")) == TASKS

    gc.disable()
    try:
        async with worker_of(app, admin, LONG_POLL) as worker:
            await until(worker, holds_all, "the worker did not claim every task")
            assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_finished_run_is_not_kept_alive_until_its_deadline(tmp_path: Path) -> None:
    """A run's asyncio task (its coroutine, its context) is garbage once the run ends, not
    when its timeout would have come: kept for the timeout, 10,000 no-op runs a second
    filled the collector's oldest generation, whose full passes held the loop 30-40 ms."""
    app, admin, runs = await apps_with_ticks(tmp_path, ["a"], every=0.2, run_timeout=3600.0)

    async def ran_three_times() -> bool:
        return len(runs) >= 3

    async with worker_of(app, admin, tenure.Settings(worker_id="w1", poll=0.5)) as worker:
        await until(worker, ran_three_times, "the task did not run three times")
        gc.collect()
        # Every run but the latest (which may still be ending) has ended an hour before
        # its deadline.
        alive = [i for i, ref in enumerate(runs[:-1]) if ref() is not None]
        assert alive == [], f"runs {alive} of {len(runs)} still referenced after they ended"


async def test_a_worker_handing_over_hundreds_of_tasks_says_so_in_a_line_a_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Releasing surplus tasks to a newcomer logs one INFO line per release (each task at
    DEBUG), as claiming does: a handover of thousands of tasks wrote thousands of lines."""
    app, admin, _ = await apps_with_ticks(tmp_path, [f"k{i:04d}" for i in range(1000)], every=3600.0)
    caplog.set_level(logging.INFO, logger="tenure.worker")
    async with handed_half(app, admin, 1000):
        pass
    releases = [
        r
        for r in caplog.records
        if r.levelno == logging.INFO and getattr(r, "worker", None) == "w1" and r.getMessage().startswith("released ")
    ]
    assert releases, "w1 logged no release"
    assert len(releases) <= 3, [r.getMessage() for r in releases]
    counted = sum(int(r.getMessage().split()[1]) for r in releases)
    assert counted >= 500, [r.getMessage() for r in releases]


async def test_a_worker_handing_over_thousands_of_tasks_releases_them_a_chunk_a_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release of more than :data:`RELEASE_CHUNK` tasks goes in several statements
    (preparing one of 5,000 held the loop ~15 ms), and every task still arrives: the
    newcomer ends with its fair share, the releaser with the rest."""
    tasks = 2 * RELEASE_CHUNK + 500
    app, admin, _ = await apps_with_ticks(tmp_path, [f"k{i:05d}" for i in range(tasks)], every=3600.0)
    sizes: list[int] = []
    release_tasks = app.store.release_tasks

    async def counted(worker_id: str, slots: Any) -> int:
        sizes.append(len(slots))
        return await release_tasks(worker_id, slots)

    monkeypatch.setattr(app.store, "release_tasks", counted)

    async with handed_half(app, admin, tasks):
        assert len(await admin.list_tasks(owner="w1")) == tasks - tasks // 2
        handed = list(sizes)
    assert sum(handed) == tasks // 2, handed
    assert max(handed) <= RELEASE_CHUNK, handed
    assert len(handed) >= 2, handed


async def test_a_release_that_fails_part_way_says_what_it_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When a later chunk of a release fails, the chunks before it are released and gone
    from the worker: its line says so (it said nothing before), and the next poll hands
    over the rest."""
    tasks = 2 * RELEASE_CHUNK + 500
    app, admin, _ = await apps_with_ticks(tmp_path, [f"k{i:05d}" for i in range(tasks)], every=3600.0)
    caplog.set_level(logging.INFO, logger="tenure.worker")
    calls: list[int] = []
    release_tasks = app.store.release_tasks

    async def second_fails_once(worker_id: str, slots: Any) -> int:
        calls.append(len(slots))
        if len(calls) == 2:
            raise tenure.StoreUnavailable("the database went away (a test)")
        return await release_tasks(worker_id, slots)

    monkeypatch.setattr(app.store, "release_tasks", second_fails_once)

    async with handed_half(app, admin, tasks):
        assert len(await admin.list_tasks(owner="w1")) == tasks - tasks // 2
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and getattr(r, "worker", None) == "w1" and r.getMessage().startswith("released ")
    ]
    first = tasks // 2 - RELEASE_CHUNK
    assert lines[0].startswith(f"released {RELEASE_CHUNK} tasks ({RELEASE_CHUNK} tick), {first} kept"), lines
    assert calls[:2] == [RELEASE_CHUNK, first], calls
