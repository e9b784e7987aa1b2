"""The database's cost of flushing run records (issue 12: a run that costs next to nothing).

Each worker, once per poll, flushes what its runs left: one statement appending the run
records (``tenure_runs``) and one advancing the tasks' last slots (``tenure_tasks``),
both through ``Store.record_runs``. This bench makes those flushes with no worker around
them, the way ``--workers`` workers owning ``--tasks`` tasks of one kind every 1 s make
them: on a scratch PostgreSQL database, each simulated worker claims its share of the
tasks, then every ``--interval`` seconds one of them flushes one run and one slot per
task it owns (the slot one period on from its last), ``--batches`` flushes in all.

Measured over the flushes, per 1,000 runs:

- CPU seconds of the server's backends serving the scratch database (its pool's
  sessions, and any autovacuum worker seen there; sampled from /proc/<pid>/stat each
  flush, so a backend that exits between samples loses its last share);
- CPU seconds of every ``postgres`` process on the machine (WAL writer, checkpointer and
  other clients included: noisy on a shared machine);
- WAL bytes written (``pg_current_wal_lsn()`` before and after: the whole cluster's);
- the tables' updates, HOT updates and dead rows (``pg_stat_user_tables``);
- the client's wall time per flush.

``--parts`` measures the two statements apart: ``runs`` flushes only run records,
``slots`` only slots, ``both`` what a worker flushes. ``--setup`` runs SQL on the scratch
database after the schema is made and before the tasks are added (to try a storage
parameter, an index), ``--params`` gives each task a params JSON of that many bytes.

    flock /tmp/tenure-heavy.lock .venv/bin/python bench/flush_cost.py \
        [--url postgresql://postgres@127.0.0.1:5432/postgres] [--tasks 3000] [--workers 4]
        [--batches 120] [--interval 0.25] [--parts both,runs,slots] [--setup SQL] [--params 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg

from common import BenchResult, bench_main, cpu_seconds, server_database
from tenure.models import Outcome, Run, SlotDone
from tenure.schedule import Every
from tenure.store import make_store

KIND = "flush"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batches", type=int, default=120, help="flushes measured (after --warmup more)")
    p.add_argument("--warmup", type=int, default=8, help="flushes made before measuring")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between flushes (0: back to back)")
    p.add_argument("--parts", default="both,runs,slots")
    p.add_argument("--setup", action="append", default=[], help="SQL run before the tasks are added")
    p.add_argument("--params", type=int, default=0, help="bytes of each task's params JSON")
    p.add_argument("--json-only", action="store_true")
    return p


def _postgres_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "postgres":
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class _Cpu:
    """CPU seconds of a changing set of processes: the last reading of each pid seen."""

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def sample(self, pids: list[int], *, first: bool = False) -> None:
        for pid in pids:
            try:
                v = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue
            if first:
                self.start[pid] = v
            self.last[pid] = v

    def total(self) -> float:
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())


async def _scenario(url: str, args: argparse.Namespace, part: str) -> dict[str, Any]:
    db = url.rsplit("/", 1)[1]
    probe = await psycopg.AsyncConnection.connect(url, autocommit=True)
    my_pid = (await (await probe.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]

    async def backends() -> list[int]:
        cur = await probe.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", (db, my_pid))
        return [r[0] for r in await cur.fetchall()]

    async def lsn() -> int:
        cur = await probe.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int((await cur.fetchone())[0])  # type: ignore[index]

    async def table_stats() -> dict[str, dict[str, int]]:
        await asyncio.sleep(1.0)  # backends report their counters when idle, within a second
        cur = await probe.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count,"
            " pg_relation_size(relid), pg_indexes_size(relid)"
            " FROM pg_stat_user_tables WHERE relname IN ('tenure_runs', 'tenure_tasks')"
        )
        cols = ["ins", "upd", "hot_upd", "dead", "autovacuums", "heap_bytes", "index_bytes"]
        return {r[0]: dict(zip(cols, r[1:], strict=True)) for r in await cur.fetchall()}

    store = make_store(url)
    await store.open(migrate=True)
    try:
        for sql in args.setup:
            await probe.execute(sql.encode())
        params = json.dumps({"p": "x" * max(0, args.params - 9)}) if args.params else "{}"
        keys = [f"k{i:06d}" for i in range(args.tasks)]
        for i in range(0, len(keys), 50):
            await asyncio.gather(
                *(
                    store.add_task(kind=KIND, key=k, schedule=Every(1.0), params_json=params, enabled=True)
                    for k in keys[i : i + 50]
                )
            )
        owned: list[list[tuple[str, int]]] = []
        share = -(-args.tasks // args.workers)
        for w in range(args.workers):
            wid = f"bench-w{w}"
            await store.register_worker(worker_id=wid, host="bench", pid=os.getpid(), ttl=3600.0)
            claims = await store.claim_tasks(wid, kinds=[KIND], limit=share)
            owned.append([(c.task.key, c.task.term) for c in claims])
        base = float(int(await store.now()))
        tick = [0] * args.workers
        all_cpu, db_cpu = _Cpu(), _Cpu()
        walls: list[float] = []
        runs_made = 0
        total = args.warmup + args.batches
        wal0 = 0
        stats0: dict[str, dict[str, int]] = {}
        t0 = 0.0
        for b in range(total):
            if b == args.warmup:
                stats0 = await table_stats()
                db_cpu.sample(await backends(), first=True)
                all_cpu.sample(_postgres_pids(), first=True)
                wal0 = await lsn()
                t0 = time.monotonic()
                runs_made = 0
                walls.clear()
            w = b % args.workers
            slot = base + tick[w]
            tick[w] += 1
            wid = f"bench-w{w}"
            runs = [
                Run(kind=KIND, key=k, worker=wid, term=term, scheduled_at=slot, started_at=slot + 0.001,
                    ended_at=slot + 0.002, outcome=Outcome.OK)
                for k, term in owned[w]
            ] if part in ("both", "runs") else []  # fmt: skip
            slots = (
                [SlotDone(kind=KIND, key=k, term=term, slot=slot) for k, term in owned[w]]
                if part in ("both", "slots")
                else []
            )
            started = time.perf_counter()
            await store.record_runs(runs, slots)
            walls.append(time.perf_counter() - started)
            runs_made += len(owned[w])
            if b >= args.warmup:
                db_cpu.sample(await backends())
                all_cpu.sample(_postgres_pids())
            if args.interval:
                await asyncio.sleep(max(0.0, args.interval - walls[-1]))
        elapsed = time.monotonic() - t0
        wal = await lsn() - wal0
        db_cpu.sample(await backends())
        all_cpu.sample(_postgres_pids())
        stats1 = await table_stats()
    finally:
        await store.close()
        await probe.close()
    per_k = 1000.0 / runs_made
    deltas = {
        t: {c: stats1[t][c] - stats0.get(t, {}).get(c, 0) if c not in ("heap_bytes", "index_bytes") else stats1[t][c]
            for c in stats1[t]}
        for t in stats1
    }  # fmt: skip
    walls.sort()
    return {
        "part": part,
        "runs": runs_made,
        "seconds": round(elapsed, 2),
        "db_backend_cpu_s_per_1000": round(db_cpu.total() * per_k, 4),
        "all_postgres_cpu_s_per_1000": round(all_cpu.total() * per_k, 4),
        "wal_bytes_per_run": round(wal / runs_made, 1),
        "flush_wall_ms": {
            "p50": round(walls[len(walls) // 2] * 1000, 2),
            "max": round(walls[-1] * 1000, 2),
        },
        "tables": deltas,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def run(args: argparse.Namespace) -> BenchResult:
    scenarios = []
    for part in args.parts.split(","):
        with server_database(args.url, f"flush_{part}") as bs:
            scenarios.append(asyncio.run(_scenario(bs.url, args, part)))
    table: list[list[Any]] = [
        ["part", "runs", "db backends CPU-s/1000", "all postgres CPU-s/1000", "WAL B/run",
         "tasks upd / HOT", "flush p50 ms", "load 1m"],
    ]  # fmt: skip
    for s in scenarios:
        tasks = s["tables"].get("tenure_tasks", {})
        table.append([
            s["part"], s["runs"], s["db_backend_cpu_s_per_1000"], s["all_postgres_cpu_s_per_1000"],
            s["wal_bytes_per_run"], f"{tasks.get('upd', 0)} / {tasks.get('hot_upd', 0)}",
            s["flush_wall_ms"]["p50"], s["load_average_at_end"][0],
        ])  # fmt: skip
    return BenchResult(
        results={"settings": {k: v for k, v in vars(args).items() if k != "json_only"}, "scenarios": scenarios},
        targets=[],
        table=table,
    )


if __name__ == "__main__":
    bench_main("flush_cost", parser, run)
