"""A real worker process for the fault suite: one tenure app run by ``App.run_worker``.

Run as ``python runner.py STORE_URL --id NAME --events FILE [timing flags]`` (the
command line, logging, stack dumps and ``Events`` side channel of :mod:`support.child`).

One kind, ``job``. Each run of its handler is one *commit attempt*, recorded in the
workload's own tables, independent of tenure's:

- accepted: inside the fenced transaction, a ``fault_attempts`` row (worker, task, term,
  slot, accepted=1, the database clock) and a ``fault_decisions`` row;
- refused (:class:`tenure.LeaseLost`, or the run cancelled inside its transaction): a
  ``refused`` line in the events file (JSON lines, one write each, kept on SIGKILL).

Task parameters shape a run: ``sleep`` seconds awaited before the commit (a long run
that leaves the worker free), ``work`` seconds of *blocking* work before the commit (the
event loop is blocked too, so a SIGSTOP landing there resumes straight into the commit,
like a GC pause), ``hold`` seconds of blocking inside the open fenced transaction after
the writes, ``fail``: ``"raise"`` or ``"hang"`` (an async sleep until cancelled).
Events ``working`` and ``inserted`` announce those points, for tests that pause there.

Calibration (test-only): with ``TENURE_FAULTS_UNFENCED=1`` in its environment, the
handler writes the same two rows in a plain transaction of its own, outside
``ctx.fenced()``: no fence, so the checker must catch the stale commits.

Careless handlers: a run is careless when the test orders it, with a file
``careless-<key>`` holding the mode in the folder ``TENURE_FAULTS_CONTROL`` names (the run
that takes the file, whichever worker owns the task, is the only careless one), or on
every run of a task whose parameter ``careless`` names the mode. A careless run writes its
two rows where a write could slip past the fence, after announcing ``careless`` and
blocking :data:`CARELESS_HOLD` seconds (a pause that lands there is inside the run):

- ``kept``: through the transaction object it kept, after its block has ended;
- ``commit``: inside the block, after a raw ``COMMIT`` (it ignores the refusal);
- ``ddl``: inside the block, after ``CREATE TABLE IF NOT EXISTS`` (which commits at once
  on MySQL/MariaDB; transactional elsewhere);
- ``swallow``: inside the block, after swallowing the cancellation of its timeout
  (announced ``swallowed``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support

import tenure
from support import child
from support.events import Events
from support.sql import DB_NOW, MARK
from tenure import Context, FencedTransaction, LeaseLost
from tenure.errors import StoreError, TenureError

#: A run past this is cancelled (the ``hang`` handlers); blocking ``work`` cannot be.
TIMEOUT = 3.0

#: Seconds a careless run blocks before its careless write.
CARELESS_HOLD = 0.4


def inserts(dialect: str) -> list[str]:
    m, now = MARK[dialect], DB_NOW[dialect]
    cols = "(worker, kind, tkey, term, slot, at_db"
    return [
        f"INSERT INTO fault_attempts {cols}, accepted) VALUES ({m}, {m}, {m}, {m}, {m}, {now}, 1)",
        f"INSERT INTO fault_decisions {cols}) VALUES ({m}, {m}, {m}, {m}, {m}, {now})",
    ]


def unfenced_write(url: str, dialect: str, values: tuple[Any, ...]) -> None:
    """The calibration's unfenced commit, made in a thread no cancellation of the run stops
    (the handler awaits it shielded)."""
    if dialect == "sqlite":
        import sqlite3

        from tenure.store.sqlite import parse_sqlite_url

        path, _ = parse_sqlite_url(url)
        db = sqlite3.connect(path, timeout=10)
        try:
            with db:
                for sql in inserts(dialect):
                    db.execute(sql, values)
        finally:
            db.close()
    elif dialect == "postgresql":
        import psycopg

        with psycopg.connect(url) as conn:
            for sql in inserts(dialect):
                conn.execute(sql.encode(), values)
    else:
        p = urlsplit(url)
        lit = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)
        sql = "; ".join(s.replace(", ".join(["%s"] * 5), lit) for s in inserts(dialect))
        argv = ["mariadb", "--protocol=TCP", "-h", p.hostname or "127.0.0.1", "-P", str(p.port or 3306)]
        argv += ["-u", unquote(p.username or "root")]
        if p.password:
            argv.append(f"--password={unquote(p.password)}")
        subprocess.run([*argv, p.path.lstrip("/"), "-e", f"START TRANSACTION; {sql}; COMMIT"], check=True)


def careless_order(key: str) -> str | None:
    """The mode of a careless run the test ordered for task ``key``, taken by this run."""
    folder = os.environ.get("TENURE_FAULTS_CONTROL")
    if not folder:
        return None
    order = Path(folder) / f"careless-{key}"
    taken = order.with_name(f"{order.name}.{os.getpid()}")
    try:
        order.rename(taken)  # atomic: one run takes it
    except FileNotFoundError:
        return None
    mode = taken.read_text().strip()
    taken.unlink()
    return mode


async def careless(ctx: Context, mode: str, values: tuple[Any, ...], events: Events) -> None:
    """One run of a careless handler (see the module docstring)."""

    async def write(tx: FencedTransaction) -> None:
        events.note("careless", ctx)
        time.sleep(CARELESS_HOLD)  # noqa: ASYNC251  # blocking on purpose: a pause landing here is inside the run
        for sql in inserts(ctx.dialect):
            await tx.execute(sql, values)

    try:
        kept: list[FencedTransaction] = []
        async with ctx.fenced() as tx:
            if mode == "kept":
                kept.append(tx)
            elif mode == "swallow":
                try:
                    await asyncio.sleep(TIMEOUT + 1.0)
                except asyncio.CancelledError:
                    events.note("swallowed", ctx)
                for sql in inserts(ctx.dialect):
                    await tx.execute(sql, values)
            else:
                statement = "COMMIT" if mode == "commit" else "CREATE TABLE IF NOT EXISTS fault_attempts (id INT)"
                try:
                    await tx.execute(statement)
                except TenureError as exc:
                    events.note("careless_refused", ctx, error=f"{type(exc).__name__}: {exc}")
                await write(tx)
        if kept:
            await write(kept[0])
    except TenureError as exc:
        events.note("refused", ctx, reason="careless", error=f"{type(exc).__name__}: {exc}")
        raise
    except asyncio.CancelledError:
        events.note("refused", ctx, reason="cancelled")
        raise
    events.note("committed", ctx)


def build(args: argparse.Namespace, events: Events) -> tenure.App:
    store = args.store
    app = tenure.App(store)
    unfenced = os.environ.get("TENURE_FAULTS_UNFENCED") == "1"

    @app.task("job", every=1.0, timeout=TIMEOUT)
    async def job(ctx: Context) -> None:
        work = float(ctx.params.get("work", 0.0))
        if "jitter" in ctx.params:  # work in [work - jitter, work + jitter], seeded by the run
            rnd = random.Random(f"{ctx.key}/{ctx.scheduled_at}")
            work += rnd.uniform(-1.0, 1.0) * float(ctx.params["jitter"])
        hold = float(ctx.params.get("hold", 0.0))
        fail = ctx.params.get("fail")
        values = (ctx.worker_id, ctx.kind, ctx.key, ctx.token, ctx.scheduled_at)
        if fail == "raise":
            raise RuntimeError("handler raised on purpose")
        if fail == "hang":
            await asyncio.sleep(3600)
        if "sleep" in ctx.params:  # awaited, not blocking: the worker goes on meanwhile
            await asyncio.sleep(float(ctx.params["sleep"]))
        if work:
            events.note("working", ctx)
            time.sleep(work)  # noqa: ASYNC251  # blocking on purpose: see the module docstring
        mode = ctx.params.get("careless") or careless_order(ctx.key)
        if mode:
            await careless(ctx, str(mode), values, events)
            return
        if unfenced:
            # Not on the loop: blocked there, it could wait for SQLite's write lock held by
            # this worker's own transaction, which needs the loop to end it (10 s, then
            # "database is locked", a self-fence and no stale commit: CI failed once).
            await asyncio.shield(asyncio.to_thread(unfenced_write, store, ctx.dialect, values))
            events.note("committed", ctx, unfenced=True)
            return
        inserted = False
        try:
            async with ctx.fenced() as tx:
                for sql in inserts(ctx.dialect):
                    await tx.execute(sql, values)
                inserted = True
                events.note("inserted", ctx)
                if hold:
                    time.sleep(hold)  # noqa: ASYNC251  # blocking on purpose
        except LeaseLost as exc:
            where = "db" if inserted or "no longer owns" in str(exc) or "expired" in str(exc) else "client"
            events.note("refused", ctx, reason=where, error=str(exc))
            raise
        except asyncio.CancelledError:
            events.note("refused", ctx, reason="cancelled", inserted=inserted)
            raise
        except StoreError as exc:
            events.note("refused", ctx, reason="store_error", inserted=inserted, error=f"{type(exc).__name__}: {exc}")
            raise
        events.note("committed", ctx)

    return app


if __name__ == "__main__":
    child.main(build)
