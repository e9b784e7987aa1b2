"""What an application registers and a worker runs: task kinds, their handlers, sidecars.

A leaf module (no store, no worker at run time), so that the App, the worker and the
tools can all name these types without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from tenure.context import Context
from tenure.schedule import Every, Misfire, Schedule, StoredSchedule

if TYPE_CHECKING:
    from tenure.worker import Worker

Handler: TypeAlias = Callable[[Context], Awaitable[None]] | Callable[[Context], None]

#: Run timeout of a cron task whose kind sets none (a cron schedule has no fixed period).
CRON_TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True)
class TaskKind:
    """A kind registered in code: its handler and the defaults for its tasks."""

    kind: str
    handler: Handler
    schedule: Schedule | None
    timeout: float | None
    misfire: Misfire

    def timeout_for(self, schedule: StoredSchedule) -> float:
        """The run timeout: as registered, else the period of an ``every`` schedule (so runs
        never overlap), else (cron) :data:`CRON_TIMEOUT`."""
        if self.timeout is not None:
            return self.timeout
        return schedule.seconds if isinstance(schedule, Every) else CRON_TIMEOUT


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
