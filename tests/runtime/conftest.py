"""Fixtures of the runtime tests: real worker processes sharing one SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tenure.errors import StoreError
from tenure.store import make_store

from .harness import COMMITS_DDL, Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh store file with a ``commits`` table, and every worker started on it.

    The store runs with ``synchronous=normal``: commits are not fsynced, so the many
    small transactions of several workers do not make the timings depend on the disk
    (durability across power loss is not what these tests are about).

    Every worker is SIGKILLed and reaped at the end, whatever the test's outcome
    (SIGKILL also ends a process stopped with SIGSTOP); each one's log tail is printed,
    which pytest shows when the test failed.
    """
    path = tmp_path / "tenure.db"
    url = f"sqlite:///{path}?synchronous=normal"
    store = make_store(url)
    await store.open(migrate=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(COMMITS_DDL)
        db.commit()
    c = Cluster(path, url, store, tmp_path)
    try:
        yield c
    finally:
        try:
            c.reap()
        finally:
            for w in c.workers.values():
                print(f"=== worker {w.name} (exit {w.proc.returncode}) log tail ===")
                print(w.log()[-3000:])
            with contextlib.suppress(StoreError):
                await store.close()
