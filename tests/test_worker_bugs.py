"""Regression tests for the worker bugs a close reading found (issue 13, items b to j).

Each runs a real worker in this process (``App.run_worker``) on a real SQLite store and
observes it through the store, or drives the store directly; each failed against the
worker before the split into parts (commit 3fdad4b). Bug a (a second signal forces the
stop) needs real signals: see ``tests/runtime/test_stopping.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

import tenure
from support.storeapi import worker_in_loop
from tenure.errors import StoreError, StoreUnavailable
from tenure.kinds import TaskKind
from tenure.models import Freed, Outcome, Run, Task
from tenure.schedule import Every, Misfire
from tenure.worker import supervisor
from tenure.worker.lifecycle import Lifecycle
from tenure.worker.owned import OwnedTask, Shared, WorkerLog
from tenure.worker.recorder import RunRecorder

#: Short lease settings so that a test's worker joins, claims and flushes quickly.
FAST: dict[str, Any] = {"lease_ttl": 2.0, "heartbeat": 0.4, "poll": 0.2, "trust_margin": 0.3, "grace": 0.5}


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


def running(app: tenure.App, **settings: Any) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    """A worker of ``app`` running in this loop; cancelled (a forced stop) at the end."""
    return worker_in_loop(app, tenure.Settings(worker_id="w1", **{**FAST, **settings}))


Apps = tuple[tenure.App, tenure.App]


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Apps]:
    """Two Apps on one SQLite store: the one whose worker a test runs, and an admin; both
    closed at the end, whatever the test did."""
    url = url_of(tmp_path)
    app, admin = tenure.App(url), tenure.App(url)
    try:
        yield app, admin
    finally:
        await admin.close()
        await app.close()


async def runs_of(admin: tenure.App, kind: str) -> list[Run]:
    return await admin.list_runs(kind=kind, limit=1000)


# -- b: a manual trigger runs once ------------------------------------------------------------


async def ticking(apps: Apps, every: float) -> list[float]:
    """Kind ``tick`` (every ``every`` seconds) on the worker's App, each run appending its
    slot to the list returned; the App open and the task tick/a added."""
    app, admin = apps
    slots: list[float] = []

    @app.task("tick", every=every)
    async def tick(ctx: tenure.Context) -> None:
        slots.append(ctx.scheduled_at)

    await app.open()
    await admin.add_task("tick", "a")
    return slots


async def test_a_trigger_is_answered_even_when_scheduled_runs_end_before_the_flush(apps: Apps) -> None:
    app, admin = apps
    slots = await ticking(apps, 0.02)
    async with running(app, poll=0.5):
        await wait_for(lambda: _true(len(slots) > 3), "the task runs")
        asked = (await admin.trigger("tick", "a")).trigger_at
        assert asked is not None
        await wait_for(lambda: _true(asked in slots), "the triggered run")

        async def answered() -> bool:
            return (await admin.get_task("tick", "a")).trigger_at is None

        # Before the fix the scheduled runs that ended before the next flush recorded
        # their slot as not triggered, and the trigger stayed pending for the next owner.
        await wait_for(answered, "the store to see the trigger answered")


async def _true(value: bool) -> bool:
    return value


async def test_a_released_task_carries_its_answered_trigger(apps: Apps) -> None:
    """The release path of bug b: run records cannot be saved, so the triggered run's slot
    stays buffered; the worker then lets the task go. The release itself must say the
    trigger was answered, or the next owner runs it again."""
    app, admin = apps
    slots = await ticking(apps, 3600.0)

    async def unavailable(runs: object, slots: object) -> None:
        raise StoreUnavailable("run records cannot be saved just now")

    async def owned() -> bool:
        return (await admin.get_task("tick", "a")).owner == "w1"

    async with running(app):
        await wait_for(owned, "the worker to claim the task")
        app.store.record_runs = unavailable  # type: ignore[method-assign]
        asked = (await admin.trigger("tick", "a")).trigger_at
        assert asked is not None
        await wait_for(lambda: _true(asked in slots), "the triggered run")
    # The worker has left (its final flush failed too) and released the task.
    task = await admin.get_task("tick", "a")
    assert task.owner is None
    assert task.trigger_at is None, "the release left the answered trigger pending for the next owner"


def test_a_run_that_outlived_its_ownership_does_not_speak_for_the_next_term() -> None:
    """The other half of bug b: slot records are kept per ownership, not per key. A run of
    term 5 that ends after the worker fenced itself and claimed the task again at term 7
    must not replace (or erase the trigger of) the term-7 record."""
    shared = Shared(
        store=cast(Any, None), settings=tenure.Settings(), worker_id="w1", life=Lifecycle(), log=WorkerLog("w1")
    )
    owned = shared.owned
    recorder = RunRecorder(shared, lease=cast(Any, None))
    kind = TaskKind(kind="tick", handler=lambda ctx: None, schedule=Every(1.0), timeout=None, misfire=Misfire.SKIP)

    def ownership(term: int) -> OwnedTask:
        task = Task(
            kind="tick", key="a", schedule=Every(1.0), params={}, enabled=True, owner="w1", term=term,
            last_slot=None, freed_at=None, freed_how=Freed.RELEASED, trigger_at=None, version=1,
            created_at=0.0, updated_at=0.0,
        )  # fmt: skip
        return OwnedTask(task=task, kind=kind, term=term, next_slot=0.0)

    old = ownership(5)
    owned[old.id] = old
    old.last_slot = 10.0  # its run started; then the worker fenced itself
    recorder.forget_slots()
    del owned[old.id]
    new = owned[old.id] = ownership(7)
    new.last_slot = 20.0
    recorder.record(new, 20.0, 20.0, Outcome.OK, None, triggered=True, elapsed=0.1)
    recorder.record(old, 10.0, 10.0, Outcome.LEASE_LOST, "cancelled: lease lost", elapsed=5.0)
    ((_, held),) = recorder._buffer.slots.items()
    assert (held.term, held.slot, held.triggered) == (7, 20.0, True)
    # A later scheduled run of the same term keeps the answered trigger.
    new.last_slot = 21.0
    recorder.record(new, 21.0, 21.0, Outcome.OK, None, elapsed=0.1)
    ((_, held),) = recorder._buffer.slots.items()
    assert (held.term, held.slot, held.triggered) == (7, 21.0, True)


# -- c: a handler's own TimeoutError is an error, not a timeout -------------------------------


async def test_a_handlers_own_timeout_error_is_recorded_as_an_error(apps: Apps) -> None:
    app, admin = apps
    sync_contexts: list[tenure.Context] = []

    @app.task("async_own", every=0.3, timeout=5.0)
    async def async_own(ctx: tenure.Context) -> None:
        raise TimeoutError("the handler's own deadline")

    @app.task("sync_own", every=0.3, timeout=5.0)
    def sync_own(ctx: tenure.Context) -> None:
        sync_contexts.append(ctx)
        raise TimeoutError("the handler's own deadline")

    await app.open()
    await admin.add_task("async_own", "a")
    await admin.add_task("sync_own", "a")
    async with running(app):

        async def both_ran() -> bool:
            return bool(await runs_of(admin, "async_own")) and bool(await runs_of(admin, "sync_own"))

        await wait_for(both_ran, "a run of each kind recorded")
    for kind in ("async_own", "sync_own"):
        outcomes = {r.outcome for r in await runs_of(admin, kind)}
        assert outcomes == {Outcome.ERROR}, (kind, outcomes)
        assert all("own deadline" in (r.error or "") for r in await runs_of(admin, kind))
    # Before the fix the sync path also took it for its timeout and cancelled the context
    # (which rolls back any fenced transaction the run still holds).
    assert sync_contexts
    assert not any(ctx.is_cancelled for ctx in sync_contexts)


# -- d: a handler that returns an awaitable is awaited ----------------------------------------


async def test_a_handler_returning_an_awaitable_is_awaited(apps: Apps) -> None:
    app, admin = apps
    done: list[str] = []

    class Callable_:
        async def __call__(self, ctx: tenure.Context) -> None:
            await asyncio.sleep(0)
            done.append("object")

    async def inner(ctx: tenure.Context) -> None:
        await asyncio.sleep(0)
        done.append("wrapped")

    def unwrapped_decorator(ctx: tenure.Context) -> Awaitable[None]:  # no functools.wraps
        return inner(ctx)

    app.task("object", every=0.3)(Callable_())
    app.task("wrapped", every=0.3)(unwrapped_decorator)
    await app.open()
    await admin.add_task("object", "a")
    await admin.add_task("wrapped", "a")
    async with running(app):
        await wait_for(lambda: _true({"object", "wrapped"} <= set(done)), "both handlers' bodies to run")

        async def recorded() -> bool:
            return bool(await runs_of(admin, "object")) and bool(await runs_of(admin, "wrapped"))

        await wait_for(recorded, "their runs recorded")
    for kind in ("object", "wrapped"):
        assert {r.outcome for r in await runs_of(admin, kind)} == {Outcome.OK}


# -- e: a part that crashes stops the worker cleanly ------------------------------------------


async def test_a_crashed_part_stops_the_worker_and_hands_its_tasks_back(apps: Apps) -> None:
    app, admin = apps
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @app.task("hold", every=0.2, timeout=60.0)
    async def hold(ctx: tenure.Context) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @app.task("tick", every=0.2)
    async def tick(ctx: tenure.Context) -> None:
        pass  # runs to record at every flush

    await app.open()
    await admin.add_task("hold", "a")
    await admin.add_task("tick", "t")

    async def broken(runs: object, slots: object) -> None:
        raise RuntimeError("a bug in the run recorder")

    worker = asyncio.create_task(
        app.run_worker(settings=tenure.Settings(worker_id="w1", **{**FAST, "grace": 30.0}), handle_signals=False)
    )
    try:
        await asyncio.wait_for(started.wait(), 10)
        app.store.record_runs = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="a bug in the run recorder"):
            await asyncio.wait_for(worker, 10)
    finally:
        worker.cancel()
        with contextlib.suppress(BaseException):
            await worker
    assert cancelled.is_set(), "the running handler was left running"
    task = await admin.get_task("hold", "a")
    assert task.owner is None, "the crashed worker did not hand its task back"
    assert (await admin.get_task("tick", "t")).owner is None


# -- f: a pending trigger waits for the takeover delay ----------------------------------------


async def test_a_pending_trigger_waits_for_the_takeover_delay(apps: Apps) -> None:
    app, admin = apps
    store = admin.store

    @app.task("tick", every=3600.0)
    async def tick(ctx: tenure.Context) -> None:
        pass

    await app.open()
    await admin.open()
    await admin.add_task("tick", "a")
    # A worker that claims the task and dies: its lease expires with the task held.
    lease = await store.register_worker(worker_id="dead", host="h", pid=1, ttl=0.5)
    assert [c.task.key for c in await store.claim_tasks("dead", kinds=["tick"], limit=1)] == ["a"]
    await admin.trigger("tick", "a")
    await wait_for(lambda: _later_than(store.now(), lease.expires_at), "the dead worker's lease to expire")
    delay = 1.5
    begun = await store.now()
    async with running(app, takeover_delay=delay):
        await wait_for(lambda: _has_runs(admin, "tick"), "the triggered run", within=15)
    [run] = await runs_of(admin, "tick")
    assert run.started_at >= begun + delay, f"the trigger ran {run.started_at - begun:.2f}s after the takeover"


async def _later_than(now: Awaitable[float], t: float) -> bool:
    return await now > t


async def _has_runs(admin: tenure.App, kind: str) -> bool:
    return bool(await runs_of(admin, kind))


# -- g: a handler cannot change the next run's params -----------------------------------------


async def test_a_handler_changing_its_params_does_not_change_the_next_run(apps: Apps) -> None:
    app, admin = apps
    seen: list[Any] = []

    @app.task("tick", every=0.1)
    async def tick(ctx: tenure.Context) -> None:
        seen.append(ctx.params["items"][:])
        ctx.params["items"].append("more")
        ctx.params["added"] = True

    await app.open()
    await admin.add_task("tick", "a", params={"items": ["one"]})
    async with running(app):
        await wait_for(lambda: _true(len(seen) >= 3), "three runs")
    assert all(items == ["one"] for items in seen), seen


# -- h: an App that could not publish its kinds tries again -----------------------------------


async def test_app_open_publishes_its_kinds_after_a_failed_publish(apps: Apps) -> None:
    app, admin = apps

    @app.task("tick", every=1.0)
    async def tick(ctx: tenure.Context) -> None:
        pass

    real = app.store.publish_kinds
    failures = [StoreUnavailable("the store went away for a moment")]

    async def flaky(kinds: Any) -> None:
        if failures:
            raise failures.pop()
        await real(kinds)

    app.store.publish_kinds = flaky  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await app.open()
    await app.open()
    await admin.open()
    assert [k.kind for k in await admin.store.list_kinds()] == ["tick"]


# -- i: a constraint the SQLite store trips is a StoreError -----------------------------------


async def test_sqlite_constraint_violation_is_a_store_error(tmp_path: Path) -> None:
    store = tenure.App(url_of(tmp_path)).store
    await store.open(migrate=True)
    try:
        bad = Run(
            kind="tick",
            key="a",
            worker="w1",
            term=1,
            scheduled_at=1.0,
            started_at=1.0,
            ended_at=1.0,
            outcome=Outcome.OK,
            error=None,
        )
        object.__setattr__(bad, "worker", None)  # NOT NULL in the table
        with pytest.raises(StoreError):
            await store.record_runs([bad], [])
    finally:
        await store.close()


# -- j: runs cancelled by a stop are not "lease lost" -----------------------------------------


async def test_runs_cancelled_by_a_stop_are_recorded_as_cancelled(apps: Apps) -> None:
    app, admin = apps
    started = asyncio.Event()

    @app.task("hold", every=0.2, timeout=60.0)
    async def hold(ctx: tenure.Context) -> None:
        started.set()
        await asyncio.Event().wait()

    await app.open()
    await admin.add_task("hold", "a")
    async with running(app, grace=0.2):
        await asyncio.wait_for(started.wait(), 10)
    runs = await runs_of(admin, "hold")
    assert [(r.outcome, r.error) for r in runs] == [(Outcome.CANCELLED, "cancelled: worker stopping")]


# -- a task let go of while parked -------------------------------------------------------------


def last_slot_of(skipped: Run) -> float:
    """The last slot a ``skipped`` record stands for (a streak names it in its error)."""
    assert skipped.error is not None
    found = re.search(r"\((\d+) slots in a row, the last (\S+)\)$", skipped.error)
    return skipped.scheduled_at if found is None else datetime.fromisoformat(found.group(2)).timestamp()


async def test_slots_passed_after_a_task_was_let_go_of_are_not_recorded_as_its_skipped_slots(
    apps: Apps, caplog: pytest.LogCaptureFixture
) -> None:
    """A task removed while its run goes on is dropped by the worker at once, but the run
    ends later: the slots that passed after the drop are the next owner's (or nobody's),
    and the worker must not record them as slots it skipped. Before the fix its record of
    the streak ran to the run's end."""
    app, admin = apps
    started, go, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    every = 0.1

    @app.task("hold", every=every, timeout=60.0)
    async def hold(ctx: tenure.Context) -> None:
        started.set()
        try:
            await go.wait()
        finally:
            ended.set()

    await app.open()
    await admin.add_task("hold", "a")
    caplog.set_level(logging.INFO, logger="tenure.worker")

    def dropped() -> bool:
        return any("task removed or no longer ours" in r.getMessage() for r in caplog.records)

    async with running(app):
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(5 * every)  # slots pass while the run goes on: the task parks
        await admin.remove("hold", "a")
        await wait_for(lambda: _true(dropped()), "the worker to drop the removed task")
        dropped_by = time.time()  # SQLite: the database's clock is this host's
        await asyncio.sleep(10 * every)  # slots that are no longer the worker's
        go.set()
        await asyncio.wait_for(ended.wait(), 10)  # its record is made in the same step
    skipped = [r for r in await runs_of(admin, "hold") if r.outcome is Outcome.SKIPPED]
    assert skipped, "the slots passed while the task was still held were not recorded"
    # (Half a period of slack for the worker's estimate of the database's clock; before
    # the fix the record ran ten periods past the drop.)
    assert max(last_slot_of(r) for r in skipped) <= dropped_by + every / 2, skipped


async def test_a_slot_waiting_for_a_place_does_not_start_while_its_task_is_released(
    apps: Apps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task handed to a newcomer can have a slot waiting for a place (the worker at its
    cap). If a place freed while the release statement was on its way, that slot started
    here on a task already the newcomer's: a run the worker had given away. The slot is
    now given up, and recorded as such."""
    app, admin = apps
    joiner = tenure.App(app.store_url)
    ran: list[tuple[str, str]] = []
    hold = asyncio.Event()
    a_ended = asyncio.Event()

    async def handler(ctx: tenure.Context) -> None:
        ran.append((ctx.key, ctx.worker_id))
        if ctx.key == "a" and ctx.worker_id == "w1":
            try:
                await hold.wait()
            finally:
                a_ended.set()

    for each in (app, joiner):
        each.task("k", every=0.2, timeout=60.0)(handler)
    await app.open()
    await joiner.open()
    await admin.add_task("k", "a")
    released = asyncio.Event()
    release_tasks = app.store.release_tasks

    async def release_while_a_place_frees(worker_id: str, slots: Any) -> int:
        # The place b waits for frees while its release is on its way.
        hold.set()
        await a_ended.wait()
        for _ in range(5):
            await asyncio.sleep(0)  # the run's end, and the admission it makes, happen now
        freed = await release_tasks(worker_id, slots)
        released.set()
        return freed

    monkeypatch.setattr(app.store, "release_tasks", release_while_a_place_frees)
    try:
        async with running(app, concurrency=1):
            await wait_for(lambda: _true(("a", "w1") in ran), "a to run on w1")
            await admin.add_task("k", "b")
            # b's slots come while a holds the worker's only place: they wait.
            await wait_for(lambda: _true(app_waiting(app) > 0), "b to wait for a place")
            async with worker_in_loop(joiner, tenure.Settings(worker_id="w2", **FAST)):
                await asyncio.wait_for(released.wait(), 10)
                await asyncio.sleep(0.5)
                # (Once w2 stops, b comes back to w1, and runs there rightly.)
                assert ("b", "w1") not in ran, "b started on w1 after it was released"
        gave_up = [
            r
            for r in await runs_of(admin, "k")
            if r.key == "b" and r.outcome is Outcome.SKIPPED and "never started" in (r.error or "")
        ]
        assert [r.worker for r in gave_up] == ["w1"], "b's waiting slot was not recorded as given up, once"
    finally:
        await joiner.close()


def app_waiting(app: tenure.App) -> float:
    return tenure.metrics.REGISTRY.get_sample_value("tenure_runs_waiting") or 0.0


# -- a plain disable lets the run in progress commit -------------------------------------------


async def test_a_plain_disable_lets_the_run_in_progress_finish_and_commit(apps: Apps) -> None:
    """``disable`` without ``cancel`` promises that a run in progress ends on its own and
    commits; the owner released the task at its next poll all the same, and the run's
    commit was refused (recorded ``lease_lost``). It is released once the run ends."""
    app, admin = apps
    started = asyncio.Event()
    disabled = asyncio.Event()
    commits: list[str] = []

    @app.task("slow", every=3600.0, timeout=10.0)
    async def slow(ctx: tenure.Context) -> None:
        started.set()
        await disabled.wait()
        await asyncio.sleep(1.0)  # a few of the worker's polls
        async with ctx.fenced():
            pass
        commits.append(ctx.key)

    await app.open()
    await admin.add_task("slow", "a")
    await admin.trigger("slow", "a")
    async with running(app):
        await asyncio.wait_for(started.wait(), 10)
        await admin.disable("slow", "a")
        disabled.set()

        async def released() -> bool:
            return (await admin.get_task("slow", "a")).owner is None

        async def recorded() -> bool:
            return bool(await runs_of(admin, "slow"))

        await wait_for(released, "the task released once its run ended")
        await wait_for(recorded, "the run's record")
        assert commits == ["a"], "the run's commit was refused"
        (run,) = await runs_of(admin, "slow")
        assert run.outcome is Outcome.OK, run
        assert not (await admin.get_task("slow", "a")).enabled


# -- a trigger asked while the task runs -------------------------------------------------------


async def test_a_trigger_asked_while_the_task_runs_runs_once_that_run_ends(apps: Apps) -> None:
    """A trigger that reached the owner during a run of the task was recorded as a skipped
    slot and never ran (while ``tasks show`` went on saying it was asked)."""
    app, admin = apps
    first_started = asyncio.Event()
    slots: list[tuple[float, bool]] = []

    @app.task("slow", every=3600.0, timeout=10.0)
    async def slow(ctx: tenure.Context) -> None:
        slots.append((ctx.scheduled_at, first_started.is_set()))
        if not first_started.is_set():
            first_started.set()
            await asyncio.sleep(1.0)  # a few of the worker's polls

    await app.open()
    await admin.add_task("slow", "a")
    first = (await admin.trigger("slow", "a")).trigger_at
    async with running(app):
        await asyncio.wait_for(first_started.wait(), 10)
        second = (await admin.trigger("slow", "a")).trigger_at
        assert second is not None

        async def answered() -> bool:
            return len(slots) == 2 and (await admin.get_task("slow", "a")).trigger_at is None

        await wait_for(answered, "the second trigger run and answered")
    assert slots == [(first, False), (second, True)], slots


# -- a stop does not wait for the listener -----------------------------------------------------


async def test_a_stopping_worker_does_not_wait_for_its_listener(apps: Apps, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener (SQLite's wake file here) waits until it is cancelled, and the stop
    waited LOOPS_STOP_WITHIN for it before cancelling it: every stop took 3 s, whatever the
    grace. Made a minute here, a stop that waited for it would not end within 20 s."""
    monkeypatch.setattr(supervisor, "LOOPS_STOP_WITHIN", 60.0)
    app, admin = apps
    await ticking(apps, 3600.0)

    async def owned() -> bool:
        return (await admin.get_task("tick", "a")).owner == "w1"

    async with running(app) as worker:
        await wait_for(owned, "the worker to claim the task")
        worker.cancel()  # a forced stop: the same way out as a graceful one, without grace
        done, _ = await asyncio.wait([worker], timeout=20)
        assert worker in done, "the stop waited for the listener"
    assert (await admin.get_task("tick", "a")).owner is None
