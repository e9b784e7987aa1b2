"""Kinds and tasks, as the admin side uses them."""

from __future__ import annotations

import json

import pytest

from tenure.errors import TaskExists, TaskNotFound
from tenure.models import Freed, KindInfo
from tenure.schedule import Cron, Every
from tenure.store import Store

from .helpers import add, register, task_of

# -- kinds ------------------------------------------------------------------------------


async def test_publish_and_list_kinds(store: Store) -> None:
    assert await store.list_kinds() == []
    await store.publish_kinds(
        [
            KindInfo(kind="report", schedule=Cron("0 * * * *"), timeout=30.0),
            KindInfo(kind="dispatch", schedule=Every(5.0), timeout=None),
            KindInfo(kind="adhoc", schedule=None, timeout=None),
        ]
    )
    assert await store.list_kinds() == [
        KindInfo(kind="adhoc", schedule=None, timeout=None),
        KindInfo(kind="dispatch", schedule=Every(5.0), timeout=None),
        KindInfo(kind="report", schedule=Cron("0 * * * *"), timeout=30.0),
    ]


async def test_publish_kinds_upserts(store: Store) -> None:
    await store.publish_kinds([KindInfo(kind="dispatch", schedule=Every(5.0), timeout=4.0)])
    await store.publish_kinds([KindInfo(kind="dispatch", schedule=Cron("*/5 * * * *"), timeout=None)])
    await store.publish_kinds([])
    assert await store.list_kinds() == [KindInfo(kind="dispatch", schedule=Cron("*/5 * * * *"), timeout=None)]
    # Publishing another kind leaves the first alone.
    await store.publish_kinds([KindInfo(kind="billing", schedule=Every(60), timeout=None)])
    assert [k.kind for k in await store.list_kinds()] == ["billing", "dispatch"]


# -- tasks ------------------------------------------------------------------------------


async def test_add_task_returns_the_new_unowned_task(store: Store) -> None:
    before = await store.now()
    task = await store.add_task(
        kind="dispatch", key="barcelona", schedule=Every(5.0), params_json='{"zone":3}', enabled=True
    )
    after = await store.now()
    assert (task.kind, task.key) == ("dispatch", "barcelona")
    assert task.schedule == Every(5.0)
    assert task.params == {"zone": 3}
    assert task.enabled is True
    assert task.owner is None
    assert task.term == 0
    assert task.last_slot is None
    assert task.freed_how is Freed.NEW
    assert task.trigger_at is None
    assert before - 0.01 <= task.created_at <= after + 0.01
    assert task.updated_at >= task.created_at
    assert await store.get_task("dispatch", "barcelona") == task


async def test_add_task_cron_and_disabled(store: Store) -> None:
    task = await add(store, "report", "daily", schedule=Cron("30 6 * * 1-5"), enabled=False)
    assert task.schedule == Cron("30 6 * * 1-5")
    assert task.enabled is False
    assert await store.get_task("report", "daily") == task


async def test_params_are_stored_verbatim(store: Store) -> None:
    params = {"name": "Zürich ✓", "nested": {"list": [1, 2.5, None, True]}, "quote": 'it\'s "x"'}
    task = await add(store, "dispatch", "zurich", params_json=json.dumps(params))
    assert task.params == params
    assert (await task_of(store, "dispatch", "zurich")).params == params


async def test_add_existing_task_raises_task_exists_and_keeps_the_original(store: Store) -> None:
    original = await add(store, "dispatch", "barcelona", params_json='{"v":1}')
    with pytest.raises(TaskExists, match="barcelona"):
        await add(store, "dispatch", "barcelona", params_json='{"v":2}', schedule=Every(9.0))
    assert await store.get_task("dispatch", "barcelona") == original
    # The same key under another kind is another task.
    await add(store, "billing", "barcelona")
    assert len(await store.list_tasks()) == 2


@pytest.mark.parametrize(
    "key",
    [
        "L'Aquila",
        "x'); DROP TABLE tenure_tasks; --",
        'quote"d',
        "back\\slash",
        "percent %s %(x)s ? :key",
        "東京",
        "São Paulo",
        "emoji 🚚",
    ],
)
async def test_odd_keys_round_trip_verbatim(store: Store, key: str) -> None:
    await add(store, "dispatch", "plain")
    task = await add(store, "dispatch", key)
    assert task.key == key
    assert (await task_of(store, "dispatch", key)).key == key
    assert sorted(t.key for t in await store.list_tasks()) == sorted(["plain", key])
    await store.set_enabled("dispatch", key, False)
    await store.remove_task("dispatch", key)
    assert await store.get_task("dispatch", key) is None
    assert [t.key for t in await store.list_tasks()] == ["plain"]


async def test_keys_are_compared_exactly(store: Store) -> None:
    await add(store, "dispatch", "paris")
    await add(store, "dispatch", "Paris")  # a different key, not a duplicate
    await add(store, "dispatch", "pàris")
    assert sorted(t.key for t in await store.list_tasks()) == sorted(["paris", "Paris", "pàris"])
    assert (await task_of(store, "dispatch", "Paris")).key == "Paris"
    assert await store.get_task("dispatch", "PARIS") is None


async def test_get_task_missing_is_none(store: Store) -> None:
    await add(store, "dispatch", "barcelona")
    assert await store.get_task("dispatch", "madrid") is None
    assert await store.get_task("billing", "barcelona") is None


async def test_list_tasks_order_and_filters(store: Store) -> None:
    for kind, key in [
        ("dispatch", "c"),
        ("billing", "b"),
        ("dispatch", "a"),
        ("billing", "z"),
        ("alpha", "m"),
    ]:
        await add(store, kind, key)
    assert [(t.kind, t.key) for t in await store.list_tasks()] == [
        ("alpha", "m"),
        ("billing", "b"),
        ("billing", "z"),
        ("dispatch", "a"),
        ("dispatch", "c"),
    ]
    assert [t.key for t in await store.list_tasks(kind="dispatch")] == ["a", "c"]
    assert await store.list_tasks(kind="nope") == []

    await register(store, "w1")
    claims = await store.claim_tasks("w1", kinds=["billing"], limit=10)
    assert len(claims) == 2
    assert [(t.kind, t.key) for t in await store.list_tasks(owner="w1")] == [
        ("billing", "b"),
        ("billing", "z"),
    ]
    assert [t.key for t in await store.list_tasks(kind="dispatch", owner="w1")] == []
    assert await store.list_tasks(owner="nobody") == []


async def test_set_enabled_bumps_version_and_leaves_ownership(store: Store) -> None:
    task = await add(store, "dispatch", "barcelona")
    await register(store, "w1")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)

    disabled = await store.set_enabled("dispatch", "barcelona", False)
    assert disabled.enabled is False
    assert disabled.version > task.version
    assert (disabled.owner, disabled.term) == ("w1", claim.term)

    enabled = await store.set_enabled("dispatch", "barcelona", True)
    assert enabled.enabled is True
    assert enabled.version > disabled.version
    assert (enabled.owner, enabled.term) == ("w1", claim.term)
    assert await store.get_task("dispatch", "barcelona") == enabled


async def test_set_enabled_missing_task(store: Store) -> None:
    await add(store, "dispatch", "barcelona")
    with pytest.raises(TaskNotFound, match="madrid"):
        await store.set_enabled("dispatch", "madrid", False)
    assert (await task_of(store, "dispatch", "barcelona")).enabled is True


async def test_trigger_records_database_time_and_bumps_version(store: Store) -> None:
    task = await add(store, "dispatch", "barcelona")
    before = await store.now()
    triggered = await store.trigger("dispatch", "barcelona")
    after = await store.now()
    assert triggered.trigger_at is not None
    assert before - 0.01 <= triggered.trigger_at <= after + 0.01
    assert triggered.version > task.version
    assert (triggered.owner, triggered.term, triggered.enabled) == (None, 0, True)
    assert await store.get_task("dispatch", "barcelona") == triggered
    with pytest.raises(TaskNotFound):
        await store.trigger("dispatch", "madrid")


async def test_remove_task(store: Store) -> None:
    await add(store, "dispatch", "barcelona")
    await add(store, "dispatch", "madrid")
    await register(store, "w1")
    await store.claim_tasks("w1", kinds=["dispatch"], limit=10)

    await store.remove_task("dispatch", "barcelona")
    assert await store.get_task("dispatch", "barcelona") is None
    assert [t.key for t in await store.owned_tasks("w1")] == ["madrid"]
    assert [t.key for t in await store.list_tasks()] == ["madrid"]
    with pytest.raises(TaskNotFound, match="barcelona"):
        await store.remove_task("dispatch", "barcelona")
    assert [t.key for t in await store.list_tasks()] == ["madrid"]
