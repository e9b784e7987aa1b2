"""The run recorder writes once per poll, however busy the worker (issue 12, item 4).

A flush writes what was buffered when it began; runs that end while it writes wait for
the next one. When it wrote until the buffer was empty, a worker under load never left
the loop (runs end all the time), and flushed back to back a few dozen records a
statement: at 3,000 runs a second tenure's statements cost PostgreSQL five times what
the same records cost in one statement per poll. Driven on a real SQLite store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

import tenure
from support.storeapi import LONG_TTL, add, opened, register, task_of
from tenure.kinds import TaskKind
from tenure.models import Outcome, Run, SlotDone
from tenure.schedule import Every, Misfire
from tenure.store import Store
from tenure.worker import recorder as recorder_module
from tenure.worker.lifecycle import Lifecycle
from tenure.worker.owned import OwnedTask, Shared, TaskId, WorkerLog
from tenure.worker.recorder import RunRecorder


async def recorder_of_ticks(store: Store, keys: str) -> tuple[RunRecorder, list[OwnedTask]]:
    """Worker w1 owning a ``tick`` task (every 1 s) for each of ``keys``, and its recorder."""
    await register(store, "w1", ttl=LONG_TTL)
    for key in keys:
        await add(store, "tick", key, schedule=Every(1.0))
    claims = await store.claim_tasks("w1", kinds=["tick"], limit=len(keys))
    kind = TaskKind(kind="tick", handler=lambda ctx: None, schedule=Every(1.0), timeout=None, misfire=Misfire.SKIP)
    tasks = [OwnedTask(task=c.task, kind=kind, term=c.task.term, next_slot=0.0) for c in claims]
    owned: dict[TaskId, OwnedTask] = {ot.id: ot for ot in tasks}
    shared = Shared(
        store=store, settings=tenure.Settings(), worker_id="w1", life=Lifecycle(), log=WorkerLog("w1"), owned=owned
    )
    return RunRecorder(shared, lease=cast(Any, None)), tasks


def writes_of(store: Store) -> list[tuple[list[Run], list[SlotDone]]]:
    """Every ``record_runs`` call on ``store`` from now on, as it is made."""
    writes: list[tuple[list[Run], list[SlotDone]]] = []
    record_runs = store.record_runs

    async def recording(runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        writes.append((list(runs), list(slots)))
        await record_runs(runs, slots)

    store.record_runs = recording  # type: ignore[method-assign]
    return writes


async def test_a_flush_writes_what_was_buffered_and_leaves_runs_ending_meanwhile_for_the_next(
    tmp_path: Path,
) -> None:
    async with opened(f"sqlite:///{tmp_path / 'r.db'}", migrate=True) as store:
        recorder, (ot,) = await recorder_of_ticks(store, "a")

        def run_ends(slot: float) -> None:
            ot.last_slot = slot
            recorder.record(ot, slot, slot, Outcome.OK, None, elapsed=0.01)

        writes: list[tuple[list[float], list[float]]] = []
        record_runs = store.record_runs

        async def busy_worker(runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
            # Each write takes a while, and a run ends during it, as under load.
            writes.append(([r.scheduled_at for r in runs], [s.slot for s in slots]))
            run_ends(100.0 + len(writes))
            await record_runs(runs, slots)

        store.record_runs = busy_worker  # type: ignore[method-assign]
        run_ends(100.0)
        await asyncio.wait_for(recorder.flush(), 10)
        assert writes == [([100.0], [100.0])], "the flush went on writing the runs that ended while it wrote"
        assert (await task_of(store, "tick", "a")).last_slot == 100.0
        # The run that ended meanwhile, and its slot, go with the next flush.
        await asyncio.wait_for(recorder.flush(), 10)
        assert writes[1] == ([101.0], [101.0])
        assert (await task_of(store, "tick", "a")).last_slot == 101.0
        assert [r.scheduled_at for r in await store.list_runs(kind="tick")] == [101.0, 100.0]


async def test_a_slot_its_fenced_commit_recorded_is_not_written_again_and_a_trigger_still_is(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'r.db'}", migrate=True) as store:
        recorder, (ot,) = await recorder_of_ticks(store, "a")
        writes = writes_of(store)

        async def run(slot: float, *, commit: bool, triggered: bool = False) -> None:
            ctx = tenure.Context(
                store=store, worker_id="w1", kind="tick", key="a", params={}, token=ot.term, scheduled_at=slot
            )
            if commit:
                async with ctx.fenced() as tx:
                    await tx.execute("CREATE TABLE IF NOT EXISTS seen (slot REAL)")
            ot.last_slot = slot
            recorder.record(
                ot, slot, slot, Outcome.OK, None, elapsed=0.01, triggered=triggered, slot_recorded=ctx.slot_recorded
            )
            await asyncio.wait_for(recorder.flush(), 10)

        await run(100.0, commit=True)
        assert writes[-1][1] == [], "the slot the fenced commit recorded was written again"
        assert (await task_of(store, "tick", "a")).last_slot == 100.0, "the fenced commit did not record its slot"
        await run(101.0, commit=False)
        assert [s.slot for s in writes[-1][1]] == [101.0], "a run that committed nothing must have its slot written"
        await run(102.0, commit=True, triggered=True)
        assert [(s.slot, s.triggered) for s in writes[-1][1]] == [(102.0, True)], "a trigger is answered by the flush"
        assert (await task_of(store, "tick", "a")).last_slot == 102.0
        assert [r.scheduled_at for r in await store.list_runs(kind="tick")] == [102.0, 101.0, 100.0]


async def test_finished_slots_are_written_in_chunks_like_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush writes at most FLUSH_CHUNK finished slots a statement, as it does run records:
    10,000 in one statement held a worker's loop 35 ms while PostgreSQL's batch was built."""
    monkeypatch.setattr(recorder_module, "FLUSH_CHUNK", 3)
    async with opened(f"sqlite:///{tmp_path / 'r.db'}", migrate=True) as store:
        recorder, tasks = await recorder_of_ticks(store, "abcdefg")
        writes = writes_of(store)
        for ot in tasks:
            ot.last_slot = 100.0
            recorder.record(ot, 100.0, 100.0, Outcome.OK, None, elapsed=0.01)
        await asyncio.wait_for(recorder.flush(), 10)
        assert [(len(runs), len(slots)) for runs, slots in writes] == [(3, 3), (3, 3), (1, 1)]
        assert {t.last_slot for t in await store.list_tasks(kind="tick")} == {100.0}
