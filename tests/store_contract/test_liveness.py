"""Session-bound liveness: a worker whose liveness lock is free is dead at the next claim.

A second store object on the same database stands for the other worker's process: its
connections (and, on SQLite, its lock file descriptors) are its own. Ending its hold on
the lock is what a crash does to the lock; the server ending its session is what a cut
liveness connection does (PostgreSQL and MySQL/MariaDB only: on SQLite only the process's
end lets a lock file go, which tests/faults covers with SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import psycopg
import pytest

from tenure.errors import LeaseLost, WorkerIdInUse
from tenure.models import Freed
from tenure.store import Store, make_store
from tenure.store.liveness import Liveness, mysql_name, postgresql_key
from tenure.store.postgresql import parse_postgresql_url

from .dialect import raw_db
from .helpers import LONG_TTL, add, opened, register, task_of, wait_past


def _with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


@pytest.fixture
async def other(store_url: str, store: Store) -> AsyncIterator[Store]:
    """A second store on the same database: another worker's process."""
    async with opened(store_url) as s:
        yield s


async def _join(stack: AsyncExitStack, store: Store, worker_id: str) -> Liveness:
    live = await stack.enter_async_context(store.hold_liveness(worker_id, check_every=0.2))
    await live.ensure()
    await register(store, worker_id, ttl=LONG_TTL)
    return live


async def test_a_worker_whose_lock_is_free_is_dead_at_once_and_its_tasks_move(store: Store, other: Store) -> None:
    await add(store, "dispatch", "barcelona")
    async with AsyncExitStack() as mine:
        live = await _join(mine, store, "w2")
        assert live.mode == "session"
        assert live.held
        async with AsyncExitStack() as theirs:
            await _join(theirs, other, "w1")
            (first,) = await other.claim_tasks("w1", kinds=["dispatch"], limit=1)
            assert (await store.cluster_view()).live_workers == ["w1", "w2"]
            # Nothing is free while w1's lock is held: its lease (a minute) stands.
            assert await store.claim_tasks("w2", kinds=["dispatch"], limit=1) == []
        # w1's lock is free now, its lease still a minute long.
        assert (await store.cluster_view()).live_workers == ["w2"]
        (moved,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
        assert moved.task.owner == "w2"
        assert moved.term > first.term
        assert moved.task.freed_how is Freed.EXPIRED
        info = {w.id: w for w in await store.list_workers()}
        assert info["w1"].expires_at <= await store.now()  # ended on the database, not waited out
        # The dead worker's term can commit nothing, and its lease cannot be renewed.
        with pytest.raises(LeaseLost):
            async with other.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=first.term):
                pass
        with pytest.raises(LeaseLost):
            await other.renew_lease("w1", LONG_TTL)
        assert (await task_of(store, "dispatch", "barcelona")).term == moved.term


async def test_a_dead_workers_row_held_elsewhere_is_passed_over_not_waited_for(store_url: str, store: Store) -> None:
    """A dead worker's row that another transaction holds (a concurrent claim ending the
    same lease, a registration taking the id over) does not stall a claim: it takes the
    dead worker's tasks all the same, with new terms, freed no later than the database's
    now; and the next claim after that transaction ends the lease."""
    holder = raw_db(store_url, keep=True)
    if holder.dialect == "sqlite":
        holder.close()
        pytest.skip("SQLite has one write lock: a claim waits for any other writer")
    for key in ("a", "b"):
        await add(store, "dispatch", key)
    async with opened(store_url) as dying, AsyncExitStack() as theirs:
        await _join(theirs, dying, "w1")
        first = {c.task.key: c.term for c in await dying.claim_tasks("w1", kinds=["dispatch"], limit=2)}
    # w1's lock is free now, its lease still a minute long. The rival waits at most a
    # second for a row lock: a wait fails its claim instead of slowing it.
    async with opened(_with_option(store_url, "lock_timeout=1")) as rival:
        await register(rival, "w2")
        try:
            holder.query("BEGIN")
            assert holder.query("SELECT id FROM tenure_workers WHERE id = %s FOR UPDATE", ("w1",)) == [("w1",)]
            moved = await rival.claim_tasks("w2", kinds=["dispatch"], limit=10)
            now = await rival.now()
            assert sorted(c.task.key for c in moved) == ["a", "b"]
            for c in moved:
                assert c.term > first[c.task.key]
                assert c.task.freed_how is Freed.EXPIRED
                assert c.task.freed_at is not None
                assert c.task.freed_at <= now
        finally:
            holder.query("ROLLBACK")
            holder.close()
        assert await rival.claim_tasks("w2", kinds=["dispatch"], limit=10) == []
        info = {w.id: w for w in await rival.list_workers()}
        assert info["w1"].expires_at <= await rival.now()


async def test_a_live_lock_keeps_the_lease_deciding(store: Store, other: Store) -> None:
    """Holding the lock is not a lease: a worker that stops renewing still expires."""
    await add(store, "dispatch", "a")
    async with AsyncExitStack() as theirs:
        live = await theirs.enter_async_context(other.hold_liveness("w1", check_every=0.2))
        await live.ensure()
        lease = await other.register_worker(worker_id="w1", host="h", pid=1, ttl=0.4)
        await other.claim_tasks("w1", kinds=["dispatch"], limit=1)
        await register(store, "w2")
        await wait_past(store, lease.expires_at)
        (moved,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
        assert moved.task.freed_how is Freed.EXPIRED
        assert live.held  # the lock is still held: only the lease ended


async def test_a_lock_held_elsewhere_refuses_the_id(store: Store, other: Store) -> None:
    async with AsyncExitStack() as stack:
        await _join(stack, other, "w1")
        twin = await stack.enter_async_context(store.hold_liveness("w1", check_every=0.2))
        with pytest.raises(WorkerIdInUse, match="w1"):
            await twin.ensure()
        assert not twin.held


async def test_the_same_id_back_with_its_lock_takes_its_row_over_at_once(store: Store, other: Store) -> None:
    """A worker restarted under the same id (or rejoining after its lock was lost) need
    not wait out its former lease: the lock was free, so that session is gone."""
    await add(store, "dispatch", "a")
    async with AsyncExitStack() as before:
        await _join(before, other, "w1")
        (old,) = await other.claim_tasks("w1", kinds=["dispatch"], limit=1)
    async with AsyncExitStack() as after:
        await _join(after, store, "w1")
        task = await task_of(store, "dispatch", "a")
        assert task.owner is None
        assert task.freed_how is Freed.EXPIRED
        (new,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
        assert new.term > old.term
    # Without its lock, a live row is still refused as before.
    await register(store, "w3")
    with pytest.raises(WorkerIdInUse):
        await register(store, "w3")


async def test_liveness_lease_option_holds_no_lock(store_url: str, store: Store) -> None:
    leased = make_store(_with_option(store_url, "liveness=lease"))
    await leased.open(migrate=False)
    try:
        await add(store, "dispatch", "a")
        async with leased.hold_liveness("w1", check_every=0.2) as live:
            await live.ensure()
            assert live.mode == "lease"
            assert live.token is None
            await register(leased, "w1")
            await leased.claim_tasks("w1", kinds=["dispatch"], limit=1)
            live.watch(["w0", "w1"], lambda: None)
            assert live.watching is None  # nothing to watch with: the lease alone decides
        # No lock was recorded, so none is found free: the lease alone decides.
        await register(store, "w2")
        assert (await store.cluster_view()).live_workers == ["w1", "w2"]
        assert await store.claim_tasks("w2", kinds=["dispatch"], limit=1) == []
    finally:
        await leased.close()


async def test_mysql_lease_statements_ride_on_the_lock_connection(store_url: str, store: Store) -> None:
    """On MySQL/MariaDB, as on PostgreSQL, a worker's lease statements (registering,
    renewing) go on its liveness lock's connection: at rest it holds its pool's
    connections, the lock's and the wait's, none of its own for the lease (four became
    three a worker, so 40 workers fit MariaDB's default ``max_connections`` of 151)."""
    if store.dialect != "mysql":
        pytest.skip("MySQL/MariaDB's connections")
    raw = raw_db(store_url)
    database = store_url.split("?")[0].rsplit("/", 1)[1]
    async with AsyncExitStack() as stack:
        await _join(stack, store, "w1")
        before = await store.renew_lease("w1", LONG_TTL)
        for _ in range(3):
            renewed = await store.renew_lease("w1", LONG_TTL)
        assert renewed.expires_at >= before.expires_at
        (count,) = raw.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()", (database,)
        )[0]
        pool = store._pool  # type: ignore[attr-defined]
        assert count == pool.size + 2, (count, pool.size)
        assert store._lease_pool is None  # type: ignore[attr-defined]


def _cut_session(store_url: str, dialect: str, worker_id: str) -> int:
    """End, from the server, the session holding ``worker_id``'s liveness lock; return how many ended."""
    raw = raw_db(store_url)
    if dialect == "postgresql":
        key = postgresql_key(worker_id)
        rows = raw.query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            # Advisory keys are per database: other tests' workers of the same name hold the same key.
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND objsubid = 1 AND classid = {key >> 32} AND objid = {key & 0xFFFFFFFF}"
        )
        return sum(1 for (ok,) in rows if ok)
    database = store_url.split("?")[0].rsplit("/", 1)[1]
    (holder,) = raw.query(f"SELECT IS_USED_LOCK('{mysql_name(database, worker_id)}')")[0]
    if holder is None:
        return 0
    raw.query(f"KILL CONNECTION {int(holder)}")
    return 1


async def test_a_cut_liveness_session_is_noticed_and_ends_the_lease(store_url: str, store: Store, other: Store) -> None:
    if store.dialect == "sqlite":
        pytest.skip("a lock file is let go only by its process's end (tests/faults kills one)")
    await add(store, "dispatch", "a")
    async with AsyncExitStack() as stack:
        await _join(stack, store, "w2")
        live = await _join(stack, other, "w1")
        (first,) = await other.claim_tasks("w1", kinds=["dispatch"], limit=1)
        assert await asyncio.to_thread(_cut_session, store_url, store.dialect, "w1") == 1
        deadline = time.monotonic() + 10
        while not live.lost.is_set():
            assert time.monotonic() < deadline, "the cut liveness session was not noticed"
            await asyncio.sleep(0.02)
        assert "liveness" in live.reason or "session" in live.reason
        (moved,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
        assert moved.term > first.term
        with pytest.raises(LeaseLost):
            async with other.fenced(worker_id="w1", kind="dispatch", key="a", term=first.term) as tx:
                await tx.fetchone("SELECT 1")
        # Rejoining: the lock again on a new session, and the row taken over.
        await live.ensure()
        assert live.held
        assert not live.lost.is_set()
        await register(other, "w1")
        assert "w1" in (await store.cluster_view()).live_workers


async def test_a_worker_hears_another_process_change_tasks_and_keeps_its_lock(store: Store, other: Store) -> None:
    """A worker's listen() (as a worker calls it: while it holds its liveness lock) is woken
    by changes another process commits, one after another for five probe intervals, and
    the lock stays held throughout. On MySQL/MariaDB each change interrupts the worker's
    wait (KILL QUERY), here faster than a wait's sleep: the probe must still run, and
    nothing may hit the lock's own session."""
    assert store.supports_listen
    await add(other, "dispatch", "a")
    woken = asyncio.Event()
    async with AsyncExitStack() as mine:
        live = await _join(mine, store, "w1")
        listener = asyncio.create_task(store.listen(woken.set))
        try:
            await asyncio.wait_for(woken.wait(), 10)  # once at the start
            rounds = 0
            until = time.monotonic() + 5 * 0.2
            while time.monotonic() < until:
                woken.clear()
                await other.trigger("dispatch", "a")
                try:
                    await asyncio.wait_for(woken.wait(), 5)
                except TimeoutError:
                    raise AssertionError(f"change {rounds + 1} did not wake the listener") from None
                rounds += 1
            assert live.held, f"the liveness lock was lost after {rounds} wake-ups: {live.reason}"
            # Another process still finds the lock held (a free one leaves w1 out).
            assert (await other.cluster_view()).live_workers == ["w1"]
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def test_an_event_loop_held_past_the_probe_does_not_cost_the_lock(store: Store) -> None:
    """A worker's event loop held for longer than its liveness probe's span (a handler
    blocking it, a long garbage collection) finds the probe's answer waiting when it runs
    again: the lock is not taken for lost (the lease alone judges such a hold)."""
    async with AsyncExitStack() as mine:
        live = await _join(mine, store, "w1")
        for _ in range(3):
            time.sleep(1.0)  # noqa: ASYNC251  # the hold under test: five probe intervals
            await asyncio.sleep(0.4)  # the loop runs again: answers due are read
            assert live.held, f"the liveness lock was taken for lost after the loop was held: {live.reason}"


async def test_a_watcher_is_woken_when_the_watched_lock_goes_and_its_claim_wakes_the_others(
    store_url: str, store: Store, other: Store
) -> None:
    """Issue 17: w2 watches w1's lock (the next live id after its own, round the ring) and
    is woken, with no poll, when w1's lock goes; the claim it then makes ends w1's lease and
    takes its task (a watcher's momentary hold never makes w1 live), and wakes every
    listener, as a release does, so that the other workers claim their shares too."""
    await add(store, "dispatch", "barcelona")
    woken = asyncio.Event()
    listened = asyncio.Event()
    async with AsyncExitStack() as mine:
        live = await _join(mine, store, "w2")
        async with AsyncExitStack() as theirs:
            await _join(theirs, other, "w1")
            (first,) = await other.claim_tasks("w1", kinds=["dispatch"], limit=1)
            live.watch(["w1", "w2"], woken.set)
            assert live.watching == "w1"
            # A wait for w1's lock holds nothing: w1 stays live.
            assert (await other.cluster_view()).live_workers == ["w1", "w2"]
            assert await store.claim_tasks("w2", kinds=["dispatch"], limit=1) == []
            assert not woken.is_set(), "woken while w1 held its lock"
        # w1's lock is let go (as its process's end would), its lease a minute long still.
        await asyncio.wait_for(woken.wait(), 10)
        if store.dialect == "postgresql":
            # A watcher granted the lock shared, at the moment w1 died, does not count as w1.
            async with await psycopg.AsyncConnection.connect(parse_postgresql_url(store_url)[0]) as raw:
                await raw.execute("SELECT pg_advisory_lock_shared(%s)", (postgresql_key("w1"),))
                assert (await store.cluster_view()).live_workers == ["w2"]
        listener = asyncio.create_task(other.listen(listened.set))
        try:
            await asyncio.wait_for(listened.wait(), 10)  # once at the start
            listened.clear()
            (moved,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
            assert moved.term > first.term
            assert moved.task.freed_how is Freed.EXPIRED
            try:
                await asyncio.wait_for(listened.wait(), 10)
            except TimeoutError:
                raise AssertionError("the claim that ended a dead worker's lease woke no listener") from None
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


async def test_a_watched_worker_that_holds_no_lock_wakes_its_watcher_once_per_membership(store: Store) -> None:
    """Watching a worker whose lock is free already (gone, or never held: a worker behind
    liveness=lease) wakes the watcher at once, and only again once the membership it is
    given has changed: a watcher is not woken in a loop by a worker its polls still list."""
    woken = asyncio.Event()
    async with AsyncExitStack() as mine:
        live = await _join(mine, store, "w2")
        live.watch(["w1", "w2"], woken.set)
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        live.watch(["w1", "w2"], woken.set)  # the same membership: nothing new to watch
        assert live.watching == "w1"
        live.watch(["w0", "w2"], woken.set)
        assert live.watching == "w0"
        await asyncio.wait_for(woken.wait(), 10)
