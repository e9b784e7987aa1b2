"""Slot timers: each owned task's next slot, on a wheel of shared wake-ups.

Slots are on the database's clock, which the worker estimates as its monotonic clock (the
event loop's) plus the lease keeper's offset. A task is armed as long as its ownership:
armed on adoption, disarmed on release, self-fence or stop.

Due times are rounded up to a grid (the ``timer_grid`` setting), and the tasks due at one
grid point share one timer of the event loop: at 10,000 tasks that is a few hundred timers
on the loop's heap instead of 10,000, and no timer object made per run (which kept the
collector's full passes long). A coarser grid makes fewer wake-ups, each starting more
runs, and the runs of one wake-up reach the database together.

A slot that cannot start (the task's run is still going, or an earlier slot of it waits
for a place under the concurrency cap) *parks* the task under the ``skip`` policy: it is
not armed again until that run ends or the waiting slot starts, and the slots it passed
meanwhile are counted then (:meth:`SlotTimers.unpark`). Past capacity most slots are
such slots, and handling each one as it came cost a worker more than a run.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from tenure.config import DEFAULT_TIMER_GRID
from tenure.pauses import PauseView
from tenure.schedule import Misfire, Unreadable, count_slots, latest_slot, next_slot
from tenure.worker.owned import OwnedTask

if TYPE_CHECKING:
    from tenure.worker.executor import RunExecutor
    from tenure.worker.lease import LeaseKeeper

#: The grid run timeouts are rounded up to (seconds), and slots by default
#: (``Settings.timer_grid``).
TIMER_GRID = DEFAULT_TIMER_GRID

T = TypeVar("T")


class Wheel(Generic[T]):
    """Wake-ups of the event loop on a grid of ``step`` seconds: items due within one grid
    step share one timer of the loop, which calls ``due(at, items)`` with the items added
    for that grid point (loop time ``at``). Each wake-up costs far more than a run of a
    no-op handler; at most ``step`` of lag is added."""

    def __init__(self, due: Callable[[float, list[T]], None], *, step: float = TIMER_GRID) -> None:
        self._due = due
        self.step = step
        self._wakes: dict[float, tuple[asyncio.TimerHandle, list[T]]] = {}

    def grid(self, when: float) -> float:
        """The grid point at or after loop time ``when``."""
        return math.ceil(when / self.step) * self.step

    def add(self, at: float, item: T) -> None:
        """Hand ``item`` back at grid point ``at`` (from :meth:`grid`)."""
        wake = self._wakes.get(at)
        if wake is None:
            self._wakes[at] = wake = (asyncio.get_running_loop().call_at(at, self._wake, at), [])
        wake[1].append(item)

    def _wake(self, at: float) -> None:
        _, items = self._wakes.pop(at)
        self._due(at, items)

    def close(self) -> None:
        """Cancel every wake-up."""
        for handle, _ in self._wakes.values():
            handle.cancel()
        self._wakes.clear()


class SlotTimers:
    """Arms each owned task's next slot and hands due slots to the executor."""

    def __init__(
        self, *, lease: LeaseKeeper, executor: RunExecutor, pauses: PauseView, grid: float = TIMER_GRID
    ) -> None:
        self._lease = lease
        self._executor = executor
        self._pauses = pauses
        #: The tasks armed per grid point. A task disarmed or armed again stays listed
        #: where it was; its ``armed_at`` tells.
        self._wheel: Wheel[OwnedTask] = Wheel(self._wake, step=grid)

    def _at(self, due: float) -> float:
        return self._wheel.grid(due - self._lease.offset)

    def arm(self, ot: OwnedTask, *, not_before: float | None = None) -> None:
        """Set the timer for the task's next slot (not before ``not_before``, database time).
        A task whose schedule is unreadable is never armed (:class:`~tenure.schedule.Unreadable`)."""
        if isinstance(ot.task.schedule, Unreadable):
            return
        if not_before is not None:
            ot.not_before = max(ot.not_before, not_before)
        at = self._at(max(ot.next_slot, ot.not_before))
        ot.armed_at = at
        self._wheel.add(at, ot)

    def _wake(self, at: float, armed: list[OwnedTask]) -> None:
        for ot in armed:
            if ot.armed_at == at:  # not disarmed, nor armed for another time, since
                ot.armed_at = None
                self.fire(ot)

    def close(self) -> None:
        """Cancel every wake-up (the worker has stopped)."""
        self._wheel.close()

    def fire(self, ot: OwnedTask) -> None:
        """The task's slot is due: re-arm for the following one and dispatch this one."""
        if self._pauses.of(ot.task.kind) is not None:
            return  # armed again on resume, by the misfire policy (Rebalancer.apply_pauses)
        if isinstance(ot.task.schedule, Unreadable):
            return  # its row was edited by hand since it was armed: nothing to run
        slot = ot.next_slot
        if (ot.waiting or ot.running is not None) and ot.kind.misfire is Misfire.SKIP:
            if ot.parked_from is None:
                ot.parked_from = slot
            return  # armed again by unpark, when the run ends or the waiting slot starts
        ot.next_slot = self.following_slot(ot, slot)
        self.arm(ot)  # even when not running this one: a handover can be called off
        self._executor.submit(ot, slot, triggered=False)

    def unpark(self, ot: OwnedTask, *, arm: bool) -> tuple[float, int] | None:
        """End the task's parking (see the module docstring): the latest slot it passed
        and how many it passed, or None if it is not parked. With ``arm``, it is armed for
        the slot after the latest (its owner still holds it)."""
        first, ot.parked_from = ot.parked_from, None
        schedule = ot.task.schedule
        if first is None or isinstance(schedule, Unreadable):
            return None
        latest = max(first, latest_slot(schedule, ot.task.kind, ot.task.key, self._lease.db_time()))
        if arm:
            ot.next_slot = self.following_slot(ot, latest)
            self.arm(ot)
        return latest, count_slots(schedule, ot.task.kind, ot.task.key, first, latest)

    def trigger(self, ot: OwnedTask, at: float) -> None:
        """Answer a trigger asked at database time ``at``: run now, or once the takeover
        delay is over (a trigger is no reason to run before side effects settle)."""
        if self._pauses.of(ot.task.kind) is not None or isinstance(ot.task.schedule, Unreadable):
            return
        ot.trigger_done = max(ot.trigger_done, at)
        if self._lease.db_time() < ot.not_before:
            if ot.trigger_timer is not None:
                ot.trigger_timer.cancel()
            ot.trigger_timer = asyncio.get_running_loop().call_at(self._at(ot.not_before), self._pulled, ot, at)
            return
        self._executor.submit(ot, at, triggered=True)

    def _pulled(self, ot: OwnedTask, at: float) -> None:
        ot.trigger_timer = None
        self._executor.submit(ot, at, triggered=True)

    def following_slot(self, ot: OwnedTask, slot: float) -> float:
        schedule = ot.task.schedule
        if isinstance(schedule, Unreadable):  # never armed; edited so after it was (see Rebalancer)
            return math.inf
        nxt = next_slot(schedule, ot.task.kind, ot.task.key, slot)
        now = self._lease.db_time()
        if nxt >= now or ot.kind.misfire is Misfire.CATCH_UP:
            return nxt
        return latest_slot(schedule, ot.task.kind, ot.task.key, now)  # skip what was missed
