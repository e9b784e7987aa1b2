"""The store contract tests' shortcuts over the store API: :mod:`support.storeapi`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from support.storeapi import LONG_TTL, SHORT_TTL, add, opened, register, task_of, wait_past
from tenure.errors import LeaseLost
from tenure.models import Claim
from tenure.store import FencedTransaction, Store

from .dialect import RawDB

__all__ = [
    "LONG_TTL",
    "SHORT_TTL",
    "add",
    "assert_cancelled_block_keeps_nothing",
    "assert_commit_refused",
    "opened",
    "owned",
    "register",
    "task_of",
    "wait_past",
]


async def owned(store: Store, worker: str = "w1", key: str = "barcelona", ttl: float = LONG_TTL) -> Claim:
    """``worker``, registered with a lease of ``ttl`` seconds, owning the new task dispatch/``key``."""
    await register(store, worker, ttl=ttl)
    await add(store, "dispatch", key)
    (claim,) = await store.claim_tasks(worker, kinds=["dispatch"], limit=1)
    return claim


async def assert_commit_refused(
    store: Store, probe: RawDB, term: int, *, key: str = "barcelona", slot: float | None = None
) -> None:
    """w1's fenced transaction on dispatch/``key`` at ``term`` (with ``slot``) raises
    :class:`LeaseLost`, and the row it inserted is not kept."""
    with pytest.raises(LeaseLost):
        async with store.fenced(worker_id="w1", kind="dispatch", key=key, term=term, slot=slot) as tx:
            await tx.execute(probe.insert_probe_sql, ("stale",))
    assert probe.probe_notes() == []


async def assert_cancelled_block_keeps_nothing(
    store: Store, probe: RawDB, term: int, then: Callable[[FencedTransaction], Awaitable[object]], *, wait: float = 0.0
) -> None:
    """w1's fenced block on dispatch/barcelona at ``term`` inserts a row and goes on to
    ``then``, and is cancelled ``wait`` seconds later: the cancellation reaches its caller,
    nothing of the block is kept, and the next block commits."""
    started = asyncio.Event()

    async def handler() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=term) as tx:
            await tx.execute(probe.insert_probe_sql, ("cancelled",))
            started.set()
            await then(tx)

    task = asyncio.create_task(handler())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.probe_notes() == []
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=term) as tx:
        await tx.execute(probe.insert_probe_sql, ("after",))
    assert probe.probe_notes() == ["after"]
