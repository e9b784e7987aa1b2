"""An idle cluster: what workers send to the database when nothing is due.

``--workers`` worker processes (default 2) own ``--tasks`` ``noop`` tasks (default 1,000)
with a long period (``--every``, default one day, so almost nothing falls due in the
window; the runs that did are reported). After the tasks are spread and ``--warmup``
seconds have passed, a ``--duration`` window is measured three ways:

- **store calls/s** (the headline figure): every worker's store is wrapped in
  ``bench_worker.CountingStore``, a proxy that counts each store method call (renew,
  cluster view, claim, flush of run records, ...). It sees exactly what that worker asks
  of its store and nothing from other sessions. A store call is one transaction: on a
  server it is a few statements (BEGIN, one or two statements, COMMIT, each one round
  trip), so statements/s are a small multiple of it; the database counters below give
  that multiple.
- **PostgreSQL**: ``pg_stat_statements`` needs ``shared_preload_libraries`` (a server
  restart), so when it is not loaded the bench reads ``pg_stat_database``
  xact_commit + xact_rollback of the scratch database (transactions/s, workers only:
  the bench reads the counters from another database). PostgreSQL 15 flushes these
  counters about once a second per backend, so short windows are coarse. When the
  server's log file is readable here (``--pg-log``), the scratch database is set to
  ``log_statement = all`` and every statement the workers sent in the window is counted
  from the log, BEGIN and COMMIT included: the exact statements/s (the target's figure).
- **MariaDB/MySQL**: ``SHOW GLOBAL STATUS`` ``Questions`` (statements sent by clients)
  and ``Com_commit`` deltas; global, so other sessions add noise: a baseline window of
  the same length with no workers is measured first and subtracted.

Target: an idle cluster sends under 10 statements per second.

    .venv/bin/python bench/idle.py [--store postgresql://...] [--workers 2] [--duration 30]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common import (
    BenchResult,
    BenchStore,
    Cluster,
    Target,
    bench_main,
    create_tasks,
    scenario_parser,
    scenario_store,
    settings_of,
    worker_stats,
)
from coordination import rates

STATEMENTS_TARGET = 10.0


def parser() -> argparse.ArgumentParser:
    p = scenario_parser(__doc__, workers=2, duration=30.0, tasks=1000, every=86400.0, warmup=5.0)
    p.add_argument("--no-baseline", action="store_true", help="MariaDB: skip the baseline window")
    p.add_argument(
        "--pg-log",
        default=None,
        help="PostgreSQL: the server's log file, readable here (default: the first readable "
        "/var/log/postgresql/postgresql-*-main.log). The scratch database gets log_statement=all "
        "and its statements in the window are counted; the log line prefix must include %%d",
    )
    return p


def db_counters(store: BenchStore) -> dict[str, float] | None:
    """The database's own statement or transaction counters, or None (SQLite)."""
    if store.dialect == "postgresql":
        rows = store.query(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        return {"transactions": float(rows[0][0])}
    if store.dialect == "mysql":
        rows = store.query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Connections', 'Com_begin', 'Com_commit', "
            "'Com_rollback', 'Com_select', 'Com_update', 'Com_insert', 'Com_delete', 'Com_set_option')"
        )
        return {str(k).lower(): float(v) for k, v in rows}
    return None


def pg_counters(store: BenchStore) -> dict[str, float] | None:
    """pg_stat_database for the scratch database, read over a connection to another one
    (so the bench's own reads are not counted)."""
    if store.dialect != "postgresql":
        return db_counters(store)
    import psycopg

    u = urlsplit(store.url)
    db = u.path.lstrip("/")
    admin = urlunsplit((u.scheme, u.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (db,)
        ).fetchone()
    return {"transactions": float(row[0]) if row else float("nan")}


def find_pg_log(given: str | None) -> Path | None:
    candidates = [Path(given)] if given else sorted(Path("/var/log/postgresql").glob("postgresql-*-main.log"))
    for c in candidates:
        if os.access(c, os.R_OK):
            return c
    return None


def log_all_statements(store: BenchStore) -> None:
    """log_statement=all for sessions opened from now on to the scratch database only."""
    import psycopg

    u = urlsplit(store.url)
    admin = urlunsplit((u.scheme, u.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{u.path.lstrip('/')}\" SET log_statement = 'all'")


def count_logged(log: Path, offset: int, store: BenchStore, span: float) -> dict[str, Any]:
    """Statements logged for the scratch database since ``offset``, per second, by kind."""
    db = urlsplit(store.url).path.lstrip("/")
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    by: Counter[str] = Counter()
    for line in text.splitlines():
        if f"@{db} " not in line:
            continue
        parts = re.split(r"LOG:\s+(?:statement|execute [^:]*):", line, maxsplit=1)
        if len(parts) == 2:
            by[" ".join(parts[1].split())[:48]] += 1
    total = sum(by.values())
    return {
        "statements_per_s": round(total / span, 3),
        "without_begin_commit_per_s": round(sum(v for k, v in by.items() if k not in ("BEGIN", "COMMIT")) / span, 3),
        "by_statement_per_s": {k: round(v / span, 3) for k, v in by.most_common()},
    }


def deltas(c0: dict[str, float] | None, c1: dict[str, float] | None, span: float) -> dict[str, float] | None:
    if c0 is None or c1 is None:
        return None
    return {f"{k}_per_s": round((c1[k] - c0[k]) / span, 3) for k in c1 if k in c0}


def run(args: argparse.Namespace) -> BenchResult:
    settings = settings_of(args)
    with scenario_store(args.store, "idle") as store:
        print(f"[idle] {args.tasks} tasks every {args.every:g} s: creating", file=sys.stderr, flush=True)
        creation = create_tasks(store, args.tasks, every=args.every)
        baseline = None
        if store.dialect != "sqlite" and not args.no_baseline:
            print(f"[idle] baseline window, no workers: {args.duration:g} s", file=sys.stderr, flush=True)
            b0, tb0 = pg_counters(store), time.time()
            time.sleep(args.duration)
            b1, tb1 = pg_counters(store), time.time()
            baseline = deltas(b0, b1, tb1 - tb0)
        pg_log = find_pg_log(args.pg_log) if store.dialect == "postgresql" else None
        if pg_log is not None:
            log_all_statements(store)
        with Cluster(store, settings, stats=True) as cluster:
            print(f"[idle] starting {args.workers} workers", file=sys.stderr, flush=True)
            workers, spread = cluster.start_spread(args.workers, warmup=args.warmup)
            log0 = pg_log.stat().st_size if pg_log is not None else 0
            s0, c0, t0 = worker_stats(workers), pg_counters(store), time.time()
            time.sleep(args.duration)
            s1, c1, t1 = worker_stats(workers), pg_counters(store), time.time()
            logged = count_logged(pg_log, log0, store, t1 - t0) if pg_log is not None else None
            load = [round(x, 2) for x in os.getloadavg()]
            cluster.stop_all()
        measured = deltas(c0, c1, t1 - t0)
        runs = int(
            store.query("SELECT count(*) FROM tenure_runs WHERE started_at >= ? AND started_at < ?", (t0, t1))[0][0]
        )
    counted = rates(s0, s1)
    calls = round(sum(m["calls_per_s"] or 0.0 for m in counted["methods"].values()), 3)
    per_worker = round(calls / args.workers, 3)
    net: dict[str, float] | None = None
    if measured is not None:
        net = {k: round(v - (baseline or {}).get(k, 0.0), 3) for k, v in measured.items()}
    results: dict[str, Any] = {
        "tasks": args.tasks,
        "every_s": args.every,
        "workers": args.workers,
        "settings": settings,
        "creation": creation,
        "spread_s": spread,
        "window_s": round(t1 - t0, 2),
        "runs_in_window": runs,
        "store_calls_per_s": calls,
        "store_calls_per_s_per_worker": per_worker,
        "store_calls_by_method": {k: v["calls_per_s"] for k, v in counted["methods"].items() if v["calls_per_s"]},
        "db_counter_source": {
            "postgresql": "pg_stat_database xact_commit+xact_rollback of the scratch database "
            "(pg_stat_statements is not preloaded)",
            "mysql": "SHOW GLOBAL STATUS deltas (global: all sessions), minus a no-worker baseline",
        }.get(store.dialect),
        "db_counters_baseline_per_s": baseline,
        "db_counters_with_workers_per_s": measured,
        "db_counters_net_per_s": net,
        "pg_logged_statements": logged,
        "pg_log": str(pg_log) if pg_log is not None else None,
        "load_average_at_end": load,
        "store": store.url,
    }
    methods = " ".join(f"{k}={v:g}" for k, v in results["store_calls_by_method"].items())
    table: list[list[Any]] = [
        ["workers", "tasks", "runs in window", "store calls/s", "per worker", "db counter", "net/s", "load 1m"]
    ]
    if net:
        for k, v in net.items():
            table.append([args.workers, args.tasks, runs, calls, per_worker, k, v, load[0]])
    else:
        table.append([args.workers, args.tasks, runs, calls, per_worker, "-", None, load[0]])
    figure = f"{calls:g} store calls/s for {args.workers} workers"
    met = calls < STATEMENTS_TARGET
    how = "store calls, by the proxy"
    if logged is not None:
        stmts = logged["statements_per_s"]
        figure = (
            f"{stmts:g} statements/s logged by PostgreSQL for {args.workers} workers "
            f"({logged['without_begin_commit_per_s']:g}/s without BEGIN/COMMIT); {figure}"
        )
        met = stmts < STATEMENTS_TARGET
        how = "statements in the server log (log_statement=all on the scratch database)"
        table.append(["logged", "", "", "", "", "statements_per_s", stmts, load[0]])
        for k, v in logged["by_statement_per_s"].items():
            table.append(["logged", "", "", "", "", k, v, ""])
    if net:
        figure += "; database: " + ", ".join(f"{k} {v:g}" for k, v in net.items())
    targets = [Target("idle cluster < 10 statements/s", figure, met, how)]
    notes = [f"store calls/s by method: {methods}"]
    return BenchResult(results=results, targets=targets, table=table, notes=notes)


def main(argv: list[str] | None = None) -> None:
    bench_main("idle", parser, run, argv)


if __name__ == "__main__":
    main()
