"""The worker's one state, and waiting for it to reach a stage of stopping."""

from __future__ import annotations

import asyncio
import contextlib
from enum import IntEnum


class WorkerState(IntEnum):
    """Where a worker is in its life. From ``STOPPING`` on it only moves forward."""

    #: Built, not yet registered with the store.
    STARTING = 0
    #: Registering (retrying while the store is down).
    JOINING = 1
    #: Fenced itself (its lease could not be vouched for); joining again with nothing held.
    REJOINING = 2
    #: Holding a lease, claiming its share and running tasks.
    RUNNING = 3
    #: Asked to stop: no new runs, running ones get the grace period.
    STOPPING = 4
    #: Asked again (or told to force): running ones are cancelled now.
    FORCING = 5
    #: Runs are over: polls stop and the tasks are handed back to the store.
    LEAVING = 6
    #: Left the cluster (or never joined): background loops end between rounds.
    CLOSED = 7


class Lifecycle:
    """The worker's state, with a wait on each stage of stopping.

    Every part reads this one value instead of flags of its own; a stage once reached is
    never undone, so a waiter cannot miss it.
    """

    def __init__(self) -> None:
        self._state = WorkerState.STARTING
        self._reached = {s: asyncio.Event() for s in WorkerState if s >= WorkerState.STOPPING}

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: nothing new starts."""
        return self._state >= WorkerState.STOPPING

    def to(self, state: WorkerState) -> bool:
        """Move to ``state``; False (and no change) if that would undo a stage of stopping."""
        if self._state >= WorkerState.STOPPING and state <= self._state:
            return False
        self._state = state
        for stage, event in self._reached.items():
            if stage <= state:
                event.set()
        return True

    async def reached(self, state: WorkerState) -> None:
        """Return once the worker is at ``state`` or past it (a stage of stopping)."""
        await self._reached[state].wait()

    async def sleep(self, seconds: float, *, until: WorkerState = WorkerState.STOPPING) -> None:
        """Sleep ``seconds``, waking early once ``until`` is reached."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reached(until), timeout=max(0.0, seconds))
