"""What the worker's parts share: the tasks it owns, its log, and :class:`Shared`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tenure.context import Context
from tenure.kinds import TaskKind
from tenure.models import Task
from tenure.pauses import PauseView
from tenure.worker.lifecycle import Lifecycle

if TYPE_CHECKING:
    from tenure.config import Settings
    from tenure.store import Store

log = logging.getLogger("tenure.worker")

TaskId = tuple[str, str]

#: Tasks handled between two yields to the event loop wherever a worker goes through all of
#: its tasks (adopting, reconciling, dropping released ones, giving up waiting slots): at
#: 10,000 tasks one pass held the loop for tens of milliseconds.
YIELD_EVERY = 200


def default_worker_id() -> str:
    """host-pid-random: unique per process start, readable in tables and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(eq=False)
class OwnedTask:
    """A task this worker owns, with its local scheduling state.

    One object per ownership: a task released and claimed again is a new object, so a run
    that outlives its ownership can tell (``owned.get(id) is not ot``).
    """

    task: Task
    kind: TaskKind
    term: int
    next_slot: float
    #: Latest slot started under this ownership (remembered on release, flushed with runs).
    last_slot: float | None = None
    #: The event-loop time of the wake-up its next slot waits for (None: not armed).
    armed_at: float | None = None
    #: A trigger held back until the takeover delay is over.
    trigger_timer: asyncio.TimerHandle | None = None
    running: asyncio.Task[None] | None = None
    #: The run in progress's deadline: (the loop time of its wake-up, its timeout).
    deadline: tuple[float, float] | None = None
    ctx: Context | None = None
    #: Trigger requests up to this database time have been answered.
    trigger_done: float = 0.0
    #: A triggered run started under this ownership: its release says so, so that the
    #: store clears the trigger and the next owner does not run it again.
    triggered_ran: bool = False
    #: No run starts before this database time (the takeover delay).
    not_before: float = 0.0
    #: To be handed over once its run in progress ends; starts no new run.
    handover: bool = False
    #: Disabled while a run of it went on: released once that run ends (with ``handover``),
    #: not counted among the tasks of its kind held here meanwhile.
    disabled: bool = False
    #: Why the run in progress was cancelled on request (recorded as ``cancelled``).
    cancelled_because: str | None = None
    #: Due slots waiting for a place under the concurrency cap, oldest first, each with
    #: whether it answers a trigger (one slot under ``skip``: later ones replace it).
    waiting: list[tuple[float, bool]] = field(default_factory=list)
    #: The first slot passed while a run of it was going or waiting, since when it is not
    #: armed (``skip`` policy; see :mod:`tenure.worker.timers`); None when it is not parked.
    parked_from: float | None = None

    @property
    def id(self) -> TaskId:
        return (self.task.kind, self.task.key)

    @property
    def name(self) -> str:
        return f"{self.task.kind}/{self.task.key}"

    def disarm(self) -> None:
        """Cancel its timers: no new run starts from them."""
        self.armed_at = None
        if self.trigger_timer is not None:
            self.trigger_timer.cancel()
        self.trigger_timer = None


class WorkerLog:
    """The worker's logger: every line names the worker, and the task when there is one."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def __call__(self, level: int, msg: str, *args: Any, task: OwnedTask | None = None) -> None:
        extra = {"worker": self.worker_id}
        if task is not None:
            extra.update(kind=task.task.kind, key=task.task.key, term=str(task.term))
        log.log(level, msg, *args, extra=extra)


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What every part of one worker is given: the store, the settings, the worker's id,
    its lifecycle, its log, the task kinds it runs, the tasks it owns and the pauses in
    force."""

    store: Store
    settings: Settings
    worker_id: str
    life: Lifecycle
    log: WorkerLog
    #: The task kinds this worker runs, by name.
    kinds: Mapping[str, TaskKind] = field(default_factory=dict)
    #: The tasks this worker owns now, by id: one dict, changed in place by the parts.
    owned: dict[TaskId, OwnedTask] = field(default_factory=dict)
    #: The pauses in force (the rebalancer updates them each poll): a paused kind's
    #: slots are not armed and its waiting runs do not start.
    pauses: PauseView = field(default_factory=PauseView)


class Part:
    """A part of one worker (its lease keeper, rebalancer, executor, recorder), keeping
    what :class:`Shared` gives it: ``store``, ``settings``, ``id``, and the rest kept
    private."""

    def __init__(self, shared: Shared) -> None:
        self.store, self.settings, self.id = shared.store, shared.settings, shared.worker_id
        self._life, self._log = shared.life, shared.log
        self._kinds, self._owned, self._pauses = shared.kinds, shared.owned, shared.pauses
