"""One benchmark worker process: a tenure App with bench kinds, run until SIGTERM.

Started by the bench scripts (``python bench/bench_worker.py --store URL --id ID ...``),
never imported by them. Kinds:

- ``noop``: an async handler that does nothing (the cost of tenure itself);
- ``fenced``: one fenced insert into ``bench_commits`` per run (the table must exist).

With ``--stats PATH`` the app's store is a :class:`CountingSQLiteStore`, and every
``--stats-every`` seconds the process writes its cumulative counters (store calls, rows
and seconds per method, handler executions) to PATH as JSON, replaced atomically.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tenure
from tenure.models import Claim, ClusterView, Lease, Run, SlotDone, Task
from tenure.store.sqlite import SQLiteStore

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


class CountingSQLiteStore(SQLiteStore):
    """The SQLite store, counting calls, rows and time of the methods a worker uses.

    ``rows`` is what the call wrote or read: 1 for a lease, the tasks claimed, released
    or read, and for ``record_runs`` the run rows; ``slot_rows`` the slot updates that
    ride along with them (one UPDATE per task that ran, in the same transaction).
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.counts: dict[str, dict[str, float]] = {}

    def _count(self, name: str, started: float, rows: int, **extra: int) -> None:
        c = self.counts.setdefault(name, {"calls": 0, "rows": 0, "seconds": 0.0})
        c["calls"] += 1
        c["rows"] += rows
        c["seconds"] += time.perf_counter() - started
        for k, v in extra.items():
            c[k] = c.get(k, 0) + v

    async def register_worker(self, *, worker_id: str, host: str, pid: int, ttl: float) -> Lease:
        t = time.perf_counter()
        lease = await super().register_worker(worker_id=worker_id, host=host, pid=pid, ttl=ttl)
        self._count("register_worker", t, 1)
        return lease

    async def renew_lease(self, worker_id: str, ttl: float) -> Lease:
        t = time.perf_counter()
        lease = await super().renew_lease(worker_id, ttl)
        self._count("renew_lease", t, 1)
        return lease

    async def claim_tasks(self, worker_id: str, *, kinds: Sequence[str], limit: int) -> list[Claim]:
        t = time.perf_counter()
        claims = await super().claim_tasks(worker_id, kinds=kinds, limit=limit)
        self._count("claim_tasks", t, len(claims))
        return claims

    async def release_tasks(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        t = time.perf_counter()
        released = await super().release_tasks(worker_id, slots)
        self._count("release_tasks", t, released)
        return released

    async def leave(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        t = time.perf_counter()
        freed = await super().leave(worker_id, slots)
        self._count("leave", t, freed)
        return freed

    async def reap_workers(self, older_than: float) -> int:
        t = time.perf_counter()
        reaped = await super().reap_workers(older_than)
        self._count("reap_workers", t, reaped)
        return reaped

    async def prune_runs(self, *, older_than: float) -> int:
        t = time.perf_counter()
        pruned = await super().prune_runs(older_than=older_than)
        self._count("prune_runs", t, pruned)
        return pruned

    async def cluster_view(self) -> ClusterView:
        t = time.perf_counter()
        view = await super().cluster_view()
        self._count("cluster_view", t, 1)
        return view

    async def owned_tasks(self, worker_id: str) -> list[Task]:
        t = time.perf_counter()
        tasks = await super().owned_tasks(worker_id)
        self._count("owned_tasks", t, len(tasks))
        return tasks

    async def record_runs(self, runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        t = time.perf_counter()
        await super().record_runs(runs, slots)
        if runs or slots:
            self._count("record_runs", t, len(runs), slot_rows=len(slots))


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
            await tx.execute(
                f"INSERT INTO {fenced_table} (kind, key, worker, term, scheduled_at, committed_at) "
                "VALUES (?, ?, ?, ?, ?, (julianday('now') - 2440587.5) * 86400.0)",
                (ctx.kind, ctx.key, ctx.worker_id, ctx.token, ctx.scheduled_at),
            )

    return app


async def write_stats(path: Path, store: CountingSQLiteStore, every: float) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    while True:
        snapshot: dict[str, Any] = {
            "t": time.time(),
            "pid": os.getpid(),
            "executions": EXECUTIONS,
            "counts": store.counts,
        }
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(path)
        await asyncio.sleep(every)


async def main(args: argparse.Namespace) -> None:
    app = build_app(args.store)
    counting: CountingSQLiteStore | None = None
    if args.stats:
        # App has no public way to take a ready-made store; the bench swaps it before open().
        counting = CountingSQLiteStore(args.store)
        app._store = counting
    settings = tenure.Settings(
        lease_ttl=args.ttl,
        heartbeat=args.heartbeat,
        poll=args.poll,
        grace=args.grace,
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
