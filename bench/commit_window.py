"""How late a fenced commit can land after its fence was last checked: the window the
README states per store (issue 11, item 4).

A fenced transaction's final fence check (owner, term, and the lease on the database's
clock) and its COMMIT are one step: on PostgreSQL and MySQL/MariaDB they reach the
server in one message and the check failing stops the COMMIT; on SQLite they run as one
call on the connection's thread, with SQLite's write lock held since the first check. So
a commit lands after the lease's end only by the time between that check and the commit
taking effect. This bench bounds that time from above: for each of ``--commits`` fenced
transactions (one insert each, one task, this process as its worker), the time from the
store's ``precommit`` hook (called just before the check and COMMIT are sent) to the
block's end (the commit acknowledged). The check runs after the first instant and the
commit takes effect before the second.

No pause of this process can stretch it on a server (the server runs the check and the
COMMIT behind it whatever the client does meanwhile; a client paused before sending is
judged by the check itself, on the database's clock). On SQLite it could, in the
microseconds between the two statements on the connection's thread: the measured time
there includes the hop to that thread and back.

    .venv/bin/python bench/commit_window.py [--store URL] [--commits 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from common import Target, create_tasks, report, scenario_store
from tenure.schedule import Every
from tenure.store import make_store

MARK = {"sqlite": "?", "postgresql": "%s", "mysql": "%s"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="store URL (default: a temporary SQLite file)")
    p.add_argument("--commits", type=int, default=2000, help="fenced transactions to time (default %(default)s)")
    p.add_argument("--json-only", action="store_true", help="print the JSON only, no table")
    return p


async def measure(url: str, commits: int) -> dict[str, Any]:
    store = make_store(url)
    await store.open(migrate=True)
    try:
        await store.register_worker(worker_id="bench", host="bench", pid=os.getpid(), ttl=3600.0)
        await store.add_task(kind="window", key="k", schedule=Every(1.0), params_json="{}", enabled=True)
        (claim,) = await store.claim_tasks("bench", kinds=["window"], limit=1)
        m = MARK[store.dialect]
        insert = (
            f"INSERT INTO bench_commits (kind, {'`key`' if store.dialect == 'mysql' else 'key'}, worker, term, "
            f"scheduled_at, committed_at) VALUES ({m}, {m}, {m}, {m}, {m}, {m})"
        )
        windows: list[float] = []
        whole: list[float] = []
        sent = 0.0

        def precommit() -> None:
            nonlocal sent
            sent = time.perf_counter()

        for i in range(commits):
            began = time.perf_counter()
            async with store.fenced(
                worker_id="bench", kind="window", key="k", term=claim.term, slot=float(i), precommit=precommit
            ) as tx:
                await tx.execute(insert, ("window", "k", "bench", claim.term, float(i), 0.0))
            done = time.perf_counter()
            windows.append(done - sent)
            whole.append(done - began)
    finally:
        await store.close()
    windows.sort()
    whole.sort()

    def ms(xs: list[float], q: float) -> float:
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 3)

    return {
        "commits": commits,
        "window_ms": {"p50": ms(windows, 0.5), "p99": ms(windows, 0.99), "max": round(1000 * windows[-1], 3),
                      "mean": round(1000 * statistics.fmean(windows), 3)},
        "fenced_transaction_ms": {"p50": ms(whole, 0.5), "p99": ms(whole, 0.99), "max": round(1000 * whole[-1], 3)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with scenario_store(args.store, "window") as store:
        create_tasks(store, 0, kind="window")  # the schema and bench_commits
        result = asyncio.run(measure(store.url, args.commits))
        result.update(dialect=store.dialect, load_average=[round(x, 2) for x in os.getloadavg()])
    w = result["window_ms"]
    table = [
        ["store", "commits", "window p50 ms", "p99 ms", "max ms", "whole block p50 ms", "load 1m"],
        [result["dialect"], args.commits, w["p50"], w["p99"], w["max"], result["fenced_transaction_ms"]["p50"],
         result["load_average"][0]],
    ]  # fmt: skip
    targets = [Target("a commit lands after its final fence check within (upper bound, max)", f"{w['max']} ms", None)]
    report("commit_window", result, targets, table, json_only=args.json_only)


if __name__ == "__main__":
    main()
