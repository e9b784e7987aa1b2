"""The ``timer_grid`` setting: a worker arms its tasks' slots on the grid it was given, so
that the slots due within one step share one wake-up of its event loop.

The worker's parts run in this process on a real SQLite store, its executor never opened
(no run starts), and one poll claims the tasks: what is checked is where each slot's
timer was set, not when anything ran, which no machine's load can change.
"""

from __future__ import annotations

import time
from pathlib import Path

import tenure
from tenure.worker.supervisor import Worker

TASKS = 40
GRID = 0.25  # a power of two: the grid points are exact in floating point


async def test_a_worker_arms_its_slots_on_its_timer_grid(tmp_path: Path) -> None:
    app = tenure.App(f"sqlite:///{tmp_path / 'grid.db'}")

    @app.task("tick", every=1.0)
    async def tick(ctx: tenure.Context) -> None:  # never started: the executor is not opened
        pass

    await app.open(migrate=True)
    worker = Worker(store=app.store, kinds=app.kinds, settings=tenure.Settings(worker_id="w1", timer_grid=GRID))
    try:
        await app.sync_tasks("tick", {f"k{i:02d}": None for i in range(TASKS)})
        assert await worker.lease.join()
        deadline = time.monotonic() + 10.0
        while len(worker._owned) < TASKS:
            assert time.monotonic() < deadline, "a lone worker did not claim every task"
            await worker.rebalancer._poll_once()
        armed = list(worker._owned.values())
        # Each slot's timer is at the first grid point at or after it (loop time)...
        for ot in armed:
            assert ot.armed_at is not None, f"{ot.task.key} was claimed but not armed"
            assert ot.armed_at % GRID == 0, f"{ot.task.key} armed off the grid, at {ot.armed_at}"
            slot = max(ot.next_slot, ot.not_before) - worker.lease.offset
            assert slot <= ot.armed_at < slot + GRID + 1e-9, (ot.task.key, slot, ot.armed_at)
        # ...so forty slots spread over a second share at most five wake-ups (on the 4 ms
        # default grid they need about as many as there are tasks).
        wake_ups = {ot.armed_at for ot in armed}
        assert len(wake_ups) <= 5, sorted(w for w in wake_ups if w is not None)
    finally:
        worker.rebalancer.forget_all()
        worker.timers.close()
        worker.executor.close()
        await app.close()
