"""App.sync_tasks on every store: the desired state of a kind, validated whole before
anything is applied, and idempotent."""

from __future__ import annotations

import math
from typing import Any

import pytest

import tenure
from tenure import TaskSpec
from tenure.errors import InvalidInput, InvalidKey, InvalidKind, InvalidParams, InvalidSchedule, UnknownKind
from tenure.models import Task
from tenure.schedule import Cron, Every

DECOMPOSED, COMPOSED = "Sa\u0303o Jose\u0301", "São José"


async def tasks_of(app: tenure.App, kind: str = "dispatch") -> dict[str, Task]:
    return {t.key: t for t in await app.list_tasks(kind=kind)}


@pytest.fixture
async def seeded(app: tenure.App) -> tenure.App:
    """Two dispatch tasks and a task of another kind, which no refused sync may touch."""
    app.task("report")(lambda ctx: None)  # a kind of this app's code with no default schedule
    await app.add_task("dispatch", "lisbon", params={"zone": "west"})
    await app.add_task("dispatch", "porto", every=2.5)
    return app


async def test_keys_map_to_params_or_specs_and_schedules_default_to_the_kind(seeded: tenure.App) -> None:
    result = await seeded.sync_tasks(
        "dispatch",
        {
            "lisbon": {"zone": "west"},  # as it is
            "porto": None,  # params {}, the kind's period instead of 2.5 s
            DECOMPOSED: TaskSpec(params={"n": 1}, cron="0 6 * * *"),
            "faro": TaskSpec(every=30, enabled=False),
        },
    )
    assert result.counts() == {"added": 2, "updated": 1, "disabled": 0, "removed": 0, "unchanged": 1}
    assert result.added == (COMPOSED, "faro")  # in key order
    tasks = await tasks_of(seeded)
    assert tasks["porto"].schedule == Every(5.0)
    assert tasks[COMPOSED].schedule == Cron("0 6 * * *")
    assert tasks[COMPOSED].params == {"n": 1}
    assert (tasks["faro"].schedule, tasks["faro"].enabled) == (Every(30), False)
    # Either spelling of a key is the same task.
    again = await seeded.sync_tasks("dispatch", {COMPOSED: TaskSpec(params={"n": 1}, cron="0 6 * * *")}, dry_run=True)
    assert again.updated == ()
    assert again.added == ()


async def test_a_second_sync_of_the_same_state_changes_nothing(seeded: tenure.App) -> None:
    desired: dict[str, Any] = {f"city-{i}": {"i": i, "f": i / 7} for i in range(50)}
    first = await seeded.sync_tasks("dispatch", desired, remove_missing=True)
    assert (len(first.added), first.removed) == (50, ("lisbon", "porto"))
    before = await tasks_of(seeded)
    second = await seeded.sync_tasks("dispatch", desired, remove_missing=True)
    assert second.counts() == {"added": 0, "updated": 0, "disabled": 0, "removed": 0, "unchanged": 50}
    assert await tasks_of(seeded) == before


async def test_absent_tasks_are_disabled_then_enabled_again_when_they_come_back(seeded: tenure.App) -> None:
    assert (await seeded.sync_tasks("dispatch", {"lisbon": {"zone": "west"}})).disabled == ("porto",)
    assert (await seeded.get_task("dispatch", "porto")).enabled is False
    back = await seeded.sync_tasks("dispatch", {"lisbon": {"zone": "west"}, "porto": TaskSpec(every=2.5)})
    assert back.updated == ("porto",)
    assert (await seeded.get_task("dispatch", "porto")).enabled is True


async def test_an_empty_desired_state_needs_allow_empty(seeded: tenure.App) -> None:
    with pytest.raises(InvalidInput, match="allow_empty"):
        await seeded.sync_tasks("dispatch", {})
    with pytest.raises(InvalidInput, match="remove every one"):
        await seeded.sync_tasks("dispatch", {}, remove_missing=True)
    assert set(await tasks_of(seeded)) == {"lisbon", "porto"}
    assert (await seeded.sync_tasks("dispatch", {}, dry_run=True)).disabled == ("lisbon", "porto")
    assert (await seeded.sync_tasks("dispatch", {}, allow_empty=True)).disabled == ("lisbon", "porto")


BAD_ENTRIES: list[tuple[str, Any, type[InvalidInput], str]] = [
    (" padded", {}, InvalidKey, "whitespace"),
    ("soft\u00adhyphen", {}, InvalidKey, "invisible"),
    ("k" * 201, {}, InvalidKey, "limit is 200"),
    ("x", [1, 2], InvalidInput, "TaskSpec"),
    ("x", TaskSpec(params={"x": math.nan}), InvalidParams, "nan"),
    ("x", TaskSpec(params={"x": "y" * 70_000}), InvalidParams, "limit"),
    ("x", TaskSpec(every=-1), InvalidSchedule, "period"),
    ("x", TaskSpec(every=10**400), InvalidSchedule, "period"),
    ("x", TaskSpec(cron="61 * * * *"), InvalidSchedule, "cron"),
    ("x", TaskSpec(every=5, cron="* * * * *"), InvalidSchedule, ""),
    ("x", TaskSpec(enabled=1), InvalidInput, "enabled"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("key", "spec", "error", "fragment"), BAD_ENTRIES)
async def test_one_bad_entry_applies_nothing_and_is_named(
    seeded: tenure.App, key: str, spec: Any, error: type[InvalidInput], fragment: str
) -> None:
    before = await seeded.list_tasks()
    desired = {"new-before": None, "lisbon": {"zone": "changed"}, key: spec, "new-after": None}
    with pytest.raises(error) as caught:
        await seeded.sync_tasks("dispatch", desired, remove_missing=True)
    assert caught.value.entry == key
    assert str(caught.value).startswith("task ")
    assert fragment.lower() in str(caught.value).lower()
    assert len(str(caught.value)) < 400
    assert await seeded.list_tasks() == before, "a refused sync changed the store"


async def test_two_spellings_of_one_key_are_refused(seeded: tenure.App) -> None:
    before = await seeded.list_tasks()
    with pytest.raises(InvalidKey, match="given twice") as caught:
        await seeded.sync_tasks("dispatch", {COMPOSED: None, DECOMPOSED: None})
    assert caught.value.entry == DECOMPOSED
    assert await seeded.list_tasks() == before


async def test_unknown_kind_and_missing_default_schedule(seeded: tenure.App) -> None:
    before = await seeded.list_tasks()
    with pytest.raises(UnknownKind, match="unknown kind 'dispatcher'"):
        await seeded.sync_tasks("dispatcher", {"a": None})
    with pytest.raises(InvalidKind):
        await seeded.sync_tasks("bad kind", {"a": None})
    with pytest.raises(InvalidSchedule, match="no default schedule") as caught:
        await seeded.sync_tasks("report", {"daily": TaskSpec(cron="0 6 * * *"), "weekly": None})
    assert caught.value.entry == "weekly"
    assert await seeded.list_tasks() == before
    assert (await seeded.sync_tasks("report", {"daily": TaskSpec(cron="0 6 * * *")})).added == ("daily",)


@pytest.mark.parametrize(
    "kwargs", [{"remove_missing": 1}, {"dry_run": "yes"}, {"allow_empty": None}], ids=["remove", "dry", "empty"]
)
async def test_flags_must_be_bools(seeded: tenure.App, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="must be True or False"):
        await seeded.sync_tasks("dispatch", {"a": None}, **kwargs)


async def test_desired_must_be_a_mapping(seeded: tenure.App) -> None:
    with pytest.raises(InvalidInput, match="desired must map keys"):
        await seeded.sync_tasks("dispatch", ["a", "b"])  # type: ignore[arg-type]
