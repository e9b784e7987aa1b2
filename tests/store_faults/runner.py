"""A real worker process for the store-fault tests: one tenure app run by ``App.run_worker``.

Run as ``python runner.py STORE_URL --id NAME --events FILE [timing flags]`` (the
command line, logging and stack dumps of :mod:`support.child`).

It builds a :class:`tenure.App` with one kind, ``tick``, whose handler writes one row per
run to the test's ``fault_commits`` table through ``ctx.fenced()``, in the store's own
dialect (``ctx.dialect``): ``kind, tkey, term, worker, slot`` and ``committed_at``, the
database's clock inside the transaction. With ``params["hold"]`` seconds, the handler keeps
its fenced transaction open that long after the insert, so that a connection cut by the
test can land inside an open fenced transaction.

What the database cannot show goes to the ``--events`` file (:mod:`support.events`), one
JSON object per line, written unbuffered (kept on SIGKILL): ``clock`` (this process's wall and monotonic clocks
at start, to show libfaketime took effect), ``inserted`` (the row is written, the
transaction still open), ``committed``, ``refused`` (LeaseLost) and ``failed`` (a store
error, e.g. the connection was cut).

The process does not read its own clock for anything it writes to the database: under
libfaketime only the ``t`` and ``clock`` fields of its events are skewed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support and store_faults

import tenure
from store_faults.harness import insert_commit_sql
from support import child
from support.events import Events
from tenure import Context, LeaseLost
from tenure.errors import StoreError

#: The kind's default period; the tests give each task its own schedule anyway.
PERIOD = 1.0


def build(args: argparse.Namespace, events: Events) -> tenure.App:
    app = tenure.App(args.store)

    @app.task("tick", every=PERIOD, timeout=PERIOD * 0.9)
    async def tick(ctx: Context) -> None:
        hold = float(ctx.params.get("hold", 0.0))
        try:
            async with ctx.fenced() as tx:
                values = (ctx.kind, ctx.key, ctx.token, ctx.worker_id, ctx.scheduled_at)
                await tx.execute(insert_commit_sql(ctx.dialect), values)
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


if __name__ == "__main__":
    child.main(build)
