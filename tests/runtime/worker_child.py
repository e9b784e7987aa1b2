"""A real worker process for the runtime tests: a small tenure app run by ``App.run_worker``.

Run as::

    python worker_child.py STORE_URL --id NAME --events FILE [timing flags]
        --scenario NAME [--control DIR]

(the command line, logging and stack dumps of :mod:`support.child`). It does not use the
``tenure`` CLI: it builds a :class:`tenure.App`, registers the scenario's kinds and runs
``app.run_worker``, logging at INFO to stderr, so the watchdog's reports land in the
test's log file.

What handlers decide goes to the test's ``commits`` table through ``ctx.fenced()``, one
row per accepted run (``kind, tkey, term, worker, slot, started, at``; ``at`` is the
database clock inside the transaction; the SQL is the store's dialect, ``ctx.dialect``).
What the database cannot show, because it was refused or never reached it, goes to the
``--events`` file: one JSON object per line
(``{"ev": "start" | "committed" | "refused" | "cancelled" | "blocking" | ..., ...}``,
:mod:`support.events`), written unbuffered so it survives SIGKILL.

Scenarios (kinds registered):

- ``tick``: ``tick`` (async; its start event notes its params; optional ``work`` seconds of
  ``asyncio.sleep`` before committing; with ``stubborn``, it ignores being cancelled during
  that sleep and commits anyway).
- ``faults``: ``tick``, plus ``hang`` (async, never returns; timeout 0.5 s), ``boom``
  (async, raises) and ``nap`` (sync, ``time.sleep(params["sleep"])`` in its thread,
  timeout 0.5 s, then a fenced commit through ``ctx.fenced_sync()``).
- ``blocker``: ``tick``, plus ``block`` (async, but blocks the event loop with
  ``time.sleep`` for the seconds written in ``CONTROL/block-<key>`` when that file exists,
  which it deletes, at a moment when it is inside no transaction: on SQLite, when no
  process holds the write lock; on a server, when none of its sessions has a transaction
  open; then commits).
- ``stuck``: ``tick``, plus ``stuck`` (sync, timeout 0.5 s): inside ``ctx.fenced_sync()``
  it inserts, then sleeps ``params["hold"]`` seconds (default 5) in its thread, far past
  its timeout, and inserts again.
- ``linger``: ``tick``, plus ``linger`` (async, waits until cancelled; timeout 600 s).
- ``report``: ``tick``, plus ``report`` (the same handler as ``tick``): the new release of
  a rolling deploy that adds a kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support and runtime

import tenure
from runtime.harness import insert_commit_sql
from support import child
from support.events import Events
from support.rawdb import no_transaction_open
from tenure import Context, LeaseLost


def build(args: argparse.Namespace, events: Events) -> tenure.App:
    app = tenure.App(args.store)
    control = Path(args.control) if args.control else None

    def outside_transactions() -> bool:
        """True if this process is inside no transaction right now (on SQLite: nobody,
        this process included, holds the write lock).

        The blocking handler blocks only then: blocked while another coroutine of this
        worker is inside a write transaction, it would keep what that one locked for the
        whole block (SQLite's single write lock, stalling every worker; a server's rows,
        stalling claims of them): a limit of blocking the event loop, not the subject.
        Nothing can start one afterwards: the event loop is blocked from here on (the check
        itself is synchronous, so no coroutine runs between it and the block).
        """
        return no_transaction_open(args.store, os.getpid())

    async def commit(ctx: Context, started: float) -> None:
        try:
            values = (ctx.kind, ctx.key, ctx.token, ctx.worker_id, ctx.scheduled_at, started)
            async with ctx.fenced() as tx:
                await tx.execute(insert_commit_sql(ctx.dialect), values)
        except LeaseLost as exc:
            events.note("refused", ctx, error=str(exc))
            raise
        events.note("committed", ctx)

    async def tick(ctx: Context) -> None:
        started = time.time()
        events.note("start", ctx, params=ctx.params)
        try:
            work = float(ctx.params.get("work", 0.0))
            if work:
                await asyncio.sleep(work)
        except asyncio.CancelledError:
            events.note("cancelled", ctx)
            if not ctx.params.get("stubborn"):
                raise
            # A handler that ignores its cancellation and commits anyway: the fence must
            # refuse what it writes once the lease is gone.
        await commit(ctx, started)

    async def wait_until_cancelled(ctx: Context) -> None:
        events.note("start", ctx)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.note("cancelled", ctx)
            raise

    app.task("tick", every=1.0)(tick)

    if args.scenario == "faults":

        async def boom(ctx: Context) -> None:
            events.note("start", ctx)
            raise RuntimeError(f"boom in {ctx.key}")

        def nap(ctx: Context) -> None:
            started = time.time()
            events.note("start", ctx, thread=threading.current_thread().name)
            time.sleep(float(ctx.params.get("sleep", 1.5)))
            try:
                values = (ctx.kind, ctx.key, ctx.token, ctx.worker_id, ctx.scheduled_at, started)
                with ctx.fenced_sync() as tx:
                    tx.execute(insert_commit_sql(ctx.dialect), values)
            except LeaseLost as exc:
                events.note("refused", ctx, error=str(exc))
                raise
            events.note("committed", ctx, cancelled=ctx.is_cancelled)

        app.task("hang", every=1.0, timeout=0.5)(wait_until_cancelled)
        app.task("boom", every=0.5)(boom)
        app.task("nap", every=1.0, timeout=0.5)(nap)

    elif args.scenario == "blocker":
        assert control is not None, "the blocker scenario needs --control"

        async def block(ctx: Context) -> None:
            started = time.time()
            events.note("start", ctx)
            order = control / f"block-{ctx.key}"
            if order.exists() and outside_transactions():
                seconds = float(order.read_text())
                order.unlink()
                events.note("blocking", ctx, seconds=seconds)
                time.sleep(seconds)  # noqa: ASYNC251 - blocking the event loop is the point
                events.note("unblocked", ctx, lease_trusted=_trusted(ctx))
            await commit(ctx, started)

        app.task("block", every=1.0, timeout=10.0)(block)

    elif args.scenario == "stuck":

        def stuck(ctx: Context) -> None:
            started = time.time()
            events.note("start", ctx)
            values = (ctx.kind, ctx.key, ctx.token, ctx.worker_id, ctx.scheduled_at, started)
            try:
                with ctx.fenced_sync() as tx:
                    tx.execute(insert_commit_sql(ctx.dialect), values)
                    events.note("inside", ctx)
                    time.sleep(float(ctx.params.get("hold", 5.0)))  # far past its timeout, inside its transaction
                    tx.execute(insert_commit_sql(ctx.dialect), values)
            except tenure.TenureError as exc:
                events.note("refused", ctx, error=f"{type(exc).__name__}: {exc}")
                raise
            events.note("committed", ctx)

        app.task("stuck", every=1.0, timeout=0.5)(stuck)

    elif args.scenario == "linger":
        app.task("linger", every=1.0, timeout=600.0)(wait_until_cancelled)

    elif args.scenario == "report":
        app.task("report", every=1.0)(tick)

    elif args.scenario != "tick":
        raise SystemExit(f"unknown scenario {args.scenario!r}")
    return app


def _trusted(ctx: Context) -> bool:
    return bool(ctx._lease_trusted())


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="tick")
    parser.add_argument("--control")


if __name__ == "__main__":
    child.main(build, _flags)
