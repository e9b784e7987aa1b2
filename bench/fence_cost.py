"""What a fenced transaction costs, against the insert it guards (issue 12: fenced CPU).

Issue 12 asks a fenced run to cost at most 2.3 times the bare loop's plain insert, CPU of
client and database together. This bench asks how much of that the fence's protocol
takes by itself, with no worker around it: one process, one connection at a time, on a
scratch PostgreSQL database, transactions one after the other (no queueing, no other
work), each variant ``--count`` times per round, the variants interleaved over
``--rounds`` rounds:

- ``plain``: one autocommit ``INSERT`` of a row ``(system, key, worker, token)``, as the
  load bench's floor makes it (extended protocol, psycopg prepares it after a few uses);
- ``transaction``: the same insert in a transaction of two round trips and no fence,
  ``BEGIN`` and the insert as one query string, then ``COMMIT``: what any guard that
  answers the handler's statement before its commit costs at least;
- ``protocol``: the same insert guarded by the fence, written by hand in the fewest
  round trips tenure knows on PostgreSQL: ``BEGIN``, ``tenure_fence()`` (locks the task
  row, checks owner, term and lease) and the insert as one query string, then the final
  ``tenure_fence()`` (checks again, records the slot), ``COMMIT`` and ``RESET ALL`` as
  another: what tenure sends, without tenure's code;
- ``last_check``: the same protocol without its first ``tenure_fence()``, the lock and
  check in the final one only (what the database alone needs for safety: from the final
  check to the commit no one can take the task over); the handler's statements are then
  made before anything says the fence holds;
- ``tenure``: ``Store.fenced()`` with one ``execute`` of the insert, as a handler's
  ``async with ctx.fenced() as tx`` makes it (less the run around it).

Every transaction's row is counted afterwards (``rows``: a refused commit would be
missing). Per transaction: the client's CPU (``time.process_time``: the driver, the event loop, the
system calls) and every ``postgres`` process's CPU (/proc), in microseconds; and each
variant's total against ``plain``'s of the same round. The median of the rounds is the
figure.

    .venv/bin/python bench/fence_cost.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--count 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from common import BenchResult, bench_main, db_server_cpu, server_database
from tenure.schedule import Every
from tenure.store import make_store

KIND = "fence_cost"
KEY = "k"
WORKER = "bench-w"
CREATE = "CREATE TABLE app_rows (system text, key text, worker text, token bigint, at double precision)"
INSERT = "INSERT INTO app_rows (system, key, worker, token, at) VALUES (%s, %s, %s, %s, extract(epoch from now()))"
FENCE = "SELECT tenure_fence(%(kind)s, %(key)s, %(worker)s, %(term)s, %(slot)s::double precision)"
VARIANTS = ("plain", "transaction", "last_check", "protocol", "tenure")
#: Transactions of each variant made before each measured round.
WARM = 200


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--count", type=int, default=3000, help="transactions per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json-only", action="store_true")
    return p


def _postgres_cpu() -> float:
    return sum(cpu for dialect, cpu in db_server_cpu().values() if dialect == "postgresql")


async def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    store = make_store(url)
    await store.open(migrate=True)
    plain_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    fence_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await plain_conn.execute(CREATE)
        await store.add_task(kind=KIND, key=KEY, schedule=Every(1.0), params_json="{}", enabled=True)
        await store.register_worker(worker_id=WORKER, host="bench", pid=os.getpid(), ttl=3600.0)
        (claim,) = await store.claim_tasks(WORKER, kinds=[KIND], limit=1)
        term = claim.task.term

        def row(system: str) -> tuple[str, str, str, int]:
            return (system, KEY, WORKER, term)

        guard = {"kind": KIND, "key": KEY, "worker": WORKER, "term": term}
        quoter = psycopg.AsyncClientCursor(fence_conn)
        slot = [1000.0]

        async def plain() -> None:
            await plain_conn.execute(INSERT, row("plain"))

        def final() -> bytes:
            """The protocol's last query string: the final check (it records the slot),
            COMMIT and RESET ALL."""
            slot[0] += 1
            return (quoter.mogrify(FENCE, {**guard, "slot": slot[0]}) + ";\nCOMMIT;\nRESET ALL").encode()

        async def transaction() -> None:
            insert = quoter.mogrify(INSERT, row("transaction"))
            await fence_conn.cursor().execute(f"BEGIN;\n{insert}".encode(), prepare=False)
            await fence_conn.cursor().execute(b"COMMIT", prepare=False)

        async def last_check() -> None:
            insert = quoter.mogrify(INSERT, row("last_check"))
            await fence_conn.cursor().execute(f"BEGIN;\n{insert}".encode(), prepare=False)
            await fence_conn.cursor().execute(final(), prepare=False)

        async def protocol() -> None:
            check, insert = quoter.mogrify(FENCE, {**guard, "slot": None}), quoter.mogrify(INSERT, row("protocol"))
            first = f"BEGIN;\n{check};\n{insert}"
            await fence_conn.cursor().execute(first.encode(), prepare=False)
            await fence_conn.cursor().execute(final(), prepare=False)

        async def tenure() -> None:
            slot[0] += 1
            async with store.fenced(worker_id=WORKER, kind=KIND, key=KEY, term=term, slot=slot[0]) as tx:
                await tx.execute(INSERT, row("tenure"))

        made: dict[str, Callable[[], Awaitable[None]]] = {
            "plain": plain,
            "transaction": transaction,
            "last_check": last_check,
            "protocol": protocol,
            "tenure": tenure,
        }
        out: dict[str, Any] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                step = made[name]
                for _ in range(WARM):  # warm: prepared statements, the pool, caches
                    await step()
                client0, server0 = time.process_time(), _postgres_cpu()
                for _ in range(args.count):
                    await step()
                client, server = time.process_time() - client0, _postgres_cpu() - server0
                out[name].append({"client_us": 1e6 * client / args.count, "postgres_us": 1e6 * server / args.count})
        # Every transaction made its insert (a fenced commit refused would be missing).
        cur = await plain_conn.execute("SELECT system, count(*) FROM app_rows GROUP BY system")
        out["rows"] = {system: n for system, n in await cur.fetchall()}
        return out
    finally:
        await plain_conn.close()
        await fence_conn.close()
        await store.close()


def run(args: argparse.Namespace) -> BenchResult:
    with server_database(args.url, "fence_cost") as bs:
        rounds = asyncio.run(_measure(bs.url, args))
    results: dict[str, Any] = {
        "settings": {"count": args.count, "rounds": args.rounds},
        "rows": rounds["rows"],
        "variants": {},
    }
    table: list[list[Any]] = [
        ["variant", "client µs", "postgres µs", "total µs", "× plain (rounds)", "× plain (median)"]
    ]
    for name in VARIANTS:
        per_round = rounds[name]
        totals = [r["client_us"] + r["postgres_us"] for r in per_round]
        ratios = [t / (p["client_us"] + p["postgres_us"]) for t, p in zip(totals, rounds["plain"], strict=True)]
        med = {
            "client_us": statistics.median(r["client_us"] for r in per_round),
            "postgres_us": statistics.median(r["postgres_us"] for r in per_round),
            "total_us": statistics.median(totals),
            "vs_plain": statistics.median(ratios),
        }
        results["variants"][name] = {"rounds": per_round, "vs_plain_rounds": ratios, "median": med}
        table.append([
            name, round(med["client_us"], 1), round(med["postgres_us"], 1), round(med["total_us"], 1),
            " / ".join(f"{r:.2f}" for r in ratios), round(med["vs_plain"], 2),
        ])  # fmt: skip
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return BenchResult(
        results=results,
        targets=[],
        table=table,
        notes=[
            "one transaction at a time on one connection; CPU of this process and of every postgres process",
            "issue 12 asks a fenced run (these, plus the run around them) to cost <= 2.3x the floor's insert",
        ],
    )


if __name__ == "__main__":
    bench_main("fence_cost", parser, run)
