"""tenure's own statements leave the server nothing to warn about.

The MySQL driver reads a statement's warnings in a second round trip and logs each one
at WARNING: a worker's cluster view on MariaDB ("Column 'kind' in GROUP BY is
ambiguous") wrote a line and cost a round trip every poll, and a migration wrote one per
``DROP PROCEDURE IF EXISTS`` of a procedure that was not there. A worker's whole life, a
migration on an empty database and one on a current schema, on every store: no driver
logs a warning.
"""

from __future__ import annotations

import logging

import pytest

from tenure.models import Outcome, Run, SlotDone

from .dialect import raw_db
from .helpers import add, opened, register

#: The drivers' loggers.
DRIVERS = ("asyncmy", "psycopg", "aiosqlite")


async def test_a_workers_life_and_migrations_make_no_driver_warn(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with opened(store_url, migrate=True) as store:
        probe = raw_db(store_url)
        probe.create_probe_table()
        await register(store, "w1")
        for kind in ("dispatch", "report"):
            for key in ("a", "b"):
                await add(store, kind, key)
        claims = await store.claim_tasks("w1", kinds=["dispatch", "report"], limit=10)
        assert len(claims) == 4
        view = await store.cluster_view()
        assert view.enabled_by_kind == {"dispatch": 2, "report": 2}
        claim = claims[0]
        task = claim.task
        async with store.fenced(worker_id="w1", kind=task.kind, key=task.key, term=claim.term, slot=100.0) as tx:
            await tx.execute(probe.insert_probe_sql, ("quiet",))
        run = Run(
            kind=task.kind,
            key=task.key,
            worker="w1",
            term=claim.term,
            scheduled_at=101.0,
            started_at=101.0,
            ended_at=101.5,
            outcome=Outcome.OK,
            error=None,
        )
        await store.record_runs([run], [SlotDone(kind=task.kind, key=task.key, term=claim.term, slot=101.0)])
        assert [r.scheduled_at for r in await store.list_runs(kind=task.kind, key=task.key)] == [101.0]
        await store.release_tasks(
            "w1", [SlotDone(kind=c.task.kind, key=c.task.key, term=c.term, slot=102.0) for c in claims]
        )
    async with opened(store_url, migrate=True):  # a current schema: every migration step is skipped or re-run
        pass
    warned = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.name.split(".")[0] in DRIVERS]
    assert warned == []
