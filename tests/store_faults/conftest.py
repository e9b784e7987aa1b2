"""Fixtures of the store-fault tests: real worker processes on each kind of store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import STORE_FACTORIES, STORE_KINDS, require_store
from tenure.errors import StoreError
from tenure.store import make_store

from .harness import FaultCluster, database_for

#: Store kinds with a database server (connections to cut, a server to restart).
SERVER_KINDS = [k for k in STORE_KINDS if k != "sqlite"]


@pytest.fixture
async def fault_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FaultCluster]:
    """A fresh database of the kind given as the fixture's parameter (``indirect``), with
    tenure's schema and a ``fault_commits`` table, and every worker started on it.

    At the end, whatever the test's outcome: every worker is SIGKILLed and reaped, the
    database server is started again if the test left it down (before the scratch
    database is dropped), and each worker's log tail is printed (pytest shows it when the
    test failed).
    """
    kind: str = request.param
    require_store(kind, tmp_path)
    with STORE_FACTORIES[kind](tmp_path) as base_url:
        # SQLite: commits not fsynced, so several processes' small transactions do not
        # make the timings depend on the disk (durability is not the subject here).
        url = f"{base_url}?synchronous=normal" if kind == "sqlite" else base_url
        db = database_for(url)
        try:
            store = make_store(url)
            await store.open(migrate=True)
            cluster = FaultCluster(kind, url, store, db, tmp_path)
            try:
                db.create_commits_table()
                yield cluster
            finally:
                try:
                    cluster.reap()
                finally:
                    for w in cluster.workers.values():
                        print(f"=== worker {w.name} (exit {w.proc.returncode}) log tail ===")
                        print(w.log()[-3000:])
                    with contextlib.suppress(StoreError):
                        await store.close()
        finally:
            db.start_server()  # no-op if it runs; the scratch database is dropped next
