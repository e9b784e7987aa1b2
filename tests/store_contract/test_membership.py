"""Workers: registering, keeping and losing leases, draining, leaving, reaping."""

from __future__ import annotations

import pytest

from tenure.errors import LeaseLost, WorkerIdInUse
from tenure.models import Freed, SlotDone, WorkerLoad
from tenure.store import Store

from .helpers import LONG_TTL, SHORT_TTL, add, register, task_of, wait_past


async def test_register_worker_gives_a_lease_on_the_database_clock(store: Store) -> None:
    before = await store.now()
    lease = await store.register_worker(worker_id="w1", host="box-1", pid=123, ttl=30.0)
    after = await store.now()
    assert lease.worker_id == "w1"
    assert before - 0.01 <= lease.db_now <= after + 0.01
    assert lease.expires_at == pytest.approx(lease.db_now + 30.0, abs=0.01)
    (info,) = await store.list_workers()
    assert (info.id, info.host, info.pid, info.draining, info.tasks_held) == ("w1", "box-1", 123, False, 0)
    assert info.expires_at == pytest.approx(lease.expires_at, abs=1e-6)
    assert info.heartbeat_at == pytest.approx(lease.db_now, abs=1e-6)
    assert info.started_at == pytest.approx(lease.db_now, abs=0.05)


async def test_list_workers_by_id_with_tasks_held(store: Store) -> None:
    for wid in ("w2", "w3", "w1"):
        await register(store, wid)
    await add(store, "dispatch", "a")
    await add(store, "dispatch", "b")
    await store.claim_tasks("w2", kinds=["dispatch"], limit=10)
    workers = await store.list_workers()
    assert [(w.id, w.tasks_held) for w in workers] == [("w1", 0), ("w2", 2), ("w3", 0)]


async def test_renew_lease_extends_it(store: Store) -> None:
    first = await register(store, "w1", ttl=5.0)
    await wait_past(store, first.db_now)  # let the database clock tick
    renewed = await store.renew_lease("w1", 5.0)
    assert renewed.db_now > first.db_now
    assert renewed.expires_at > first.expires_at
    assert renewed.expires_at == pytest.approx(renewed.db_now + 5.0, abs=0.01)
    # The ttl is the caller's: a longer one goes further.
    longer = await store.renew_lease("w1", 50.0)
    assert longer.expires_at == pytest.approx(longer.db_now + 50.0, abs=0.01)
    (info,) = await store.list_workers()
    assert info.expires_at == pytest.approx(longer.expires_at, abs=1e-6)
    assert info.heartbeat_at == pytest.approx(longer.db_now, abs=1e-6)


async def test_a_renewal_publishes_the_workers_load(store: Store) -> None:
    """The load travels in the renewal's own statement and reads back as written; a
    renewal without one, or a join, leaves none (schema version 6)."""
    await register(store, "w1")
    await register(store, "w2")
    assert [w.load for w in await store.list_workers()] == [None, None], "nothing published at the join"
    busy = WorkerLoad(waiting=340, oldest_waiting=2.125, concurrency=100)
    calm = WorkerLoad(waiting=0, oldest_waiting=0.0, concurrency=7)
    assert (busy.over_capacity, calm.over_capacity) == (True, False)
    await store.renew_lease("w1", LONG_TTL, busy)
    await store.renew_lease("w2", LONG_TTL, calm)
    assert {w.id: w.load for w in await store.list_workers()} == {"w1": busy, "w2": calm}
    # Each renewal replaces the last load; one without a load clears it.
    await store.renew_lease("w1", LONG_TTL, WorkerLoad(waiting=3, oldest_waiting=0.5, concurrency=100))
    await store.renew_lease("w2", LONG_TTL)
    loads = {w.id: w.load for w in await store.list_workers()}
    assert loads == {"w1": WorkerLoad(waiting=3, oldest_waiting=0.5, concurrency=100), "w2": None}
    # A worker joining again under the same id (its old lease expired) starts with none.
    lease = await store.renew_lease("w1", SHORT_TTL, busy)
    await wait_past(store, lease.expires_at)
    await register(store, "w1")
    assert {w.id: w.load for w in await store.list_workers()}["w1"] is None


async def test_expired_lease_is_never_revived(store: Store) -> None:
    lease = await register(store, "w1", ttl=SHORT_TTL)
    await add(store, "dispatch", "barcelona")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    await wait_past(store, lease.expires_at)

    with pytest.raises(LeaseLost, match="w1"):
        await store.renew_lease("w1", LONG_TTL)
    with pytest.raises(LeaseLost):
        await store.renew_lease("w1", LONG_TTL)
    (info,) = await store.list_workers()
    assert info.expires_at == pytest.approx(lease.expires_at, abs=1e-6)
    assert info.expires_at < await store.now()
    # Not revived: it can claim nothing, commit nothing, and another worker takes its task.
    with pytest.raises(LeaseLost):
        await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    with pytest.raises(LeaseLost):
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term):
            pass
    await register(store, "w2")
    (taken,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
    assert taken.term > claim.term


async def test_renew_unknown_worker_is_lease_lost(store: Store) -> None:
    with pytest.raises(LeaseLost):
        await store.renew_lease("ghost", 10.0)
    assert await store.list_workers() == []


async def test_live_worker_id_cannot_be_registered_twice(store: Store) -> None:
    lease = await store.register_worker(worker_id="w1", host="box-1", pid=1, ttl=LONG_TTL)
    await add(store, "dispatch", "barcelona")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    with pytest.raises(WorkerIdInUse, match="w1"):
        await store.register_worker(worker_id="w1", host="box-2", pid=2, ttl=LONG_TTL)
    (info,) = await store.list_workers()
    assert (info.host, info.pid) == ("box-1", 1)
    assert info.expires_at == pytest.approx(lease.expires_at, abs=1e-6)
    task = await task_of(store, "dispatch", "barcelona")
    assert (task.owner, task.term) == ("w1", claim.term)


async def test_reregistering_an_expired_id_frees_its_tasks_as_expired(store: Store) -> None:
    old = await register(store, "w1", ttl=SHORT_TTL)
    await add(store, "dispatch", "a")
    await add(store, "dispatch", "b")
    claims = await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    assert len(claims) == 2
    await store.set_draining("w1", True)
    await wait_past(store, old.expires_at)

    new = await store.register_worker(worker_id="w1", host="box-9", pid=9, ttl=LONG_TTL)
    assert new.expires_at > old.expires_at
    assert new.draining is False
    (info,) = await store.list_workers()
    assert (info.host, info.pid, info.draining, info.tasks_held) == ("box-9", 9, False, 0)
    assert await store.owned_tasks("w1") == []
    for c in claims:
        task = await task_of(store, c.task.kind, c.task.key)
        assert task.owner is None
        assert task.freed_how is Freed.EXPIRED
        assert task.freed_at is not None
        assert task.freed_at >= old.expires_at - 1e-6
        # The old term cannot commit, although the worker id is live again.
        with pytest.raises(LeaseLost):
            async with store.fenced(worker_id="w1", kind=c.task.kind, key=c.task.key, term=c.term):
                pass
        assert await store.release_tasks("w1", [SlotDone(kind="dispatch", key=c.task.key, term=c.term, slot=1.0)]) == 0
    # Claiming again hands out new terms, with the expiry as done_before.
    again = await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    assert len(again) == 2
    assert min(c.term for c in again) > max(c.term for c in claims)
    for c in again:
        assert c.done_before is not None
        assert c.done_before >= old.expires_at - 1e-6


async def test_set_draining(store: Store) -> None:
    await register(store, "w1")
    await register(store, "w2")
    assert await store.set_draining("w1", True) is True
    workers = {w.id: w for w in await store.list_workers()}
    assert workers["w1"].draining is True
    assert workers["w2"].draining is False
    assert (await store.renew_lease("w1", LONG_TTL)).draining is True
    assert (await store.renew_lease("w2", LONG_TTL)).draining is False
    assert (await store.cluster_view()).live_workers == ["w2"]

    assert await store.set_draining("w1", False) is True
    assert not any(w.draining for w in await store.list_workers())
    assert (await store.cluster_view()).live_workers == ["w1", "w2"]

    assert await store.set_draining("ghost", True) is False
    assert [w.id for w in await store.list_workers()] == ["w1", "w2"]


async def test_leave_releases_tasks_and_deletes_the_worker(store: Store) -> None:
    await register(store, "w1")
    await register(store, "w2")
    for key in ("a", "b", "c"):
        await add(store, "dispatch", key)
    claims = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=2)}
    assert sorted(claims) == ["a", "b"]
    (other,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=5)

    before = await store.now()
    freed = await store.leave("w1", [SlotDone(kind="dispatch", key="a", term=claims["a"].term, slot=1234.5)])
    after = await store.now()
    assert freed == 2
    assert [w.id for w in await store.list_workers()] == ["w2"]
    assert await store.owned_tasks("w1") == []
    for key in ("a", "b"):
        task = await task_of(store, "dispatch", key)
        assert task.owner is None
        assert task.freed_how is Freed.RELEASED
        assert task.freed_at is not None
        assert before - 0.01 <= task.freed_at <= after + 0.01
    assert (await task_of(store, "dispatch", "a")).last_slot == 1234.5
    assert (await task_of(store, "dispatch", "b")).last_slot is None
    # The other worker's task is untouched.
    c = await task_of(store, "dispatch", "c")
    assert (c.owner, c.term) == ("w2", other.term)
    # Gone means gone: no renewal, and the id is free to register again.
    with pytest.raises(LeaseLost):
        await store.renew_lease("w1", LONG_TTL)
    await register(store, "w1")
    # Released tasks are claimable at once, with the recorded slot as done_before.
    got = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=5)}
    assert sorted(got) == ["a", "b"]
    assert got["a"].done_before == 1234.5
    assert got["b"].done_before is None


async def test_leave_unknown_worker_frees_nothing(store: Store) -> None:
    await register(store, "w1")
    await add(store, "dispatch", "a")
    await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    assert await store.leave("ghost", []) == 0
    assert (await task_of(store, "dispatch", "a")).owner == "w1"
    assert [w.id for w in await store.list_workers()] == ["w1"]


async def test_reap_workers(store: Store) -> None:
    idle = await register(store, "idle", ttl=SHORT_TTL)
    holder = await register(store, "holder", ttl=SHORT_TTL)
    await register(store, "live")
    await add(store, "dispatch", "a")
    await store.claim_tasks("holder", kinds=["dispatch"], limit=1)
    await wait_past(store, max(idle.expires_at, holder.expires_at))

    # Not expired long enough yet.
    assert await store.reap_workers(older_than=3600.0) == 0
    assert len(await store.list_workers()) == 3
    # The idle expired worker goes; the one still owning a task and the live one stay.
    assert await store.reap_workers(older_than=0.0) == 1
    assert [w.id for w in await store.list_workers()] == ["holder", "live"]
    assert await store.reap_workers(older_than=0.0) == 0
    # Once its task is taken over, the holder goes too.
    (claim,) = await store.claim_tasks("live", kinds=["dispatch"], limit=1)
    assert claim.task.freed_how is Freed.EXPIRED
    assert await store.reap_workers(older_than=0.0) == 1
    assert [w.id for w in await store.list_workers()] == ["live"]
