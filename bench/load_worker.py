"""One process of ``bench/load.py``: a tenure worker, or the floor's bare loop.

Started by ``load.py`` (``python bench/load_worker.py SYSTEM ...``), never imported by it.
Every system makes the same insert, one row ``(system, key, worker, token)`` per run, the
way an application would write it:

- ``plain``: a tenure worker (``App.run_worker()``, default settings) whose handler
  inserts through the application's own ``psycopg_pool.AsyncConnectionPool(min_size=2,
  max_size=4)`` in autocommit mode, on PostgreSQL (``--app-db``);
- ``fenced``: a tenure worker whose handler makes the insert inside ``async with
  ctx.fenced() as tx``, so the table lives in tenure's own store;
- ``floor``: no tenure at all. The process takes the keys whose CRC-32 modulo
  ``--processes`` is its ``--index`` and, at every whole second, fires one insert per key
  through the same kind of pool with ``asyncio.gather``; a second whose turn comes while
  the previous one's inserts are still running is skipped (nothing queues up).
- ``paced``: the floor's loop, but each key fired at its own moment of the second (its
  phase, the stable hash tenure gives it: the slots a scheduler of keyed tasks spreads)
  rather than all at the whole second, woken on the same grid as tenure's timers
  (``--timer-grid``, tenure's default); a key whose previous insert is still running skips
  its turn.

The table's ``at`` column defaults to the database's clock, so the statement the
handlers send is the four-column insert and nothing else.

SIGTERM ends the process: a tenure worker stops gracefully, the floor cancels its loop.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

import tenure
from tenure.config import DEFAULT_TIMER_GRID
from tenure.schedule import phase

KIND = "load"
EVERY = 1.0
POOL_MIN = 2
POOL_MAX = 4

#: The insert each run makes, per dialect of the database holding the table.
INSERT = {
    "postgresql": "INSERT INTO load_runs (system, key, worker, token) VALUES (%s, %s, %s, %s)",
    "mysql": "INSERT INTO load_runs (system, `key`, worker, token) VALUES (%s, %s, %s, %s)",
    "sqlite": "INSERT INTO load_runs (system, key, worker, token) VALUES (?, ?, ?, ?)",
}


def keys_of(n: int) -> list[str]:
    """The bench's task keys (the same list ``load.py`` installs)."""
    return [f"k{i:06d}" for i in range(n)]


def floor_share(keys: Sequence[str], index: int, processes: int) -> list[str]:
    """The keys process ``index`` of ``processes`` fires: split statically by a stable hash."""
    return [k for k in keys if zlib.crc32(k.encode()) % processes == index]


def app_pool(url: str) -> AsyncConnectionPool[Any]:
    return AsyncConnectionPool(url, min_size=POOL_MIN, max_size=POOL_MAX, kwargs={"autocommit": True}, open=False)


async def run_tenure(args: argparse.Namespace) -> None:
    app = tenure.App(args.store)
    pool = app_pool(args.app_db)

    if args.system == "plain":

        @app.task(KIND, every=EVERY)
        async def plain(ctx: tenure.Context) -> None:
            async with pool.connection() as conn:
                await conn.execute(INSERT["postgresql"], ("plain", ctx.key, ctx.worker_id, ctx.token))

    else:

        @app.task(KIND, every=EVERY)
        async def fenced(ctx: tenure.Context) -> None:
            async with ctx.fenced() as tx:
                await tx.execute(INSERT[ctx.dialect], ("fenced", ctx.key, ctx.worker_id, ctx.token))

    # The application's pool is opened before the worker starts, as an app would at start-up
    # (the fenced handler never uses it, but the process carries the same connections).
    await pool.open(wait=True)
    try:
        # Default settings but for the id, which names the process in the bench's figures,
        # and the timer grid when the bench was given one.
        await app.run_worker(settings=tenure.Settings(worker_id=args.id, timer_grid=args.timer_grid))
    finally:
        await pool.close()


Insert = Callable[[str], Coroutine[Any, Any, None]]
#: How a bare loop fires its share of the keys through an insert.
Fire = Callable[[list[str], Insert], Coroutine[Any, Any, None]]


async def run_bare(args: argparse.Namespace, fire: Fire) -> None:
    """A bare loop (the floor, the paced floor): ``fire`` makes this process's share of
    the inserts, through the application's kind of pool, until SIGTERM or SIGINT."""
    mine = floor_share(keys_of(args.n), args.index, args.processes)
    pool = app_pool(args.app_db)
    await pool.open(wait=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def insert(key: str) -> None:
        async with pool.connection() as conn:
            await conn.execute(INSERT["postgresql"], (args.system, key, args.id, 0))

    firing = asyncio.create_task(fire(mine, insert))
    try:
        await stop.wait()
    finally:
        firing.cancel()
        await asyncio.gather(firing, return_exceptions=True)
        await pool.close()


async def fire_every_second(mine: list[str], insert: Insert) -> None:
    """The floor: all the keys at each whole second, skipping seconds still busy."""
    while True:
        now = time.time()
        await asyncio.sleep(math.ceil(now) - now if now % 1 else 0.0)
        # An insert that fails counts as a run that did not happen; the loop carries on.
        await asyncio.gather(*(insert(k) for k in mine), return_exceptions=True)
        await asyncio.sleep(0.001)  # the next whole second, not the one just fired


async def fire_at_phases(mine: list[str], insert: Insert, grid: float) -> None:
    """The paced floor: each key at its phase in the second, woken on a grid of ``grid``
    seconds, as tenure's timers are; a key whose previous insert still runs skips its turn."""
    # Keys by their moment in the second, grouped by the grid point they are woken at.
    by_point: dict[int, list[str]] = {}
    for key in mine:
        by_point.setdefault(math.ceil(phase(KIND, key, EVERY) / grid), []).append(key)
    points = sorted(by_point.items())
    in_flight: dict[str, asyncio.Task[None]] = {}

    def done(task: asyncio.Task[None]) -> None:
        in_flight.pop(task.get_name(), None)
        if not task.cancelled():
            task.exception()  # an insert that failed is a run that did not happen

    second = math.floor(time.time()) + 1
    try:
        while True:
            for point, keys in points:
                delay = second + point * grid - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for key in keys:
                    if key not in in_flight:
                        in_flight[key] = task = asyncio.create_task(insert(key), name=key)
                        task.add_done_callback(done)
            second = max(second + 1, math.floor(time.time()))
    finally:
        await asyncio.gather(*in_flight.values(), return_exceptions=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("system", choices=("plain", "fenced", "floor", "paced"))
    p.add_argument("--id", required=True, help="worker id (tenure) or the floor process's name")
    p.add_argument("--store", help="tenure's store URL (plain, fenced)")
    p.add_argument("--app-db", required=True, help="PostgreSQL URL of the application's table (plain, floor)")
    p.add_argument("--n", type=int, default=0, help="tasks (floor: the keys to split)")
    p.add_argument("--index", type=int, default=0, help="floor: this process's index")
    p.add_argument("--processes", type=int, default=1, help="floor: how many processes share the keys")
    p.add_argument(
        "--timer-grid", type=float, default=DEFAULT_TIMER_GRID, help="tenure's timer_grid, the paced floor's grid"
    )
    args = p.parse_args(argv)
    if args.system in ("plain", "fenced") and not args.store:
        p.error(f"{args.system} needs --store")
    return args


if __name__ == "__main__":
    ns = parse_args()
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # psycopg's pool warns on every slow connection; the bench counts tenure's lines.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    print(f"load_worker {ns.system} {ns.id} pid {os.getpid()}", file=sys.stderr, flush=True)
    bare: dict[str, Fire] = {"floor": fire_every_second, "paced": functools.partial(fire_at_phases, grid=ns.timer_grid)}
    firing = bare.get(ns.system)
    asyncio.run(run_tenure(ns) if firing is None else run_bare(ns, firing))
