"""Claim throughput in one process: how fast one worker takes N free tasks, chunk by
chunk, as a fleet's first worker does at start, and then the tasks of a dead worker.

For each store in ``--stores`` (default: a temporary SQLite file, the local PostgreSQL
and the local MariaDB; each gets a scratch database, dropped afterwards), ``--tasks``
tasks are synced in, ``--workers`` workers registered, and the workers claim in turn,
``--chunk`` tasks a claim, until nothing is left; then one of them (``o0``) dies (its
lease ends) and ``w0`` claims its tasks. Reported: tasks claimed a second, the first and last
claim's time, and the server's CPU (every ``postgres`` or ``mariadbd`` process, /proc;
0 for SQLite, which runs in this process). Issue 15 saw a fleet of 40 take 45 s to own
100,000 tasks; a claim that scans every enabled task makes the whole start O(tasks²).

    .venv/bin/python bench/claims.py [--tasks 100000] [--chunk 500] [--workers 4] [--stores sqlite,postgresql://…,mysql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import tenure
from common import BenchStore, db_cpu_delta, db_server_cpu, report, scenario_store
from tenure.store import Store, dialect_of, make_store

DEFAULT_STORES = "sqlite,postgresql://postgres@127.0.0.1:5432/postgres,mysql://root@127.0.0.1:3306/test"
TTL = 600.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000, help="tasks to claim (default 100,000)")
    p.add_argument("--chunk", type=int, default=500, help="tasks a claim takes at most (default 500)")
    p.add_argument("--workers", type=int, default=4, help="workers claiming in turn (default 4)")
    p.add_argument("--stores", default=DEFAULT_STORES, help="comma-separated: sqlite or URLs (default: all three)")
    p.add_argument("--json", action="store_true", help="print the JSON document only")
    return p


async def _claim_all(store: Store, workers: list[str], chunk: int) -> dict[str, Any]:
    times: list[float] = []
    total, turn = 0, 0
    cpu0, start = db_server_cpu(), time.perf_counter()
    while True:
        worker = workers[turn % len(workers)]
        turn += 1
        t = time.perf_counter()
        got = await store.claim_tasks(worker, kinds=["k"], limit=chunk)
        times.append(time.perf_counter() - t)
        total += len(got)
        if not got:
            break
    elapsed = time.perf_counter() - start
    return {
        "tasks": total,
        "seconds": round(elapsed, 2),
        "per_second": round(total / elapsed),
        "claims": len(times) - 1,
        "first_ms": round(times[0] * 1000, 1),
        "last_ms": round(times[-2] * 1000, 1) if len(times) > 1 else None,
        "server_cpu_s": round(sum(db_cpu_delta(cpu0, db_server_cpu()).values()), 2),
    }


async def _start(url: str, args: argparse.Namespace, workers: list[str]) -> dict[str, Any]:
    app = tenure.App(url)
    await app.migrate()

    @app.task("k", every=30.0)
    async def k(ctx: tenure.Context) -> None:  # pragma: no cover - registration only
        pass

    await app.sync_tasks("k", {f"t{i:06d}": None for i in range(args.tasks)})
    async with _opened(url) as store:
        for w in workers:
            await store.register_worker(worker_id=w, host="bench", pid=1, ttl=TTL, kinds=["k"])
        result = await _claim_all(store, workers, args.chunk)
        result["held_by_o0"] = len(await store.owned_tasks("o0")) if "o0" in workers else 0
        return result


async def _after_death(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with _opened(url) as store:
        return await _claim_all(store, ["w0"], args.chunk)


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[Store]:
    store = make_store(url)
    await store.open(migrate=False)
    try:
        yield store
    finally:
        await store.close()


def _one(bs: BenchStore, args: argparse.Namespace) -> dict[str, Any]:
    workers = ["w0"] + [f"o{i}" for i in range(args.workers - 1)]
    start = asyncio.run(_start(bs.url, args, workers))
    dead: dict[str, Any] = {}
    if len(workers) > 1:
        # o0 dies: its lease ends behind the store's back, as the clock would end it.
        bs.execute("UPDATE tenure_workers SET expires_at = expires_at - 1000000 WHERE id = ?", ("o0",))
        dead = asyncio.run(_after_death(bs.url, args))
    return {"start": start, "after_a_death": dead}


def main() -> None:
    args = parser().parse_args()
    results: dict[str, Any] = {}
    for target in args.stores.split(","):
        url = None if target == "sqlite" else target
        with scenario_store(url, "claims") as bs:
            results[dialect_of(bs.url)] = _one(bs, args)
    head = ["store", "tasks", "claims/s", "seconds", "first ms", "last ms", "server CPU s", "a dead worker's: s"]
    table: list[list[Any]] = [head]
    for dialect, r in results.items():
        s, d = r["start"], r["after_a_death"]
        table.append(
            [
                dialect,
                s["tasks"],
                s["per_second"],
                s["seconds"],
                s["first_ms"],
                s["last_ms"],
                s["server_cpu_s"],
                d.get("seconds", "-"),
            ]
        )
    report("claims", results, [], table, json_only=args.json)


if __name__ == "__main__":
    main()
