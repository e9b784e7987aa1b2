"""Handlers written by people who have not read the docs: what they do must not stop the
worker, leak a commit past the end of their run, or make the record lie.

Each runs a real worker in this process (``App.run_worker``) on a real SQLite store and
observes it through the store; each failed before its fix (found by a hunt for careless
handlers, round 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import tenure
from support.storeapi import worker_in_loop
from tenure.models import Outcome, Run

FAST: dict[str, Any] = {"lease_ttl": 2.0, "heartbeat": 0.4, "poll": 0.2, "trust_margin": 0.3, "grace": 0.5}


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[tuple[tenure.App, tenure.App]]:
    """The App whose worker a test runs, and an admin App on the same SQLite store."""
    url = f"sqlite:///{tmp_path / 'w.db'}?synchronous=normal"
    app, admin = tenure.App(url), tenure.App(url)
    try:
        yield app, admin
    finally:
        await admin.close()
        await app.close()


def running(app: tenure.App) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return worker_in_loop(app, tenure.Settings(worker_id="w1", **FAST))


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, worker: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + 10.0
    while not await check():
        assert not worker.done(), f"the worker ended while waiting for {what}: {worker}"
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.02)


async def runs_of(admin: tenure.App, key: str) -> list[Run]:
    return list(reversed(await admin.list_runs(kind="h", key=key, limit=100)))


@contextlib.asynccontextmanager
async def one_run(app: tenure.App, admin: tenure.App) -> AsyncIterator[Run]:
    """The hourly task h/a run once, now (a trigger), by ``app``'s worker: its record, while
    the worker still runs."""
    await app.open()
    await admin.add_task("h", "a")
    await admin.trigger("h", "a")
    async with running(app) as worker:

        async def recorded() -> bool:
            return bool(await runs_of(admin, "a"))

        await wait_for(recorded, "the run's record", worker)
        (run,) = await runs_of(admin, "a")
        yield run


class Custom(BaseException):
    pass


RAISED: dict[str, BaseException] = {
    "exit": SystemExit(3),
    "interrupt": KeyboardInterrupt(),
    "generator-exit": GeneratorExit(),
    "custom": Custom("the app's own BaseException"),
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_handler_raising_a_base_exception_is_recorded_and_the_worker_goes_on(
    apps: tuple[tenure.App, tenure.App], sync: bool
) -> None:
    """``sys.exit()`` in a handler ended the worker process (exit code 3, logged as a
    stop), ``KeyboardInterrupt`` too; another BaseException tore down every run in the
    worker's task group and crashed it. Now each is the run's error."""
    app, admin = apps
    calls: dict[str, int] = dict.fromkeys(RAISED, 0)

    def raise_it(ctx: tenure.Context) -> None:
        calls[ctx.key] += 1
        raise RAISED[ctx.key]

    if sync:
        app.task("h", every=0.2)(raise_it)
    else:

        @app.task("h", every=0.2)
        async def h(ctx: tenure.Context) -> None:
            raise_it(ctx)

    await app.open()
    for key in RAISED:
        await admin.add_task("h", key)
    async with running(app) as worker:

        async def each_recorded_twice() -> bool:
            runs = [await runs_of(admin, key) for key in RAISED]
            return all(len(r) >= 2 for r in runs)

        await wait_for(each_recorded_twice, "two records of each task", worker)
        assert not worker.done()
    for key in RAISED:
        runs = await runs_of(admin, key)
        assert {r.outcome for r in runs} == {Outcome.ERROR}, (key, runs)
        name = type(RAISED[key]).__name__
        assert all(r.error is not None and name in r.error.split(":")[0] for r in runs), (key, runs[0].error)


async def test_a_run_whose_error_the_store_could_not_keep_is_recorded_and_the_worker_goes_on(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """An exception naming a file whose name is not UTF-8 (a lone surrogate) made the
    recorder's flush raise, and the worker stopped ("the worker's run recorder crashed")."""
    app, admin = apps
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")

    @app.task("h", every=0.2)
    async def h(ctx: tenure.Context) -> None:
        raise FileNotFoundError(f"no such file: {name}")

    await app.open()
    await admin.add_task("h", "a")
    async with running(app) as worker:

        async def recorded_twice() -> bool:
            return len(await runs_of(admin, "a")) >= 2

        await wait_for(recorded_twice, "two records", worker)
    runs = await runs_of(admin, "a")
    assert runs[0].error == "FileNotFoundError: no such file: caf\\udce9.csv"


async def test_a_handler_that_catches_its_timeout_is_recorded_as_timed_out(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """Catching the timeout's cancellation and returning was recorded ``ok``; catching it
    and then trying to commit (refused) was recorded as a lost lease, and logged so."""
    app, admin = apps

    @app.task("h", every=3600.0, timeout=0.2)
    async def h(ctx: tenure.Context) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            if ctx.key == "commits":
                async with ctx.fenced():
                    pass

    await app.open()
    for key in ("returns", "commits"):
        await admin.add_task("h", key)
        await admin.trigger("h", key)  # hourly: run now, once
    async with running(app) as worker:

        async def both_recorded() -> bool:
            return all([await runs_of(admin, "returns"), await runs_of(admin, "commits")])

        await wait_for(both_recorded, "a record of each", worker)
    (returned,) = await runs_of(admin, "returns")
    assert returned.outcome is Outcome.TIMEOUT, returned
    assert returned.error == "cancelled after its timeout of 0.2s; the handler caught it and returned"
    (committed,) = await runs_of(admin, "commits")
    assert committed.outcome is Outcome.TIMEOUT, committed
    assert committed.error is not None
    assert committed.error.startswith("cancelled after its timeout of 0.2s; then "), committed.error


async def test_nothing_commits_through_a_run_that_has_ended(apps: tuple[tenure.App, tenure.App]) -> None:
    """A handler that leaves work behind (a task it started, its context kept in a global)
    could still commit through the ended run, even while the task's next run went on; and a
    fenced block left open held SQLite's only write lock until the worker fenced itself."""
    app, admin = apps
    kept: list[tenure.Context] = []
    outcomes: list[str] = []
    left_behind: list[asyncio.Task[None]] = []

    async def commit_later(ctx: tenure.Context) -> None:
        try:
            async with ctx.fenced() as tx:
                await asyncio.sleep(0.5)  # the run ends meanwhile
                await tx.execute("SELECT 1")
            outcomes.append("committed")
        except tenure.LeaseLost as exc:
            outcomes.append(f"refused: {exc}")
        except tenure.TransactionClosed as exc:
            outcomes.append(f"closed: {exc}")

    @app.task("h", every=3600.0)
    async def h(ctx: tenure.Context) -> None:
        kept.append(ctx)
        left_behind.append(asyncio.create_task(commit_later(ctx)))
        await asyncio.sleep(0.1)  # the background task opens its block first

    await app.open()
    await admin.add_task("h", "a")
    await admin.trigger("h", "a")  # hourly: run now, once
    async with running(app) as worker:

        async def left_behind_ended() -> bool:
            return bool(left_behind) and left_behind[0].done()

        await wait_for(left_behind_ended, "the work left behind", worker)
        with pytest.raises(tenure.LeaseLost, match="has ended; not committing"):
            async with kept[0].fenced():
                pass
        (run,) = await runs_of(admin, "a")
        assert run.outcome is Outcome.OK
    assert len(outcomes) == 1, outcomes
    assert not outcomes[0].startswith("committed"), outcomes
    assert "had ended" in outcomes[0], outcomes


async def test_a_handler_cannot_move_its_own_slot(apps: tuple[tenure.App, tenure.App]) -> None:
    """``ctx.scheduled_at += 3600`` ("postpone myself") was recorded by the fence as the
    task's last slot, and its next owner skipped the task for an hour. The run's identity
    is read-only now: the assignment is the run's error, and nothing is recorded for it."""
    app, admin = apps

    @app.task("h", every=3600.0)
    async def h(ctx: tenure.Context) -> None:
        ctx.scheduled_at += 3600  # type: ignore[misc]
        async with ctx.fenced():
            pass

    async with one_run(app, admin) as run:
        pass
    assert run.outcome is Outcome.ERROR, run
    assert run.error is not None
    assert "AttributeError" in run.error, run
    task = await admin.get_task("h", "a")
    assert task.last_slot is not None
    assert task.last_slot <= run.scheduled_at + 1, (task.last_slot, run.scheduled_at)


async def test_fenced_blocks_cannot_nest(apps: tuple[tenure.App, tenure.App]) -> None:
    """A block opened inside another waited for the outer one's lock (SQLite's write lock
    here): lease renewals failed, the worker fenced itself and dropped every task. Now the
    inner block is refused at once, by name, and the outer one keeps nothing."""
    app, admin = apps
    errors: list[BaseException] = []

    @app.task("h", every=3600.0, timeout=5.0)
    async def h(ctx: tenure.Context) -> None:
        try:
            async with ctx.fenced(), ctx.fenced():  # nested
                pass
        except BaseException as exc:
            errors.append(exc)
            raise

    async with one_run(app, admin) as run:
        assert run.outcome is Outcome.ERROR, run
        assert run.error is not None
        assert "blocks cannot nest" in run.error, run.error
        assert (await admin.get_task("h", "a")).owner == "w1", "the worker let its task go"
    assert len(errors) == 1
    assert isinstance(errors[0], tenure.FencedTransactionError)


async def test_a_sync_handler_cannot_nest_blocks_or_change_the_store_inside_one(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """The checks above looked at the asyncio task, and a sync handler's block is run by
    tasks the loop makes for its thread: a nested ``fenced_sync()`` waited for the outer
    block's lock, and so did an ``App`` call sent to the loop from inside the block. Now
    both are refused at once, as in an async handler, and the outer block still commits."""
    app, admin = apps
    loop = asyncio.get_running_loop()
    refused: list[BaseException] = []

    @app.task("h", every=3600.0, timeout=5.0)
    def h(ctx: tenure.Context) -> None:
        with ctx.fenced_sync() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS notes (note TEXT)")
            tx.execute("INSERT INTO notes (note) VALUES ('kept')")
            try:
                with ctx.fenced_sync():
                    pass
            except tenure.FencedTransactionError as exc:
                refused.append(exc)
            try:
                asyncio.run_coroutine_threadsafe(app.add_task("h", "b"), loop).result(5)
            except tenure.FencedBlockOpen as exc:
                refused.append(exc)

    async with one_run(app, admin) as run:
        assert run.outcome is Outcome.OK, run
    assert len(refused) == 2, refused
    assert "blocks cannot nest" in str(refused[0]), refused[0]
    assert "App.add_task() was called inside the fenced block of h/a" in str(refused[1]), refused[1]
    assert [t.key for t in await admin.list_tasks(kind="h")] == ["a"]
    assert (await admin.get_task("h", "a")).last_slot == run.scheduled_at, "the outer block did not commit"


async def test_a_cancelled_sync_run_keeps_its_task_until_its_thread_ends(apps: tuple[tenure.App, tenure.App]) -> None:
    """A thread cannot be stopped: a sync run cancelled by ``pause --cancel`` ended at
    once, its thread did not, and after the resume the next run's thread ran beside it
    (same task, same worker, same token). The next run now waits for the thread."""
    app, admin = apps
    lock = threading.Lock()
    now_running = [0]
    most = [0]
    ended = threading.Event()

    @app.task("h", every=0.2, timeout=30.0)
    def h(ctx: tenure.Context) -> None:
        with lock:
            now_running[0] += 1
            most[0] = max(most[0], now_running[0])
        try:
            if not ended.is_set():
                time.sleep(1.5)  # the first run: cancelled meanwhile, carries on
        finally:
            with lock:
                now_running[0] -= 1
            ended.set()

    await app.open()
    await admin.add_task("h", "a")
    async with running(app) as worker:

        async def a_run_started() -> bool:
            return now_running[0] == 1

        await wait_for(a_run_started, "the first run", worker)
        await admin.pause_kind("h", cancel=True)

        async def cancelled() -> bool:
            return any(r.outcome is Outcome.CANCELLED for r in await runs_of(admin, "a"))

        await wait_for(cancelled, "the run recorded as cancelled", worker)
        await admin.resume_kind("h")

        async def ran_again() -> bool:
            return len([r for r in await runs_of(admin, "a") if r.outcome is Outcome.OK]) >= 2

        await wait_for(ran_again, "runs after the thread ended", worker)
    assert most[0] == 1, f"{most[0]} threads of the task ran at once"


async def test_app_calls_that_change_the_store_are_refused_inside_a_fenced_block(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """``app.add_task()`` or ``app.trigger()`` inside a fenced block waited for the block's
    own write lock on SQLite until the run timed out (and on a server, a change to the
    run's own task waits for its row). Now each is refused at once, by name, and changes
    nothing; reads are fine, and the block still commits; after the block the call works."""
    app, admin = apps
    refused: list[BaseException] = []

    @app.task("h", every=3600.0, timeout=5.0)
    async def h(ctx: tenure.Context) -> None:
        if ctx.key != "a":
            return
        async with ctx.fenced() as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS notes (note TEXT)")
            await tx.execute("INSERT INTO notes (note) VALUES ('kept')")
            assert (await app.get_task("h", "a")).owner == ctx.worker_id  # a read is fine
            for call in (app.add_task("h", "b"), app.trigger("h", "a"), app.disable("h", "a")):
                try:
                    await call
                except tenure.FencedBlockOpen as exc:
                    refused.append(exc)
        await app.add_task("h", "c")  # after the block

    async with one_run(app, admin) as run:
        assert run.outcome is Outcome.OK, run
    assert [str(e).split("(")[0] for e in refused] == ["App.add_task", "App.trigger", "App.disable"]
    assert all("inside the fenced block of h/a" in str(e) for e in refused), refused[0]
    keys = sorted(t.key for t in await admin.list_tasks(kind="h"))
    assert keys == ["a", "c"], keys
    assert (await admin.get_task("h", "a")).enabled


async def test_an_async_handler_that_returns_its_work_unawaited_has_it_run(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """``return work(ctx)`` in an ``async def`` handler, the ``await`` forgotten: the work
    never ran, Python warned that a coroutine was never awaited, and the run was recorded
    ``ok``. Now the work runs as part of the run (as a sync handler's returned awaitable
    already did), within its timeout, and its error is the run's."""
    app, admin = apps
    done: list[str] = []

    async def work(ctx: tenure.Context) -> None:
        await asyncio.sleep(0)
        if ctx.key == "bad":
            raise ValueError("the work failed")
        done.append(ctx.key)

    @app.task("h", every=3600.0, timeout=5.0)
    async def h(ctx: tenure.Context) -> Any:
        return work(ctx)

    await app.open()
    for key in ("good", "bad"):
        await admin.add_task("h", key)
        await admin.trigger("h", key)
    async with running(app) as worker:

        async def recorded() -> bool:
            return all([await runs_of(admin, key) for key in ("good", "bad")])

        await wait_for(recorded, "both runs' records", worker)
    assert done == ["good"]
    ((good,), (bad,)) = [await runs_of(admin, key) for key in ("good", "bad")]
    assert good.outcome is Outcome.OK, good
    assert bad.outcome is Outcome.ERROR, bad
    assert bad.error is not None
    assert "the work failed" in bad.error, bad


async def test_a_cancelled_error_nothing_asked_for_is_the_handlers_error(apps: tuple[tenure.App, tenure.App]) -> None:
    """A handler that raised ``CancelledError`` itself, or awaited a task someone else had
    cancelled, was recorded ``cancelled``, as if an operator or the worker had stopped it.
    Now it is the run's error, saying so; a real timeout is still ``timeout``."""
    app, admin = apps

    @app.task("h", every=3600.0, timeout=0.5)
    async def h(ctx: tenure.Context) -> None:
        if ctx.key == "raises":
            raise asyncio.CancelledError
        if ctx.key == "awaits":
            other = asyncio.create_task(asyncio.sleep(10))
            asyncio.get_running_loop().call_soon(other.cancel)
            await other
        await asyncio.sleep(10)  # "slow": past its timeout

    keys = ("raises", "awaits", "slow")
    await app.open()
    for key in keys:
        await admin.add_task("h", key)
        await admin.trigger("h", key)
    async with running(app) as worker:

        async def recorded() -> bool:
            return all([await runs_of(admin, key) for key in keys])

        await wait_for(recorded, "every run's record", worker)
    (raises,), (awaits,), (slow,) = [await runs_of(admin, key) for key in keys]
    for run in (raises, awaits):
        assert run.outcome is Outcome.ERROR, run
        assert run.error is not None
        assert "though its run was not cancelled" in run.error, run
    assert slow.outcome is Outcome.TIMEOUT, slow


async def test_a_stop_is_not_held_by_a_handler_that_swallows_its_cancellation(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """Runs lived in a task group, whose exit waits for all of them: a handler whose retry
    loop caught every cancellation held the worker's stop forever (after its tasks were
    released). Now the worker leaves without it, records the run as cancelled and left
    behind, and the run can no longer commit."""
    app, admin = apps
    release = asyncio.Event()
    started = asyncio.Event()
    refused: list[BaseException] = []

    @app.task("h", every=3600.0, timeout=60.0)
    async def h(ctx: tenure.Context) -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(BaseException):  # the careless part
                await asyncio.sleep(0.05)
        try:
            async with ctx.fenced():
                pass
        except tenure.LeaseLost as exc:
            refused.append(exc)

    await app.open()
    await admin.add_task("h", "a")
    await admin.trigger("h", "a")
    try:
        async with running(app) as worker:
            await asyncio.wait_for(started.wait(), 10)
            worker.cancel()
            done, _ = await asyncio.wait([worker], timeout=15)
            assert worker in done, "the worker's stop waited for a run that would not end"
        (run,) = await runs_of(admin, "a")
        assert run.outcome is Outcome.CANCELLED, run
        assert run.error is not None
        assert "the worker left without it" in run.error, run.error
        assert (await admin.get_task("h", "a")).owner is None
    finally:
        release.set()
        await asyncio.sleep(0.2)
    assert len(refused) == 1, "the run left behind could still commit"


async def test_a_sync_run_stuck_past_its_timeout_is_recorded_as_timed_out_at_once(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """A sync handler stuck in a call without a timeout (it never looks at
    ``ctx.is_cancelled``): its run ended only with its thread, so it was recorded at the
    worker's stop, as "cancelled: worker stopping", and its timeout only logged. Now the
    run ends at its timeout, recorded as timed out, and the slots that come while its
    thread goes on are skipped, never overlapped."""
    app, admin = apps
    held = threading.Event()
    threads = 0

    @app.task("h", every=0.5, timeout=0.3)
    def h(ctx: tenure.Context) -> None:
        nonlocal threads
        threads += 1
        held.wait(20)

    await app.open()
    await admin.add_task("h", "a")
    try:
        async with running(app) as worker:

            async def outcome_recorded(outcome: Outcome) -> bool:
                return outcome in {r.outcome for r in await runs_of(admin, "a")}

            await wait_for(lambda: outcome_recorded(Outcome.TIMEOUT), "the stuck run recorded as timed out", worker)
            (first,) = await runs_of(admin, "a")
            assert first.ended_at - first.started_at < 2.0, first
            await asyncio.sleep(1.5)  # three more slots while the thread is stuck
            assert threads == 1, "a second thread of the task started beside the stuck one"
            held.set()
            await wait_for(lambda: outcome_recorded(Outcome.OK), "a run once the thread is free", worker)
            outcomes = [r.outcome for r in await runs_of(admin, "a")]
            assert outcomes[0] is Outcome.TIMEOUT, outcomes
            assert Outcome.SKIPPED in outcomes, outcomes
    finally:
        held.set()


async def test_a_trigger_waits_for_the_thread_of_a_sync_run_past_its_timeout(
    apps: tuple[tenure.App, tenure.App],
) -> None:
    """A trigger that came while only the thread of a timed-out (or cancelled) sync run was
    still going was recorded as a skipped slot and never ran. It now waits for the thread,
    as a trigger during a run waits for the run."""
    app, admin = apps
    held = threading.Event()
    calls = 0

    @app.task("h", every=3600.0, timeout=0.3)
    def h(ctx: tenure.Context) -> None:
        nonlocal calls
        calls += 1
        held.wait(20)

    await app.open()
    await admin.add_task("h", "a")
    await admin.trigger("h", "a")  # hourly: the first run now; it gets stuck
    try:
        async with running(app) as worker:

            async def outcomes() -> list[Outcome]:
                return [r.outcome for r in await runs_of(admin, "a")]

            async def timed_out() -> bool:
                return Outcome.TIMEOUT in await outcomes()

            await wait_for(timed_out, "the stuck run recorded as timed out", worker)
            await admin.trigger("h", "a")  # while its thread still sleeps
            await asyncio.sleep(1.0)  # a few polls: the trigger is seen, and waits
            assert calls == 1, "the trigger ran beside the stuck thread"
            held.set()

            async def ran_again() -> bool:
                return Outcome.OK in await outcomes()

            await wait_for(ran_again, "the trigger's run once the thread ended", worker)
            assert calls == 2
    finally:
        held.set()


async def test_a_trigger_waits_for_a_run_of_an_earlier_ownership(apps: tuple[tenure.App, tenure.App]) -> None:
    """A run that swallowed its cancellation outlives its ownership: released (``disable
    --cancel``) and claimed again by the same worker, the task's new ownership waits for it.
    A trigger that waited so was re-queued only for the run's own ownership, so it, and
    every later slot of the task, stayed waiting for good. It now runs once the old run
    ends. (Another task's runs keep ending meanwhile: each end admits what waits.)"""
    app, admin = apps
    release = asyncio.Event()
    calls = 0

    @app.task("h", every=3600.0, timeout=60.0)
    async def h(ctx: tenure.Context) -> None:
        nonlocal calls
        if ctx.key == "busy":
            return
        calls += 1
        while not release.is_set():
            with contextlib.suppress(BaseException):  # the careless part
                await asyncio.sleep(0.05)

    await app.open()
    await admin.add_task("h", "a")
    await admin.add_task("h", "busy", every=0.1)
    await admin.trigger("h", "a")
    try:
        async with running(app) as worker:

            async def started() -> bool:
                return calls == 1

            await wait_for(started, "the first run", worker)
            await admin.disable("h", "a", cancel=True)  # freed at once; its run goes on
            await asyncio.sleep(0.5)  # a few polls: the worker lets it go
            await admin.enable("h", "a")

            async def owned_again() -> bool:
                return (await admin.get_task("h", "a")).owner == "w1"

            await wait_for(owned_again, "the task claimed again", worker)
            await admin.trigger("h", "a")
            await asyncio.sleep(0.5)  # a few polls: the trigger is seen, and waits
            assert calls == 1, "the trigger ran beside the run of the earlier ownership"
            release.set()

            async def ran_again() -> bool:
                return calls == 2

            await wait_for(ran_again, "the trigger's run once the earlier run ended", worker)
    finally:
        release.set()
