"""How long tenure's own code holds a worker's event loop at many tasks (issue 12 item 3).

One worker in this process on a fresh SQLite store (or, with ``--store URL``, a scratch
database on that PostgreSQL or MySQL server, where claims come 5,000 or 500 rows a
statement), N tasks every second with a no-op handler (so whatever holds the loop is
tenure's code or the store's), and a probe on
the same loop: a callback every 5 ms that notes how late it ran. Reports the longest and
the 99th percentile of those delays while the worker claims its tasks (start-up) and
while it runs them (steady), and the runs recorded.

With ``--handler-sleep S`` each run sleeps S seconds, so that with S past the period and
the default cap of 100 concurrent runs the worker is far past its capacity: most tasks wait
for a place, the running ones park their next slots. With ``--join`` a second worker
process then starts on the same store and takes half of the tasks: the ``handover`` phase
is the loop's delays while this worker releases them (and records the slots they waited
for or passed), until it holds half, plus two seconds. The ``stop`` phase is the worker's
stop at the end (forced: its runs cancelled, its waiting slots given up, its tasks handed
back). Run under the heavy lock::

    flock /tmp/tenure-heavy.lock .venv/bin/python bench/loop_block.py [--tasks N] [--seconds S] [--store URL]
        [--handler-sleep S] [--join]

Prints one JSON document, then a short table. The target is 20 ms (the issue's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tenure
from common import dialect_of, scenario_store
from tenure import metrics

#: The probe's interval (seconds).
TICK = 0.005
#: The issue's bound on any single hold of the loop by tenure's code (seconds).
TARGET = 0.020


#: The joining worker, started by ``--join`` (registers the same ``noop`` kind).
WORKER_SCRIPT = Path(__file__).with_name("bench_worker.py")


async def measure(tasks: int, seconds: float, url: str, *, handler_sleep: float, join: bool) -> dict[str, Any]:
    app, admin = tenure.App(url), tenure.App(url)

    @app.task("noop", every=1.0)
    async def noop(ctx: tenure.Context) -> None:
        if handler_sleep:
            await asyncio.sleep(handler_sleep)

    await app.open(migrate=True)
    await admin.sync_tasks("noop", {f"k{i:06d}": None for i in range(tasks)})
    delays: dict[str, list[float]] = {"startup": [], "steady": []}
    if join:
        delays["handover"] = []
    delays["stop"] = []
    phase = "startup"
    loop = asyncio.get_running_loop()

    async def probe() -> None:
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            delays[phase].append(max(0.0, loop.time() - due))

    settings = tenure.Settings(worker_id="bench", lease_ttl=10.0, heartbeat=2.0, poll=1.0)
    worker = asyncio.create_task(app.run_worker(settings=settings, handle_signals=False))
    prober = asyncio.create_task(probe())
    began = time.monotonic()
    # The worker's own gauge: reading the store here would hold the loop itself.
    while (metrics.REGISTRY.get_sample_value("tenure_tasks_held") or 0) < tasks:
        if worker.done():
            worker.result()
        await asyncio.sleep(0.5)
    claimed_in = time.monotonic() - began
    phase = "steady"
    ok = {"kind": "noop", "outcome": "ok"}
    before = metrics.REGISTRY.get_sample_value("tenure_runs_total", ok) or 0.0
    await asyncio.sleep(seconds)
    ran = (metrics.REGISTRY.get_sample_value("tenure_runs_total", ok) or 0.0) - before
    handed_over_in, joiner = None, None
    if join:
        phase = "handover"
        handed_over_in, joiner = await handover(tasks, url)
    phase = "stop"
    worker.cancel()  # the worker stops (forced: no grace), the probe still on
    await asyncio.gather(worker, return_exceptions=True)
    prober.cancel()
    await asyncio.gather(prober, return_exceptions=True)
    await admin.close()
    if joiner is not None:
        joiner.terminate()
        await asyncio.wait_for(joiner.wait(), 20)
    out: dict[str, Any] = {
        "tasks": tasks,
        "seconds": seconds,
        "store": dialect_of(url),
        "claimed_in": round(claimed_in, 2),
        "handler_sleep": handler_sleep,
        "handed_over_in": handed_over_in,
    }
    for name, values in delays.items():
        values.sort()
        out[name] = {
            "samples": len(values),
            "max_ms": round(1000 * values[-1], 2) if values else None,
            "p99_ms": round(1000 * values[int(0.99 * (len(values) - 1))], 2) if values else None,
            "median_ms": round(1000 * statistics.median(values), 2) if values else None,
        }
    out["runs_per_second"] = round(ran / seconds, 1)
    return out


async def handover(tasks: int, url: str) -> tuple[float | None, asyncio.subprocess.Process]:
    """Start a second worker on the store and wait (at most 120 s) until this one holds
    half of the tasks, then two seconds more. Returns the seconds the halving took (None
    if it did not happen) and the second worker, still running: stopping it here would
    hand its tasks back while the probe still runs."""
    cmd = [sys.executable, str(WORKER_SCRIPT), "--store", url, "--id", "joiner"]
    cmd += ["--ttl", "10", "--heartbeat", "2", "--poll", "1"]
    joiner = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    while (metrics.REGISTRY.get_sample_value("tenure_tasks_held") or 0) > tasks // 2:
        if time.monotonic() - began > 120 or joiner.returncode is not None:
            return None, joiner
        await asyncio.sleep(0.1)
    took = time.monotonic() - began
    await asyncio.sleep(2.0)
    return round(took, 2), joiner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--store", help="a PostgreSQL or MySQL server URL (default: a temporary SQLite file)")
    parser.add_argument("--handler-sleep", type=float, default=0.0, help="seconds each run sleeps (default 0)")
    parser.add_argument("--join", action="store_true", help="then start a second worker and measure the handover")
    args = parser.parse_args()
    if args.handler_sleep < 0:
        parser.error(f"--handler-sleep must be 0 or more seconds, not {args.handler_sleep:g}")
    if args.store is None:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}?synchronous=normal"
            result = asyncio.run(
                measure(args.tasks, args.seconds, url, handler_sleep=args.handler_sleep, join=args.join)
            )
    else:
        with scenario_store(args.store, "loop_block") as store:
            result = asyncio.run(
                measure(args.tasks, args.seconds, store.url, handler_sleep=args.handler_sleep, join=args.join)
            )
    print(json.dumps(result, default=str))
    print(
        f"{result['tasks']} tasks on {result['store']}, {result['runs_per_second']} runs/s, "
        f"claimed in {result['claimed_in']} s"
    )
    print(f"{'phase':<8} {'max ms':>8} {'p99 ms':>8} {'median':>8}  (target: max <= {1000 * TARGET:g} ms)")
    if result["handed_over_in"] is not None:
        print(f"the second worker took half of the tasks in {result['handed_over_in']} s")
    for name in ("startup", "steady", "handover", "stop"):
        if name not in result:
            continue
        r = result[name]
        print(f"{name:<8} {r['max_ms']!s:>8} {r['p99_ms']!s:>8} {r['median_ms']!s:>8}")


if __name__ == "__main__":
    main()
