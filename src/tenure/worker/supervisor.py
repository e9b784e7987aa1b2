"""The worker as a supervisor of its parts, each with one job and a lifetime you can see.

One state (:class:`WorkerState`) and three nested task groups::

    sidecars (e.g. the HTTP interface)        outlive the worker's leaving
      loops: lease keeper, rebalancer,        from the join until the worker has left
             run recorder, listener
        runs: one task per run                none outlives the grace period

A part that crashes stops the worker cleanly (runs cancelled, tasks handed back, the
lease left) and loudly (logged, and :meth:`Worker.run` raises its error). A second
SIGTERM/SIGINT during the grace period forces the stop: running handlers are cancelled
at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenure import metrics
from tenure.errors import StoreError, TenureError
from tenure.kinds import Sidecar, TaskKind
from tenure.models import Outcome, WorkerLoad
from tenure.worker.executor import RunExecutor
from tenure.worker.lease import LeaseKeeper
from tenure.worker.lifecycle import Lifecycle, WorkerState
from tenure.worker.owned import Shared, TaskId, WorkerLog, default_worker_id, log
from tenure.worker.rebalancer import Rebalancer
from tenure.worker.recorder import RunRecorder
from tenure.worker.timers import SlotTimers
from tenure.worker.watchdog import LoopWatchdog, blocker_describer

if TYPE_CHECKING:
    from tenure.config import Settings
    from tenure.store import Store

#: How long the background loops get to finish their round once the worker has left.
LOOPS_STOP_WITHIN = 3.0
#: How long sidecars get to stop once the worker has left; they are cancelled after that.
SIDECAR_STOP_WITHIN = 5.0
#: How long a stopping worker waits for the poll in progress before leaving.
POLL_STOP_WITHIN = 2.0


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
    #: Runs in progress, and due runs waiting for a place under the concurrency cap.
    runs_in_progress: int = 0
    runs_waiting: int = 0


class Worker:
    """One worker process's runtime. Use :meth:`tenure.App.run_worker` to start one.

    ``store`` must be open (the App opens it and publishes ``kinds``); ``store_url`` is
    what sidecars that open connections of their own (the HTTP interface) connect to.
    """

    def __init__(
        self,
        *,
        store: Store,
        kinds: Mapping[str, TaskKind],
        settings: Settings,
        sidecars: Sequence[Sidecar] = (),
        store_url: str | None = None,
    ) -> None:
        if not kinds:
            raise TenureError("the app registers no task kinds; nothing to run")
        self.store = store
        self.settings = settings
        self.store_url = store_url
        self.id = settings.worker_id or default_worker_id()
        self._sidecars = list(sidecars)
        self._life = Lifecycle()
        self._log = WorkerLog(self.id)
        self._crash: BaseException | None = None
        self._watchdog: LoopWatchdog | None = None
        shared = Shared(
            store=store, settings=settings, worker_id=self.id, life=self._life, log=self._log, kinds=dict(kinds)
        )
        self._kinds, self._owned, self._pauses = shared.kinds, shared.owned, shared.pauses
        self.lease = LeaseKeeper(
            shared,
            holding=self._holding,
            on_fence=self._self_fence,
            kinds=sorted(self._kinds),
            load=self._load,
        )
        self.recorder = RunRecorder(shared, lease=self.lease)
        self.executor = RunExecutor(shared, lease=self.lease, recorder=self.recorder)
        self.timers = SlotTimers(
            lease=self.lease, executor=self.executor, pauses=self._pauses, grid=settings.timer_grid
        )
        self.executor.timers = self.timers
        self.rebalancer = Rebalancer(
            shared, lease=self.lease, timers=self.timers, recorder=self.recorder, executor=self.executor
        )
        self._rebalancer_task: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []

    # -- what others may read -------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Where this worker is in its life."""
        return self._life.state

    def db_time(self) -> float:
        """The database's clock as this worker estimates it now."""
        return self.lease.db_time()

    def lease_trusted(self) -> bool:
        """True while the last confirmed renewal still vouches for the lease."""
        return self.lease.trusted()

    def probe(self) -> WorkerProbe:
        """What this worker's health and readiness probes report (:mod:`tenure.web.probes`).

        Safe to call from another thread: it only reads numbers and flags.
        """
        stalled, by = self._watchdog.blocked() if self._watchdog is not None else (0.0, None)
        lease = self.lease
        return WorkerProbe(
            worker_id=self.id,
            trusted_for=max(0.0, lease.trusted_until - time.monotonic()),
            joined_before=lease.fences > 0 or lease.trusted_until > 0,
            self_fences=lease.fences,
            draining=lease.draining,
            stopping=self._life.stopping,
            loop_blocked_for=stalled,
            loop_blocked_by=by,
            runs_in_progress=self.executor.running,
            runs_waiting=self.executor.waiting,
        )

    def _load(self) -> WorkerLoad:
        """The load this worker publishes with its lease renewals (status, dashboard)."""
        return WorkerLoad(
            waiting=self.executor.waiting,
            oldest_waiting=round(self.executor.oldest_waiting(), 3),
            concurrency=self.executor.concurrency,
        )

    @property
    def max_term_seen(self) -> dict[TaskId, int]:
        """Highest term seen per task (a term going backwards is refused)."""
        return self.rebalancer.max_term_seen

    # -- life cycle -----------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Begin a graceful stop; a second request (or ``force``) cancels running handlers
        at once, also in the middle of the grace period."""
        if force or self._life.stopping:
            self._life.to(WorkerState.FORCING)
        else:
            self._life.to(WorkerState.STOPPING)
        self.rebalancer.wake.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Join, work until asked to stop, then hand every task over and leave.

        Raises the error of a part that crashed, once the worker has stopped cleanly.
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        watchdog = self._watchdog = LoopWatchdog(loop, blocker_describer(self._kinds), threshold=0.5)
        watchdog.start()
        try:
            async with asyncio.TaskGroup() as sidecars:
                running = [
                    sidecars.create_task(self._sidecar(s), name=f"tenure-sidecar-{type(s).__name__}")
                    for s in self._sidecars
                ]
                try:
                    async with self.store.hold_liveness(self.id, check_every=self.settings.heartbeat) as liveness:
                        self.lease.liveness = liveness
                        try:
                            await self._work()
                        finally:
                            self.lease.liveness = None
                finally:
                    await self._stop_sidecars(running)
        except BaseExceptionGroup as group:
            # Nested task groups wrap an error once per level; the caller gets the error.
            first: BaseException = group
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from first.__cause__
        finally:
            self._life.to(WorkerState.CLOSED)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            watchdog.stop()
            self.timers.close()
            self.executor.close()
        if self._crash is not None:
            raise self._crash

    async def _work(self) -> None:
        self._life.to(WorkerState.JOINING)
        if not await self.lease.join():
            return  # stopped before ever holding a lease: nothing to hand over
        self._life.to(WorkerState.RUNNING)
        # What start-up allocated (modules, the store's connections) lives as long as the
        # process: keep it out of the collector's full passes, which at many tasks would
        # otherwise hold the loop for tens of milliseconds.
        gc.collect()
        gc.freeze()
        async with asyncio.TaskGroup() as loops:
            self._rebalancer_task = loops.create_task(self._part("rebalancer", self.rebalancer.run()))
            self._loops = [
                loops.create_task(self._part("lease keeper", self.lease.run())),
                self._rebalancer_task,
                loops.create_task(self._part("run recorder", self.recorder.run())),
                loops.create_task(self._part("run executor", self.executor.run())),
            ]
            # Notifications only speed things up; a store without them returns at once.
            listener = loops.create_task(self._part("listener", self.store.listen(self.rebalancer.wake.set)))
            try:
                self.executor.open()
                cancelled = False
                try:
                    await self._life.reached(WorkerState.STOPPING)
                except asyncio.CancelledError:
                    # Cancelled from outside: still hand the tasks over, without grace.
                    cancelled = True
                    self.request_stop(force=True)
                await self._finish_runs()
                await self._leave()
                if cancelled:
                    raise asyncio.CancelledError
            finally:
                # Let the loops end between rounds rather than cancel a statement in flight:
                # a cancelled query makes the driver cancel it on the server and wait, which
                # can hold a stopping worker for seconds.
                self._life.to(WorkerState.CLOSED)
                # The listener waits until cancelled (it sends no statement but its waits):
                # waiting for it held every stop LOOPS_STOP_WITHIN seconds.
                listener.cancel()
                _, late = await asyncio.wait([*self._loops, listener], timeout=LOOPS_STOP_WITHIN)
                for t in late:
                    t.cancel()
                await self.lease.wait_abandoned(LOOPS_STOP_WITHIN)

    async def _part(self, name: str, body: Coroutine[Any, Any, None]) -> None:
        """Run one of the worker's loops; if it crashes, stop the worker at once."""
        try:
            await body
        except Exception as exc:
            log.critical("the worker's %s crashed; stopping the worker", name, exc_info=True, extra={"worker": self.id})
            if self._crash is None:
                self._crash = exc
            self.request_stop(force=True)

    async def _finish_runs(self) -> None:
        """No new runs; let running ones finish within grace (unless forced), cancel the rest."""
        self._log(logging.INFO, "stopping: %d tasks, %d runs in progress", len(self._owned), self.executor.running)
        for ot in self._owned.values():
            ot.disarm()
        await self.executor.drop_waiting()
        forced = self._life.state >= WorkerState.FORCING
        if self.executor.running and not forced and not await self.executor.wait_idle(self.settings.grace):
            why = "stop forced" if self._life.state >= WorkerState.FORCING else "grace period over"
            self._log(logging.WARNING, "%s: cancelling %d runs", why, self.executor.running)
        await self.executor.cancel_all(Outcome.CANCELLED, "worker stopping")

    async def _leave(self) -> None:
        """Save what runs did, stop polling, and hand every task back in one statement."""
        self.executor.left_behind()
        slots = [self.recorder.slot_done(ot) for ot in self._owned.values() if ot.last_slot is not None]
        self.recorder.end_streaks()
        try:
            await self.recorder.flush()
        except Exception as exc:  # also a crashed recorder's: leaving matters more
            self._log(logging.WARNING, "could not save run records before leaving: %s", exc)
        await self._stop_polling()
        try:
            freed = await self.store.leave(self.id, slots)
            self._log(logging.INFO, "left the cluster; released %d tasks", freed)
        except StoreError as exc:
            self._log(logging.ERROR, "could not release tasks (they move after the lease TTL): %s", exc)
        self._owned.clear()
        self._life.to(WorkerState.CLOSED)

    async def _stop_polling(self) -> None:
        """Let the rebalancer finish the poll in progress, then stop, before leave(). A
        release of ours still in flight while leave() frees the same tasks holds their rows
        locked (its slot updates match by term, not owner): the other workers' claims,
        woken by leave's notification, would skip them (SKIP LOCKED) until their next poll."""
        self._life.to(WorkerState.LEAVING)
        self.rebalancer.wake.set()
        task = self._rebalancer_task
        if task is not None and not task.done():
            _, pending = await asyncio.wait({task}, timeout=POLL_STOP_WITHIN)
            for t in pending:
                t.cancel()

    # -- self-fencing ---------------------------------------------------------------------

    def _holding(self) -> bool:
        """True while this worker owns tasks or has runs in progress: what a lost lease fences."""
        return bool(self._owned) or self.executor.running > 0

    async def _self_fence(self, why: str) -> None:
        """Stop everything that could act on a lease we can no longer vouch for, then rejoin."""
        self._log(logging.ERROR, "self-fencing: %s; dropping %d tasks", why, len(self._owned))
        metrics.SELF_FENCES.inc()
        self.lease.distrust()
        for ot in self._owned.values():
            ot.disarm()
        await self.executor.drop_waiting()
        await self.executor.cancel_all(Outcome.LEASE_LOST, "lease lost")
        # Their records stay buffered (outcome lease_lost); their slots are not ours to advance.
        self.rebalancer.forget_all()
        self.recorder.forget_slots()
        rejoining = self._life.to(WorkerState.REJOINING)
        if await self.lease.join(rejoin=True) and rejoining:
            self._life.to(WorkerState.RUNNING)

    # -- sidecars (e.g. the HTTP interface) -----------------------------------------------

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
