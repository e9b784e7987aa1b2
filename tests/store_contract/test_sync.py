"""Desired state: Store.sync_tasks adds, updates, disables or removes, in one transaction."""

from __future__ import annotations

import asyncio
import json

from tenure.desired import DesiredTask, SyncResult
from tenure.models import KindInfo, Task
from tenure.schedule import Cron, Every, Schedule
from tenure.store import Store, make_store

from .dialect import raw_db
from .helpers import add, register, task_of


def desired(key: str, *, params: object = None, schedule: Schedule | None = None, enabled: bool = True) -> DesiredTask:
    return DesiredTask(
        key=key,
        schedule=schedule or Every(5.0),
        params_json=json.dumps(params or {}, separators=(",", ":"), sort_keys=True),
        enabled=enabled,
    )


async def sync(
    store: Store, tasks: list[DesiredTask], *, kind: str = "dispatch", remove: bool = False, dry: bool = False
) -> SyncResult:
    return await store.sync_tasks(kind, tasks, remove_missing=remove, dry_run=dry)


async def changes(store: Store) -> int:
    return (await store.cluster_view()).changes


async def by_key(store: Store, kind: str = "dispatch") -> dict[str, Task]:
    return {t.key: t for t in await store.list_tasks(kind=kind)}


async def test_adds_missing_tasks_unowned(store: Store) -> None:
    before = await changes(store)
    result = await sync(
        store,
        [
            desired("lisbon", params={"zone": "west"}),
            desired("o'porto ü", schedule=Every(2.5)),
            desired("daily", schedule=Cron("0 6 * * *"), enabled=False),
        ],
    )
    assert result.counts() == {"added": 3, "updated": 0, "disabled": 0, "removed": 0, "unchanged": 0}
    assert result.added == ("daily", "lisbon", "o'porto ü")
    assert result.dry_run is False
    tasks = await by_key(store)
    assert tasks["lisbon"].params == {"zone": "west"}
    assert tasks["lisbon"].schedule == Every(5.0)
    assert tasks["o'porto ü"].schedule == Every(2.5)
    assert tasks["daily"].schedule == Cron("0 6 * * *")
    assert [t.enabled for t in tasks.values()] == [False, True, True]
    assert all(t.owner is None and t.term == 0 and t.version == 1 for t in tasks.values())
    assert await changes(store) > before


async def test_the_same_desired_state_again_changes_nothing(store: Store) -> None:
    # Periods JSON and text would round (0.1, 1/3), keys and params in many scripts.
    tasks = [
        desired("a", schedule=Every(0.1)),
        desired("b", schedule=Every(1 / 3), params={"π": 3.141592653589793, "big": 2**62, "s": 'q"\\'}),
        desired("c", schedule=Cron("*/5 * * * *"), params={"nested": [1, {"x": None}], "ü": "✓"}),
        desired("Zürich/nord", enabled=False),
    ]
    await sync(store, tasks)
    stored = await by_key(store)
    counter = await changes(store)
    again = await sync(store, tasks)
    assert again.counts() == {"added": 0, "updated": 0, "disabled": 0, "removed": 0, "unchanged": 4}
    assert not again.changed
    assert await by_key(store) == stored, "a sync that changes nothing wrote something"
    assert await changes(store) == counter, "owners were told of a change that did not happen"


async def test_updates_what_differs_and_keeps_ownership(store: Store) -> None:
    await sync(store, [desired("a", params={"v": 1}), desired("b"), desired("c"), desired("d", enabled=False)])
    await register(store, "w1")
    claims = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10)}
    counter = await changes(store)
    result = await sync(
        store,
        [
            desired("a", params={"v": 2}),  # params
            desired("b", schedule=Cron("0 * * * *")),  # schedule
            desired("c"),  # as it was
            desired("d"),  # enabled again
        ],
    )
    assert result.updated == ("a", "b", "d")
    assert result.unchanged == 1
    tasks = await by_key(store)
    assert tasks["a"].params == {"v": 2}
    assert tasks["b"].schedule == Cron("0 * * * *")
    assert tasks["d"].enabled is True
    for key in ("a", "b"):
        assert tasks[key].version == 2, "the owner must see a new version"
        assert (tasks[key].owner, tasks[key].term) == ("w1", claims[key].term), "a sync never moves a task"
    assert tasks["c"].version == 1
    assert await changes(store) > counter


async def test_absent_tasks_are_disabled_by_default(store: Store) -> None:
    await sync(store, [desired("a"), desired("b"), desired("c", enabled=False)])
    await register(store, "w1")
    await store.claim_tasks("w1", kinds=["dispatch"], limit=10)
    result = await sync(store, [desired("a")])
    assert result.disabled == ("b",)
    assert result.unchanged == 2  # a as desired; c absent and already disabled
    tasks = await by_key(store)
    assert set(tasks) == {"a", "b", "c"}
    assert tasks["b"].enabled is False
    assert tasks["b"].version == 2
    assert tasks["b"].owner == "w1", "its owner lets it go when it sees the new version"
    assert tasks["c"].version == 1


async def test_absent_tasks_are_removed_when_asked_and_terms_never_come_back(store: Store) -> None:
    await sync(store, [desired("a"), desired("b"), desired("c", enabled=False)])
    await register(store, "w1")
    claims = {c.task.key: c.term for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10)}
    result = await sync(store, [desired("a")], remove=True)
    assert result.removed == ("b", "c")
    assert result.counts()["unchanged"] == 1
    assert set(await by_key(store)) == {"a"}
    await sync(store, [desired("a"), desired("b")])
    await store.release_tasks("w1", [])
    (claim,) = [c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10) if c.task.key == "b"]
    assert claim.term > max(claims.values())


async def test_other_kinds_are_never_touched(store: Store) -> None:
    other = await add(store, "report", "daily", params_json='{"to":"ops"}')
    await sync(store, [desired("a")])
    await sync(store, [desired("b")], remove=True)
    await sync(store, [desired("daily", params={"to": "me"})])
    assert await task_of(store, "report", "daily") == other
    assert set(await by_key(store)) == {"b", "daily"}


async def test_an_empty_desired_state_disables_or_removes_the_whole_kind(store: Store) -> None:
    await sync(store, [desired("a"), desired("b")])
    assert (await sync(store, [])).disabled == ("a", "b")
    assert (await sync(store, [], remove=True)).removed == ("a", "b")
    assert await by_key(store) == {}


async def test_dry_run_says_what_a_sync_would_do_and_does_nothing(store: Store) -> None:
    await sync(store, [desired("keep"), desired("edit"), desired("drop"), desired("gone")])
    plan = [desired("keep"), desired("edit", params={"v": 2}), desired("new")]
    for remove in (False, True):
        stored, counter = await by_key(store), await changes(store)
        dry = await sync(store, plan, remove=remove, dry=True)
        assert dry.dry_run is True
        assert await by_key(store) == stored
        assert await changes(store) == counter
        assert dry.added == ("new",)
        assert dry.updated == ("edit",)
        if remove:
            assert (dry.disabled, dry.removed) == ((), ("drop", "gone"))
        else:
            assert (dry.disabled, dry.removed) == (("drop", "gone"), ())
    real = await sync(store, plan)
    dry_disable = await sync(store, [], dry=True)
    assert real.counts() == {"added": 1, "updated": 1, "disabled": 2, "removed": 0, "unchanged": 1}
    assert dry_disable.disabled == ("edit", "keep", "new")


async def test_thousands_of_tasks_in_batches(store: Store) -> None:
    """More than one batch statement's worth: large parameters make the batches small."""
    big = "x" * 20_000
    tasks = [desired(f"city-{i:04d}", params={"i": i, "pad": big}) for i in range(600)]
    first = await sync(store, tasks)
    assert len(first.added) == 600
    tasks[7] = desired("city-0007", params={"i": -7})
    second = await sync(store, [*tasks, desired("extra")])
    assert (second.added, second.updated, second.unchanged) == (("extra",), ("city-0007",), 599)
    third = await sync(store, tasks[:300], remove=True)
    assert len(third.removed) == 301
    stored = await by_key(store)
    assert len(stored) == 300
    assert stored["city-0007"].params == {"i": -7}
    assert stored["city-0299"].params == {"i": 299, "pad": big}


async def test_a_row_stored_under_another_spelling_of_the_key_is_that_task(store_url: str, store: Store) -> None:
    """A row stored before keys were normalised to NFC keeps its spelling and is matched."""
    await add(store, "dispatch", "placeholder")
    raw_db(store_url).set_task_key("dispatch", "placeholder", "Sa\u0303o Jose\u0301")
    result = await sync(store, [desired("São José", params={"v": 1})])
    assert result.updated == ("Sa\u0303o Jose\u0301",)
    assert result.added == ()
    assert [(t.key, t.params) for t in (await by_key(store)).values()] == [("Sa\u0303o Jose\u0301", {"v": 1})]


async def test_concurrent_syncs_of_one_kind_take_turns(store_url: str, store: Store) -> None:
    await store.publish_kinds([KindInfo(kind="dispatch", schedule=Every(5.0), timeout=None)])
    others = [make_store(store_url) for _ in range(3)]
    for s in others:
        await s.open(migrate=False)
    try:
        tasks = [desired(f"k{i:03d}") for i in range(200)]
        results = await asyncio.gather(*(sync(s, tasks) for s in [store, *others]))
    finally:
        for s in others:
            await s.close()
    assert sorted(len(r.added) for r in results) == [0, 0, 0, 200], "exactly one sync adds each task"
    assert len(await by_key(store)) == 200
