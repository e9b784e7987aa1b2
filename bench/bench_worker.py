"""One benchmark worker process: a tenure App with bench kinds, run until SIGTERM.

Started by the bench scripts (``python bench/bench_worker.py --store URL --id ID ...``),
never imported by them. Kinds:

- ``noop``: an async handler that does nothing (the cost of tenure itself);
- ``fenced``: one fenced insert into ``bench_commits`` per run (the table must exist).

With ``--stats PATH`` the app's store is wrapped in a :class:`CountingStore`, and every
``--stats-every`` seconds the process writes its cumulative counters (store calls, rows
and seconds per method, handler executions) to PATH as JSON, replaced atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import tenure

#: Store methods counted, by category. Writes take SQLite's write lock.
COORDINATION_WRITES = (
    "register_worker",
    "renew_lease",
    "claim_tasks",
    "release_tasks",
    "leave",
    "reap_workers",
    "prune_runs",
)
COORDINATION_READS = ("cluster_view", "owned_tasks")
RUN_RECORDS = ("record_runs",)

EXECUTIONS = 0
#: Claims whose times a worker keeps for its statistics (a start takes one to a few).
CLAIMS_KEPT = 20


class CountingStore:
    """A proxy around any store (SQLite, PostgreSQL, MySQL) counting calls, rows and time
    of every async method a worker calls on it; ``fenced`` transactions are counted on
    entry. Everything else passes straight through.

    ``rows`` is what the call wrote or read: 1 for a lease, the tasks claimed, released
    or read, and for ``record_runs`` the run rows; ``slot_rows`` the slot updates that
    ride along with them (one UPDATE per task that ran, in the same transaction).
    A store call is one transaction: a few statements (on a server, one round trip
    each, BEGIN/COMMIT included); ``listen`` is one long-lived call, not counted per
    notification.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.counts: dict[str, dict[str, float]] = {}
        #: Each claim's wall-clock start and end and the tasks it took (the first
        #: :data:`CLAIMS_KEPT`): the fleet bench's timeline of a start, per worker.
        self.claims: list[tuple[float, float, int]] = []

    def _count(self, name: str, started: float, rows: int, **extra: int) -> None:
        c = self.counts.setdefault(name, {"calls": 0, "rows": 0, "seconds": 0.0})
        c["calls"] += 1
        c["rows"] += rows
        c["seconds"] += time.perf_counter() - started
        for k, v in extra.items():
            c[k] = c.get(k, 0) + v

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "fenced":

            def fenced(*args: Any, **kwargs: Any) -> Any:
                self._count("fenced", time.perf_counter(), 1)
                return attr(*args, **kwargs)

            return fenced
        if not inspect.iscoroutinefunction(attr) or name == "listen":
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            t, wall = time.perf_counter(), time.time()
            result = await attr(*args, **kwargs)
            if name == "claim_tasks" and len(self.claims) < CLAIMS_KEPT:
                self.claims.append((wall, time.time(), _rows(result)))
            if name == "record_runs":
                runs, slots = args[0], args[1]  # record_runs(runs, slots)
                if runs or slots:
                    self._count(name, t, len(runs), slot_rows=len(slots))
            else:
                self._count(name, t, _rows(result))
            return result

        return counted


def _rows(result: Any) -> int:
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if isinstance(result, list | tuple):
        return len(result)
    return 1


FENCED_SQL = {
    "sqlite": "VALUES (?, ?, ?, ?, ?, (julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "VALUES (%s, %s, %s, %s, %s, extract(epoch from clock_timestamp()))",
    "mysql": "VALUES (%s, %s, %s, %s, %s, UNIX_TIMESTAMP(NOW(6)))",
}


def build_app(store: str, *, fenced_table: str = "bench_commits") -> tenure.App:
    app = tenure.App(store)

    @app.task("noop", every=1.0)
    async def noop(ctx: tenure.Context) -> None:
        global EXECUTIONS
        EXECUTIONS += 1

    @app.task("fenced", every=1.0)
    async def fenced(ctx: tenure.Context) -> None:
        global EXECUTIONS
        EXECUTIONS += 1
        async with ctx.fenced() as tx:
            key = "`key`" if ctx.dialect == "mysql" else "key"
            await tx.execute(
                f"INSERT INTO {fenced_table} (kind, {key}, worker, term, scheduled_at, committed_at) "
                + FENCED_SQL[ctx.dialect],
                (ctx.kind, ctx.key, ctx.worker_id, ctx.token, ctx.scheduled_at),
            )

    return app


async def write_stats(path: Path, store: CountingStore, every: float) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    while True:
        snapshot: dict[str, Any] = {
            "t": time.time(),
            "pid": os.getpid(),
            "executions": EXECUTIONS,
            "counts": store.counts,
            "claims": store.claims,
        }
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(path)
        await asyncio.sleep(every)


async def main(args: argparse.Namespace) -> None:
    app = build_app(args.store)
    counting: CountingStore | None = None
    if args.stats:
        # App has no public way to take a ready-made store; the bench wraps it before open().
        counting = CountingStore(app._store)
        app._store = counting
    settings = tenure.Settings(
        lease_ttl=args.ttl,
        heartbeat=args.heartbeat,
        poll=args.poll,
        grace=args.grace,
        timer_grid=args.timer_grid,
        worker_id=args.id,
    )
    reporter = None
    if counting is not None:
        reporter = asyncio.create_task(write_stats(Path(args.stats), counting, args.stats_every))
    try:
        await app.run_worker(settings=settings)
    finally:
        if reporter is not None:
            reporter.cancel()
        await app.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = tenure.Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--id", required=True, help="worker id")
    p.add_argument("--ttl", type=float, default=defaults.lease_ttl)
    p.add_argument("--heartbeat", type=float, default=defaults.heartbeat)
    p.add_argument("--poll", type=float, default=defaults.poll)
    p.add_argument("--grace", type=float, default=defaults.grace)
    p.add_argument("--timer-grid", type=float, default=defaults.timer_grid)
    p.add_argument("--stats", default=None, help="write counters here as JSON")
    p.add_argument("--stats-every", type=float, default=0.5)
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse_args()
    logging.basicConfig(
        level=ns.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(ns))
