"""Fenced transactions: commit only while the owner at this term holds a live lease."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import pytest

from tenure.errors import LeaseLost
from tenure.models import Claim, Freed
from tenure.store import FencedTransaction, Store, make_store

from .dialect import RawDB
from .helpers import (
    SHORT_TTL,
    assert_cancelled_block_keeps_nothing,
    assert_commit_refused,
    owned,
    register,
    task_of,
    wait_past,
)


async def test_fenced_commit_is_kept(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        assert await tx.execute(probe.insert_probe_sql, ("order-1",)) == 1
        await tx.executemany(probe.insert_probe_sql, [("order-2",), ("order-3",)])
        assert await tx.fetchall(probe.select_probe_sql) == [("order-1",), ("order-2",), ("order-3",)]
        assert await tx.fetchone(probe.select_probe_sql) == ("order-1",)
        assert await tx.fetchone(probe.select_probe_sql.replace("ORDER BY", "WHERE 1 = 0 ORDER BY")) is None
    assert probe.probe_notes() == ["order-1", "order-2", "order-3"]
    # Ownership is untouched by a commit; no slot was given, so none was recorded.
    task = await task_of(store, "dispatch", "barcelona")
    assert (task.owner, task.term, task.last_slot) == ("w1", claim.term, None)


async def test_fenced_not_owner_is_lease_lost(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    await register(store, "w2")
    ran = False

    async def commit() -> None:
        nonlocal ran
        # Entering sends nothing: the fence is checked with the first statement, which
        # runs only if it holds.
        async with store.fenced(worker_id="w2", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(probe.insert_probe_sql, ("stale",))
            ran = True

    with pytest.raises(LeaseLost, match="w2"):
        await commit()
    assert not ran
    assert probe.probe_notes() == []
    # A block with no statement is checked at its end all the same.
    with pytest.raises(LeaseLost, match="w2"):
        async with store.fenced(worker_id="w2", kind="dispatch", key="barcelona", term=claim.term, slot=9.0):
            pass
    assert (await task_of(store, "dispatch", "barcelona")).last_slot is None


@pytest.mark.parametrize("delta", [-1, 1])
async def test_fenced_wrong_term_is_lease_lost(store: Store, probe: RawDB, delta: int) -> None:
    claim = await owned(store)
    await assert_commit_refused(store, probe, claim.term + delta, slot=99.0)
    assert (await task_of(store, "dispatch", "barcelona")).last_slot is None


async def test_fenced_unknown_task_is_lease_lost(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    await assert_commit_refused(store, probe, claim.term, key="madrid")


async def test_fenced_after_lease_expired_is_lease_lost(store: Store, probe: RawDB) -> None:
    claim = await owned(store, ttl=SHORT_TTL)
    lease_end = (await store.list_workers())[0].expires_at
    await wait_past(store, lease_end)
    # Nobody took the task over: the lease's expiry alone refuses the commit.
    assert (await task_of(store, "dispatch", "barcelona")).owner == "w1"
    await assert_commit_refused(store, probe, claim.term)


async def test_lease_expiring_inside_the_transaction_refuses_the_commit(store: Store, probe: RawDB) -> None:
    claim = await owned(store, ttl=SHORT_TTL)
    lease_end = (await store.list_workers())[0].expires_at

    async def slow_commit() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=123.0) as tx:
            await tx.execute(probe.insert_probe_sql, ("too-late",))
            await wait_past(store, lease_end)  # a slow handler outlives its lease

    with pytest.raises(LeaseLost, match="expired"):
        await slow_commit()
    assert probe.probe_notes() == []
    assert (await task_of(store, "dispatch", "barcelona")).last_slot is None


async def test_body_exception_rolls_back_and_is_reraised(store: Store, probe: RawDB) -> None:
    claim = await owned(store)

    class Boom(Exception):
        pass

    async def failing() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=55.0) as tx:
            await tx.execute(probe.insert_probe_sql, ("half-done",))
            raise Boom

    with pytest.raises(Boom):
        await failing()
    assert probe.probe_notes() == []
    assert (await task_of(store, "dispatch", "barcelona")).last_slot is None
    # The store is still usable: the next fenced transaction commits.
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        await tx.execute(probe.insert_probe_sql, ("done",))
    assert probe.probe_notes() == ["done"]


async def test_body_cancelled_rolls_back(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    await assert_cancelled_block_keeps_nothing(store, probe, claim.term, lambda tx: asyncio.Event().wait())


async def test_slot_advances_last_slot_with_the_commit(store: Store, probe: RawDB) -> None:
    claim = await owned(store)

    def fence(slot: float) -> AbstractAsyncContextManager[FencedTransaction]:
        return store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=slot)

    async with fence(1000.0) as tx:
        await tx.execute(probe.insert_probe_sql, ("slot-1000",))
    assert probe.probe_notes() == ["slot-1000"]
    assert (await task_of(store, "dispatch", "barcelona")).last_slot == 1000.0
    async with fence(1005.0):
        pass
    assert (await task_of(store, "dispatch", "barcelona")).last_slot == 1005.0
    # Never backwards.
    async with fence(10.0):
        pass
    assert (await task_of(store, "dispatch", "barcelona")).last_slot == 1005.0
    # The next owner continues after it.
    await store.leave("w1", [])
    await register(store, "w2")
    (claim2,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
    assert claim2.done_before == 1005.0


async def test_open_fenced_transaction_blocks_takeover(store: Store, store_url: str, probe: RawDB) -> None:
    claim = await owned(store, ttl=SHORT_TTL)
    lease_end = (await store.list_workers())[0].expires_at
    rival = make_store(store_url)
    await rival.open(migrate=False)
    try:
        await register(rival, "w2")
        claiming: asyncio.Task[list[Claim]] | None = None

        async def slow_commit() -> None:
            nonlocal claiming
            async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute(probe.insert_probe_sql, ("w1",))
                await wait_past(store, lease_end)
                # w1's lease is over, but its transaction still holds the task: a takeover
                # must wait for it to end instead of slipping in between check and commit.
                claiming = asyncio.create_task(rival.claim_tasks("w2", kinds=["dispatch"], limit=1))
                await asyncio.sleep(0.3)  # give a wrong takeover the chance to happen
                if claiming.done():  # a store may skip a locked task rather than wait for it
                    assert claiming.result() == []

        with pytest.raises(LeaseLost):
            await slow_commit()
        assert claiming is not None
        got = await asyncio.wait_for(claiming, 10)
        (taken,) = got or await rival.claim_tasks("w2", kinds=["dispatch"], limit=1)
        assert taken.term > claim.term
        assert taken.task.freed_how is Freed.EXPIRED
        assert taken.done_before is not None
        assert taken.done_before >= lease_end - 1e-6
        assert probe.probe_notes() == []
    finally:
        await rival.close()
