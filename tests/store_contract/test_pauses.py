"""Pauses: what the store keeps of them, and the change counter workers watch."""

from __future__ import annotations

from tenure.models import Pause
from tenure.store import Store

from .helpers import add, register


async def test_pause_is_stored_listed_and_lifted(store: Store) -> None:
    assert await store.list_pauses() == []
    before = (await store.cluster_view()).changes
    now = await store.now()
    kind = await store.set_pause("dispatch", by="alice@ops", cancel=False)
    assert (kind.kind, kind.by, kind.cancel) == ("dispatch", "alice@ops", False)
    assert now - 1 <= kind.since <= now + 5  # the database's clock
    every = await store.set_pause(None, by="bob", cancel=True)
    assert (every.kind, every.by, every.cancel) == (None, "bob", True)
    assert await store.list_pauses() == [every, kind]  # the whole store's first
    assert (await store.cluster_view()).changes > before  # workers notice at their next poll

    changes = (await store.cluster_view()).changes
    assert await store.clear_pause("dispatch") == kind
    assert (await store.cluster_view()).changes > changes
    assert await store.list_pauses() == [every]
    changes = (await store.cluster_view()).changes
    assert await store.clear_pause("dispatch") is None  # nothing to lift: nothing changes
    assert (await store.cluster_view()).changes == changes
    assert await store.clear_pause(None) == every
    assert await store.list_pauses() == []


async def test_pausing_again_keeps_the_first_pause_and_remembers_a_cancel(store: Store) -> None:
    first = await store.set_pause("dispatch", by="alice", cancel=False)
    again = await store.set_pause("dispatch", by="bob", cancel=True)
    assert again == Pause(kind="dispatch", since=first.since, by="alice", cancel=True)
    # A later pause without cancel does not take the cancel back.
    assert await store.set_pause("dispatch", by="carol", cancel=False) == again
    assert await store.list_pauses() == [again]


async def test_a_pause_leaves_tasks_owners_and_terms_alone(store: Store) -> None:
    await add(store, "dispatch", "lisbon")
    await register(store, "w1")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=5)
    before = await store.list_tasks()
    await store.set_pause("dispatch", by="alice", cancel=True)
    await store.set_pause(None, by="alice", cancel=True)
    assert await store.list_tasks() == before
    assert before[0].owner == "w1"
    assert before[0].term == claim.task.term
