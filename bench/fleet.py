"""Fleet scale (issue 15 item 4): many workers on one database server, start, kill, join.

``--workers`` worker processes (default 40) share ``--tasks`` no-op tasks (default
100,000) every ``--every`` seconds (default 30) on a scratch database of the PostgreSQL
or MySQL/MariaDB server ``--store`` names. The phases, one after the other:

1. **start**: every worker is started at once. Reported: the seconds until every task
   is owned and each worker holds its fair share (N/W, give or take one), from the
   first spawn and from the last worker's registration (``tenure_workers.started_at``,
   database clock), and in polls; the tasks moved (terms handed out: every claim takes
   the next value of ``tenure_term_seq``) against the minimum, N, and how many distinct
   tasks changed term;
2. **steady**: a window of ``--window`` seconds (default two periods), from a poll after
   the phase before (the workers finish adopting their last claims), in which are
   measured: delivery (the slots of every task inside the window against the runs
   recorded ``ok`` in ``tenure_runs``), lag (start minus slot) p50/p99/max,
   coordination (store calls counted inside each worker by ``bench_worker.py
   --stats``: lease renewals, claims, releases, cluster reads…, run records apart;
   and the database's own count of transactions: on PostgreSQL ``xact_commit +
   xact_rollback`` of ``pg_stat_database`` for the scratch database, since
   ``pg_stat_statements`` is used only if the server preloads it; on MySQL/MariaDB the
   server's ``Handler_commit + Handler_rollback``, server-wide), the server's CPU (every
   ``postgres`` or ``mariadbd``/``mysqld`` process, /proc)
   per second and per worker, the workers' CPU (per run too), the connections the cluster holds, and the time of the
   read each worker makes every poll (it counts the enabled tasks: O(N));
3. **kill**: ``--kill`` workers (default 10) get SIGKILL at once. Reported: the
   seconds until none of their tasks is left with them and every one is owned by a live
   worker (ownership sampled every ~0.2 s), until fair share among the survivors, until
   every one of their tasks has run elsewhere (its first ``ok`` run by another worker:
   up to a period later, since the new owner keeps the task's slots), how late those
   first runs were against their slots, and the tasks moved against the minimum (the
   tasks the killed workers held);
4. **join**: ``--join`` new workers (default 10) start at once. Reported: the seconds to
   fair share, and the tasks moved against the minimum (what the new workers hold once
   shares are fair: each of those had to move once);
5. **steady again**: a second window, as in 2.

Then one JSON document, a short table, and issue 15's targets: fair share within 3
polls of the last start, moves <= 1.1 x the minimum, coordination <= one store call
per worker per heartbeat + one per poll, 100% delivered outside the fault windows.

A server allows ``max_connections`` clients, and every worker holds at least three (its
pool's first; its session: liveness lock, LISTEN and lease statements; and the one that
watches another worker's lock), two with ``--watch off`` (the URL option ``watch=off``);
the pool grows to 8 under load: the bench refuses to start more workers than the server's
free connections allow, and says how many would fit.

    .venv/bin/python bench/fleet.py [--store postgresql://...|mysql://...] [--workers 40] [--tasks 100000]
        [--every 30] [--kill 10] [--join 10] [--window 60] [--watch off]
    .venv/bin/python bench/fleet.py --workers 12 --tasks 20000 --kill 3 --join 3   # smaller
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import tenure
from common import (
    DEFAULTS,
    BenchResult,
    BenchStore,
    Cluster,
    Target,
    WorkerProc,
    bench_main,
    cpu_seconds,
    db_cpu_delta,
    db_server_cpu,
    dialect_of,
    percentile,
    server_database,
    task_keys,
    wait_until,
    worker_stats,
)
from coordination import rates
from failover import first_runs_elsewhere
from tenure.store.mysql import _Q as MYSQL_QUERIES
from tenure.store.postgresql import Q as PG_QUERIES
from throughput import analyse_runs

KIND = "noop"  # bench_worker.py's no-op kind
#: Connections a worker holds at least: its pool's first, its session (liveness lock,
#: LISTEN on PostgreSQL, lease statements), and the one that watches another's lock.
MIN_CONNECTIONS_PER_WORKER = 3
#: The name :func:`db_server_cpu` gives each dialect's server processes.
SERVER = {"postgresql": "postgresql", "mysql": "mariadb"}
FAIR_POLLS_TARGET = 3
MOVES_TARGET = 1.1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--store",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL or MySQL/MariaDB server; a scratch database is made on it and dropped (default %(default)s)",
    )
    p.add_argument("--workers", type=int, default=40, help="workers started at once (default %(default)s)")
    p.add_argument("--tasks", type=int, default=100_000, help="no-op tasks (default %(default)s)")
    p.add_argument("--every", type=float, default=30.0, help="task period, seconds (default %(default)s)")
    p.add_argument("--kill", type=int, default=10, help="workers killed at once (default %(default)s)")
    p.add_argument("--join", type=int, default=10, help="workers joining at once (default %(default)s)")
    p.add_argument("--window", type=float, default=None, help="steady windows, seconds (default two periods)")
    p.add_argument("--timeout", type=float, default=180.0, help="longest wait for each phase (default 180 s)")
    p.add_argument("--ttl", type=float, default=DEFAULTS.lease_ttl, help="lease TTL (default %(default)s)")
    p.add_argument("--heartbeat", type=float, default=DEFAULTS.heartbeat, help="default %(default)s")
    p.add_argument("--poll", type=float, default=DEFAULTS.poll, help="default %(default)s")
    p.add_argument(
        "--pool",
        type=int,
        default=None,
        help="the workers' pool size (tenure's pool URL option; default tenure's, 8): a worker holds at most "
        "this + 1 connections (its session)",
    )
    p.add_argument(
        "--watch",
        choices=("on", "off"),
        default="on",
        help="workers watch each other's liveness locks on a connection each (tenure's watch URL option; "
        "default %(default)s): off keeps a worker at two connections",
    )
    p.add_argument("--json-only", action="store_true", help="print the JSON only, no table")
    return p


def check_args(args: argparse.Namespace) -> None:
    if dialect_of(args.store) not in SERVER:
        raise SystemExit(f"--store {args.store!r}: the fleet bench runs on PostgreSQL or MySQL/MariaDB")
    if args.watch == "off" and dialect_of(args.store) != "postgresql":
        raise SystemExit("--watch off: watch is a PostgreSQL store's URL option")
    if args.workers < 2 or args.tasks < 1:
        raise SystemExit("--workers must be at least 2 and --tasks at least 1")
    if not 0 <= args.kill < args.workers or args.join < 0:
        raise SystemExit(f"--kill {args.kill}: between 0 and --workers - 1; --join not negative")
    tenure.Settings(lease_ttl=args.ttl, heartbeat=args.heartbeat, poll=args.poll)  # exits naming the setting
    if args.window is None:
        args.window = 2 * args.every


# -- the database's side ---------------------------------------------------------------------


def connection_room(store: BenchStore) -> dict[str, int]:
    if store.dialect == "mysql":
        row = store.query(
            "SELECT @@max_connections, 0,"
            " (SELECT COUNT(*) FROM information_schema.processlist WHERE command <> 'Daemon')"
        )[0]
        return {"max_connections": int(row[0]), "reserved": int(row[1]), "in_use": int(row[2])}
    row = store.query(
        "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    )[0]
    return {"max_connections": int(row[0]), "reserved": int(row[1]), "in_use": int(row[2])}


def cluster_connections(store: BenchStore) -> int:
    """Client connections to the scratch database, the bench's own one excluded."""
    if store.dialect == "mysql":
        sql = "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        return int(store.query(sql)[0][0])
    row = store.query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return int(row[0][0])


def xacts(store: BenchStore) -> int:
    if store.dialect == "mysql":  # server-wide: nothing else runs beside a bench
        row = store.query(
            "SELECT SUM(variable_value) FROM information_schema.global_status"
            " WHERE variable_name IN ('HANDLER_COMMIT', 'HANDLER_ROLLBACK')"
        )
        return int(row[0][0])
    # Force fresh figures: PostgreSQL 15 caches statistics for the length of a transaction.
    store.query("SELECT pg_stat_clear_snapshot()")
    row = store.query("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    return int(row[0][0])


def statements_view(store: BenchStore) -> bool:
    if store.dialect == "mysql":
        return False
    rows = store.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if rows:
        return True
    preload = store.query("SELECT current_setting('shared_preload_libraries')")[0][0]
    if "pg_stat_statements" not in str(preload):
        return False
    store.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


def statement_calls(store: BenchStore) -> int:
    row = store.query(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = current_database()"
    )
    return int(row[0][0])


def per_poll_read_ms(store: BenchStore, repeats: int = 10) -> dict[str, float]:
    """Median milliseconds of the read every worker makes every poll (``cluster_view``),
    as the workers make it once their store has counted the tasks at the current change
    counter (``cached``: O(workers)), and when it has to count them (``counting``: O(N),
    after any change to tasks)."""
    queries = PG_QUERIES if store.dialect == "postgresql" else MYSQL_QUERIES[mysql_flavor(store)]
    sql = queries["cluster_view"].replace("%(changes)s", "?").replace("%(stamp)s", "?")
    head = next(r for r in store.query(sql, (None, None)) if r[0] == "changes")
    out = {}
    for name, args in (("cached", (head[2], head[1])), ("counting", (None, None))):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            store.query(sql, args)
            times.append(1000 * (time.perf_counter() - t))
        out[name] = round(sorted(times)[len(times) // 2], 2)
    return out


def mysql_flavor(store: BenchStore) -> str:
    return "mariadb" if "mariadb" in str(store.query("SELECT VERSION()")[0][0]).lower() else "mysql"


def terms_issued(store: BenchStore) -> int:
    """Terms handed out so far: every claim takes the next value of ``tenure_term_seq``
    (PostgreSQL) or of the ``term`` counter (MySQL/MariaDB), its only use, so the growth
    between two readings counts the changes of owner."""
    if store.dialect == "mysql":
        return int(store.query("SELECT value FROM tenure_counters WHERE name = 'term'")[0][0])
    last, called = store.query("SELECT last_value, is_called FROM tenure_term_seq")[0]
    return int(last) if called else 0


def terms_by_key(store: BenchStore) -> dict[str, int]:
    return {str(k): int(t) for k, t in store.query("SELECT key, term FROM tenure_tasks WHERE kind = ?", (KIND,))}


def moves(store: BenchStore, before: tuple[int, dict[str, int]], minimum: int) -> dict[str, Any]:
    """Changes of owner since ``before`` (a :func:`snapshot_terms`), against ``minimum``."""
    issued0, terms0 = before
    issued = terms_issued(store) - issued0
    changed = sum(1 for k, t in terms_by_key(store).items() if terms0.get(k) != t)
    return {
        "tasks_moved": issued,
        "distinct_tasks_moved": changed,
        "moves_minimum": minimum,
        "moves_ratio": round(issued / minimum, 3) if minimum else None,
    }


def snapshot_terms(store: BenchStore) -> tuple[int, dict[str, int]]:
    return terms_issued(store), terms_by_key(store)


def owners(store: BenchStore) -> dict[str | None, int]:
    rows = store.query("SELECT owner, count(*) FROM tenure_tasks WHERE kind = ? GROUP BY owner", (KIND,))
    return {r[0]: int(r[1]) for r in rows}


def fair(counts: dict[str | None, int], ids: set[str]) -> bool:
    total = sum(counts.values())
    if set(counts) - ids:  # unowned tasks, or tasks still with a worker not in ``ids``
        return False
    share = total / len(ids)
    return all(math.floor(share) <= counts.get(i, 0) <= math.ceil(share) for i in ids)


async def _install(url: str, n: int, every: float) -> float:
    app = tenure.App(url)

    @app.task(KIND, every=every)
    async def never(ctx: tenure.Context) -> None:  # pragma: no cover - registration only
        raise AssertionError("the set-up app runs no tasks")

    await app.migrate()
    t = time.perf_counter()
    async with app:
        await app.sync_tasks(KIND, {k: tenure.TaskSpec(every=every) for k in task_keys(n)})
    return time.perf_counter() - t


# -- phases -------------------------------------------------------------------------------------


def watch(
    store: BenchStore,
    done: Callable[[dict[str | None, int]], bool],
    timeout: float,
    interval: float = 0.2,
    timeline: list[list[float]] | None = None,
    pids: Sequence[int] = (),
) -> tuple[float | None, int]:
    """Sample ownership until ``done``; (seconds until the read that found it so, or None;
    peak cluster connections).

    With ``timeline``, append one sample per reading: seconds since the watch began,
    workers registered, tasks unowned, fewest and most tasks a registered worker holds,
    terms handed out so far (claims), and the CPU seconds spent since the watch began by
    the database server and by the worker processes ``pids``."""
    cpu0 = _cpu(store, pids)
    t0 = time.monotonic()
    peak = 0
    while time.monotonic() - t0 < timeout:
        peak = max(peak, cluster_connections(store))
        counts = owners(store)
        read_at = time.monotonic()  # what ``done`` judges is as of this read, not the samples after it
        if timeline is not None:
            ids = [str(r[0]) for r in store.query("SELECT id FROM tenure_workers")]
            held = [counts.get(i, 0) for i in ids] or [0]
            pg, workers = (now - then for now, then in zip(_cpu(store, pids), cpu0, strict=True))
            timeline.append(
                [round(time.monotonic() - t0, 2), len(ids), counts.get(None, 0), min(held), max(held),
                 terms_issued(store), round(pg, 2), round(workers, 2)]
            )  # fmt: skip
        if done(counts):
            return round(read_at - t0, 3), peak
        time.sleep(interval)
    return None, peak


def _cpu(store: BenchStore, pids: Sequence[int]) -> tuple[float, float]:
    """CPU seconds so far of the database server's processes, and of the processes ``pids``."""
    pg = sum(cpu for server, cpu in db_server_cpu().values() if server == SERVER[store.dialect])
    own = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            own += cpu_seconds(pid)
    return pg, own


def registered(store: BenchStore, ids: Sequence[str]) -> list[float]:
    marks = ",".join("?" * len(ids))
    rows = store.query(f"SELECT started_at FROM tenure_workers WHERE id IN ({marks})", tuple(ids))
    return sorted(float(r[0]) for r in rows)


def claim_timeline(store: BenchStore, workers: Sequence[WorkerProc], t_fair: float) -> dict[str, Any]:
    """Where a start's seconds after the last registration go, per worker: when it
    registered, when its first claim began (its settle window over) and when its last
    claim before fair share returned (the rows turned into tasks; adopting them follows),
    and the tasks it claimed, all in seconds after the last registration (wall clock and
    database clock are one clock here: the server runs on this machine). Then the least,
    median and most of each column."""
    time.sleep(1.0)  # each worker writes its statistics every 0.5 s
    stats = worker_stats(workers)
    ids = [w.id for w in workers]
    marks = ",".join("?" * len(ids))
    reg = {
        str(r[0]): float(r[1])
        for r in store.query(f"SELECT id, started_at FROM tenure_workers WHERE id IN ({marks})", tuple(ids))
    }
    if not reg:
        return {}
    last = max(reg.values())
    rows = []
    for wid in ids:
        claims = [c for c in stats.get(wid, {}).get("claims", []) if c[0] <= t_fair]
        if wid in reg and claims:
            rows.append([wid, round(reg[wid] - last, 3), round(claims[0][0] - last, 3),
                         round(claims[-1][1] - last, 3), len(claims), sum(c[2] for c in claims)])  # fmt: skip
    columns = ["worker", "registered", "claim_began", "claim_returned", "claims", "tasks"]
    spread = {}
    for i, name in enumerate(columns[1:4], start=1):
        values = sorted(r[i] for r in rows)
        if values:
            spread[name] = {"least": values[0], "median": values[len(values) // 2], "most": values[-1]}
    return {"columns": columns, "workers": sorted(rows, key=lambda r: r[3]), "spread": spread}


def steady(args: argparse.Namespace, cluster: Cluster, use_statements: bool) -> dict[str, Any]:
    store = cluster.store
    live = cluster.live
    # The phase before ended when the database showed fair shares; the workers may still
    # be turning their last claims into tasks, a call counted when it returns. The window
    # starts a poll later, from counters every worker wrote after that.
    ready = time.time() + args.poll
    time.sleep(args.poll)
    wait_until(lambda: sum(1 for s in worker_stats(live).values() if s["t"] >= ready) == len(live), 10)
    s0, x0, c0 = worker_stats(live), xacts(store), db_server_cpu()
    w0 = {w.id: cpu_seconds(w.pid) for w in live}
    st0 = statement_calls(store) if use_statements else None
    t0 = time.time()
    time.sleep(args.window)
    t1 = time.time()
    s1, x1, c1 = worker_stats(live), xacts(store), db_server_cpu()
    w1 = {w.id: cpu_seconds(w.pid) for w in live if w.alive()}
    st1 = statement_calls(store) if use_statements else None
    load = [round(x, 2) for x in os.getloadavg()]
    conns = cluster_connections(store)
    time.sleep(args.poll + 1.0)  # the last runs of the window are flushed at the next poll
    poll_read_ms = per_poll_read_ms(store)
    runs = analyse_runs(store, args.tasks, args.every, t0, t1, kind=KIND)
    counted = rates(s0, s1)
    span = t1 - t0
    pg_cpu = db_cpu_delta(c0, c1).get(SERVER[store.dialect], 0.0)
    coord = counted["coordination_writes_per_s"] + counted["coordination_reads_per_s"]
    return {
        "window_s": round(span, 2),
        "workers": len(live),
        "delivered_pct": runs["delivered_pct"],
        "slots_expected": runs["slots_expected"],
        "slots_delivered": runs["slots_delivered"],
        "duplicate_runs": runs["duplicate_runs"],
        "outcomes": runs["outcomes_in_window"],
        "lag_ms": runs["lag_ms"],
        "runs_per_s": runs["executions_per_s"],
        "coordination_calls_per_s": round(coord, 2),
        "coordination_calls_per_worker_per_s": round(coord / len(live), 3),
        "coordination_bound_per_s": round(len(live) * (1 / args.heartbeat + 1 / args.poll), 2),
        "run_record_transactions_per_s": counted["run_record_transactions_per_s"],
        "store_calls_by_method": counted["methods"],
        "db_transactions_per_s": round((x1 - x0) / span, 1),
        "db_statements_per_s": round((st1 - st0) / span, 1) if st0 is not None and st1 is not None else None,
        "workers_cpu_pct": round(100 * sum(w1[i] - w0[i] for i in w1) / span, 1),
        "workers_cpu_us_per_run": round(1e6 * sum(w1[i] - w0[i] for i in w1) / (runs["executions_per_s"] * span), 1)
        if runs["executions_per_s"]
        else None,
        "db_cpu_s": round(pg_cpu, 3),
        "db_cpu_pct": round(100 * pg_cpu / span, 1),
        "db_cpu_ms_per_worker_per_s": round(1000 * pg_cpu / span / len(live), 2),
        "cluster_connections": conns,
        "per_poll_read_ms": poll_read_ms,
        "load_average_at_end": load,
    }


def kill_phase(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    store = cluster.store
    victims = cluster.live[: args.kill]
    vids = {w.id for w in victims}
    marks = ",".join("?" * len(vids))
    held = {r[0] for r in store.query(f"SELECT key FROM tenure_tasks WHERE owner IN ({marks})", tuple(vids))}
    before = snapshot_terms(store)
    t_sig = time.time()
    for w in victims:
        w.proc.send_signal(signal.SIGKILL)
    for w in victims:
        w.proc.wait()
    survivors = {w.id for w in cluster.live}
    t = time.monotonic()
    moved_s, peak = watch(store, lambda c: not set(c) - survivors, args.timeout)
    since = time.monotonic() - t
    fair_s, _ = watch(store, lambda c: fair(c, survivors), args.timeout)
    fair_s = None if fair_s is None else round(since + fair_s, 3)
    # A moved task keeps its slots: its first run elsewhere comes at its next slot, up to a
    # period after the move.
    deadline = time.time() + args.every + args.ttl + 2 * args.poll + 5
    firsts: dict[str, tuple[float, float]] = {}
    while time.time() < deadline:
        # Runs after the signal by a killed worker cannot exist: any one of them names them all.
        firsts = first_runs_elsewhere(store, held, min(vids), t_sig) if vids else {}
        if len(firsts) == len(held):
            break
        time.sleep(1.0)
    delays = [started - t_sig for started, _ in firsts.values()]
    lags = [(started - scheduled) * 1000 for started, scheduled in firsts.values()]
    return {
        "killed": len(victims),
        "tasks_held": len(held),
        "all_owned_elsewhere_s": moved_s,
        "fair_share_s": fair_s,
        "tasks_run_elsewhere": len(firsts),
        "all_run_elsewhere_s": round(max(delays), 3) if delays and len(firsts) == len(held) else None,
        "first_run_lag_ms": {"p50": _r(percentile(lags, 50)), "p99": _r(percentile(lags, 99)), "max": _r(max(lags))}
        if lags
        else None,
        **moves(store, before, len(held)),
        "peak_cluster_connections": peak,
    }


def join_phase(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    store = cluster.store
    before = snapshot_terms(store)
    t = time.monotonic()
    joined = cluster.start(args.join)
    ids = {w.id for w in cluster.live}
    since, w0 = time.monotonic() - t, time.time()
    fair_s, peak = watch(store, lambda c: fair(c, ids), args.timeout)
    t_fair = w0 + (fair_s or 0.0)
    counts = owners(store)
    minimum = sum(counts.get(w.id, 0) for w in joined)
    reg = registered(store, [w.id for w in joined])
    return {
        "joined": len(joined),
        "fair_share_s": None if fair_s is None else round(since + fair_s, 3),
        "fair_share_after_last_registration_s": round(t_fair - reg[-1], 3) if reg and fair_s is not None else None,
        **moves(store, before, minimum),
        "peak_cluster_connections": peak,
    }


def _r(v: float | None, digits: int = 1) -> float | None:
    return None if v is None else round(v, digits)


def run(args: argparse.Namespace) -> BenchResult:
    check_args(args)
    settings = {"lease_ttl": args.ttl, "heartbeat": args.heartbeat, "poll": args.poll}
    results: dict[str, Any] = {
        "workers": args.workers,
        "tasks": args.tasks,
        "every_s": args.every,
        "settings": settings,
    }
    with server_database(args.store, "fleet") as store:
        room = connection_room(store)
        free = room["max_connections"] - room["reserved"] - room["in_use"]
        each = MIN_CONNECTIONS_PER_WORKER - (args.watch == "off")
        fits = free // each
        results["connections"] = room | {"workers_that_fit": fits}
        most = max(args.workers, args.workers - args.kill + args.join)
        if most > fits:
            raise SystemExit(
                f"{most} workers need at least {most * each} connections "
                f"({each} each), and the server has {free} free "
                f"(max_connections {room['max_connections']}, {room['reserved']} reserved, {room['in_use']} in use): "
                f"run at most --workers {fits}, or raise max_connections"
            )
        use_statements = statements_view(store)
        results["db_server"] = SERVER[store.dialect]
        results["statements_counted_by"] = (
            "pg_stat_statements (calls)"
            if use_statements
            else "pg_stat_database (xact_commit + xact_rollback)"
            if store.dialect == "postgresql"
            else "global_status (Handler_commit + Handler_rollback, server-wide)"
        )
        print(f"[fleet] installing {args.tasks:,} tasks", file=sys.stderr, flush=True)
        results["install_s"] = round(asyncio.run(_install(store.url, args.tasks, args.every)), 3)
        worker_url = (
            store.url if args.pool is None else f"{store.url}{'&' if '?' in store.url else '?'}pool={args.pool}"
        )
        if args.watch == "off":
            worker_url = f"{worker_url}{'&' if '?' in worker_url else '?'}watch=off"
        results["worker_pool"] = args.pool
        results["watch"] = args.watch
        with Cluster(store, settings, stats=True, worker_url=worker_url) as cluster:
            before = snapshot_terms(store)
            t_spawn = time.time()
            first = cluster.start(args.workers)
            ids = {w.id for w in first}
            print(f"[fleet] {args.workers} workers started", file=sys.stderr, flush=True)
            timeline: list[list[float]] = []
            w0 = time.time()
            fair_s, peak = watch(
                store, lambda c: fair(c, ids), args.timeout, timeline=timeline, pids=[w.pid for w in first]
            )
            t_fair = w0 + (fair_s or 0.0)
            reg = registered(store, sorted(ids))
            start: dict[str, Any] = {
                "fair_share_from_spawn_s": fair_s,
                "registered": len(reg),
                "last_registration_after_spawn_s": round(reg[-1] - t_spawn, 3) if reg else None,
                "fair_share_after_last_registration_s": round(t_fair - reg[-1], 3) if reg and fair_s else None,
                **moves(store, before, args.tasks),
                "peak_cluster_connections": peak,
                "registrations_after_spawn_s": [round(r - t_spawn, 2) for r in reg],
                "timeline": {
                    "columns": [
                        "s",
                        "registered",
                        "unowned",
                        "least_held",
                        "most_held",
                        "terms",
                        "db_cpu_s",
                        "workers_cpu_s",
                    ],
                    "samples": timeline,
                },
            }
            if start["fair_share_after_last_registration_s"] is not None:
                start["fair_share_after_last_registration_polls"] = round(
                    start["fair_share_after_last_registration_s"] / args.poll, 2
                )
            start["claims_after_last_registration"] = claim_timeline(store, first, t_fair)
            results["start"] = start
            print(f"[fleet] start: fair share after {fair_s} s; steady window", file=sys.stderr, flush=True)
            results["steady"] = steady(args, cluster, use_statements)
            if args.kill:
                print(f"[fleet] killing {args.kill}", file=sys.stderr, flush=True)
                results["kill"] = kill_phase(args, cluster)
            if args.join:
                print(f"[fleet] {args.join} joining", file=sys.stderr, flush=True)
                results["join"] = join_phase(args, cluster)
                print("[fleet] steady window after the join", file=sys.stderr, flush=True)
                results["steady_after"] = steady(args, cluster, use_statements)
            results["exit_codes"] = cluster.stop_all()
            results["worker_log_tail"] = cluster.tail_logs(3)
    return BenchResult(results=results, targets=targets_of(args, results), table=table_of(results))


def table_of(r: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        ["phase", "workers", "seconds", "moved / minimum", "delivered %", "lag p99 ms",
         "coord calls/s (per worker)", "db xacts/s", "DB CPU %", "DB ms/worker/s", "workers CPU %", "conns"]
    ]  # fmt: skip
    s = r["start"]
    rows.append(["start (to fair share)", r["workers"], s["fair_share_from_spawn_s"],
                 f"{s['tasks_moved']:,} / {s['moves_minimum']:,}", None, None, None, None, None, None, None,
                 s["peak_cluster_connections"]])  # fmt: skip
    for name in ("steady", "steady_after"):
        if name in r:
            w = r[name]
            rows.append([name, w["workers"], w["window_s"], None, w["delivered_pct"], w["lag_ms"]["p99"],
                         f"{w['coordination_calls_per_s']} ({w['coordination_calls_per_worker_per_s']})",
                         w["db_transactions_per_s"], w["db_cpu_pct"],
                         w["db_cpu_ms_per_worker_per_s"], w["workers_cpu_pct"],
                         w["cluster_connections"]])  # fmt: skip
        if name == "steady" and "kill" in r:
            k = r["kill"]
            rows.append([f"kill {k['killed']} (all owned elsewhere)", None, k["all_owned_elsewhere_s"],
                         f"{k['tasks_moved']:,} / {k['moves_minimum']:,}", None,
                         (k["first_run_lag_ms"] or {}).get("p99"), None, None, None, None, None,
                         k["peak_cluster_connections"]])  # fmt: skip
        if name == "steady" and "join" in r:
            j = r["join"]
            rows.append([f"join {j['joined']} (to fair share)", None, j["fair_share_s"],
                         f"{j['tasks_moved']:,} / {j['moves_minimum']:,}", None, None, None, None, None, None, None,
                         j["peak_cluster_connections"]])  # fmt: skip
    return rows


def targets_of(args: argparse.Namespace, r: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    s = r["start"]
    polls = s.get("fair_share_after_last_registration_polls")
    out.append(
        Target(
            "start: fair share within 3 polls of the last start",
            f"{polls} polls ({s['fair_share_after_last_registration_s']} s after the last registration)",
            polls is not None and polls <= FAIR_POLLS_TARGET,
        )
    )
    for phase in ("start", "kill", "join"):
        if phase in r and r[phase].get("moves_ratio") is not None:
            ratio = r[phase]["moves_ratio"]
            out.append(
                Target(
                    f"{phase}: tasks moved <= 1.1 x the minimum",
                    f"{r[phase]['tasks_moved']:,} vs {r[phase]['moves_minimum']:,} ({ratio}x)",
                    ratio <= MOVES_TARGET,
                )
            )
    for name in ("steady", "steady_after"):
        if name in r:
            w = r[name]
            out.append(
                Target(
                    f"{name}: coordination <= 1 call per worker per heartbeat + 1 per poll",
                    f"{w['coordination_calls_per_s']}/s vs {w['coordination_bound_per_s']}/s",
                    w["coordination_calls_per_s"] <= w["coordination_bound_per_s"],
                )
            )
            out.append(
                Target(
                    f"{name}: 100% delivered",
                    f"{w['delivered_pct']}% ({w['slots_delivered']:,}/{w['slots_expected']:,}), "
                    f"lag p99 {w['lag_ms']['p99']} ms",
                    w["delivered_pct"] == 100.0,
                )
            )
    if "kill" in r:
        k = r["kill"]
        bound = args.ttl + args.poll + 0.5
        got = k["all_owned_elsewhere_s"]
        out.append(
            Target(
                f"kill: every task of the killed owned elsewhere within TTL + poll + 0.5 = {bound} s",
                f"{got} s",
                got is not None and got <= bound,
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    bench_main("fleet", parser, run, argv)


if __name__ == "__main__":
    main()
