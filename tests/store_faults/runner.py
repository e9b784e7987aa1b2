"""A real worker process for the store-fault tests: one tenure app run by ``App.run_worker``.

Run as::

    python runner.py STORE_URL --id NAME --events FILE [--ttl S] [--heartbeat S] [--poll S]
        [--trust-margin S] [--grace S]

It builds a :class:`tenure.App` with one kind, ``tick``, whose handler writes one row per
run to the test's ``fault_commits`` table through ``ctx.fenced()``, in the store's own
dialect (``ctx.dialect``): ``kind, tkey, term, worker, slot`` and ``committed_at``, the
database's clock inside the transaction. With ``params["hold"]`` seconds, the handler keeps
its fenced transaction open that long after the insert, so that a connection cut by the
test can land inside an open fenced transaction.

What the database cannot show goes to the ``--events`` file, one JSON object per line,
written unbuffered (kept on SIGKILL): ``clock`` (this process's wall and monotonic clocks
at start, to show libfaketime took effect), ``inserted`` (the row is written, the
transaction still open), ``committed``, ``refused`` (LeaseLost) and ``failed`` (a store
error, e.g. the connection was cut).

The process does not read its own clock for anything it writes to the database: under
libfaketime only the ``t`` and ``clock`` fields of its events are skewed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

import tenure
from tenure import Context, LeaseLost, Settings
from tenure.errors import StoreError

#: The handler's insert, by ``ctx.dialect``: placeholders and the database clock differ.
INSERT = {
    "sqlite": (
        "INSERT INTO fault_commits (kind, tkey, term, worker, slot, committed_at) "
        "VALUES (?, ?, ?, ?, ?, (julianday('now') - 2440587.5) * 86400.0)"
    ),
    "postgresql": (
        "INSERT INTO fault_commits (kind, tkey, term, worker, slot, committed_at) "
        "VALUES (%s, %s, %s, %s, %s, extract(epoch from clock_timestamp()))"
    ),
    "mysql": (
        "INSERT INTO fault_commits (kind, tkey, term, worker, slot, committed_at) "
        "VALUES (%s, %s, %s, %s, %s, UNIX_TIMESTAMP(NOW(6)))"
    ),
}

#: The kind's default period; the tests give each task its own schedule anyway.
PERIOD = 1.0


class Events:
    """The side channel: one JSON line per event, each in one write() (kept on SIGKILL)."""

    def __init__(self, path: Path, worker: str) -> None:
        self._out: IO[bytes] = path.open("ab", buffering=0)
        self._worker = worker
        self._lock = threading.Lock()

    def note(self, ev: str, ctx: Context | None = None, **extra: Any) -> None:
        rec: dict[str, Any] = {"ev": ev, "t": time.time(), "worker": self._worker}
        if ctx is not None:
            rec.update(kind=ctx.kind, key=ctx.key, term=ctx.token, slot=ctx.scheduled_at)
        rec.update(extra)
        with self._lock:
            self._out.write((json.dumps(rec) + "\n").encode())


def build(store: str, events: Events) -> tenure.App:
    app = tenure.App(store)

    @app.task("tick", every=PERIOD, timeout=PERIOD * 0.9)
    async def tick(ctx: Context) -> None:
        hold = float(ctx.params.get("hold", 0.0))
        try:
            async with ctx.fenced() as tx:
                await tx.execute(INSERT[ctx.dialect], (ctx.kind, ctx.key, ctx.token, ctx.worker_id, ctx.scheduled_at))
                events.note("inserted", ctx)
                if hold:
                    await asyncio.sleep(hold)
        except LeaseLost as exc:
            events.note("refused", ctx, error=str(exc))
            raise
        except StoreError as exc:
            events.note("failed", ctx, error=f"{type(exc).__name__}: {exc}")
            raise
        except asyncio.CancelledError:
            # A worker whose liveness session was cut stops trusting its lease at once and
            # cancels its runs, before the cut transaction can fail on its own.
            events.note("cancelled", ctx)
            raise
        events.note("committed", ctx)

    return app


async def _run(app: tenure.App, settings: Settings) -> None:
    # SIGUSR1 writes every asyncio task's stack to the log: what a stuck worker waits for.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await app.run_worker(settings=settings)


def _dump_tasks() -> None:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=out)
        task.print_stack(file=out)
    logging.getLogger("runner").warning("asyncio tasks on SIGUSR1:\n%s", out.getvalue())


def worker_from_argv() -> tuple[argparse.Namespace, Events, Settings]:
    """The command line both fault runners take (see the module docstring): the arguments,
    the events side channel (its first line notes the process's clocks) and the settings.
    Logging is left to the caller."""
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--id", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=float, default=0.4)
    parser.add_argument("--poll", type=float, default=0.3)
    parser.add_argument("--trust-margin", type=float, default=0.5)
    parser.add_argument("--grace", type=float, default=1.0)
    args = parser.parse_args()
    events = Events(Path(args.events), args.id)
    events.note("clock", wall=time.time(), monotonic=time.monotonic(), pid=os.getpid())
    settings = Settings(
        lease_ttl=args.ttl,
        heartbeat=args.heartbeat,
        poll=args.poll,
        trust_margin=args.trust_margin,
        grace=args.grace,
        worker_id=args.id,
    )
    return args, events, settings


def main() -> None:
    args, events, settings = worker_from_argv()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    app = build(args.store, events)
    logging.getLogger("runner").info("pid %d starting as %s", os.getpid(), args.id)
    asyncio.run(_run(app, settings))
    logging.getLogger("runner").info("run_worker returned; exiting 0")


if __name__ == "__main__":
    main()
