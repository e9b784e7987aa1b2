"""The rebalancer: polls the store, holds this worker's fair share, and keeps what it owns
in step with the store (disabled, removed, edited, triggered tasks).

Its loop lives from the join until the worker starts leaving (``LEAVING``): a release of
ours still in flight while ``leave()`` frees the same tasks would hold their rows locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from tenure import metrics
from tenure.errors import LeaseLost, StoreError
from tenure.models import Claim, ClusterView, Freed, SlotDone
from tenure.schedule import Unreadable, first_slot
from tenure.worker.lifecycle import WorkerState
from tenure.worker.owned import YIELD_EVERY, OwnedTask, Part, Shared, TaskId, log

if TYPE_CHECKING:
    from tenure.worker.executor import RunExecutor
    from tenure.worker.lease import LeaseKeeper
    from tenure.worker.recorder import RunRecorder
    from tenure.worker.timers import SlotTimers

#: How often a worker re-reads all its tasks even when no admin change was announced: a
#: safety net only. Admin changes move the change counter, and a poll whose store call
#: failed (a claim or release that may have committed unseen) re-reads at the next poll.
#: Rare, so that a worker at rest makes one store call a poll (it was every 30 s, which put
#: the fleet bench's coordination just over one call per heartbeat plus one per poll).
RECONCILE_EVERY = 300.0
#: Most tasks released in one statement: preparing a release of 5,000 (each task's slot,
#: the JSON) held the loop ~15 ms. A fleet's releases are tens of tasks, one statement each.
RELEASE_CHUNK = 1_000
#: Tasks adopted since the last ``gc.freeze()`` that make it worth another.
FREEZE_AFTER = 1_000
#: Longest a newcomer waits for the membership it sees to stop growing before it claims
#: (it waits a poll, at most this): workers started together register within about a
#: second of each other on a busy machine, and the wait is paid once per join.
SETTLE_MAX = 2.0


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """The cyclic garbage collector off for a large claim round, and as it was after: the
    thousands of objects a round builds live as long as their ownership (and are frozen
    after it), and the collector's passes over them cost about a fifth of turning claimed
    rows into tasks, at a fleet's start when every core is busy."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class Rebalancer(Part):
    """Claims and releases tasks to reach this worker's share, and reconciles them."""

    def __init__(
        self,
        shared: Shared,
        *,
        lease: LeaseKeeper,
        timers: SlotTimers,
        recorder: RunRecorder,
        executor: RunExecutor,
    ) -> None:
        super().__init__(shared)
        self._lease = lease
        self._timers = timers
        self._recorder = recorder
        self._executor = executor
        #: Wakes the loop for a poll now (a notification, a stop).
        self.wake = asyncio.Event()
        #: The change counter at the last reconcile; None forces one at the next poll.
        self.changes_seen: int | None = None
        self._reconcile_at = 0.0
        #: Highest term seen per task: a term that goes backwards is refused.
        self.max_term_seen: dict[TaskId, int] = {}
        self._adopted_unfrozen = 0
        #: The live workers seen at the last poll, and when a worker not seen before last
        #: appeared (monotonic); a newcomer claims once that is a settle window ago.
        self._members: frozenset[str] = frozenset()
        self._grew_at = 0.0
        self._newcomer = True
        #: Seconds until the next poll when it must come before ``poll`` (a settle ending).
        self._poll_in: float | None = None

    async def run(self) -> None:
        """Poll every ``poll`` (or when woken) until the worker starts leaving."""
        while self._life.state < WorkerState.LEAVING:
            # Clear before polling, not after: a wake-up (a notification, say a worker
            # leaving) that arrives while this poll runs must cause another poll at once,
            # not wait for the next poll interval.
            self.wake.clear()
            try:
                await self._poll_once()
            except StoreError as exc:
                self._log(logging.WARNING, "task poll failed: %s", exc)
                # A claim or release may have committed without our hearing of it: the
                # store may say we own tasks we do not run, or the reverse.
                self.changes_seen = None
            except LeaseLost:
                pass  # the lease keeper notices and fences
            if self._life.state >= WorkerState.LEAVING:
                break
            wait, self._poll_in = self._poll_in or self.settings.poll, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(wait, self.settings.poll))

    async def _poll_once(self) -> None:
        """One round: read the cluster, reconcile what we own, release our surplus, claim
        up to our share.

        Only claiming needs a lease we trust. Reading changes nothing, and releasing only
        gives up tasks we own, each guarded by its term (a task taken over meanwhile is
        left alone), so a worker whose renewal is late still hands over its surplus, and
        the tasks disabled or paused meanwhile, instead of sitting on them until it has
        fenced itself and its lease has run out."""
        if not self._owned and not self._lease.trusted():
            return  # nothing to give up, nothing to claim (joining, or rejoining after a fence)
        view = await self.store.cluster_view()
        liveness = self._lease.liveness
        if liveness is not None:
            # Watch the next live worker's lock: its crash wakes us for a poll at once.
            liveness.watch(view.live_workers, self.wake.set)
        now = time.monotonic()
        if view.changes != self.changes_seen or now >= self._reconcile_at:
            complete = await self._refresh_owned(strays=self._lease.trusted())
            # Strays held back while untrusted: reconcile again at the next poll.
            self.changes_seen = view.changes if complete else None
            self._reconcile_at = now + RECONCILE_EVERY
        disabled = [ot for ot in self._owned.values() if ot.disabled and ot.running is None]
        if disabled:
            await self.release(disabled)
        targets = self.kind_shares(view)
        held = Counter(ot.task.kind for ot in self._owned.values() if not ot.disabled)
        for ot in self._owned.values():
            if ot.handover and not ot.disabled and held[ot.task.kind] <= targets.get(ot.task.kind, 0):
                # A task marked for handover while it ran is no longer surplus (a worker
                # left since): keep it, and let it run again.
                self._log(logging.INFO, "handover called off: no longer surplus", task=ot)
                ot.handover = False
        surplus = {kind: held[kind] - t for kind, t in targets.items() if held[kind] > t}
        if surplus:
            await self._release_surplus(surplus)
        if self._settling(view, now):
            return
        for kind, target in targets.items():
            if held[kind] >= target or not self._lease.trusted():
                continue
            fences = self._lease.fences
            wanted = min(target - held[kind], self.store.claim_chunk)
            start = self.claim_start(view, kind)
            with _collector_paused(wanted > YIELD_EVERY):
                claims = await self.store.claim_tasks(self.id, kinds=[kind], limit=wanted, start=start)
                if not await self._adopt_all(kind, claims, fences):
                    return
            self._adopted_unfrozen += len(claims)
            if len(claims) == wanted < target - held[kind]:
                self.wake.set()  # more to claim: another round at once
        if self._adopted_unfrozen >= FREEZE_AFTER and not self.wake.is_set():
            # Owned tasks live as long as their ownership: keep them out of the
            # collector's full passes, which at 10,000 tasks held the loop for 130 ms.
            # (A cycle of garbage frozen with them stays until the process ends: claims
            # make next to none, and claim waves are few.)
            self._adopted_unfrozen = 0
            gc.freeze()

    async def _adopt_all(self, kind: str, claims: list[Claim], fences: int) -> bool:
        """Adopt ``claims`` (of ``kind``), letting the loop turn every :data:`YIELD_EVERY`;
        False if this worker fenced itself meanwhile (the rest are not adopted).

        One log line at INFO for the round (each task's own at DEBUG: a start of thousands
        of tasks a worker wrote thousands of lines), and the metrics once per round."""
        how: Counter[str] = Counter()
        try:
            for i, claim in enumerate(claims):
                if i % YIELD_EVERY == 0:
                    if i:
                        await asyncio.sleep(0)
                    if fences != self._lease.fences:
                        # This worker fenced itself while the claim was on its way (or while
                        # adopting): the tasks are ours in the store, under a lease we no
                        # longer vouch for. Running them would only fence us again at the next
                        # renewal; the reconcile after the rejoin hands them back as strays.
                        self.changes_seen = None
                        return False
                if self._adopt(claim):
                    how[claim.task.freed_how.value] += 1
        finally:
            metrics.TASKS_HELD.set(len(self._owned))
            for freed_how, n in how.items():
                metrics.TERM_CHANGES.labels(freed_how).inc(n)
            if how:
                self._log(
                    logging.INFO,
                    "claimed %d %s tasks (%s); %d held",
                    how.total(),
                    kind,
                    ", ".join(f"{n} {freed_how}" for freed_how, n in sorted(how.items())),
                    len(self._owned),
                )
        return True

    def _settling(self, view: ClusterView, now: float) -> bool:
        """True while this worker, a newcomer, should not claim yet: the newest live member
        registered less than a settle window (a poll, at most :data:`SETTLE_MAX`) ago.

        Workers started together register over a second or more; each claiming its share
        of the membership it saw first would claim N/1, N/2… and hand most of it back as
        the others appear (1.3-2.1 x the moves needed, measured by bench/fleet.py). A
        newcomer holds its claims until that membership has stopped growing, then claims
        its share of it once. Only newcomers wait: a worker past its first settled poll
        claims at once, so that the tasks of a worker that died are taken over within the
        failover bound even while others join. Surplus is released while settling.

        The window runs from the newest member's registration on the database's clock
        (``ClusterView.newest_start``), not from when this worker happened to notice it: a
        worker that saw the last member a poll late would otherwise claim a poll after the
        others, and 40 workers started at once reached their fair share up to two polls
        later than the window asks (bench/fleet.py). Every newcomer of one start then
        claims at the same moment, a window after the last registration. A store that
        gives no registration times (none does today) falls back to when the membership
        was seen to grow.
        """
        members = frozenset(view.live_workers)
        if members - self._members:
            self._grew_at = now
        self._members = members
        if not self._newcomer:
            return False
        window = min(self.settings.poll, SETTLE_MAX)
        if view.newest_start is not None:
            since = self._lease.db_time() - view.newest_start
            left = min(window, window - since)
        else:
            left = self._grew_at + window - now
        if left > 0:
            self._poll_in = left
            return True
        self._newcomer = False
        return False

    def kind_shares(self, view: ClusterView) -> dict[str, int]:
        """This worker's share of each kind it runs: the kind's enabled tasks split over
        the live workers that run that kind (a worker never counts for a kind it lacks, so
        a rolling deploy that adds a kind hands its tasks only to the workers that have it)."""
        return {
            kind: self.fair_share(view.runners(kind), view.enabled_by_kind.get(kind, 0), kind) for kind in self._kinds
        }

    def claim_start(self, view: ClusterView, kind: str) -> int:
        """Where this worker's claims of ``kind`` begin among the free tasks (a hint to the
        store): its rank among the kind's runners times an even share. Workers started
        together then each walk their own stretch of the free tasks rather than all walking
        from the first one over the rows the others have just locked, which made 40
        claims at once cost PostgreSQL about three times as much (bench/fleet.py)."""
        runners = self._with_me(view.runners(kind))
        return runners.index(self.id) * (view.enabled_by_kind.get(kind, 0) // len(runners))

    def _with_me(self, live: list[str]) -> list[str]:
        """The sorted ids ``live``, this worker's among them (a newcomer not yet in the
        view counts itself where it will be)."""
        return live if self.id in live else sorted([*live, self.id])

    def fair_share(self, live: list[str], enabled: int, kind: str = "") -> int:
        """This worker's share of ``enabled`` tasks of ``kind`` among ``live``: split
        evenly, the remainder to the ids that follow a point fixed by the kind (the same in
        every process), so that many small kinds do not all give their extra task to the
        same worker."""
        if self._lease.draining or self._life.stopping:
            return 0
        live = self._with_me(live)
        w = len(live)
        base, extra = divmod(enabled, w)
        position = (live.index(self.id) - zlib.crc32(kind.encode())) % w
        return base + (1 if position < extra else 0)

    async def _refresh_owned(self, *, strays: bool = True) -> bool:
        """Reconcile owned tasks with the store: disabled, removed, triggered, edited, and
        any task the store says is ours that we are not running (a release that failed, a
        self-fence); and pauses, paused or lifted.

        With ``strays`` False (the lease is not trusted), the strays are left for a later
        reconcile: right after a self-fence their runs were only told to stop (a sync
        handler's thread may still be at work), and released now they would be taken over
        as released, without the takeover delay an expired lease calls for. Returns False
        if strays were left."""
        for change in self._pauses.update(await self.store.list_pauses()):
            self._log(logging.INFO, "%s", change)
        self.apply_pauses()
        rows = {(t.kind, t.key): t for t in await self.store.owned_tasks(self.id)}
        to_release: list[OwnedTask] = []
        for i, (k, ot) in enumerate(list(self._owned.items())):
            if i and i % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # thousands of tasks: let the loop turn between chunks
            if self._owned.get(k) is not ot:
                rows.pop(k, None)
                continue  # dropped meanwhile (a self-fence, a release)
            row = rows.pop(k, None)
            if row is None or row.term != ot.term:
                self._log(logging.INFO, "task removed or no longer ours", task=ot)
                self.drop(ot)
                if ot.running is not None:
                    await self._cancel_if_disabled_with_cancel(ot)
            elif not row.enabled:
                if ot.running is None:
                    self._log(logging.INFO, "task disabled; releasing it", task=ot)
                    to_release.append(ot)
                elif not ot.disabled:
                    # A plain disable lets the run in progress finish and commit: released
                    # now, its commit was refused and it was recorded as a lost lease.
                    self._log(logging.INFO, "task disabled; releasing it once its run ends", task=ot)
                    ot.disabled = ot.handover = True
                    ot.disarm()
            elif row.version != ot.task.version:
                was_unreadable = isinstance(ot.task.schedule, Unreadable)
                ot.task = row
                if isinstance(row.schedule, Unreadable):
                    if not was_unreadable:
                        ot.disarm()
                        self._unreadable(ot)
                elif was_unreadable:  # repaired: runs from its next slot on
                    self._log(logging.INFO, "schedule readable again: %s", row.schedule.describe(), task=ot)
                    self._arm_first(ot, done_before=row.last_slot)
                if row.trigger_at is not None and row.trigger_at > ot.trigger_done:
                    self._timers.trigger(ot, row.trigger_at)
        if to_release:
            await self.release(to_release)
        if rows and not strays:
            return False
        if rows:  # ours in the store, unknown here: give them back rather than sit on them
            await self.store.release_tasks(
                self.id,
                [
                    SlotDone(kind=t.kind, key=t.key, term=t.term, slot=self._recorder.done_through(t, t.last_slot))
                    for t in rows.values()
                ],
            )
        return True

    def apply_pauses(self) -> None:
        """Cancel runs a pause asks to cancel; arm again the tasks whose pause was lifted."""
        if self._life.stopping:
            return
        for ot in self._owned.values():
            pause = self._pauses.cancels(ot.task.kind)
            if pause is not None:
                self._executor.cancel(ot, f"paused by {pause.by}")
            elif (
                ot.armed_at is None
                and self._pauses.of(ot.task.kind) is None
                and not isinstance(ot.task.schedule, Unreadable)
            ):
                # Resumed: the slots missed meanwhile follow the misfire policy, as after a
                # takeover (skip: the latest runs once; catch_up: each runs).
                self._arm_first(ot, done_before=ot.last_slot if ot.last_slot is not None else ot.task.last_slot)
                if ot.task.trigger_at is not None and ot.task.trigger_at > ot.trigger_done:
                    self._timers.trigger(ot, ot.task.trigger_at)

    def _unreadable(self, ot: OwnedTask) -> None:
        """Say once (per claim, or per edit that made it so) that a held task is not run."""
        self._log(
            logging.ERROR,
            "schedule %s; the task is held and not run until its row is repaired (tasks sync, or remove and "
            "add it) or removed",
            ot.task.schedule.describe(),
            task=ot,
        )

    def _arm_first(self, ot: OwnedTask, *, done_before: float | None) -> None:
        """Arm a held task from its first slot, by its kind's misfire policy."""
        schedule = ot.task.schedule
        if isinstance(schedule, Unreadable):
            return
        ot.next_slot = first_slot(
            schedule,
            ot.task.kind,
            ot.task.key,
            now=self._lease.db_time(),
            done_before=done_before,
            misfire=ot.kind.misfire,
        )
        self._timers.arm(ot)

    async def _cancel_if_disabled_with_cancel(self, ot: OwnedTask) -> None:
        """Cancel the run of a task taken from us by ``disable --cancel``: disabled, and
        freed at our own term (a takeover would have a new term). Its commit is refused by
        the database already; cancelling stops the handler's work too."""
        row = await self.store.get_task(ot.task.kind, ot.task.key)
        if row is not None and not row.enabled and row.owner is None and row.term == ot.term:
            self._executor.cancel(ot, "task disabled with cancel")

    async def _release_surplus(self, surplus: Mapping[str, int]) -> None:
        """Hand over ``surplus[kind]`` tasks of each kind: idle ones now; running ones
        start no new run and go at a later poll, once idle, so that a run in progress is
        never refused its commit (when stopping, the supervisor's leave() releases them
        after the grace period)."""
        idle: list[OwnedTask] = []
        for kind, count in surplus.items():
            of_kind = sorted(
                (ot for ot in self._owned.values() if ot.task.kind == kind and not ot.disabled),
                key=lambda ot: (ot.running is not None, ot.name),
            )
            for ot in of_kind[:count]:
                if ot.running is None:
                    idle.append(ot)
                    continue
                if not ot.handover:
                    self._log(logging.INFO, "handing over once its run ends", task=ot)
                ot.handover = True
        if idle:
            await self.release(idle)

    async def release(self, tasks: list[OwnedTask]) -> None:
        """Give ``tasks`` back to the store (their finished slots and answered triggers
        with them), :data:`RELEASE_CHUNK` a statement."""
        # No new runs while the release is on its way, nor while they are dropped: marked
        # for handover, none of them starts, not even a slot that waited for a place.
        handover = [ot.handover for ot in tasks]
        for ot in tasks:
            ot.disarm()
            ot.handover = True
        debug = log.isEnabledFor(logging.DEBUG)
        released = 0
        try:
            for start in range(0, len(tasks), RELEASE_CHUNK):
                chunk = tasks[start : start + RELEASE_CHUNK]
                try:
                    await self.store.release_tasks(self.id, [self._recorder.slot_done(ot) for ot in chunk])
                except BaseException:
                    for ot, was in zip(tasks[start:], handover[start:], strict=True):
                        ot.handover = was
                        if self._owned.get(ot.id) is ot:
                            self._timers.arm(ot)
                    raise
                released += len(chunk)
                for i, ot in enumerate(chunk):
                    if i and i % YIELD_EVERY == 0:
                        # Dropping records the slots a task waited for or passed (~15 µs
                        # each): an overloaded worker handing 5,000 tasks to a newcomer held
                        # its loop 65 ms in one pass.
                        await asyncio.sleep(0)
                    self.drop(ot)
                    if debug:
                        self._log(logging.DEBUG, "released", task=ot)
        finally:
            # One line at INFO (each task's own at DEBUG), as for claims: a worker handing
            # over thousands of tasks wrote thousands of lines. Also when a later statement
            # failed: the chunks before it are released and gone from here.
            if released:
                kinds = Counter(ot.task.kind for ot in tasks[:released])
                self._log(
                    logging.INFO,
                    "released %d tasks (%s)%s; %d held",
                    released,
                    ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
                    "" if released == len(tasks) else f", {len(tasks) - released} kept: the next release failed",
                    len(self._owned),
                )

    def drop(self, ot: OwnedTask) -> None:
        """Forget a task locally. A run in progress finishes; its commit is refused by the
        database if the task has moved on."""
        if self._owned.get(ot.id) is ot:
            del self._owned[ot.id]
        metrics.TASKS_HELD.set(len(self._owned))
        ot.disarm()
        self._executor.let_go(ot)
        self._recorder.forget_slot(ot)

    def forget_all(self) -> None:
        """Forget every task at once (self-fencing): timers off, nothing left to release."""
        for ot in self._owned.values():
            ot.disarm()
        self._owned.clear()
        metrics.TASKS_HELD.set(0)
        self.changes_seen = None
        # Rejoining is joining: workers that fenced together (the store restarted) come back
        # together, and should settle before they claim as at a start.
        self._newcomer, self._members = True, frozenset()

    def _adopt(self, claim: Claim) -> bool:
        """Own a claimed task: arm its first slot. False if it is refused (its term went
        backwards). The caller updates the metrics and logs the round."""
        task = claim.task
        k = (task.kind, task.key)
        previous = self.max_term_seen.get(k)
        if previous is not None and task.term <= previous:
            # Terms only grow; seeing one go back means the store lost writes (e.g. an
            # asynchronous replica was promoted). Refuse to run on it.
            self._log(logging.CRITICAL, "term went backwards for %s/%s: %d after %d", *k, task.term, previous)
            return False
        self.max_term_seen[k] = task.term
        kind = self._kinds[task.kind]
        now = self._lease.db_time()
        schedule = task.schedule
        if isinstance(schedule, Unreadable):
            # Held, never run: released, it would be claimed again at once, here or
            # elsewhere, and logged again every poll. Repairing or removing the row ends it.
            ot = OwnedTask(task=task, kind=kind, term=task.term, next_slot=math.inf)
            self._owned[k] = ot
            self._unreadable(ot)
            return True
        slot = first_slot(schedule, task.kind, task.key, now=now, done_before=claim.done_before, misfire=kind.misfire)
        ot = OwnedTask(task=task, kind=kind, term=task.term, next_slot=slot)
        self._owned[k] = ot
        not_before = now
        if task.freed_how is Freed.EXPIRED and self.settings.takeover_delay > 0:
            not_before = now + self.settings.takeover_delay
        if log.isEnabledFor(logging.DEBUG):
            self._log(logging.DEBUG, "claimed (%s); first slot in %.3fs", task.freed_how.value, slot - now, task=ot)
        self._timers.arm(ot, not_before=not_before)
        if task.trigger_at is not None:
            self._timers.trigger(ot, task.trigger_at)
        return True
