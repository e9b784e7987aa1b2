"""Database work spent on coordination, against the number of tasks.

For each N in ``--tasks`` (default 1,000 and 10,000): N ``noop`` tasks every second on
``--workers`` worker processes (default 2) whose store is wrapped in a counting proxy
(``bench_worker.CountingStore``). Once the tasks are spread and a
warm-up has passed, the counters are read at the start and the end of a ``--duration``
window. Reported per second, per store method:

- coordination writes (each one write transaction): ``renew_lease``, ``claim_tasks``,
  ``release_tasks``, ``register_worker``, ``leave``, ``reap_workers``, ``prune_runs``;
- coordination reads: ``cluster_view``, ``owned_tasks`` (a full re-read every 30 s);
- run records, apart: ``record_runs`` (one transaction per worker per poll, carrying the
  run rows and one slot update per task that ran).

The target: coordination writes per second at 10,000 tasks within 10% of those at 1,000.

    .venv/bin/python bench/coordination.py [--tasks 1000,10000] [--workers 2] [--duration 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench_worker import COORDINATION_READS, COORDINATION_WRITES, RUN_RECORDS
from common import (
    BenchResult,
    Cluster,
    Target,
    bench_main,
    create_tasks,
    scenario_parser,
    scenario_store,
    scenario_table,
    settings_of,
    worker_stats,
)

FLAT_TOLERANCE = 0.10


def parser() -> argparse.ArgumentParser:
    return scenario_parser(__doc__, workers=2, duration=40.0, tasks=[1000, 10000], warmup=5.0)


def rates(s0: dict[str, dict[str, Any]], s1: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-method calls/s, rows/s and mean ms per call, summed over workers."""
    per: dict[str, dict[str, float]] = {}
    spans = []
    executions = 0.0
    for wid, end in s1.items():
        start = s0.get(wid)
        if start is None:
            continue
        span = end["t"] - start["t"]
        spans.append(span)
        executions += (end["executions"] - start["executions"]) / span
        for method, c1 in end["counts"].items():
            c0 = start["counts"].get(method, {})
            acc = per.setdefault(method, {"calls_per_s": 0.0, "rows_per_s": 0.0, "seconds": 0.0, "calls": 0.0})
            calls = c1["calls"] - c0.get("calls", 0)
            acc["calls"] += calls
            acc["calls_per_s"] += calls / span
            acc["rows_per_s"] += (c1["rows"] - c0.get("rows", 0)) / span
            acc["seconds"] += c1["seconds"] - c0.get("seconds", 0.0)
            if "slot_rows" in c1:
                acc["slot_rows_per_s"] = (
                    acc.get("slot_rows_per_s", 0.0) + (c1["slot_rows"] - c0.get("slot_rows", 0)) / span
                )
    methods: dict[str, dict[str, float | None]] = {}
    for method, acc in sorted(per.items()):
        entry: dict[str, float | None] = {
            "calls_per_s": round(acc["calls_per_s"], 3),
            "rows_per_s": round(acc["rows_per_s"], 1),
            "mean_ms_per_call": round(1000 * acc["seconds"] / acc["calls"], 2) if acc["calls"] else None,
        }
        if "slot_rows_per_s" in acc:
            entry["slot_rows_per_s"] = round(acc["slot_rows_per_s"], 1)
        methods[method] = entry

    def total(names: tuple[str, ...], field: str) -> float:
        return round(sum(methods[m][field] or 0.0 for m in names if m in methods), 3)

    return {
        "window_s": round(min(spans), 2) if spans else None,
        "executions_per_s": round(executions, 1),
        "methods": methods,
        "coordination_writes_per_s": total(COORDINATION_WRITES, "calls_per_s"),
        "coordination_write_rows_per_s": total(COORDINATION_WRITES, "rows_per_s"),
        "coordination_reads_per_s": total(COORDINATION_READS, "calls_per_s"),
        "coordination_read_rows_per_s": total(COORDINATION_READS, "rows_per_s"),
        "run_record_transactions_per_s": total(RUN_RECORDS, "calls_per_s"),
        "run_rows_per_s": total(RUN_RECORDS, "rows_per_s"),
        "slot_rows_per_s": round(methods.get("record_runs", {}).get("slot_rows_per_s") or 0.0, 1),
    }


def run_one(args: argparse.Namespace, n: int) -> dict[str, Any]:
    settings = settings_of(args)
    with scenario_store(args.store, f"coordination-{n}") as store:
        print(f"[coordination] {n} tasks: creating", file=sys.stderr, flush=True)
        creation = create_tasks(store, n)
        with Cluster(store, settings, stats=True) as cluster:
            print(f"[coordination] {n} tasks: starting {args.workers} workers", file=sys.stderr, flush=True)
            workers, spread = cluster.start_spread(args.workers, warmup=args.warmup)
            s0 = worker_stats(workers)
            time.sleep(args.duration)
            s1 = worker_stats(workers)
            cluster.stop_all()
    result = rates(s0, s1)
    result.update(tasks=n, workers=args.workers, settings=settings, creation=creation, spread_s=spread)
    return result


def run(args: argparse.Namespace) -> BenchResult:
    scenarios = [run_one(args, n) for n in args.tasks]
    table = scenario_table(
        scenarios,
        [("tasks", "tasks"), ("exec/s", "executions_per_s"), ("coord writes/s", "coordination_writes_per_s"),
         ("coord write rows/s", "coordination_write_rows_per_s"), ("coord reads/s", "coordination_reads_per_s"),
         ("coord read rows/s", "coordination_read_rows_per_s"), ("flushes/s", "run_record_transactions_per_s"),
         ("run rows/s", "run_rows_per_s"), ("slot rows/s", "slot_rows_per_s"),
         ("renew ms", lambda s: s["methods"].get("renew_lease", {}).get("mean_ms_per_call")),
         ("flush ms", lambda s: s["methods"].get("record_runs", {}).get("mean_ms_per_call"))],
    )  # fmt: skip
    targets = []
    by_n = {s["tasks"]: s for s in scenarios}
    if 1000 in by_n and 10000 in by_n:
        low, high = by_n[1000]["coordination_writes_per_s"], by_n[10000]["coordination_writes_per_s"]
        change = (high - low) / low if low else float("inf")
        targets.append(
            Target(
                "coordination writes/s at 10,000 tasks within 10% of 1,000",
                f"{high:.3f}/s vs {low:.3f}/s ({change:+.1%})",
                abs(change) <= FLAT_TOLERANCE,
            )
        )
    return BenchResult(results={"scenarios": scenarios}, targets=targets, table=table)


def main(argv: list[str] | None = None) -> None:
    bench_main("coordination", parser, run, argv)


if __name__ == "__main__":
    main()
