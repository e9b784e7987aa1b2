"""The lease keeper: joins, renews the worker's one lease, and fences the worker itself.

It owns the worker's view of the database's clock (an offset from the monotonic clock,
measured at every renewal) and its trust in the lease: a lease confirmed by a renewal
*sent* at monotonic time t is trusted until t + TTL - margin, never longer. Its loop
lives from the join until the worker has left (``CLOSED``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tenure import metrics
from tenure.errors import LeaseLost, StoreError, WorkerIdInUse
from tenure.worker.lifecycle import WorkerState
from tenure.worker.owned import Part, Shared, log

if TYPE_CHECKING:
    from tenure.models import WorkerLoad
    from tenure.store.liveness import Liveness

T = TypeVar("T")


class LeaseKeeper(Part):
    """Keeps the lease: join, renew every ``heartbeat``, self-fence when it cannot vouch.

    ``holding`` says whether the worker owns tasks or runs anything (what a lost lease
    fences); ``on_fence`` stops all of that and is awaited before the keeper rejoins.
    """

    def __init__(
        self,
        shared: Shared,
        *,
        holding: Callable[[], bool],
        on_fence: Callable[[str], Awaitable[None]],
        kinds: Sequence[str] = (),
        load: Callable[[], WorkerLoad] | None = None,
    ) -> None:
        super().__init__(shared)
        #: The kinds this worker runs, published with every (re)join.
        self.kinds = tuple(kinds)
        #: What the worker's load is now, published with every renewal (not a statement of
        #: its own: coordination stays one write per worker per heartbeat).
        self._load = load
        self._holding = holding
        self._on_fence = on_fence
        self.trusted_until = 0.0  # monotonic
        #: Self-fencings so far: a claim sent before one is not adopted.
        self.fences = 0
        #: The database's clock minus the monotonic clock.
        self.offset = 0.0
        self._offset_known = False
        #: The store asked this worker to hand its tasks over and take no more.
        self.draining = False
        self._abandoned: set[asyncio.Task[Any]] = set()  # timed-out store calls still unwinding
        #: The lock that stands for this worker's life (:meth:`Store.hold_liveness`), held
        #: from before the first join until after leaving; None outside that span.
        self.liveness: Liveness | None = None

    # -- clocks and trust -----------------------------------------------------------------

    def db_time(self) -> float:
        """The database's clock as this worker estimates it now."""
        return time.monotonic() + self.offset

    def trusted(self) -> bool:
        """True while the last confirmed renewal still vouches for the lease, and the
        liveness lock that stands for this worker has not been lost (the other workers
        then take it for dead and its lease for ended)."""
        if self.liveness is not None and self.liveness.lost.is_set():
            return False
        return time.monotonic() < self.trusted_until

    def distrust(self) -> None:
        """Stop vouching for the lease at once (self-fencing)."""
        self.trusted_until = 0.0
        self.fences += 1

    def _confirmed(self, sent: float, db_now: float, draining: bool) -> None:
        received = time.monotonic()
        self.trusted_until = sent + self.settings.lease_ttl - self.settings.trust_margin
        # The database read its clock between sent and received, so the offset lies in
        # [db_now - received, db_now - sent] (give or take the clock's 1 ms resolution).
        # Keep the estimate while it fits: a renewal that waited for the write lock gives a
        # wide interval, and must not move every timer by half its round trip; a quick one
        # narrows the estimate down.
        low, high = db_now - received - 0.001, db_now - sent + 0.001
        if self._offset_known:
            self.offset = min(max(self.offset, low), high)
        else:
            self.offset, self._offset_known = (low + high) / 2, True
        if draining and not self.draining:
            self._log(logging.INFO, "draining: handing tasks over and taking no more")
        self.draining = draining

    # -- joining --------------------------------------------------------------------------

    async def join(self, *, rejoin: bool = False) -> bool:
        """Register, retrying while the store is down; False if asked to stop first.

        On a first join, an id held by a live worker is a mistake (two workers given the
        same ``--id``) and raises :class:`WorkerIdInUse`. On a rejoin after self-fencing
        it means our own last renewal landed late: that clears when the lease expires,
        since nobody renews it now.
        """
        delay = 0.1
        while not self._life.stopping:
            sent = time.monotonic()
            try:
                if self.liveness is not None:
                    # Before registering: the row records the lock, and a claimer would take
                    # a registered worker without it for dead.
                    await self.liveness.ensure()
                lease = await self.store.register_worker(
                    worker_id=self.id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    ttl=self.settings.lease_ttl,
                    kinds=self.kinds,
                )
            except WorkerIdInUse:
                if not rejoin:
                    raise
                self._log(logging.WARNING, "waiting for our previous lease to expire before rejoining")
                await self._life.sleep(self.settings.heartbeat)
                continue
            except StoreError as exc:
                self._log(logging.WARNING, "cannot join yet: %s", exc)
                await self._life.sleep(delay)
                delay = min(delay * 2, self.settings.heartbeat)
                continue
            self._confirmed(sent, lease.db_now, lease.draining)
            self._log(logging.INFO, "joined; lease until %.3f (database clock)", lease.expires_at)
            return True
        return False

    # -- renewing -------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew every ``heartbeat`` until the worker has left."""
        while self._life.state < WorkerState.CLOSED:
            lost = self.liveness.lost if self.liveness is not None else None
            if lost is not None and lost.is_set() and not self._life.stopping:
                await self._on_fence(f"liveness lock lost: {self.liveness.reason if self.liveness else ''}")
                continue
            next_beat = time.monotonic() + self.settings.heartbeat
            sent = time.monotonic()
            budget = self.trusted_until - sent
            try:
                if not self._holding():
                    # Holding nothing, there is nothing to fence: give the renewal its whole
                    # span (a slow network, a join answered late) rather than fence for want
                    # of time and then wait for our own lease to expire before rejoining. The
                    # database refuses the renewal if the lease has expired meanwhile.
                    budget = max(budget, self.settings.lease_ttl - self.settings.trust_margin)
                elif budget <= 0:
                    raise TimeoutError
                load = self._load() if self._load is not None else None
                lease = await self.within(budget, self.store.renew_lease(self.id, self.settings.lease_ttl, load))
                metrics.RENEW_LATENCY.observe(time.monotonic() - sent)
                self._confirmed(sent, lease.db_now, lease.draining)
            except LeaseLost as exc:
                if self._life.state >= WorkerState.LEAVING:
                    # Its leave() removed the row while this renewal was on its way (every
                    # worker of a deployment stopped at once). Its runs are over (ended, or
                    # cancelled and unable to commit) and it no longer polls: nothing is left
                    # to fence, and a graceful stop is not a self-fence.
                    return
                await self._on_fence(f"lease lost: {exc}")
            except (TimeoutError, StoreError) as exc:
                # Holding nothing, a late renewal is retried rather than fenced, but not for
                # ever: renewals that keep landing too late to vouch for still keep the lease
                # alive in the store, and the other workers would leave this one's share of
                # the tasks to it. Past a TTL without trust it stops renewing and joins
                # afresh once that lease has expired.
                stranded = time.monotonic() > self.trusted_until + self.settings.lease_ttl
                if not self.trusted() and (self._holding() or stranded):
                    await self._on_fence(f"lease could not be renewed in time ({exc!r})")
                else:
                    self._log(logging.WARNING, "lease renewal failed, will retry: %r", exc)
                    next_beat = min(next_beat, time.monotonic() + self.settings.heartbeat / 4)
            await self._rest(next_beat - time.monotonic(), lost if lost is not None and not lost.is_set() else None)

    async def _rest(self, seconds: float, lost: asyncio.Event | None) -> None:
        """Sleep until the next renewal, waking early once the worker has left or the
        liveness lock is lost."""
        if lost is None:
            await self._life.sleep(seconds, until=WorkerState.CLOSED)
            return
        waits = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(self._life.reached(WorkerState.CLOSED))]
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def within(self, budget: float, call: Coroutine[Any, Any, T]) -> T:
        """``call``'s result, or :class:`TimeoutError` once ``budget`` seconds have passed.

        Not ``asyncio.timeout``: a driver may take far longer than asked to give a call up
        when the server cannot be reached (psycopg, cancelled mid-query, tries for 5 s to
        cancel it on the server and waits 5 s more), and a lease deadline cannot wait for
        that. The call runs as a task of its own; on time-out it is cancelled and left to
        unwind in the background (:meth:`wait_abandoned`)."""
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

    async def wait_abandoned(self, within: float) -> None:
        """Give store calls given up on a bounded time to unwind."""
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=within)
