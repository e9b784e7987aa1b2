"""Fixtures of the runtime tests: real worker processes sharing one store, of each kind."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import STORE_FACTORIES, STORE_KINDS, require_store
from tenure.errors import StoreError
from tenure.store import make_store

from .harness import Cluster
from .rawsql import commits_ddl, raw_sql


@pytest.fixture(params=STORE_KINDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh database of each store kind with a ``commits`` table, and every worker
    started on it.

    An SQLite store runs with ``synchronous=normal``: commits are not fsynced, so the many
    small transactions of several workers do not make the timings depend on the disk
    (durability across power loss is not what these tests are about).

    Every worker is SIGKILLed and reaped at the end, whatever the test's outcome
    (SIGKILL also ends a process stopped with SIGSTOP), before the scratch database is
    dropped; each one's log tail is printed, which pytest shows when the test failed.
    """
    kind: str = request.param
    require_store(kind, tmp_path)
    with STORE_FACTORIES[kind](tmp_path) as base_url:
        url = f"{base_url}?synchronous=normal" if kind == "sqlite" else base_url
        store = make_store(url)
        await store.open(migrate=True)
        # The tests compare their own time.time() marks with the database's timestamps.
        skew = await store.now() - time.time()
        assert abs(skew) < 0.5, f"the {kind} server's clock is {skew:+.3f}s off this host's: not on this host?"
        db = raw_sql(url)
        c = Cluster(url, store, db, tmp_path)
        try:
            db.rows(commits_ddl(store.dialect))
            yield c
        finally:
            try:
                c.reap()
            finally:
                for w in c.workers.values():
                    print(f"=== worker {w.name} (exit {w.proc.returncode}) log tail ===")
                    print(w.log()[-3000:])
                db.close()
                with contextlib.suppress(StoreError):
                    await store.close()
