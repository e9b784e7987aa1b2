"""Ownership: claiming, terms, releasing, and what a worker owns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncmy
import psycopg
import pytest

from tenure.desired import DesiredTask
from tenure.errors import LeaseLost
from tenure.models import Freed, SlotDone
from tenure.schedule import Every
from tenure.store import Store, dialect_of, make_store
from tenure.store.mysql import connect_args, parse_mysql_url

from .dialect import RawDB
from .helpers import LONG_TTL, SHORT_TTL, add, register, task_of, wait_past


async def test_claim_takes_only_enabled_tasks_of_the_listed_kinds(store: Store) -> None:
    await add(store, "dispatch", "on")
    await add(store, "dispatch", "off", enabled=False)
    await add(store, "billing", "on")
    await add(store, "report", "on")
    await register(store, "w1")
    claims = await store.claim_tasks("w1", kinds=["dispatch", "billing"], limit=10)
    assert sorted((c.task.kind, c.task.key) for c in claims) == [("billing", "on"), ("dispatch", "on")]
    for c in claims:
        assert c.task.owner == "w1"
        assert c.term == c.task.term > 0
        assert c.task.freed_how is Freed.NEW
        assert c.done_before is None
        assert await store.get_task(c.task.kind, c.task.key) == c.task
    assert (await task_of(store, "dispatch", "off")).owner is None
    assert (await task_of(store, "report", "on")).owner is None
    # Nothing else is free for these kinds; disabling does not free, enabling makes claimable.
    assert await store.claim_tasks("w1", kinds=["dispatch", "billing"], limit=10) == []
    await store.set_enabled("dispatch", "off", True)
    (late,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    assert late.task.key == "off"


async def test_claim_with_no_kinds_or_no_room_takes_nothing(store: Store) -> None:
    await add(store, "dispatch", "a")
    await register(store, "w1")
    assert await store.claim_tasks("w1", kinds=[], limit=10) == []
    assert await store.claim_tasks("w1", kinds=["dispatch"], limit=0) == []
    assert await store.claim_tasks("w1", kinds=["unknown"], limit=10) == []
    assert (await task_of(store, "dispatch", "a")).owner is None


async def test_claim_respects_limit(store: Store) -> None:
    for i in range(5):
        await add(store, "dispatch", f"city-{i}")
    await register(store, "w1")
    first = await store.claim_tasks("w1", kinds=["dispatch"], limit=2)
    assert len(first) == 2
    second = await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    assert len(second) == 3
    assert await store.claim_tasks("w1", kinds=["dispatch"], limit=10) == []
    keys = [c.task.key for c in first + second]
    assert sorted(keys) == [f"city-{i}" for i in range(5)]
    assert len(await store.owned_tasks("w1")) == 5


async def test_each_claim_gets_a_new_term_from_one_counter(store: Store) -> None:
    for kind in ("dispatch", "billing"):
        for i in range(3):
            await add(store, kind, f"k{i}")
    await register(store, "w1")
    await register(store, "w2")
    a = await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    b = await store.claim_tasks("w2", kinds=["billing"], limit=10)
    c = await store.claim_tasks("w1", kinds=["billing", "dispatch"], limit=10)
    assert c == []
    terms_a = [x.term for x in a]
    terms_b = [x.term for x in b]
    assert len(set(terms_a + terms_b)) == 6  # never handed out twice, across kinds and workers
    assert min(terms_b) > max(terms_a)  # a later claim gets later terms


async def test_a_live_owners_tasks_are_not_claimable(store: Store) -> None:
    await add(store, "dispatch", "a")
    await register(store, "w1")
    await register(store, "w2")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    assert await store.claim_tasks("w2", kinds=["dispatch"], limit=10) == []
    task = await task_of(store, "dispatch", "a")
    assert (task.owner, task.term) == ("w1", claim.term)


async def test_terms_only_grow_across_owners(store: Store) -> None:
    await add(store, "dispatch", "barcelona")
    await add(store, "dispatch", "other")
    terms: list[int] = []

    await register(store, "w1")
    (c1,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    terms.append(c1.term)
    assert c1.task.key == "barcelona"
    assert await store.release_tasks("w1", [SlotDone(kind="dispatch", key="barcelona", term=c1.term, slot=10.0)]) == 1

    lease2 = await register(store, "w2", ttl=SHORT_TTL)
    (c2,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
    assert c2.task.key == "barcelona"
    assert c2.task.freed_how is Freed.RELEASED
    assert c2.done_before == 10.0
    terms.append(c2.term)
    await wait_past(store, lease2.expires_at)

    await register(store, "w3")
    (c3,) = await store.claim_tasks("w3", kinds=["dispatch"], limit=1)
    assert c3.task.key == "barcelona"
    terms.append(c3.term)
    assert terms == sorted(terms)
    assert len(set(terms)) == 3
    assert (await task_of(store, "dispatch", "barcelona")).term == c3.term


async def test_terms_are_not_reused_after_remove_and_add(store: Store) -> None:
    await add(store, "dispatch", "barcelona")
    await register(store, "w1")
    (old,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    await store.remove_task("dispatch", "barcelona")
    again = await add(store, "dispatch", "barcelona")
    assert again.owner is None
    assert again.freed_how is Freed.NEW
    (new,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    assert new.term > old.term
    # The old term of the removed task cannot commit on the new task, though w1 owns it.
    with pytest.raises(LeaseLost):
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=old.term):
            pass
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=new.term):
        pass


async def test_terms_survive_reopening_the_store(store: Store, store_url: str) -> None:
    await add(store, "dispatch", "a")
    await register(store, "w1")
    (first,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    await store.remove_task("dispatch", "a")
    await store.close()
    reopened = make_store(store_url)
    await reopened.open(migrate=True)
    try:
        await add(reopened, "dispatch", "a")
        (second,) = await reopened.claim_tasks("w1", kinds=["dispatch"], limit=1)
        assert second.term > first.term
    finally:
        await reopened.close()


async def test_claim_refused_without_a_live_lease(store: Store) -> None:
    await add(store, "dispatch", "a")
    with pytest.raises(LeaseLost):
        await store.claim_tasks("ghost", kinds=["dispatch"], limit=1)
    lease = await register(store, "w1", ttl=SHORT_TTL)
    await wait_past(store, lease.expires_at)
    with pytest.raises(LeaseLost, match="w1"):
        await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    task = await task_of(store, "dispatch", "a")
    assert (task.owner, task.term) == (None, 0)


async def test_tasks_of_an_expired_owner_are_claimable_as_expired(store: Store) -> None:
    await add(store, "dispatch", "a")
    await add(store, "dispatch", "b")
    old = await register(store, "w1", ttl=SHORT_TTL)
    claims = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10)}
    # w1 remembers a slot for "a" (as a run record would), none for "b".
    await store.record_runs([], [SlotDone(kind="dispatch", key="a", term=claims["a"].term, slot=old.db_now)])
    await register(store, "w2")
    assert await store.claim_tasks("w2", kinds=["dispatch"], limit=10) == []
    await wait_past(store, old.expires_at)

    taken = {c.task.key: c for c in await store.claim_tasks("w2", kinds=["dispatch"], limit=10)}
    assert sorted(taken) == ["a", "b"]
    for key, c in taken.items():
        assert c.task.owner == "w2"
        assert c.term > claims[key].term
        assert c.task.freed_how is Freed.EXPIRED
        assert c.task.freed_at is not None
        assert c.task.freed_at >= old.expires_at - 1e-6
        # The previous owner may have run a slot up to its lease expiry.
        assert c.done_before is not None
        assert c.done_before >= old.expires_at - 1e-6
    assert taken["a"].task.last_slot == pytest.approx(old.db_now)
    assert await store.owned_tasks("w1") == []
    # The old owner can no longer commit nor release.
    with pytest.raises(LeaseLost):
        async with store.fenced(worker_id="w1", kind="dispatch", key="a", term=claims["a"].term):
            pass
    slot = SlotDone(kind="dispatch", key="b", term=claims["b"].term, slot=1.0)
    assert await store.release_tasks("w1", [slot]) == 0
    assert (await task_of(store, "dispatch", "b")).owner == "w2"


async def test_concurrent_claims_never_take_the_same_task(store: Store, store_url: str) -> None:
    for i in range(12):
        await add(store, "dispatch", f"city-{i:02d}")
    others = [make_store(store_url) for _ in range(3)]
    try:
        for i, s in enumerate(others):
            await s.open(migrate=False)
            await register(s, f"w{i}")
        results = await asyncio.gather(
            *(s.claim_tasks(f"w{i}", kinds=["dispatch"], limit=12) for i, s in enumerate(others)),
            *(s.claim_tasks(f"w{i}", kinds=["dispatch"], limit=12) for i, s in enumerate(others)),
        )
    finally:
        for s in others:
            await s.close()
    keys = [c.task.key for claims in results for c in claims]
    assert sorted(keys) == [f"city-{i:02d}" for i in range(12)]  # each exactly once
    terms = [c.term for claims in results for c in claims]
    assert len(set(terms)) == len(terms)
    owners = {t.key: t.owner for t in await store.list_tasks()}
    for i, claims in enumerate(results):
        for c in claims:
            assert owners[c.task.key] == f"w{i % 3}"


async def test_release_tasks_is_guarded_by_owner_and_term(store: Store) -> None:
    await add(store, "dispatch", "a")
    await add(store, "dispatch", "b")
    await register(store, "w1")
    await register(store, "w2")
    claims = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10)}
    ta, tb = claims["a"].term, claims["b"].term

    # Wrong term: nothing released, nothing remembered.
    assert await store.release_tasks("w1", [SlotDone(kind="dispatch", key="a", term=ta + 1000, slot=50.0)]) == 0
    a = await task_of(store, "dispatch", "a")
    assert (a.owner, a.term, a.last_slot) == ("w1", ta, None)
    # Wrong worker: nothing released. (Slots are guarded by the term alone, so that a
    # former owner's slots still land until the task gets a new term.)
    assert await store.release_tasks("w2", [SlotDone(kind="dispatch", key="a", term=ta, slot=50.0)]) == 0
    a = await task_of(store, "dispatch", "a")
    assert (a.owner, a.term) == ("w1", ta)

    before = await store.now()
    released = await store.release_tasks(
        "w1",
        [
            SlotDone(kind="dispatch", key="a", term=ta, slot=60.0),
            SlotDone(kind="dispatch", key="b", term=tb, slot=70.0),
        ],
    )
    assert released == 2
    for key, slot in (("a", 60.0), ("b", 70.0)):
        task = await task_of(store, "dispatch", key)
        assert task.owner is None
        assert task.term == claims[key].term  # a release does not hand out a term
        assert task.freed_how is Freed.RELEASED
        assert task.freed_at is not None
        assert task.freed_at >= before - 0.01
        assert task.last_slot == slot
    assert await store.owned_tasks("w1") == []
    assert await store.release_tasks("w1", [SlotDone(kind="dispatch", key="a", term=ta, slot=80.0)]) == 0
    assert await store.release_tasks("w1", []) == 0


async def test_one_release_of_many_frees_exactly_the_tasks_still_ours_at_their_terms(store: Store) -> None:
    """A batch is judged task by task, as single releases would be: named twice, at a
    wrong term, owned by another worker or unknown, a task is counted and freed at most
    once, and only where this worker owns it at that term."""
    keys = [f"k{i:02d}" for i in range(30)]
    for key in keys:
        await add(store, "dispatch", key)
    await register(store, "w1")
    await register(store, "w2")
    mine = {c.task.key: c.term for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=24)}
    theirs = {c.task.key: c.term for c in await store.claim_tasks("w2", kinds=["dispatch"], limit=6)}
    assert (len(mine), len(theirs)) == (24, 6)
    ours = sorted(mine)
    freed, stale = ours[:18], ours[18:21]  # the last three are not named at all
    slots = [SlotDone(kind="dispatch", key=k, term=mine[k], slot=40.0) for k in reversed(freed)]
    slots += [SlotDone(kind="dispatch", key=k, term=mine[k], slot=41.0) for k in freed[:4]]  # named twice
    slots += [SlotDone(kind="dispatch", key=k, term=mine[k] + 1000, slot=40.0) for k in stale]
    slots += [SlotDone(kind="dispatch", key=k, term=t, slot=40.0) for k, t in theirs.items()]
    slots += [SlotDone(kind="dispatch", key="nowhere", term=1, slot=40.0)]
    slots += [SlotDone(kind="other", key="k00", term=1, slot=40.0)]

    assert await store.release_tasks("w1", slots) == len(freed)
    for key in keys:
        task = await task_of(store, "dispatch", key)
        if key in freed:
            assert (task.owner, task.term, task.freed_how) == (None, mine[key], Freed.RELEASED)
            assert task.last_slot == (41.0 if key in freed[:4] else 40.0)
        elif key in mine:
            assert (task.owner, task.term) == ("w1", mine[key])
        else:
            assert (task.owner, task.term) == ("w2", theirs[key])
    assert sorted(t.key for t in await store.owned_tasks("w1")) == ours[18:]
    assert await store.release_tasks("w1", slots) == 0  # nothing left to free


async def test_owned_tasks_live_lease_or_not(store: Store) -> None:
    for key in ("c", "a", "b"):
        await add(store, "dispatch", key)
    await add(store, "billing", "x")
    lease = await register(store, "w1", ttl=SHORT_TTL)
    await register(store, "w2")
    await store.claim_tasks("w1", kinds=["dispatch", "billing"], limit=3)
    await store.claim_tasks("w2", kinds=["dispatch", "billing"], limit=3)
    mine = await store.owned_tasks("w1")
    assert len(mine) == 3
    assert all(t.owner == "w1" for t in mine)
    assert [(t.kind, t.key) for t in mine] == sorted((t.kind, t.key) for t in mine)
    assert len(await store.owned_tasks("w2")) == 1
    await wait_past(store, lease.expires_at)
    assert await store.owned_tasks("w1") == mine  # still recorded as its own until taken
    assert await store.owned_tasks("ghost") == []


async def test_cluster_view(store: Store) -> None:
    view = await store.cluster_view()
    assert (view.live_workers, view.enabled_tasks) == ([], 0)

    changes = [view.changes]

    async def changed() -> None:
        now = (await store.cluster_view()).changes
        assert now > changes[-1]
        changes.append(now)

    await add(store, "dispatch", "a")
    await changed()
    await add(store, "dispatch", "b", enabled=False)
    await changed()
    await add(store, "billing", "c")
    await changed()
    await store.set_enabled("dispatch", "b", True)
    await changed()
    await store.set_enabled("billing", "c", False)
    await changed()
    await store.trigger("dispatch", "a")
    await changed()
    await store.remove_task("dispatch", "a")
    await changed()

    short = await register(store, "w-short", ttl=SHORT_TTL)
    await register(store, "w-b", ttl=LONG_TTL)
    await register(store, "w-a", ttl=LONG_TTL)
    await register(store, "w-draining", ttl=LONG_TTL)
    await store.set_draining("w-draining", True)
    view = await store.cluster_view()
    assert view.live_workers == ["w-a", "w-b", "w-short"]
    assert view.enabled_tasks == 1  # dispatch/b; billing/c is disabled, dispatch/a removed
    await wait_past(store, short.expires_at)
    assert (await store.cluster_view()).live_workers == ["w-a", "w-b"]


async def test_a_claim_of_the_stores_whole_chunk_returns_every_task_once_by_term(store: Store) -> None:
    """A worker asks for up to ``claim_chunk`` tasks at once (5,000 on PostgreSQL, whose
    claim turns its rows into tasks a few hundred at a time between turns of the loop)."""
    keys = [f"k{i:05d}" for i in range(store.claim_chunk + 7)]
    tasks = [DesiredTask(key=k, schedule=Every(5.0), params_json="{}", enabled=True) for k in keys]
    await store.sync_tasks("dispatch", tasks, remove_missing=False, dry_run=False)
    await register(store, "w1")
    claims = await store.claim_tasks("w1", kinds=["dispatch"], limit=store.claim_chunk)
    assert len(claims) == store.claim_chunk
    assert len({c.task.key for c in claims}) == store.claim_chunk
    terms = [c.task.term for c in claims]
    assert terms == sorted(terms)
    assert len(set(terms)) == len(terms)
    assert all(c.task.owner == "w1" for c in claims)
    rest = await store.claim_tasks("w1", kinds=["dispatch"], limit=store.claim_chunk)
    assert len(rest) == 7
    assert min(c.task.term for c in rest) > max(terms)


async def test_cluster_view_says_when_the_newest_live_worker_registered(store: Store) -> None:
    """A newcomer settles from the newest member's registration on the database's clock,
    not from when it noticed that member (the rebalancer's ``_settling``)."""
    assert (await store.cluster_view()).newest_start is None
    await register(store, "w-old", ttl=LONG_TTL)
    short = await register(store, "w-short", ttl=SHORT_TTL)
    await register(store, "w-mid", ttl=LONG_TTL)
    await register(store, "w-draining", ttl=LONG_TTL)
    await store.set_draining("w-draining", True)
    started = {w.id: w.started_at for w in await store.list_workers()}
    # The draining worker registered last but is no member: the newest member is w-mid.
    assert (await store.cluster_view()).newest_start == started["w-mid"]
    # A worker that registers again (a restart under the same id) is new again.
    await wait_past(store, short.expires_at)
    await register(store, "w-short", ttl=LONG_TTL)
    started = {w.id: w.started_at for w in await store.list_workers()}
    assert started["w-short"] > started["w-mid"]
    assert (await store.cluster_view()).newest_start == started["w-short"]


@asynccontextmanager
async def _claim_in_progress(store: Store, store_url: str, keys: list[str]) -> AsyncIterator[None]:
    """Another session holds the ``dispatch`` task rows of ``keys``, the first free ones,
    locked until the block ends, as another worker's claim in progress does (on MySQL the
    store's own claim statement, run for worker w0)."""
    if dialect_of(store_url) == "postgresql":
        marks = ", ".join(["%s"] * len(keys))
        lock = f"SELECT 1 FROM tenure_tasks WHERE kind = 'dispatch' AND key IN ({marks}) FOR UPDATE"
        async with await psycopg.AsyncConnection.connect(store_url) as pg:
            await pg.execute(lock.encode(), keys)
            yield
            await pg.rollback()
        return
    q: dict[str, str] = store.q  # type: ignore[attr-defined]  # the MySQL store's queries
    my = await asyncmy.connect(**connect_args(parse_mysql_url(store_url)))
    try:
        await my.begin()
        cur = my.cursor()
        args = {
            "worker": "w0",
            "kinds": ("dispatch",),
            "limit": len(keys),
            "dead": 0,
            "place_kind": "",
            "place_key": "",
        }
        await cur.execute(q["claim_free"], args)
        assert sorted(r[1] for r in await cur.fetchall()) == keys
        yield
        await my.rollback()
    finally:
        my.close()


async def test_a_claim_passes_over_rows_another_claim_holds_and_takes_the_rest(store: Store, store_url: str) -> None:
    """Workers woken by the same release claim at the same moment: each must get free
    tasks the others do not hold (on MariaDB a claim that ordered its rows with ORDER BY …
    LIMIT held every free row, and the others claimed none)."""
    if dialect_of(store_url) == "sqlite":
        pytest.skip("SQLite has no row locks: one writer at a time")
    keys = [f"city-{i:02d}" for i in range(8)]
    for key in keys:
        await add(store, "dispatch", key)
    await register(store, "w0")
    await register(store, "w1")
    async with _claim_in_progress(store, store_url, keys[:3]):
        claims = await asyncio.wait_for(store.claim_tasks("w1", kinds=["dispatch"], limit=4), 10)
    assert sorted(c.task.key for c in claims) == keys[3:7]


async def test_tasks_whose_owner_has_no_worker_row_are_claimable(store: Store, probe: RawDB) -> None:
    # A worker row deleted behind the store's back (an operator's hand): its tasks have an
    # owner that no row vouches for, so they are free to claim, as expired ones are.
    for key in ("a", "b", "c"):
        await add(store, "dispatch", key)
    await register(store, "w1")
    mine = {c.task.key: c.term for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=2)}
    assert sorted(mine) == ["a", "b"]
    probe.query("DELETE FROM tenure_workers WHERE id = 'w1'")
    await register(store, "w2")
    # Free and orphaned tasks alike, in key order, up to the limit.
    first = await store.claim_tasks("w2", kinds=["dispatch"], limit=2)
    assert [c.task.key for c in first] == ["a", "b"]
    assert all(c.term > mine[c.task.key] and c.task.freed_how is Freed.EXPIRED for c in first)
    rest = await store.claim_tasks("w2", kinds=["dispatch"], limit=2)
    assert [c.task.key for c in rest] == ["c"]
    assert rest[0].task.freed_how is not Freed.EXPIRED


async def test_a_claims_start_is_only_a_hint_every_free_task_is_claimed_once(store: Store) -> None:
    """Workers claiming together pass different starts (their rank times their share); a
    start past the free tasks, or into tasks others took, still claims what is free."""
    keys = [f"city-{i}" for i in range(6)]
    for key in keys:
        await add(store, "dispatch", key)
    await add(store, "billing", "b")
    await register(store, "w1")
    await register(store, "w2")
    first = await store.claim_tasks("w1", kinds=["dispatch"], limit=2, start=4)
    second = await store.claim_tasks("w2", kinds=["dispatch"], limit=3, start=99)
    third = await store.claim_tasks("w1", kinds=["dispatch", "billing"], limit=10, start=1)
    assert (len(first), len(second)) == (2, 3)
    claimed = [(c.task.kind, c.task.key) for c in first + second + third]
    assert sorted(claimed) == [("billing", "b")] + [("dispatch", k) for k in keys]
    assert await store.claim_tasks("w2", kinds=["dispatch"], limit=10, start=2) == []


async def test_a_server_store_claims_from_its_start_then_wraps_to_the_first_free_task(
    store: Store, store_url: str
) -> None:
    """PostgreSQL and MySQL/MariaDB follow the hint: the walk begins ``start`` free tasks
    in, in key order, and comes back round to the first (what lets 40 workers claiming at
    once each take their own stretch, bench/fleet.py)."""
    if dialect_of(store_url) == "sqlite":
        pytest.skip("SQLite ignores the hint (one writer at a time)")
    keys = [f"city-{i}" for i in range(8)]
    for key in keys:
        await add(store, "dispatch", key)
    await register(store, "w1")
    taken = await store.claim_tasks("w1", kinds=["dispatch"], limit=2, start=5)
    assert sorted(c.task.key for c in taken) == ["city-5", "city-6"]
    # Free now: 0-4 and 7. Two in is city-2; the walk goes to the end, then from the first.
    taken = await store.claim_tasks("w1", kinds=["dispatch"], limit=5, start=2)
    assert sorted(c.task.key for c in taken) == ["city-0", "city-2", "city-3", "city-4", "city-7"]
    # Past the free tasks: from the first.
    (last,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=5, start=10)
    assert last.task.key == "city-1"
