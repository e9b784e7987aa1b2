"""The run recorder: run records and finished slots, buffered in memory and written in
one transaction per ``poll`` (no write per run on the hot path), plus housekeeping.

Slots skipped in a row by one task (its run still going, or waiting past its next slot
at capacity) make one ``skipped`` record that says how many, written when the task starts
a run again or leaves this worker (or after :data:`SKIP_STREAK_MAX_AGE`): past capacity most
slots are skipped, and a row for each cost the database more than the runs themselves.

Its loop lives from the join until the worker has left (``CLOSED``); the supervisor
flushes once more before leaving.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tenure import metrics
from tenure.errors import StoreError
from tenure.models import Outcome, Run, SlotDone, Task, storable_error
from tenure.schedule import Unreadable, latest_slot
from tenure.worker.lifecycle import WorkerState
from tenure.worker.owned import OwnedTask, Part, Shared, TaskId

if TYPE_CHECKING:
    from tenure.worker.lease import LeaseKeeper

#: Most run records kept in memory while the store cannot take them; older ones are dropped.
MAX_BUFFERED_RUNS = 200_000
#: How often run retention and dead-worker clean-up happen (any worker may do it).
HOUSEKEEPING_EVERY = 300.0
#: Most run records written in one transaction: a big backlog goes in several, so that
#: preparing one never holds the event loop long.
FLUSH_CHUNK = 2_000
#: A streak of skipped slots older than this is written even though the task has not run
#: again, so that a task that never gets a place still shows up in its run history.
SKIP_STREAK_MAX_AGE = 30.0


@dataclass
class _Buffer:
    runs: list[Run] = field(default_factory=list)
    slots: dict[TaskId, SlotDone] = field(default_factory=dict)


@dataclass(slots=True)
class _Streak:
    """Slots one task skipped in a row under one term: the first one's record, and a count."""

    first: Run
    last_slot: float
    last_at: float
    count: int = 1
    since: float = field(default_factory=time.monotonic)

    def record(self) -> Run:
        if self.count == 1:
            return self.first
        last = datetime.fromtimestamp(self.last_slot, UTC).isoformat(timespec="milliseconds")
        return replace(
            self.first,
            ended_at=self.last_at,
            error=f"{self.first.error} ({self.count} slots in a row, the last {last})",
        )


def _merged(old: SlotDone | None, new: SlotDone) -> SlotDone:
    """One record of a task's finished slots: a newer term replaces an older one; within a
    term the latest slot counts and a trigger once answered stays answered (else a later
    scheduled run would erase it, and the trigger would run again under the next owner)."""
    if old is None or old.term != new.term:
        return new if old is None or new.term > old.term else old
    return SlotDone(
        kind=new.kind,
        key=new.key,
        term=new.term,
        slot=max(old.slot, new.slot),
        triggered=old.triggered or new.triggered,
    )


class RunRecorder(Part):
    """Buffers what runs did and writes it in batches."""

    def __init__(self, shared: Shared, *, lease: LeaseKeeper) -> None:
        super().__init__(shared)
        self._lease = lease
        self._buffer = _Buffer()
        self._streaks: OrderedDict[TaskId, _Streak] = OrderedDict()
        self._housekeeping_at = 0.0

    # -- recording ------------------------------------------------------------------------

    def record(
        self,
        ot: OwnedTask,
        slot: float,
        started: float,
        outcome: Outcome,
        error: str | None,
        *,
        triggered: bool = False,
        elapsed: float | None = None,
        count: int = 1,
        last_slot: float | None = None,
        slot_recorded: bool = False,
    ) -> None:
        """Buffer one run's record, and the slot it finished if the task is still ours
        under the same ownership (a run that outlived a self-fence or a release must not
        speak for the task's next term).

        ``elapsed`` is the run's length on this process's monotonic clock: the estimate of
        the database's clock moves with every renewal, so ``db_time()`` read at the end
        could make a run look shorter (or longer) than it was. A ``skipped`` record may
        stand for ``count`` slots in a row, from ``slot`` to ``last_slot``.

        ``slot_recorded``: the run's fenced commit recorded ``slot`` as the task's last
        slot, in the transaction that committed (see :meth:`Context.fenced`)."""
        task = ot.task
        ended = started + elapsed if elapsed is not None else self._lease.db_time()
        ran = outcome is not Outcome.SKIPPED
        metrics.record_run(
            task.kind,
            outcome.value,
            lag=max(0.0, started - slot) if ran else None,
            duration=max(0.0, ended - started) if ran else None,
            count=1 if ran else count,
        )
        last = slot if last_slot is None else max(slot, last_slot)
        if not ran:
            streak = self._streaks.get(ot.id)
            if streak is not None and streak.first.term == ot.term:
                streak.count += count
                streak.last_slot, streak.last_at = max(streak.last_slot, last), ended
                return
            self._end_streak(ot.id)
        run = Run(
            kind=task.kind,
            key=task.key,
            worker=self.id,
            term=ot.term,
            scheduled_at=slot,
            started_at=started,
            ended_at=ended,
            outcome=outcome,
            error=None if error is None else storable_error(error),
        )
        if not ran:
            self._streaks[ot.id] = _Streak(first=run, last_slot=last, last_at=ended, count=count)
            return
        self._append(run)
        through = ot.last_slot or slot
        if slot_recorded and not triggered and through <= slot:
            # Written already, and writing it again is not free: the flush's update would
            # find the task row locked by the next fenced run and wait for it. (A trigger
            # must still be answered by the flush: the fence does not clear it.)
            return
        if self._owned.get(ot.id) is ot:
            done = SlotDone(kind=task.kind, key=task.key, term=ot.term, slot=through, triggered=triggered)
            self._buffer.slots[ot.id] = _merged(self._buffer.slots.get(ot.id), done)

    def run_started(self, ot: OwnedTask) -> None:
        """A run of ``ot`` begins: the slots it skipped before are one streak, written."""
        if ot.id in self._streaks:
            self._end_streak(ot.id)

    def _append(self, run: Run) -> None:
        runs = self._buffer.runs
        if len(runs) >= MAX_BUFFERED_RUNS:
            del runs[: len(runs) // 10]
            self._log(logging.WARNING, "run buffer full: dropped the oldest tenth of unsaved run records")
        runs.append(run)

    def _end_streak(self, task: TaskId) -> None:
        streak = self._streaks.pop(task, None)
        if streak is not None:
            self._append(streak.record())

    def end_streaks(self, *, older_than: float = 0.0) -> None:
        """Buffer the records of skipped-slot streaks that began at least ``older_than``
        seconds ago (all of them by default: the worker is leaving)."""
        cutoff = time.monotonic() - older_than
        # Oldest first: a streak enters the dict when it begins (and leaves it when it ends).
        while self._streaks:
            task, streak = next(iter(self._streaks.items()))
            if streak.since > cutoff:
                break
            self._end_streak(task)

    def slot_done(self, ot: OwnedTask) -> SlotDone:
        """What to tell the store about a task this worker lets go of."""
        slot = self.done_through(ot.task, ot.last_slot)
        return SlotDone(kind=ot.task.kind, key=ot.task.key, term=ot.term, slot=slot, triggered=ot.triggered_ran)

    def done_through(self, task: Task, last: float | None) -> float:
        """The slot to record as done when letting a task go: the last one started here,
        else the latest slot already past. Never 0.0: on a task with no last slot yet the
        store would keep it, and the next owner would run a long-"missed" slot at once and
        the next one right after, two runs inside one period."""
        if last is not None:
            return last
        if isinstance(task.schedule, Unreadable):  # no grid to read: done through now
            return self._lease.db_time()
        return latest_slot(task.schedule, task.kind, task.key, self._lease.db_time())

    def forget_slot(self, ot: OwnedTask) -> None:
        """Drop the buffered slot of a task let go of (its release carried it); its
        skipped-slot streak, if any, is written."""
        self._end_streak(ot.id)
        held = self._buffer.slots.get(ot.id)
        if held is not None and held.term == ot.term:
            del self._buffer.slots[ot.id]

    def forget_slots(self) -> None:
        """Drop every buffered slot: after a self-fence they are not ours to advance.
        Run records stay (skipped-slot streaks are written)."""
        self.end_streaks()
        self._buffer.slots.clear()

    # -- writing --------------------------------------------------------------------------

    async def run(self) -> None:
        """Flush every ``poll`` until the worker has left."""
        while self._life.state < WorkerState.CLOSED:
            await self._life.sleep(self.settings.poll, until=WorkerState.CLOSED)
            try:
                self.end_streaks(older_than=SKIP_STREAK_MAX_AGE)
                await self.flush()
                await self._housekeeping()
            except StoreError as exc:
                self._log(logging.WARNING, "could not save run records yet: %s", exc)

    async def flush(self) -> None:
        """Write what is buffered now, :data:`FLUSH_CHUNK` run records and finished slots a
        transaction; on failure what is left stays buffered.

        Runs that end while it writes wait for the next flush. Writing until the buffer
        was empty never ended under load: runs end all the time, so each worker flushed
        back to back, a few dozen records a statement, and at 3,000 runs a second the
        database spent 0.16 ms per run on tenure's statements instead of 0.03
        (bench/load.py, bench/flush_cost.py). The slots' durability is the design's: once
        per ``poll``, and everything when the worker leaves (its runs are over by then)."""
        buf = self._buffer
        if not (buf.runs or buf.slots):
            return
        for _ in range(-(-max(len(buf.runs), len(buf.slots)) // FLUSH_CHUNK)):
            await self._flush_chunk()

    async def _flush_chunk(self) -> None:
        # Slots in chunks too: 10,000 of them in one statement held the loop 35 ms while
        # PostgreSQL's batch was built.
        buf = self._buffer
        runs = buf.runs[:FLUSH_CHUNK]
        if len(buf.slots) <= FLUSH_CHUNK:
            slots, rest = list(buf.slots.values()), {}
        else:
            slots, rest = [buf.slots.pop(k) for k in list(itertools.islice(buf.slots, FLUSH_CHUNK))], buf.slots
        self._buffer = _Buffer(runs=buf.runs[FLUSH_CHUNK:], slots=rest)
        try:
            await self.store.record_runs(runs, slots)
        except BaseException:
            # Put them back in front of anything recorded meanwhile.
            self._buffer.runs[:0] = runs
            for s in slots:
                k = (s.kind, s.key)
                self._buffer.slots[k] = _merged(self._buffer.slots.get(k), s)
            raise

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + HOUSEKEEPING_EVERY
        pruned = await self.store.prune_runs(older_than=self.settings.run_retention)
        reaped = await self.store.reap_workers(older_than=max(60.0, 6 * self.settings.lease_ttl))
        if pruned or reaped:
            self._log(logging.INFO, "housekeeping: pruned %d run records, removed %d dead workers", pruned, reaped)
