"""The worker: keeps one lease, holds a fair share of tasks, and runs them on time.

This is the only place that starts background work. One worker is one asyncio loop, and
a supervisor (:class:`Worker`) of parts that each have one job:

- the **lease keeper** (:mod:`.lease`) renews the worker's single lease every
  ``heartbeat`` (one write, whatever the number of tasks) and fences the worker itself
  when a renewal cannot be confirmed in time: a lease confirmed by a renewal *sent* at
  monotonic time t is trusted until t + TTL - margin, never longer;
- the **rebalancer** (:mod:`.rebalancer`) polls every ``poll``: it reads the change
  counter (admin changes), the live workers and the enabled-task count, then claims or
  releases tasks to reach its fair share;
- the **slot timers** (:mod:`.timers`) keep one timer per owned task for its next slot;
- the **run executor** (:mod:`.executor`) turns a due slot into a run, enforces its
  timeout and runs synchronous handlers in its thread pool;
- the **run recorder** (:mod:`.recorder`) buffers run records and finished slots and
  writes them in one transaction per ``poll``: no write per run on the hot path;
- the **watchdog** (:mod:`.watchdog`) names whatever blocks the event loop.

Slots are on the database's clock: the worker estimates it as its monotonic clock plus
an offset measured at every renewal, so a worker whose wall clock is wrong by minutes
schedules exactly like the others.
"""

from tenure.kinds import Sidecar
from tenure.worker.lifecycle import WorkerState
from tenure.worker.owned import OwnedTask, default_worker_id
from tenure.worker.supervisor import LOOPS_STOP_WITHIN, SIDECAR_STOP_WITHIN, Worker, WorkerProbe
from tenure.worker.watchdog import LoopWatchdog

__all__ = [
    "LOOPS_STOP_WITHIN",
    "SIDECAR_STOP_WITHIN",
    "LoopWatchdog",
    "OwnedTask",
    "Sidecar",
    "Worker",
    "WorkerProbe",
    "WorkerState",
    "default_worker_id",
]
