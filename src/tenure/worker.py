"""The worker: keeps one lease, holds a fair share of tasks, and runs them on time.

This is the only place that starts background work. One worker is one asyncio loop:

- the **lease loop** renews the worker's single lease every ``heartbeat`` (one write,
  whatever the number of tasks) and fences the worker itself when a renewal cannot be
  confirmed in time: a lease confirmed by a renewal *sent* at monotonic time t is
  trusted until t + TTL - margin, never longer;
- the **task loop** polls every ``poll``: it reads the change counter (admin changes),
  the live workers and the enabled-task count, then claims or releases tasks to reach
  its fair share;
- each owned task has a timer on the loop for its next slot; a slot fires a run, a run
  ends in a run record buffered in memory, and the **flush loop** writes the buffer in
  one transaction per ``poll``: no write per run on the hot path.

Slots are on the database's clock: the worker estimates it as its monotonic clock plus
an offset measured at every renewal, so a worker whose wall clock is wrong by minutes
schedules exactly like the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tenure import metrics, tracing
from tenure.context import Context
from tenure.errors import LeaseLost, StoreError, TenureError, WorkerIdInUse
from tenure.models import Claim, Freed, Outcome, Run, SlotDone, Task
from tenure.pauses import PauseView
from tenure.schedule import Misfire, first_slot, latest_slot, next_slot

if TYPE_CHECKING:
    from tenure.app import App, TaskKind
    from tenure.config import Settings
    from tenure.store import Store

log = logging.getLogger("tenure.worker")
T = TypeVar("T")

#: Most run records kept in memory while the store cannot take them; older ones are dropped.
MAX_BUFFERED_RUNS = 200_000
#: Timers are rounded up to this grid (seconds) so that runs due close together share a
#: wake-up of the event loop.
TIMER_GRID = 0.004
#: How often a worker re-reads all its tasks even when no admin change was announced.
RECONCILE_EVERY = 30.0
#: How often run retention and dead-worker clean-up happen (any worker may do it).
HOUSEKEEPING_EVERY = 300.0
#: How long the background loops get to finish their round once the worker has left.
LOOPS_STOP_WITHIN = 3.0
#: How long sidecars get to stop once the worker has left; they are cancelled after that.
SIDECAR_STOP_WITHIN = 5.0


class Sidecar(Protocol):
    """Something a worker runs beside its own loops for as long as it runs, such as its
    HTTP interface (:class:`tenure.web.WorkerHTTP`).

    ``serve`` is started once the worker's store is open and runs until ``stop`` is
    called, which the worker does after it has left the cluster (so the sidecar outlives
    the grace period); ``serve`` then returns within a few seconds or is cancelled. A
    sidecar that fails is logged, and the worker carries on without it.
    """

    async def serve(self, worker: Worker) -> None: ...

    def stop(self) -> None: ...


def default_worker_id() -> str:
    """host-pid-random: unique per process start, readable in tables and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(eq=False)
class OwnedTask:
    """A task this worker owns, with its local scheduling state."""

    task: Task
    kind: TaskKind
    term: int
    next_slot: float
    #: Latest slot started under this ownership (remembered on release, flushed with runs).
    last_slot: float | None = None
    timer: asyncio.TimerHandle | None = None
    running: asyncio.Task[None] | None = None
    ctx: Context | None = None
    #: Trigger requests up to this database time have been answered.
    trigger_done: float = 0.0
    #: To be handed over once its run in progress ends; starts no new run.
    handover: bool = False
    #: Why the run in progress was cancelled on request (recorded as ``cancelled``).
    cancelled_because: str | None = None

    @property
    def name(self) -> str:
        return f"{self.task.kind}/{self.task.key}"


@dataclass(frozen=True, kw_only=True)
class WorkerProbe:
    """A worker's state as its probes see it, read at one moment (:meth:`Worker.probe`)."""

    worker_id: str
    #: Seconds the lease is still trusted for (0: not trusted: joining, self-fenced, renewals failing).
    trusted_for: float
    #: Whether the worker ever held a lease (False while it joins for the first time).
    joined_before: bool
    #: Times the worker stopped trusting its lease and rejoined.
    self_fences: int
    draining: bool
    stopping: bool
    #: How long the event loop has gone without turning, and who holds it (past the
    #: watchdog's threshold only).
    loop_blocked_for: float
    loop_blocked_by: str | None


@dataclass
class _Buffer:
    runs: list[Run] = field(default_factory=list)
    slots: dict[tuple[str, str], SlotDone] = field(default_factory=dict)


class Worker:
    """One worker process's runtime. Use :meth:`tenure.App.run_worker` to start one."""

    def __init__(self, app: App, settings: Settings, *, sidecars: Sequence[Sidecar] = ()) -> None:
        self.app = app
        self.settings = settings
        self.store: Store = app.store
        self.id = settings.worker_id or default_worker_id()
        self._kinds = dict(app.kinds)
        self._owned: dict[tuple[str, str], OwnedTask] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Task[Any]] = set()  # timed-out store calls still unwinding
        self._buffer = _Buffer()
        self._stopping = asyncio.Event()
        self._stop_now = False
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()  # set once the worker has left: background loops end
        self._polling = True  # the task loop runs until _shutdown stops it, before leave()
        self._task_loop_task: asyncio.Task[None] | None = None
        self._trusted_until = 0.0  # monotonic
        self._fences = 0  # self-fencings so far: a claim sent before one is not adopted
        self._offset = 0.0  # database clock minus monotonic clock
        self._offset_known = False
        self._draining = False
        self._changes_seen: int | None = None
        self._pauses = PauseView()
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tenure-sync")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: LoopWatchdog | None = None
        self._housekeeping_at = 0.0
        self._reconcile_at = 0.0
        self.max_term_seen: dict[tuple[str, str], int] = {}
        self._sidecars = list(sidecars)

    # -- clocks and trust -----------------------------------------------------------------

    def db_time(self) -> float:
        """The database's clock as this worker estimates it now."""
        return time.monotonic() + self._offset

    def lease_trusted(self) -> bool:
        """True while the last confirmed renewal still vouches for the lease."""
        return time.monotonic() < self._trusted_until

    def probe(self) -> WorkerProbe:
        """What this worker's health and readiness probes report (:mod:`tenure.web.probes`).

        Safe to call from another thread: it only reads numbers and flags.
        """
        stalled, by = self._watchdog.blocked() if self._watchdog is not None else (0.0, None)
        return WorkerProbe(
            worker_id=self.id,
            trusted_for=max(0.0, self._trusted_until - time.monotonic()),
            joined_before=self._fences > 0 or self._trusted_until > 0,
            self_fences=self._fences,
            draining=self._draining,
            stopping=self._stopping.is_set(),
            loop_blocked_for=stalled,
            loop_blocked_by=by,
        )

    def _log(self, level: int, msg: str, *args: Any, task: OwnedTask | None = None) -> None:
        extra = {"worker": self.id}
        if task is not None:
            extra.update(kind=task.task.kind, key=task.task.key, term=str(task.term))
        log.log(level, msg, *args, extra=extra)

    # -- life cycle -----------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Begin a graceful stop (``force``: cancel running handlers at once)."""
        if force or self._stopping.is_set():
            self._stop_now = True
        self._stopping.set()
        self._wake.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Join, work until asked to stop, then hand every task over and leave."""
        self._loop = asyncio.get_running_loop()
        if not self._kinds:
            raise TenureError("the app registers no task kinds; nothing to run")
        await self.app.open()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.request_stop)
        self._watchdog = LoopWatchdog(self._loop, self._describe_blocker, threshold=0.5)
        self._watchdog.start()
        sidecars = self._start_sidecars()
        try:
            if not await self._join():
                return  # stopped before ever holding a lease: nothing to hand over
            background = [
                asyncio.create_task(self._lease_loop(), name="tenure-lease"),
                asyncio.create_task(self._task_loop(), name="tenure-tasks"),
                asyncio.create_task(self._flush_loop(), name="tenure-flush"),
            ]
            self._task_loop_task = background[1]
            # Notifications only speed things up; a store without them returns at once.
            listener = asyncio.create_task(self.store.listen(self._wake.set), name="tenure-listen")
            try:
                stop = asyncio.create_task(self._stopping.wait())
                try:
                    done, _ = await asyncio.wait([stop, *background], return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    # Cancelled from outside: still hand the tasks over, without grace.
                    stop.cancel()
                    self.request_stop(force=True)
                    await self._shutdown()
                    raise
                stop.cancel()
                for t in done:
                    if t is not stop:
                        t.result()  # a background loop died: surface why
                await self._shutdown()
            finally:
                # Let the loops end between rounds rather than cancel a statement in flight:
                # a cancelled query makes the driver cancel it on the server and wait, which
                # can hold a stopping worker for seconds.
                self._closing.set()
                _, late = await asyncio.wait(background, timeout=LOOPS_STOP_WITHIN)
                for t in [*late, listener]:
                    t.cancel()
                await asyncio.gather(*background, listener, return_exceptions=True)
                if self._abandoned:
                    await asyncio.wait(self._abandoned, timeout=LOOPS_STOP_WITHIN)
        finally:
            await self._stop_sidecars(sidecars)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            self._watchdog.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- sidecars (e.g. the HTTP interface) -----------------------------------------------

    def _start_sidecars(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._sidecar(s), name=f"tenure-sidecar-{type(s).__name__}") for s in self._sidecars
        ]

    async def _sidecar(self, sidecar: Sidecar) -> None:
        try:
            await sidecar.serve(self)
        except Exception:
            log.exception("sidecar %s failed; the worker carries on without it", type(sidecar).__name__)

    async def _stop_sidecars(self, tasks: list[asyncio.Task[None]]) -> None:
        """Ask every sidecar to stop, wait a bounded time, cancel the late ones."""
        if not tasks:
            return
        for s in self._sidecars:
            s.stop()
        _, late = await asyncio.wait(tasks, timeout=SIDECAR_STOP_WITHIN)
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _join(self, *, rejoin: bool = False) -> bool:
        """Register, retrying while the store is down; False if asked to stop first.

        On a first join, an id held by a live worker is a mistake (two workers given the
        same ``--id``) and raises :class:`WorkerIdInUse`. On a rejoin after self-fencing
        it means our own last renewal landed late: that clears when the lease expires,
        since nobody renews it now.
        """
        delay = 0.1
        while not self._stopping.is_set():
            sent = time.monotonic()
            try:
                lease = await self.store.register_worker(
                    worker_id=self.id, host=socket.gethostname(), pid=os.getpid(), ttl=self.settings.lease_ttl
                )
            except WorkerIdInUse:
                if not rejoin:
                    raise
                self._log(logging.WARNING, "waiting for our previous lease to expire before rejoining")
                await self._sleep_or_stop(self.settings.heartbeat)
                continue
            except StoreError as exc:
                self._log(logging.WARNING, "cannot join yet: %s", exc)
                await self._sleep_or_stop(delay)
                delay = min(delay * 2, self.settings.heartbeat)
                continue
            self._confirmed(sent, lease.db_now, lease.draining)
            self._log(logging.INFO, "joined; lease until %.3f (database clock)", lease.expires_at)
            return True
        return False

    async def _idle(self, seconds: float) -> None:
        """Sleep between rounds of a background loop, waking early once the worker closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=max(0.0, seconds))

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _confirmed(self, sent: float, db_now: float, draining: bool) -> None:
        received = time.monotonic()
        self._trusted_until = sent + self.settings.lease_ttl - self.settings.trust_margin
        # The database read its clock between sent and received, so the offset lies in
        # [db_now - received, db_now - sent] (give or take the clock's 1 ms resolution).
        # Keep the estimate while it fits: a renewal that waited for the write lock gives a
        # wide interval, and must not move every timer by half its round trip; a quick one
        # narrows the estimate down.
        low, high = db_now - received - 0.001, db_now - sent + 0.001
        if self._offset_known:
            self._offset = min(max(self._offset, low), high)
        else:
            self._offset, self._offset_known = (low + high) / 2, True
        if draining and not self._draining:
            self._log(logging.INFO, "draining: handing tasks over and taking no more")
        self._draining = draining

    async def _shutdown(self) -> None:
        """Graceful stop: no new runs, let running ones finish within grace, leave."""
        self._log(logging.INFO, "stopping: %d tasks, %d runs in progress", len(self._owned), len(self._runs))
        for ot in self._owned.values():
            if ot.timer:
                ot.timer.cancel()
                ot.timer = None
        if self._runs and not self._stop_now:
            _, pending = await asyncio.wait(self._runs, timeout=self.settings.grace)
            if pending:
                self._log(logging.WARNING, "grace period over: cancelling %d runs", len(pending))
        await self._cancel_runs("worker stopping")
        slots = [self._slot_done(ot) for ot in self._owned.values() if ot.last_slot is not None]
        with contextlib.suppress(StoreError):
            await self._flush()
        await self._stop_polling()
        try:
            freed = await self.store.leave(self.id, slots)
            self._log(logging.INFO, "left the cluster; released %d tasks", freed)
        except StoreError as exc:
            self._log(logging.ERROR, "could not release tasks (they move after the lease TTL): %s", exc)
        self._owned.clear()

    async def _stop_polling(self) -> None:
        """Let the task loop finish the poll in progress, then stop, before leave(). A
        release of ours still in flight while leave() frees the same tasks holds their rows
        locked (its slot updates match by term, not owner): the other workers' claims,
        woken by leave's notification, would skip them (SKIP LOCKED) until their next poll."""
        self._polling = False
        self._wake.set()
        task = self._task_loop_task
        if task is not None and not task.done():
            _, pending = await asyncio.wait({task}, timeout=2.0)
            for t in pending:
                t.cancel()

    async def _cancel_runs(self, reason: str) -> None:
        for ot in self._owned.values():
            if ot.ctx is not None:
                ot.ctx.cancel()
        runs = list(self._runs)
        for t in runs:
            t.cancel(reason)
        if runs:
            await asyncio.wait(runs, timeout=2.0)

    # -- lease ----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self._closing.is_set():
            next_beat = time.monotonic() + self.settings.heartbeat
            sent = time.monotonic()
            budget = self._trusted_until - sent
            try:
                if not self._holding():
                    # Holding nothing, there is nothing to fence: give the renewal its whole
                    # span (a slow network, a join answered late) rather than fence for want
                    # of time and then wait for our own lease to expire before rejoining. The
                    # database refuses the renewal if the lease has expired meanwhile.
                    budget = max(budget, self.settings.lease_ttl - self.settings.trust_margin)
                elif budget <= 0:
                    raise TimeoutError
                lease = await self._within(budget, self.store.renew_lease(self.id, self.settings.lease_ttl))
                metrics.RENEW_LATENCY.observe(time.monotonic() - sent)
                self._confirmed(sent, lease.db_now, lease.draining)
            except LeaseLost as exc:
                await self._self_fence(f"lease lost: {exc}")
            except (TimeoutError, StoreError) as exc:
                # Holding nothing, a late renewal is retried rather than fenced, but not for
                # ever: renewals that keep landing too late to vouch for still keep the lease
                # alive in the store, and the other workers would leave this one's share of
                # the tasks to it. Past a TTL without trust it stops renewing and joins
                # afresh once that lease has expired.
                stranded = time.monotonic() > self._trusted_until + self.settings.lease_ttl
                if not self.lease_trusted() and (self._holding() or stranded):
                    await self._self_fence(f"lease could not be renewed in time ({exc!r})")
                else:
                    self._log(logging.WARNING, "lease renewal failed, will retry: %r", exc)
                    next_beat = min(next_beat, time.monotonic() + self.settings.heartbeat / 4)
            await self._idle(next_beat - time.monotonic())

    def _holding(self) -> bool:
        """True while this worker owns tasks or has runs in progress: what a lost lease fences."""
        return bool(self._owned or self._runs)

    async def _within(self, budget: float, call: Coroutine[Any, Any, T]) -> T:
        """``call``'s result, or :class:`TimeoutError` once ``budget`` seconds have passed.

        Not ``asyncio.timeout``: a driver may take far longer than asked to give a call up
        when the server cannot be reached (psycopg, cancelled mid-query, tries for 5 s to
        cancel it on the server and waits 5 s more), and a lease deadline cannot wait for
        that. The call runs as a task of its own; on time-out it is cancelled and left to
        unwind in the background."""
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=budget)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget_abandoned)
        raise TimeoutError(f"no answer within {budget:.2f}s")

    def _forget_abandoned(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("abandoned store call ended with %r", task.exception())

    async def _self_fence(self, why: str) -> None:
        """Stop everything that could act on a lease we can no longer vouch for, then rejoin."""
        self._log(logging.ERROR, "self-fencing: %s; dropping %d tasks", why, len(self._owned))
        metrics.SELF_FENCES.inc()
        self._trusted_until = 0.0
        self._fences += 1
        for ot in self._owned.values():
            if ot.timer:
                ot.timer.cancel()
        await self._cancel_runs("lease lost")
        # Their records stay buffered (outcome lease_lost); their slots are not ours to advance.
        self._owned.clear()
        metrics.TASKS_HELD.set(0)
        self._buffer.slots.clear()
        self._changes_seen = None
        await self._join(rejoin=True)

    # -- ownership ------------------------------------------------------------------------

    async def _task_loop(self) -> None:
        while self._polling:
            # Clear before polling, not after: a wake-up (a notification, say a worker
            # leaving) that arrives while this poll runs must cause another poll at once,
            # not wait for the next poll interval.
            self._wake.clear()
            try:
                await self._poll_once()
            except StoreError as exc:
                self._log(logging.WARNING, "task poll failed: %s", exc)
            except LeaseLost:
                pass  # the lease loop notices and fences
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll)

    async def _poll_once(self) -> None:
        if not self.lease_trusted():
            return
        view = await self.store.cluster_view()
        now = time.monotonic()
        if view.changes != self._changes_seen or now >= self._reconcile_at:
            await self._refresh_owned()
            self._changes_seen = view.changes
            self._reconcile_at = now + RECONCILE_EVERY
        target = self._fair_share(view.live_workers, view.enabled_tasks)
        held = len(self._owned)
        if held <= target:
            # A task marked for handover while it ran is no longer surplus (a worker left
            # since): keep it, and let it run again.
            for ot in self._owned.values():
                if ot.handover:
                    self._log(logging.INFO, "handover called off: no longer surplus", task=ot)
                    ot.handover = False
        if held > target:
            await self._release_surplus(held - target)
        elif held < target and self.lease_trusted():
            fences = self._fences
            claims = await self.store.claim_tasks(self.id, kinds=list(self._kinds), limit=target - held)
            if fences != self._fences:
                # This worker fenced itself while the claim was on its way: the tasks are
                # ours in the store, under a lease we no longer vouch for. Running them
                # would only fence us again at the next renewal; the reconcile after the
                # rejoin hands them back as strays.
                self._changes_seen = None
                return
            for claim in claims:
                self._adopt(claim)

    def _fair_share(self, live: list[str], enabled: int) -> int:
        """This worker's share: tasks split evenly, the remainder to the first ids."""
        if self._draining or self._stopping.is_set():
            return 0
        if self.id not in live:
            live = sorted([*live, self.id])
        w = len(live)
        base, extra = divmod(enabled, w)
        return base + (1 if live.index(self.id) < extra else 0)

    async def _refresh_owned(self) -> None:
        """Reconcile owned tasks with the store: disabled, removed, triggered, edited, and
        any task the store says is ours that we are not running (a release that failed);
        and pauses, paused or lifted."""
        for change in self._pauses.update(await self.store.list_pauses()):
            self._log(logging.INFO, "%s", change)
        self._apply_pauses()
        rows = {(t.kind, t.key): t for t in await self.store.owned_tasks(self.id)}
        to_release: list[OwnedTask] = []
        for k, ot in list(self._owned.items()):
            row = rows.pop(k, None)
            if row is None or row.term != ot.term:
                self._log(logging.INFO, "task removed or no longer ours", task=ot)
                self._drop(ot)
                if ot.running is not None:
                    await self._cancel_if_disabled_with_cancel(ot)
            elif not row.enabled:
                self._log(logging.INFO, "task disabled; releasing it", task=ot)
                to_release.append(ot)
            elif row.version != ot.task.version:
                ot.task = row
                if row.trigger_at is not None and row.trigger_at > ot.trigger_done:
                    self._fire(ot, triggered=row.trigger_at)
        if to_release:
            await self._release(to_release)
        if rows:  # ours in the store, unknown here: give them back rather than sit on them
            strays = [
                SlotDone(kind=t.kind, key=t.key, term=t.term, slot=self._done_through(t, t.last_slot))
                for t in rows.values()
            ]
            await self.store.release_tasks(self.id, strays)

    def _apply_pauses(self) -> None:
        """Cancel runs a pause asks to cancel; arm again the tasks whose pause was lifted."""
        if self._stopping.is_set():
            return
        for ot in self._owned.values():
            pause = self._pauses.cancels(ot.task.kind)
            if pause is not None:
                self._cancel_run(ot, f"paused by {pause.by}")
            elif ot.timer is None and self._pauses.of(ot.task.kind) is None:
                # Resumed: the slots missed meanwhile follow the misfire policy, as after a
                # takeover (skip: the latest runs once; catch_up: each runs).
                done = ot.last_slot if ot.last_slot is not None else ot.task.last_slot
                ot.next_slot = first_slot(
                    ot.task.schedule,
                    ot.task.kind,
                    ot.task.key,
                    now=self.db_time(),
                    done_before=done,
                    misfire=ot.kind.misfire,
                )
                self._arm(ot)
                if ot.task.trigger_at is not None and ot.task.trigger_at > ot.trigger_done:
                    self._fire(ot, triggered=ot.task.trigger_at)

    async def _cancel_if_disabled_with_cancel(self, ot: OwnedTask) -> None:
        """Cancel the run of a task taken from us by ``disable --cancel``: disabled, and
        freed at our own term (a takeover would have a new term). Its commit is refused by
        the database already; cancelling stops the handler's work too."""
        row = await self.store.get_task(ot.task.kind, ot.task.key)
        if row is not None and not row.enabled and row.owner is None and row.term == ot.term:
            self._cancel_run(ot, "task disabled with cancel")

    def _cancel_run(self, ot: OwnedTask, reason: str) -> None:
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

    async def _release_surplus(self, count: int) -> None:
        """Hand over ``count`` tasks: idle ones now; running ones start no new run and go
        at a later poll, once idle, so that a run in progress is never refused its commit
        (when stopping, _shutdown's leave() releases them after the grace period)."""
        idle = sorted((ot for ot in self._owned.values() if ot.running is None), key=lambda ot: ot.name)
        if idle[:count]:
            await self._release(idle[:count])
        for ot in sorted((ot for ot in self._owned.values() if ot.running is not None), key=lambda ot: ot.name)[
            : count - len(idle[:count])
        ]:
            if not ot.handover:
                self._log(logging.INFO, "handing over once its run ends", task=ot)
            ot.handover = True

    async def _release(self, tasks: list[OwnedTask]) -> None:
        for ot in tasks:  # no new runs while the release is on its way
            if ot.timer:
                ot.timer.cancel()
                ot.timer = None
        try:
            await self.store.release_tasks(self.id, [self._slot_done(ot) for ot in tasks])
        except BaseException:
            for ot in tasks:
                if self._owned.get((ot.task.kind, ot.task.key)) is ot:
                    self._arm(ot)
            raise
        for ot in tasks:
            self._drop(ot)
            self._log(logging.INFO, "released", task=ot)

    def _drop(self, ot: OwnedTask) -> None:
        """Forget a task locally. A run in progress finishes; its commit is refused by the
        database if the task has moved on."""
        self._owned.pop((ot.task.kind, ot.task.key), None)
        metrics.TASKS_HELD.set(len(self._owned))
        if ot.timer:
            ot.timer.cancel()
            ot.timer = None
        self._buffer.slots.pop((ot.task.kind, ot.task.key), None)

    def _adopt(self, claim: Claim) -> None:
        task = claim.task
        k = (task.kind, task.key)
        previous = self.max_term_seen.get(k)
        if previous is not None and task.term <= previous:
            # Terms only grow; seeing one go back means the store lost writes (e.g. an
            # asynchronous replica was promoted). Refuse to run on it.
            self._log(logging.CRITICAL, "term went backwards for %s/%s: %d after %d", *k, task.term, previous)
            return
        self.max_term_seen[k] = task.term
        kind = self._kinds[task.kind]
        now = self.db_time()
        slot = first_slot(
            task.schedule, task.kind, task.key, now=now, done_before=claim.done_before, misfire=kind.misfire
        )
        ot = OwnedTask(task=task, kind=kind, term=task.term, next_slot=slot)
        ot.trigger_done = 0.0
        self._owned[k] = ot
        metrics.TASKS_HELD.set(len(self._owned))
        metrics.TERM_CHANGES.labels(task.freed_how.value).inc()
        not_before = now
        if task.freed_how is Freed.EXPIRED and self.settings.takeover_delay > 0:
            not_before = now + self.settings.takeover_delay
        self._log(logging.INFO, "claimed (%s); first slot in %.3fs", task.freed_how.value, slot - now, task=ot)
        self._arm(ot, not_before=not_before)
        if task.trigger_at is not None:
            self._fire(ot, triggered=task.trigger_at)

    # -- scheduling and runs --------------------------------------------------------------

    def _arm(self, ot: OwnedTask, *, not_before: float | None = None) -> None:
        """Set the timer for the task's next slot."""
        assert self._loop is not None
        due = ot.next_slot if not_before is None else max(ot.next_slot, not_before)
        # Timers due within one TIMER_GRID share a wake-up of the loop: each wake-up costs
        # far more than a run of a no-op handler, and at most TIMER_GRID of lag is added.
        at = math.ceil((due - self._offset) / TIMER_GRID) * TIMER_GRID
        ot.timer = self._loop.call_at(at, self._fire, ot)

    def _fire(self, ot: OwnedTask, triggered: float | None = None) -> None:
        """A slot (or a trigger) is due: start a run unless one is still going."""
        if self._pauses.of(ot.task.kind) is not None:
            if triggered is None:
                ot.timer = None  # armed again on resume, by the misfire policy (_apply_pauses)
            return
        if triggered is None:
            slot = ot.next_slot
            ot.next_slot = self._following_slot(ot, slot)
            self._arm(ot)  # even when not running this one: a handover can be called off
        else:
            slot = triggered
            ot.trigger_done = max(ot.trigger_done, triggered)
        if ot.handover or self._stopping.is_set() or not self.lease_trusted():
            return
        if ot.running is not None:
            self._record(ot, slot, self.db_time(), Outcome.SKIPPED, "previous run still in progress")
            return
        ot.last_slot = slot if ot.last_slot is None else max(ot.last_slot, slot)
        ot.running = asyncio.create_task(self._run(ot, slot, triggered is not None))
        self._runs.add(ot.running)
        ot.running.add_done_callback(self._runs.discard)

    def _following_slot(self, ot: OwnedTask, slot: float) -> float:
        nxt = next_slot(ot.task.schedule, ot.task.kind, ot.task.key, slot)
        now = self.db_time()
        if nxt >= now or ot.kind.misfire is Misfire.CATCH_UP:
            return nxt
        return latest_slot(ot.task.schedule, ot.task.kind, ot.task.key, now)  # skip what was missed

    async def _run(self, ot: OwnedTask, slot: float, triggered: bool) -> None:
        task = ot.task
        timeout = ot.kind.timeout_for(task.schedule)
        ctx = Context(
            store=self.store,
            worker_id=self.id,
            kind=task.kind,
            key=task.key,
            params=task.params,
            token=ot.term,
            scheduled_at=slot,
            lease_trusted=self.lease_trusted,
            deadline=time.monotonic() + timeout,
        )
        ot.ctx = ctx
        started = self.db_time()
        outcome, error = Outcome.OK, None
        handler = ot.kind.handler
        span = tracing.start_run(
            kind=task.kind, key=task.key, term=ot.term, worker=self.id, slot=slot, started=started, triggered=triggered
        )
        try:
            if inspect.iscoroutinefunction(handler):
                async with asyncio.timeout(timeout):
                    await handler(ctx)
            else:
                outcome, error = await self._run_sync(handler, ctx, timeout)
        except TimeoutError:
            outcome, error = Outcome.TIMEOUT, f"cancelled after its timeout of {timeout:g}s"
        except LeaseLost as exc:
            outcome, error = Outcome.LEASE_LOST, str(exc)
        except asyncio.CancelledError:
            if ot.cancelled_because is not None:
                outcome, error = Outcome.CANCELLED, f"cancelled: {ot.cancelled_because}"
            else:
                outcome, error = (
                    Outcome.LEASE_LOST,
                    "cancelled: " + ("lease lost" if not self.lease_trusted() else "worker stopping"),
                )
        except Exception as exc:
            outcome, error = Outcome.ERROR, "".join(traceback.format_exception_only(exc)).strip()
            self._log(logging.ERROR, "handler raised: %s", error, task=ot)
        finally:
            if ot.cancelled_because is not None and outcome is not Outcome.CANCELLED and outcome is not Outcome.OK:
                # A handler that carried on after its cancellation and failed (its commit
                # refused, say) was still cancelled on request.
                outcome, error = Outcome.CANCELLED, f"cancelled: {ot.cancelled_because}; then {error}"
            ot.running = None
            ot.ctx = None
            ot.cancelled_because = None
            tracing.end_run(span, outcome=outcome.value, error=error, self_fenced=not self.lease_trusted())
        if outcome is Outcome.TIMEOUT:
            self._log(logging.WARNING, "run timed out after %gs", timeout, task=ot)
        elif outcome is Outcome.LEASE_LOST:
            self._log(logging.WARNING, "run lost its lease: %s", error, task=ot)
        self._record(ot, slot, started, outcome, error, triggered=triggered)

    async def _run_sync(
        self, handler: Callable[[Context], Any], ctx: Context, limit: float
    ) -> tuple[Outcome, str | None]:
        """Run a synchronous handler in a thread. A thread cannot be killed: past its
        timeout it is told to stop (``ctx.is_cancelled``) and the task's next run waits
        for it, so one task never runs twice at once on this worker."""
        assert self._loop is not None
        # In a copy of this task's context: the handler's thread sees the run's span.
        fut = self._loop.run_in_executor(self._executor, contextvars.copy_context().run, handler, ctx)
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(fut)
            return Outcome.OK, None
        except TimeoutError:
            ctx.cancel()
            with contextlib.suppress(Exception):
                await fut
            return Outcome.TIMEOUT, f"ran past its timeout of {limit:g}s (thread told to stop)"
        except asyncio.CancelledError:
            ctx.cancel()
            raise

    def _record(
        self,
        ot: OwnedTask,
        slot: float,
        started: float,
        outcome: Outcome,
        error: str | None,
        *,
        triggered: bool = False,
    ) -> None:
        task = ot.task
        ended = self.db_time()
        ran = outcome is not Outcome.SKIPPED
        metrics.record_run(
            task.kind,
            outcome.value,
            lag=max(0.0, started - slot) if ran else None,
            duration=max(0.0, ended - started) if ran else None,
        )
        runs = self._buffer.runs
        if len(runs) >= MAX_BUFFERED_RUNS:
            del runs[: len(runs) // 10]
            self._log(logging.WARNING, "run buffer full: dropped the oldest tenth of unsaved run records")
        runs.append(
            Run(
                kind=task.kind,
                key=task.key,
                worker=self.id,
                term=ot.term,
                scheduled_at=slot,
                started_at=started,
                ended_at=ended,
                outcome=outcome,
                error=error,
            )
        )
        if outcome is not Outcome.SKIPPED and (task.kind, task.key) in self._owned:
            self._buffer.slots[(task.kind, task.key)] = SlotDone(
                kind=task.kind, key=task.key, term=ot.term, slot=ot.last_slot or slot, triggered=triggered
            )

    def _slot_done(self, ot: OwnedTask) -> SlotDone:
        slot = self._done_through(ot.task, ot.last_slot)
        return SlotDone(kind=ot.task.kind, key=ot.task.key, term=ot.term, slot=slot)

    def _done_through(self, task: Task, last: float | None) -> float:
        """The slot to record as done when letting a task go: the last one started here,
        else the latest slot already past. Never 0.0: on a task with no last slot yet the
        store would keep it, and the next owner would run a long-"missed" slot at once and
        the next one right after, two runs inside one period."""
        if last is not None:
            return last
        return latest_slot(task.schedule, task.kind, task.key, self.db_time())

    # -- run records ----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._closing.is_set():
            await self._idle(self.settings.poll)
            try:
                await self._flush()
                await self._housekeeping()
            except StoreError as exc:
                self._log(logging.WARNING, "could not save run records yet: %s", exc)

    async def _flush(self) -> None:
        buf = self._buffer
        if not buf.runs and not buf.slots:
            return
        runs, slots = buf.runs, list(buf.slots.values())
        self._buffer = _Buffer()
        try:
            await self.store.record_runs(runs, slots)
        except BaseException:
            # Put them back in front of anything recorded meanwhile.
            self._buffer.runs[:0] = runs
            for s in slots:
                self._buffer.slots.setdefault((s.kind, s.key), s)
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

    # -- watchdog -------------------------------------------------------------------------

    def _describe_blocker(self, frame: FrameType | None) -> str:
        """Name the handler whose code is on the loop thread's stack, if any."""
        handlers = {
            kind.handler.__code__: name for name, kind in self._kinds.items() if hasattr(kind.handler, "__code__")
        }
        while frame is not None:
            kind = handlers.get(frame.f_code)
            if kind is not None:
                ctx = frame.f_locals.get("ctx")
                key = f"/{ctx.key} (term {ctx.token})" if isinstance(ctx, Context) else ""
                return f"handler of {kind}{key} at {frame.f_code.co_filename}:{frame.f_lineno}"
            frame = frame.f_back
        return "code outside any task handler"


class LoopWatchdog:
    """A thread that notices when the event loop stops turning, and says who holds it.

    The loop ticks a timestamp every ``threshold / 4``; if the tick is older than
    ``threshold``, the thread logs a warning naming what the loop thread is running.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        describe: Callable[[FrameType | None], str],
        *,
        threshold: float,
    ) -> None:
        self._loop = loop
        self._describe = describe
        self._threshold = threshold
        self._tick_at = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="tenure-watchdog", daemon=True)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle:
            self._handle.cancel()

    def blocked(self) -> tuple[float, str | None]:
        """How long the loop has gone without turning, and (past the threshold) what the
        loop thread runs now. Meant for other threads: the loop itself always sees ~0."""
        stalled = max(0.0, time.monotonic() - self._tick_at)
        if stalled <= self._threshold:
            return stalled, None
        return stalled, self._describe(sys._current_frames().get(self._loop_thread))

    def _tick(self) -> None:
        self._tick_at = time.monotonic()
        self._handle = self._loop.call_later(self._threshold / 4, self._tick)

    def _watch(self) -> None:
        reported = 0.0
        while not self._stop.wait(self._threshold / 4):
            tick = self._tick_at
            stalled = time.monotonic() - tick
            if reported and tick != reported:
                log.warning("event loop ran again after being blocked for %.2fs", tick - reported)
                reported = 0.0
            if stalled > self._threshold and not reported:
                reported = tick
                metrics.LOOP_STALLS.inc()
                frame = sys._current_frames().get(self._loop_thread)
                log.warning(
                    "event loop blocked for %.2fs by %s; async handlers must not block (use a sync one)",
                    stalled,
                    self._describe(frame),
                )
