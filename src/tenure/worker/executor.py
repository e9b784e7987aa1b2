"""The run executor: admits due slots as runs up to the worker's ``concurrency``,
enforces their timeouts, and owns the thread pool of synchronous handlers.

Past the cap, due slots wait in an admission queue, oldest due first, so that no task
starves; a task's waiting slots coalesce by its kind's misfire policy (``skip``: the
latest replaces the one waiting, which is recorded as skipped; ``catch_up``: each one
waits). A run's timeout counts from its start, not from its slot.

Runs are asyncio tasks the executor keeps (:meth:`RunExecutor.open` lets them start): a
stop cancels them after the grace period, or at once when forced, and waits
:data:`CANCELLED_RUNS_WITHIN` for them. Not in a task group, on purpose: a handler that
catches every cancellation and goes on would hold a task group's exit, and with it the
worker's stop, forever. Such a run is left behind, said so (:meth:`RunExecutor.left_behind`),
and cannot commit (its context has ended).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import heapq
import inspect
import itertools
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tenure import metrics, tracing
from tenure.context import Context
from tenure.errors import LeaseLost
from tenure.models import Outcome, storable_error
from tenure.schedule import Misfire, Unreadable, slot_before
from tenure.worker.lifecycle import WorkerState
from tenure.worker.owned import YIELD_EVERY, OwnedTask, Part, Shared, TaskId
from tenure.worker.timers import SlotTimers, Wheel

if TYPE_CHECKING:
    from tenure.kinds import TaskKind
    from tenure.worker.lease import LeaseKeeper
    from tenure.worker.recorder import RunRecorder

#: Threads for synchronous handlers.
SYNC_THREADS = 64
#: Their names begin so (the CLI finds the ones still running when a worker has left).
SYNC_THREAD_PREFIX = "tenure-sync"
#: How long cancelled runs get to end before the worker goes on without them.
CANCELLED_RUNS_WITHIN = 2.0
#: How often an overloaded worker says so in its log (once per interval, not per run).
OVERLOAD_LOG_EVERY = 10.0
#: Why slots were skipped, as their records say.
STILL_RUNNING = "previous run still in progress"
AT_CAPACITY = "waited past its next slot (worker at capacity)"
GAVE_UP = "waited for a place and never started: the worker stopped running the task"


def is_async_handler(handler: Callable[..., Any]) -> bool:
    """True if calling ``handler`` gives an awaitable to run on the loop: a coroutine
    function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler):
        return False
    call = next((vars(k)["__call__"] for k in type(handler).__mro__ if "__call__" in vars(k)), None)
    return call is not None and inspect.iscoroutinefunction(call)


#: The name of every run's asyncio task begins with this (a stuck one is found by it).
RUN_TASK_PREFIX = "tenure-run-"

#: The record of a run the worker left without (see :meth:`RunExecutor.left_behind`).
LEFT_BEHIND = "cancelled: worker stopping; the handler caught it and went on, and the worker left without it"

#: A run's error when its handler let a CancelledError out though nothing cancelled it.
NOT_CANCELLED = (
    "CancelledError raised in the handler, though its run was not cancelled "
    "(it raised it, or awaited a task or future that was cancelled)"
)


class Deadlines:
    """Run timeouts on the wake-ups of a :class:`~tenure.worker.timers.Wheel`, as slots are
    armed: ``asyncio.timeout`` made a timer (and a heap entry) per run, a tenth of a no-op
    run's cost. When a deadline comes, ``expire`` is called with the task and its timeout
    if the same run is still going.

    The wheel holds the owned task, not the run: a run's asyncio task, coroutine and
    context kept alive until its deadline (a second after a no-op run ended, at 10,000
    runs a second) filled the collector's oldest generation, and its full passes held the
    loop for 30-40 ms. The run's deadline is marked on the task instead, and cleared when
    the run ends, so an entry whose mark has changed is stale."""

    def __init__(self, expire: Callable[[OwnedTask, float], None]) -> None:
        self._expire = expire
        self._wheel: Wheel[OwnedTask] = Wheel(self._due)

    def add(self, ot: OwnedTask, timeout: float) -> None:
        """Give the run in progress of ``ot`` ``timeout`` seconds from now."""
        at = self._wheel.grid(asyncio.get_running_loop().time() + timeout)
        ot.deadline = (at, timeout)
        self._wheel.add(at, ot)

    def _due(self, at: float, due: list[OwnedTask]) -> None:
        for ot in due:
            deadline = ot.deadline
            if deadline is not None and deadline[0] == at and ot.running is not None and not ot.running.done():
                ot.deadline = None
                self._expire(ot, deadline[1])

    def close(self) -> None:
        self._wheel.close()


class RunExecutor(Part):
    """Starts runs of owned tasks and sees each one to its outcome."""

    def __init__(self, shared: Shared, *, lease: LeaseKeeper, recorder: RunRecorder) -> None:
        super().__init__(shared)
        self.concurrency = self.settings.concurrency
        #: The slot timers (set by the supervisor): a parked task is armed again through them.
        self.timers: SlotTimers | None = None
        #: Tasks with slots waiting for a place: (oldest waiting slot, order, task).
        self._queue: list[tuple[float, int, OwnedTask]] = []
        self._order = itertools.count()
        #: Most runs that waited at once since the last overload report.
        self._peak_waiting = 0
        self._lease = lease
        self._recorder = recorder
        self._open = False
        self._runs: set[asyncio.Task[None]] = set()
        #: A run that failed inside tenure's own code (not its handler's): raised by run().
        self._crash: BaseException | None = None
        #: What still runs of each task, by id, whoever owns it now: its run, or the thread
        #: of a cancelled sync run (a thread cannot be stopped). A task released and claimed
        #: again is a new OwnedTask; this is what keeps its runs from overlapping here.
        self._alive: dict[TaskId, asyncio.Task[None] | asyncio.Future[Any]] = {}
        #: Why a run was cancelled (the outcome to record), by its asyncio task.
        self._cancelled_as: dict[asyncio.Task[None], tuple[Outcome, str]] = {}
        self._async_kinds: dict[str, bool] = {}
        self._threads = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix=SYNC_THREAD_PREFIX)
        self._deadlines = Deadlines(self._timed_out)

    def open(self) -> None:
        """Start runs from now on (once the worker holds its lease)."""
        self._open = True

    @property
    def running(self) -> int:
        """Runs in progress."""
        return len(self._runs)

    @property
    def waiting(self) -> int:
        """Due runs waiting for a place under the concurrency cap."""
        return sum(len(ot.waiting) for _, _, ot in self._queue)

    def oldest_waiting(self) -> float:
        """Seconds the longest-waiting due run has waited (0 if none waits)."""
        # Entries of tasks whose slots no longer wait (released, fenced) leave the queue
        # only when a place frees up: they are not the oldest run waiting.
        while self._queue and not self._queue[0][2].waiting:
            heapq.heappop(self._queue)
        if not self._queue:
            return 0.0
        return max(0.0, self._lease.db_time() - self._queue[0][0])

    def close(self) -> None:
        """Let the thread pool go (a thread still running a handler ends on its own), and
        cancel any run still going: one left behind, or one a stop cut short before it
        could cancel the runs (the worker cancelled twice from outside)."""
        self._open = False
        for run in self._runs:
            run.cancel()
        self._deadlines.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- dispatch -------------------------------------------------------------------------

    def submit(self, ot: OwnedTask, slot: float, *, triggered: bool) -> None:
        """A slot (or a trigger) is due: start a run unless this worker may not, or one is
        still going (then the slot is recorded as skipped); past the concurrency cap, the
        slot waits its turn (see the module docstring)."""
        if not self._may_start(ot):
            return
        if self._busy(ot):
            if not triggered:
                self._recorder.record(ot, slot, self._lease.db_time(), Outcome.SKIPPED, STILL_RUNNING)
                return
            # An operator asked for one more run: it starts once this one ends (it was
            # recorded as a skipped slot, and the trigger never ran).
            if ot.waiting:
                self._coalesce(ot, slot, triggered)
            else:
                ot.waiting.append((slot, triggered))
                self._enqueue(ot)
            return
        if ot.waiting:
            self._coalesce(ot, slot, triggered)
            return
        if len(self._runs) >= self.concurrency or self._queue:
            ot.waiting.append((slot, triggered))
            self._enqueue(ot)
            self._admit()  # room may have been left by entries gone stale
            return
        self._start(ot, slot, triggered)

    def _busy(self, ot: OwnedTask) -> bool:
        """Something of the task runs here: its run, an earlier ownership's, or the thread
        of a sync run that has ended (no run of it may start meanwhile)."""
        return ot.running is not None or ot.id in self._alive

    def _may_start(self, ot: OwnedTask) -> bool:
        paused = self._pauses.of(ot.task.kind) is not None
        return not (ot.handover or paused or self._life.stopping or not self._lease.trusted() or not self._open)

    def _coalesce(self, ot: OwnedTask, slot: float, triggered: bool) -> None:
        """Another slot of a task whose earlier one still waits."""
        if ot.kind.misfire is Misfire.CATCH_UP:
            ot.waiting.append((slot, triggered))
            return
        # skip: one run answers for both (and for a trigger either one answered); the task
        # keeps its place in the queue, which is by its oldest waiting slot.
        old, was_triggered = ot.waiting[0]
        latest = max(old, slot)
        ot.waiting[0] = (latest, was_triggered or triggered)
        self._recorder.record(ot, min(old, slot), self._lease.db_time(), Outcome.SKIPPED, AT_CAPACITY)

    def _enqueue(self, ot: OwnedTask) -> None:
        heapq.heappush(self._queue, (ot.waiting[0][0], next(self._order), ot))
        # The queue's length, not :attr:`waiting`: summing it here made every enqueue cost
        # O(queue), seconds of held loop with thousands of runs waiting.
        self._peak_waiting = max(self._peak_waiting, len(self._queue))

    def _admit(self) -> None:
        """Start waiting runs, oldest due first, while there is room."""
        while self._queue and len(self._runs) < self.concurrency:
            _, _, ot = heapq.heappop(self._queue)
            if not ot.waiting:
                continue
            if self._owned.get(ot.id) is not ot or not self._may_start(ot):
                # Released, handed over, fenced or stopping: nothing of it runs here, and
                # its waiting slots are recorded as given up. Paused: they are not, the
                # misfire policy answers for them on resume (Rebalancer.apply_pauses).
                if self._pauses.of(ot.task.kind) is not None:
                    ot.waiting.clear()
                else:
                    self._give_up_waiting(ot)
                self._unpark(ot, AT_CAPACITY)
                continue
            if self._busy(ot):
                continue  # re-queued when that run (or its thread) ends
            slot, triggered = ot.waiting.pop(0)
            passed = self._unpark(ot, AT_CAPACITY, waiting=slot)
            self._start(ot, slot if passed is None else max(slot, passed), triggered)

    def _start(self, ot: OwnedTask, slot: float, triggered: bool) -> None:
        ot.last_slot = slot if ot.last_slot is None else max(ot.last_slot, slot)
        if triggered:
            ot.triggered_ran = True
        self._recorder.run_started(ot)
        run = asyncio.get_running_loop().create_task(self._run(ot, slot, triggered), name=f"{RUN_TASK_PREFIX}{ot.name}")
        ot.running = self._alive[ot.id] = run
        self._runs.add(run)
        run.add_done_callback(self._ended)

    def _unpark(self, ot: OwnedTask, why: str, *, waiting: float | None = None) -> float | None:
        """End the task's parking (see :mod:`tenure.worker.timers`), arming it again while it
        is ours, and record the slots it passed as skipped, in one record. With ``waiting``
        (its slot that waited for a place and starts now), the latest slot passed is the
        one the run answers for and ``waiting`` the one skipped, as if each passed slot had
        replaced the one waiting (skip policy). Returns the latest slot passed."""
        first = ot.parked_from
        if first is None or self.timers is None:
            return None
        passed = self.timers.unpark(ot, arm=self._owned.get(ot.id) is ot)
        if passed is None:
            return None
        latest, count = passed
        task, schedule = ot.task, ot.task.schedule
        skipped_from, skipped_to = first, latest
        if waiting is not None:
            skipped_from, skipped_to = waiting, waiting
            if count > 1 and not isinstance(schedule, Unreadable):
                skipped_to = slot_before(schedule, task.kind, task.key, latest)
        self._recorder.record(
            ot, skipped_from, self._lease.db_time(), Outcome.SKIPPED, why, count=count, last_slot=skipped_to
        )
        return latest

    def _ended(self, run: asyncio.Task[None]) -> None:
        self._runs.discard(run)
        self._cancelled_as.pop(run, None)
        if not run.cancelled() and (exc := run.exception()) is not None and self._crash is None:
            # _run() catches all its handler raises: this is tenure's own bug. The worker
            # stops, as it did when the runs' task group failed.
            self._crash = exc
        if self._queue:
            self._admit()

    def _requeue(self, task: TaskId) -> None:
        """What ran of ``task`` here has ended (a run, or a sync run's thread): the slots its
        owner keeps waiting (catch-up, a trigger asked meanwhile) go back in the queue. The
        owner now may be a later ownership than the run's (released and claimed again)."""
        ot = self._owned.get(task)
        if ot is not None and ot.waiting and not self._busy(ot):  # else re-queued when that ends
            self._enqueue(ot)

    # -- overload -------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the overload gauges current every ``poll``, and say once per
        :data:`OVERLOAD_LOG_EVERY` that runs had to wait, until the worker has left."""
        loop = asyncio.get_running_loop()
        report_at = loop.time() + OVERLOAD_LOG_EVERY
        while self._life.state < WorkerState.CLOSED:
            if self._crash is not None:
                raise self._crash
            waiting = self.waiting
            self._peak_waiting = max(self._peak_waiting, waiting)
            metrics.RUNS_WAITING.set(waiting)
            metrics.OLDEST_WAITING.set(self.oldest_waiting())
            if loop.time() >= report_at:
                report_at = loop.time() + OVERLOAD_LOG_EVERY
                if self._peak_waiting:
                    self._log(
                        logging.WARNING,
                        "over capacity: up to %d due runs waited for a place in the last %gs "
                        "(concurrency %d; %d waiting now, the oldest for %.2fs)",
                        self._peak_waiting,
                        OVERLOAD_LOG_EVERY,
                        self.concurrency,
                        waiting,
                        self.oldest_waiting(),
                    )
                self._peak_waiting = 0
            await self._life.sleep(self._lease.settings.poll, until=WorkerState.CLOSED)

    async def _run(self, ot: OwnedTask, slot: float, triggered: bool) -> None:
        task = ot.task
        timeout = ot.kind.timeout_for(task.schedule)
        ctx = Context(
            store=self.store,
            worker_id=self.id,
            kind=task.kind,
            key=task.key,
            # A copy: a handler that changes its params must not change the next run's.
            # (Most tasks have none: a new empty dict is all the copy they need.)
            params=copy.deepcopy(task.params) if task.params else {},
            token=ot.term,
            scheduled_at=slot,
            lease_trusted=self._lease.trusted,
            deadline=time.monotonic() + timeout,
        )
        ot.ctx = ctx
        started, began = self._lease.db_time(), time.monotonic()
        outcome, error = Outcome.OK, None
        handler = ot.kind.handler
        span = tracing.start_run(
            kind=task.kind, key=task.key, term=ot.term, worker=self.id, slot=slot, started=started, triggered=triggered
        )
        try:
            if self._is_async(ot.kind):
                self._deadlines.add(ot, timeout)
                returned = await handler(ctx)  # type: ignore[misc]
                if returned is not None and inspect.isawaitable(returned):
                    # `return work(ctx)` without its await: the work is the run, not a
                    # coroutine thrown away with a RuntimeWarning and the run said "ok".
                    await returned
            else:
                outcome, error = await self._run_sync(ot, handler, ctx, timeout)
        except LeaseLost as exc:
            outcome, error = Outcome.LEASE_LOST, str(exc)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if ot.cancelled_because is not None:
                outcome, error = Outcome.CANCELLED, f"cancelled: {ot.cancelled_because}"
            elif me is not None and not me.cancelling() and me not in self._cancelled_as:
                # Nothing cancelled the run: the handler raised it, or awaited a task or
                # future that someone else cancelled. That is the handler's error.
                outcome, error = Outcome.ERROR, NOT_CANCELLED
                self._log(logging.ERROR, "handler raised: %s", error, task=ot)
            else:
                outcome, error = (self._cancelled_as.get(me) if me is not None else None) or self._why_cancelled()
        except Exception as exc:
            outcome, error = Outcome.ERROR, self._error(ot, exc)
        except BaseException as exc:
            # SystemExit (sys.exit() in a handler), KeyboardInterrupt, GeneratorExit, a
            # BaseException of the app's own: only handler code raises these here (the
            # worker handles its signals itself). Let through, they ended the whole worker
            # process, and each worker that took the task over in turn.
            outcome, error = Outcome.ERROR, self._error(ot, exc)
        finally:
            asked = self._asked_to_stop(ot)
            # A lost lease the worker cannot vouch for is the truth whatever else was asked
            # (a worker paused past its lease: its deadlines pass as it resumes).
            lost = outcome is Outcome.LEASE_LOST and not self._lease.trusted()
            if asked is not None and outcome is not asked[0] and outcome is not Outcome.CANCELLED and not lost:
                # The handler caught its cancellation (its timeout, an operator's cancel)
                # and returned, or failed afterwards (its commit refused, say): it was still
                # stopped as asked, not "ok", and its lease was not lost.
                outcome, error = (
                    asked[0],
                    asked[1] + ("; the handler caught it and returned" if error is None else f"; then {error}"),
                )
            ctx.end()
            if self._alive.get(ot.id) is ot.running:
                del self._alive[ot.id]
            ot.running = None
            ot.deadline = None
            ot.ctx = None
            ot.cancelled_because = None
            if all(is_trigger for _, is_trigger in ot.waiting):  # none, or a trigger asked meanwhile
                self._unpark(ot, STILL_RUNNING)
            tracing.end_run(span, outcome=outcome.value, error=error, self_fenced=not self._lease.trusted())
            self._requeue(ot.id)
        if outcome is Outcome.TIMEOUT:
            self._log(logging.WARNING, "run timed out after %gs", timeout, task=ot)
        elif outcome is Outcome.LEASE_LOST:
            self._log(logging.WARNING, "run lost its lease: %s", error, task=ot)
        self._recorder.record(
            ot,
            slot,
            started,
            outcome,
            error,
            triggered=triggered,
            elapsed=time.monotonic() - began,
            slot_recorded=ctx.slot_recorded,
        )

    def _asked_to_stop(self, ot: OwnedTask) -> tuple[Outcome, str] | None:
        """How the run in progress of ``ot`` was asked to stop, if it was."""
        if ot.cancelled_because is not None:
            return Outcome.CANCELLED, f"cancelled: {ot.cancelled_because}"
        return self._cancelled_as.get(ot.running) if ot.running is not None else None

    def _timed_out(self, ot: OwnedTask, timeout: float) -> None:
        """The deadline of the run in progress of ``ot`` has come: cancel it as timed out."""
        run = ot.running
        if run is not None and not run.done() and run not in self._cancelled_as:
            self._cancelled_as[run] = (Outcome.TIMEOUT, f"cancelled after its timeout of {timeout:g}s")
            run.cancel()

    def _is_async(self, kind: TaskKind) -> bool:
        # Asked once per kind: inspecting the handler costs more than a no-op run's start.
        known = self._async_kinds.get(kind.kind)
        if known is None:
            known = self._async_kinds[kind.kind] = is_async_handler(kind.handler)
        return known

    def _why_cancelled(self) -> tuple[Outcome, str]:
        if not self._lease.trusted():
            return Outcome.LEASE_LOST, "cancelled: lease lost"
        if self._life.stopping:
            return Outcome.CANCELLED, "cancelled: worker stopping"
        return Outcome.CANCELLED, "cancelled"

    def _error(self, ot: OwnedTask, exc: BaseException) -> str:
        error = storable_error("".join(traceback.format_exception_only(exc)).strip())
        self._log(logging.ERROR, "handler raised: %s", error, task=ot)
        return error

    async def _run_sync(
        self, ot: OwnedTask, handler: Callable[[Context], Any], ctx: Context, limit: float
    ) -> tuple[Outcome, str | None]:
        """Run a synchronous handler in a thread. A thread cannot be killed: past its
        timeout it is told to stop (``ctx.is_cancelled``, which also rolls back a fenced
        transaction it holds open) and the task's next run waits for it, so one task never
        runs twice at once on this worker. A "synchronous" handler that returns an
        awaitable (a wrapper without ``functools.wraps``) has it awaited here, within the
        same timeout."""
        # In a copy of this task's context: the handler's thread sees the run's span.
        fut = asyncio.get_running_loop().run_in_executor(self._threads, contextvars.copy_context().run, handler, ctx)
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                result = await asyncio.shield(fut)
                if inspect.isawaitable(result):
                    await result
            return Outcome.OK, None
        except TimeoutError:
            if not timer.expired():
                raise  # the handler's own
            ctx.cancel()
            if not fut.done():
                # The run ends now, as timed out, whether or not the handler heeds it (one
                # stuck in a call was recorded only when the worker stopped, "cancelled").
                # Its thread goes on: no run of the task starts here until it is done.
                self._keep_alive(ot, fut)
            return Outcome.TIMEOUT, f"ran past its timeout of {limit:g}s (thread told to stop)"
        except asyncio.CancelledError:
            ctx.cancel()
            if not fut.done():
                # The run ends now, its thread does not: no run of the task starts here
                # until the thread is done (two threads of one task ran side by side).
                self._keep_alive(ot, fut)
            raise

    def _keep_alive(self, ot: OwnedTask, fut: asyncio.Future[Any]) -> None:
        """The run of ``ot`` has ended but its sync handler's thread goes on: it counts as
        the task's run in progress here until the thread is done."""
        self._alive[ot.id] = fut
        fut.add_done_callback(functools.partial(self._thread_done, ot.id))

    def _thread_done(self, task: TaskId, fut: asyncio.Future[Any]) -> None:
        """The thread of a cancelled or timed-out sync run has ended: a trigger that waited
        for it may start."""
        if self._alive.get(task) is fut:
            del self._alive[task]
            self._requeue(task)
            if self._queue:
                self._admit()
        if not fut.cancelled():
            fut.exception()  # retrieved: it was the run's, recorded already

    def cancel(self, ot: OwnedTask, reason: str) -> None:
        """Cancel the task's run in progress, if any, on an operator's request: its handler
        is cancelled (a sync one told to stop), it cannot commit, and it is recorded as
        ``cancelled`` with ``reason``."""
        if ot.running is None or ot.running.done() or ot.cancelled_because is not None:
            return
        self._log(logging.WARNING, "cancelling the run in progress: %s", reason, task=ot)
        ot.cancelled_because = reason
        if ot.ctx is not None:
            ot.ctx.cancel()
        ot.running.cancel(reason)

    def let_go(self, ot: OwnedTask) -> None:
        """``ot`` is no longer this worker's (released, removed, taken over): its slots
        that waited for a place and the ones it passed while parked are recorded now, up
        to this moment. Its run may go on for a while, and the slots that pass meanwhile
        are its next owner's, not slots this worker skipped."""
        self._give_up_waiting(ot)
        self._unpark(ot, STILL_RUNNING if ot.running is not None else AT_CAPACITY)

    def _give_up_waiting(self, ot: OwnedTask) -> None:
        """Forget the task's slots that wait for a place: none of them starts here. The
        scheduled ones are recorded as skipped, in one record (before, the slots parked
        behind them were recorded and they were not, a hole in the task's account); a
        trigger among them stays pending in the store for whoever runs the task next."""
        slots = [slot for slot, triggered in ot.waiting if not triggered]
        ot.waiting.clear()
        if slots:
            self._recorder.record(
                ot, min(slots), self._lease.db_time(), Outcome.SKIPPED, GAVE_UP, count=len(slots), last_slot=max(slots)
            )

    # -- stopping -------------------------------------------------------------------------

    async def drop_waiting(self) -> None:
        """Forget every waiting slot (self-fencing, stopping): none of them runs here. Each
        task's is recorded as given up (~6 µs): 9,900 waiting tasks held the loop 57 ms in
        one pass, so the loop turns every :data:`YIELD_EVERY` (the queue is emptied first:
        nothing is admitted meanwhile)."""
        queue, self._queue = self._queue, []
        for i, (_, _, ot) in enumerate(queue):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self._give_up_waiting(ot)

    async def wait_idle(self, grace: float) -> bool:
        """Wait until no run is in progress, at most ``grace`` seconds, and not past a
        forced stop; True if none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        forced = asyncio.ensure_future(self._life.reached(WorkerState.FORCING))
        try:
            while self._runs and not forced.done():
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.wait([*self._runs, forced], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        return not self._runs

    async def cancel_all(self, outcome: Outcome, reason: str) -> None:
        """Cancel every run in progress (recorded as ``outcome``, ``reason``), and give them
        a bounded time to end."""
        for ot in self._owned.values():
            if ot.ctx is not None:
                ot.ctx.cancel()
        runs = list(self._runs)
        for run in runs:
            self._cancelled_as.setdefault(run, (outcome, f"cancelled: {reason}"))
            run.cancel(reason)
        if runs:
            await asyncio.wait(runs, timeout=CANCELLED_RUNS_WITHIN)

    def left_behind(self) -> None:
        """Close for good, and record the runs still going though cancelled as cancelled:
        their handlers caught the cancellation and went on. The worker leaves without them
        (they can no longer commit: their contexts have ended)."""
        self._open = False
        now, clock = self._lease.db_time(), time.monotonic()
        for ot in self._owned.values():
            run, ctx = ot.running, ot.ctx
            if run is None or run.done() or ctx is None:
                continue
            ctx.end()
            self._log(
                logging.ERROR,
                "run did not end %gs after it was cancelled (its handler catches CancelledError and goes on); "
                "the worker leaves without it",
                CANCELLED_RUNS_WITHIN,
                task=ot,
            )
            began = clock if ctx.deadline is None else ctx.deadline - ot.kind.timeout_for(ot.task.schedule)
            self._recorder.record(ot, ctx.scheduled_at, now - (clock - began), Outcome.CANCELLED, LEFT_BEHIND)
