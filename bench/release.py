"""Releases and failover claims in one process: what ``Store.release_tasks`` and a claim
that meets a dead worker cost, per store.

For each store in ``--stores`` (default: a temporary SQLite file, the local PostgreSQL
and the local MariaDB; each gets a scratch database, dropped afterwards):

- ``release``: a worker claims ``--tasks`` tasks, then releases them all in one
  ``release_tasks`` call (each with its slot); timed ``--repeats`` times, the median
  reported. The fleet bench saw 500 releases take 42 s at 40 workers when this was one
  statement a task.
- ``dead claim`` (PostgreSQL, MySQL/MariaDB): a worker holding ``--tasks`` tasks dies
  (its liveness lock freed, its lease still long), another transaction holds its worker
  row (as a concurrent claim ending its lease does), and a second worker claims: how long
  that claim takes and how many of the dead worker's tasks it takes. A claim that waited
  on the row would wait for the other transaction's end (here: the store's lock wait,
  then fail).

    .venv/bin/python bench/release.py [--tasks 500] [--repeats 5] [--stores sqlite,postgresql://…,mysql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
import psycopg

from common import _mysql_params, dialect_of, report, scenario_store
from tenure.errors import StoreError
from tenure.models import SlotDone
from tenure.schedule import Every
from tenure.store import Store, make_store

DEFAULT_STORES = "sqlite,postgresql://postgres@127.0.0.1:5432/postgres,mysql://root@127.0.0.1:3306/test"
TTL = 60.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=500, help="tasks released in one call (default 500)")
    p.add_argument("--repeats", type=int, default=5, help="timed releases per store (default 5)")
    p.add_argument("--stores", default=DEFAULT_STORES, help="comma-separated: sqlite or URLs (default: all three)")
    p.add_argument("--json", action="store_true", help="print the JSON document only")
    return p


async def _add_tasks(store: Store, n: int) -> None:
    for i in range(n):
        await store.add_task(kind="k", key=f"t{i:06d}", schedule=Every(30.0), params_json="{}", enabled=True)


async def _release(store: Store, n: int, repeats: int) -> dict[str, Any]:
    await store.register_worker(worker_id="w1", host="bench", pid=1, ttl=TTL)
    times = []
    for _ in range(repeats):
        claims = await store.claim_tasks("w1", kinds=["k"], limit=n)
        slots = [SlotDone(kind="k", key=c.task.key, term=c.term, slot=100.0) for c in claims]
        start = time.perf_counter()
        released = await store.release_tasks("w1", slots)
        times.append((time.perf_counter() - start) * 1000)
        if released != n:
            raise SystemExit(f"released {released} of {n}")
    await store.leave("w1", [])
    return {"tasks": n, "median_ms": round(statistics.median(times), 2), "all_ms": [round(t, 2) for t in times]}


@asynccontextmanager
async def hold_row(url: str, worker_id: str) -> AsyncIterator[None]:
    """Hold ``worker_id``'s membership row locked in an open transaction of another
    session, for the block's duration."""
    if dialect_of(url) == "postgresql":
        pg = await psycopg.AsyncConnection.connect(url.split("?")[0])
        try:
            await pg.execute("SELECT 1 FROM tenure_workers WHERE id = %s FOR UPDATE", (worker_id,))
            yield
        finally:
            await pg.rollback()
            await pg.close()
        return
    my = await asyncmy.connect(**_mysql_params(url))
    try:
        async with my.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute("SELECT 1 FROM tenure_workers WHERE id = %s FOR UPDATE", (worker_id,))
            await cur.fetchall()
        yield
    finally:
        await my.rollback()
        my.close()


async def _dead_claim(url: str, store: Store, n: int) -> dict[str, Any]:
    dying = make_store(url)
    await dying.open(migrate=False)
    async with dying.hold_liveness("dead", check_every=1.0) as live:
        await live.ensure()
        await dying.register_worker(worker_id="dead", host="bench", pid=2, ttl=TTL)
        await dying.claim_tasks("dead", kinds=["k"], limit=n)
    await dying.close()  # the lock is free: the worker is dead, its lease a minute long
    await store.register_worker(worker_id="w2", host="bench", pid=3, ttl=TTL)
    async with hold_row(url, "dead"):
        start = time.perf_counter()
        try:
            taken: Any = len(await store.claim_tasks("w2", kinds=["k"], limit=n))
        except StoreError as exc:
            taken = f"failed: {str(exc).splitlines()[0][:70]}"
        ms = (time.perf_counter() - start) * 1000
    return {"tasks": n, "claim_ms": round(ms, 2), "taken": taken}


async def _one(url: str, args: argparse.Namespace) -> dict[str, Any]:
    store = make_store(url)
    await store.open(migrate=True)
    try:
        await _add_tasks(store, args.tasks)
        result = {"release": await _release(store, args.tasks, args.repeats)}
        if dialect_of(url) != "sqlite":
            result["dead claim"] = await _dead_claim(url, store, args.tasks)
        return result
    finally:
        await store.close()


def main() -> None:
    args = parser().parse_args()
    results: dict[str, Any] = {}
    for spec in args.stores.split(","):
        url = None if spec == "sqlite" else spec
        with scenario_store(url, "release") as bs:
            results[dialect_of(bs.url)] = asyncio.run(_one(bs.url, args))
    table = [["store", "release ms (median)", "dead claim ms", "dead tasks taken"]]
    for name, r in results.items():
        dead = r.get("dead claim", {})
        table.append([name, r["release"]["median_ms"], dead.get("claim_ms", "-"), dead.get("taken", "-")])
    report("release", results, [], table, json_only=args.json)


if __name__ == "__main__":
    main()
