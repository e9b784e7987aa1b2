"""Failover and handoff: how long a stopped worker's tasks go without an owner running them.

``--workers`` worker processes (default 3) share ``--tasks`` ``noop`` tasks (default 300,
every second). Then, ``--repeats`` times each:

- **failover** (``kill``): SIGKILL one worker. Its liveness lock dies with it (issue 17):
  the others leave it out of their fair share and end its lease at their next poll, and
  claim its tasks. With ``--liveness lease`` (no lock) its lease runs out first (at most
  ``lease_ttl`` after its last renewal);
- **pause** (``stop``): SIGSTOP one worker for longer than its lease. It keeps its lock
  (its process and sessions live): its lease runs out, then the others claim its tasks.
  It is continued afterwards, fences itself and rejoins;
- **handoff**: SIGTERM one worker. It stops starting runs, lets running ones finish,
  releases its tasks and leaves; the release wakes the others, which claim them at once.

For each event, from the signal (wall clock; the database's clock is the same machine's):

- ``all_running_s``: until every task the worker held has run on another worker
  (its first run elsewhere, ``started_at`` in ``tenure_runs``); its median over tasks too;
- ``all_moved_s``: until every such task is owned by another worker (sampled every 20 ms);
- ``first_run_lag_ms``: how late (start minus slot) those first runs elsewhere were;
- SIGTERM only: ``released_s``, when the stopping worker released its tasks (their
  ``freed_at``, database time), and ``release_to_all_moved_ms``, from that release to
  every task owned by another worker (the release wakes the others: LISTEN/NOTIFY on
  PostgreSQL, a wake file on SQLite, KILL QUERY of their waits on MySQL/MariaDB; with
  ``--liveness lease`` MySQL/MariaDB workers wait for their next poll). Target: <= 100 ms.

A replacement worker is started after each event and the tasks are spread again; the
time that takes (a join reaching fair share) is reported as ``rebalance_s``.

Targets (issue 17): SIGKILL failover <= poll + 0.5 s (lease_ttl + poll + 0.5 s with
``--liveness lease``); SIGSTOP <= lease_ttl + poll + 0.5 s; handoff <= one poll interval,
and <= 100 ms from the release.

    .venv/bin/python bench/failover.py [--tasks 300] [--workers 3] [--repeats 3] [--ttl 10 --poll 1]
        [--modes kill,stop,term] [--liveness session|lease]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from common import (
    BenchResult,
    BenchStore,
    Cluster,
    Target,
    WorkerProc,
    bench_main,
    create_tasks,
    scenario_parser,
    scenario_store,
    settings_of,
    summary,
)

HANDOFF_TARGET_MS = 100.0


def parser() -> argparse.ArgumentParser:
    p = scenario_parser(__doc__, workers=3, duration=0.0, tasks=300, every=1.0)
    p.add_argument("--repeats", type=int, default=3, help="events of each kind (default %(default)s)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of normal running before each event")
    p.add_argument(
        "--modes",
        default="kill,stop,term",
        help="which events, comma-separated: kill, stop, term (default %(default)s)",
    )
    p.add_argument(
        "--liveness",
        choices=("session", "lease"),
        default="session",
        help="the workers' store URL option liveness (default %(default)s; lease: no crash-detection lock)",
    )
    return p


def owners_of(store: BenchStore, keys: set[str]) -> dict[str, str | None]:
    rows = store.query("SELECT key, owner FROM tenure_tasks WHERE kind = 'noop'")
    return {k: o for k, o in rows if k in keys}


def first_runs_elsewhere(
    store: BenchStore, keys: set[str], victim: str, since: float
) -> dict[str, tuple[float, float]]:
    """For each key: (started_at, scheduled_at) of its first run by another worker since ``since``."""
    rows = store.query(
        "SELECT key, started_at, scheduled_at FROM tenure_runs "
        "WHERE kind = 'noop' AND worker != ? AND started_at >= ? ORDER BY started_at",
        (victim, since),
    )
    out: dict[str, tuple[float, float]] = {}
    for key, started, scheduled in rows:
        if key in keys and key not in out:
            out[key] = (started, scheduled)
    return out


def one_event(cluster: Cluster, victim: WorkerProc, mode: str, timeout: float) -> dict[str, Any]:
    store = cluster.store
    keys = {r[0] for r in store.query("SELECT key FROM tenure_tasks WHERE owner = ?", (victim.id,))}
    lease = store.query("SELECT expires_at FROM tenure_workers WHERE id = ?", (victim.id,))
    sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}[mode]
    t_sig = cluster.signal(victim, sig)
    expires_in = float(lease[0][0]) - t_sig if lease else None
    moved_at: float | None = None
    exited_at: float | None = None
    firsts: dict[str, tuple[float, float]] = {}
    deadline = t_sig + timeout
    while time.time() < deadline:
        now = time.time()
        if exited_at is None and not victim.alive():
            exited_at = now
        if moved_at is None:
            owners = owners_of(store, keys)
            if all(o is not None and o != victim.id for o in owners.values()):
                moved_at = now
            else:
                time.sleep(0.005)  # ownership sampled every ~5 ms (plus the query's own time)
                continue
        firsts = first_runs_elsewhere(store, keys, victim.id, t_sig)
        if len(firsts) == len(keys):
            break
        time.sleep(0.02)
    if exited_at is None and mode != "stop":
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.proc.wait(5)
        exited_at = time.time() if not victim.alive() else None
    released_at: float | None = None
    if mode == "term" and keys:
        # A released task keeps freed_at (database time of the release) when claimed again.
        rows = store.query(
            "SELECT max(freed_at), count(*) FROM tenure_tasks WHERE freed_how = 'released' AND freed_at >= ? "
            "AND key IN (" + ",".join("?" * len(keys)) + ")",
            (t_sig - 1.0, *sorted(keys)),
        )
        if rows and rows[0][0] is not None and int(rows[0][1]) == len(keys):
            released_at = float(rows[0][0])
    delays = [started - t_sig for started, _ in firsts.values()]
    lags = [(started - scheduled) * 1000 for started, scheduled in firsts.values()]
    return {
        "mode": mode,
        "victim": victim.id,
        "tasks_held": len(keys),
        "tasks_run_elsewhere": len(firsts),
        "all_running_s": round(max(delays), 3) if len(firsts) == len(keys) and delays else None,
        "median_running_s": round(statistics.median(delays), 3) if delays else None,
        "all_moved_s": round(moved_at - t_sig, 3) if moved_at is not None else None,
        "released_s": round(released_at - t_sig, 3) if released_at is not None else None,
        "release_to_all_moved_ms": (
            round(1000 * (moved_at - released_at), 1) if moved_at is not None and released_at is not None else None
        ),
        "lease_left_at_signal_s": round(expires_in, 3) if expires_in is not None else None,
        "first_run_lag_ms_max": round(max(lags), 1) if lags else None,
        "victim_exit_s": round(exited_at - t_sig, 3) if exited_at is not None else None,
        "victim_exit_code": victim.proc.returncode,
    }


def run(args: argparse.Namespace) -> BenchResult:
    settings = settings_of(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bound = settings["lease_ttl"] + settings["poll"] + 0.5
    crash_bound = settings["poll"] + 0.5 if args.liveness == "session" else bound
    events: list[dict[str, Any]] = []
    with scenario_store(args.store, "failover") as store:
        print(f"[failover] {args.tasks} tasks: creating", file=sys.stderr, flush=True)
        creation = create_tasks(store, args.tasks, every=args.every)
        worker_url = f"{store.url}{'&' if '?' in store.url else '?'}liveness={args.liveness}"
        with Cluster(store, settings, worker_url=worker_url) as cluster:
            cluster.start(args.workers)
            spread = cluster.wait_balanced(timeout=60)
            serial = 0
            for mode in modes:
                for _ in range(args.repeats):
                    live = cluster.live
                    cluster.wait_balanced(timeout=60, workers=live)
                    time.sleep(args.settle)
                    victim = live[serial % len(live)]
                    serial += 1
                    print(f"[failover] {mode} {victim.id}", file=sys.stderr, flush=True)
                    event = one_event(cluster, victim, mode, timeout=bound + 15)
                    if mode == "stop":
                        # Continued, it fences itself and rejoins: no replacement needed.
                        cluster.signal(victim, signal.SIGCONT)
                        t = time.monotonic()
                        event["rebalance_s"] = cluster.wait_balanced(timeout=60, workers=cluster.live)
                        event["resumed_to_balanced_s"] = round(time.monotonic() - t, 3)
                        events.append(event)
                        continue
                    (replacement,) = cluster.start(1)
                    t = time.monotonic()
                    rebalanced = cluster.wait_balanced(timeout=60, workers=[w for w in cluster.live])
                    event["rebalance_s"] = rebalanced
                    event["replacement"] = replacement.id
                    event["replacement_start_to_balanced_s"] = round(time.monotonic() - t, 3)
                    events.append(event)
            logs = cluster.tail_logs(3)
    results: dict[str, Any] = {
        "tasks": args.tasks,
        "every_s": args.every,
        "workers": args.workers,
        "settings": settings,
        "liveness": args.liveness,
        "failover_bound_s": crash_bound,
        "pause_bound_s": bound,
        "handoff_bound_s": settings["poll"],
        "creation": creation,
        "spread_s": spread,
        "events": events,
    }
    table: list[list[Any]] = [
        [
            "event",
            "n",
            "all running min s",
            "median s",
            "max s",
            "all moved max s",
            "release max s",
            "release->moved ms (max)",
            "first-run lag max ms",
            "bound s",
        ]
    ]
    targets = []
    for mode, label, limit in (
        ("kill", "SIGKILL failover", crash_bound),
        ("stop", "SIGSTOP past TTL", bound),
        ("term", "SIGTERM handoff", settings["poll"]),
    ):
        evs = [e for e in events if e["mode"] == mode]
        if not evs:
            continue
        running = [e["all_running_s"] for e in evs if e["all_running_s"] is not None]
        moved = [e["all_moved_s"] for e in evs if e["all_moved_s"] is not None]
        lags = [e["first_run_lag_ms_max"] for e in evs if e["first_run_lag_ms_max"] is not None]
        s = summary(running)
        results[f"{mode}_all_running_s"] = s
        results[f"{mode}_all_moved_s"] = summary(moved)
        incomplete = len(evs) - len(running)
        released = [e["released_s"] for e in evs if e.get("released_s") is not None]
        handoff = [e["release_to_all_moved_ms"] for e in evs if e.get("release_to_all_moved_ms") is not None]
        table.append(
            [label, len(evs), s["min"], s["median"], s["max"], max(moved) if moved else None,
             max(released) if released else None, max(handoff) if handoff else None,
             max(lags) if lags else None, limit]
        )  # fmt: skip
        if mode == "term":
            results["term_release_to_all_moved_ms"] = summary(handoff, 1)
            worst_ms = max(handoff) if handoff else None
            from_sig = max(moved) if moved else None
            targets.append(
                Target(
                    f"handoff after SIGTERM <= {HANDOFF_TARGET_MS:g} ms (release -> all tasks owned elsewhere)",
                    f"max {worst_ms} ms (n={len(handoff)}); from SIGTERM: all moved max {from_sig} s",
                    worst_ms is not None and len(handoff) == len(evs) and worst_ms <= HANDOFF_TARGET_MS,
                    ""
                    if worst_ms is None or worst_ms <= HANDOFF_TARGET_MS
                    else f"{worst_ms - HANDOFF_TARGET_MS:.1f} ms over",
                )
            )
        worst = s["max"]
        met = worst is not None and incomplete == 0 and worst <= limit
        note = ""
        if incomplete:
            note = f"{incomplete} event(s) where some task never ran elsewhere within the timeout"
        elif worst is not None and worst > limit:
            note = f"{worst - limit:.3f} s over"
        if mode == "kill" and args.liveness == "session":
            name = f"failover after SIGKILL <= poll + 0.5 s = {limit:g} s"
        elif mode in ("kill", "stop"):
            name = f"{label} <= TTL + poll + 0.5 s = {limit:g} s"
        else:
            name = f"handoff <= one poll interval = {limit:g} s"
        targets.append(Target(name, f"max {worst} s (median {s['median']} s, n={s['n']})", met, note))
    if logs:
        results["worker_log_tail"] = logs
    notes = [
        f"settings: lease_ttl={settings['lease_ttl']:g} s, heartbeat={settings['heartbeat']:g} s, "
        f"poll={settings['poll']:g} s, liveness={args.liveness}; SIGKILL bound {crash_bound:g} s, "
        f"SIGSTOP bound TTL + poll + 0.5 = {bound:g} s; "
        f"{args.tasks} tasks every {args.every:g} s on {args.workers} workers",
    ]
    return BenchResult(results=results, targets=targets, table=table, notes=notes)


def main(argv: list[str] | None = None) -> None:
    bench_main("failover", parser, run, argv)


if __name__ == "__main__":
    main()
