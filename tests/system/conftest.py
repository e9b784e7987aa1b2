"""Fixtures of the system tests: real OS processes sharing one SQLite file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tenure.errors import StoreError
from tenure.store import make_store

from .harness import Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh store file with a ``decisions`` table, and every child started on it.

    Every child is SIGKILLed and reaped at the end, whatever the test's outcome (SIGKILL
    also ends a process stopped with SIGSTOP).
    """
    path = tmp_path / "tenure.db"
    store = make_store(f"sqlite:///{path}")
    await store.open(migrate=True)
    c = Cluster(path, store, tmp_path)
    c.db.query("CREATE TABLE decisions (task TEXT, term INTEGER, writer TEXT, n INTEGER)")
    try:
        yield c
    finally:
        try:
            await c.reap()
        finally:
            with contextlib.suppress(StoreError):
                await store.close()
