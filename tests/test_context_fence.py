"""A run that is past its timeout or cancelled cannot commit (issue 11, item 4): the
context checks at commit time, not only on entry, and ends a fenced transaction a
cancelled run still holds. On every store, with real databases."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from support.rawdb import RawDB, raw_db
from support.storeapi import add, register
from tenure import Context
from tenure.errors import LeaseLost, StoreUnavailable, TransactionClosed
from tenure.store import Store, make_store


@pytest.fixture
def probe(store: Store, store_url: str) -> RawDB:
    raw = raw_db(store_url)
    raw.create_probe_table()
    return raw


async def _context(store: Store, *, deadline: float | None = None) -> Context:
    await register(store, "w1")
    await add(store, "dispatch", "barcelona")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    return Context(
        store=store,
        worker_id="w1",
        kind="dispatch",
        key="barcelona",
        params={},
        token=claim.term,
        scheduled_at=1000.0,
        deadline=deadline,
    )


async def test_a_run_past_its_timeout_inside_the_block_does_not_commit(store: Store, probe: RawDB) -> None:
    deadline = time.monotonic() + 0.3
    ctx = await _context(store, deadline=deadline)

    async def slow_handler() -> None:
        async with ctx.fenced() as tx:
            await tx.execute(probe.insert_probe_sql, ("too late",))
            await asyncio.sleep(deadline - time.monotonic() + 0.01)  # slow; nothing cancels it

    with pytest.raises(LeaseLost, match="past its timeout"):
        await slow_handler()
    assert probe.probe_notes() == []
    assert (await store.get_task("dispatch", "barcelona")).last_slot is None  # type: ignore[union-attr]
    # And a new block is refused at once.
    with pytest.raises(LeaseLost, match="past its timeout"):
        async with ctx.fenced():
            pass


async def test_an_async_handler_that_swallows_its_cancellation_does_not_commit(store: Store, probe: RawDB) -> None:
    ctx = await _context(store)

    async def handler() -> None:
        async with ctx.fenced() as tx:
            await tx.execute(probe.insert_probe_sql, ("swallowed",))
            with contextlib.suppress(asyncio.CancelledError):  # the careless part: it carries on
                await asyncio.sleep(10)

    with pytest.raises(LeaseLost, match="cancelled"):
        async with asyncio.timeout(0.2):
            await handler()
    assert probe.probe_notes() == []


async def test_cancelling_a_run_ends_the_fenced_transaction_its_thread_holds(
    store: Store, store_url: str, probe: RawDB
) -> None:
    """A sync handler stuck inside fenced_sync past its timeout: its thread cannot be
    stopped, but its transaction is rolled back from the event loop at once, so its locks
    (on SQLite, the store's only write lock) are free; its next statement fails."""
    ctx = await _context(store)
    inside, release = threading.Event(), threading.Event()
    seen: list[BaseException] = []

    def stuck_handler() -> None:
        try:
            with ctx.fenced_sync() as tx:
                tx.execute(probe.insert_probe_sql, ("stuck",))
                inside.set()
                release.wait(30)
                tx.execute(probe.insert_probe_sql, ("after the timeout",))
        except BaseException as exc:
            seen.append(exc)
            raise

    thread = asyncio.create_task(asyncio.to_thread(stuck_handler))
    assert await asyncio.to_thread(inside.wait, 10)
    ctx.cancel()  # what the worker does once the run is past its timeout
    # A writer that waits at most a second for the locks the stuck transaction held.
    options = {"sqlite": "busy_timeout=1", "postgresql": "lock_timeout=1", "mysql": "lock_timeout=1"}
    rival = make_store(store_url + ("&" if "?" in store_url else "?") + options[probe.dialect])
    await rival.open(migrate=False)
    try:
        try:
            await rival.set_enabled("dispatch", "barcelona", False)
        except StoreUnavailable as exc:
            raise AssertionError(f"the cancelled run's transaction still holds its locks: {exc}") from exc
    finally:
        release.set()
        await rival.close()
    with pytest.raises(TransactionClosed):
        await thread
    assert [type(e) for e in seen] == [TransactionClosed]
    assert probe.probe_notes() == []


async def test_a_cancelled_run_cannot_open_a_fenced_block(store: Store, probe: RawDB) -> None:
    ctx = await _context(store)
    ctx.cancel()
    with pytest.raises(LeaseLost, match="cancelled"):
        async with ctx.fenced() as tx:
            await tx.execute(probe.insert_probe_sql, ("never",))
    assert probe.probe_notes() == []
