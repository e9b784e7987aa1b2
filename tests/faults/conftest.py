"""Fixtures of the fault suite: the workload's worker processes on each kind of store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import STORE_FACTORIES, require_store
from store_faults.harness import database_for
from tenure.errors import StoreError
from tenure.store import make_store

from .harness import Faults


@pytest.fixture
async def faults(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Faults]:
    """A fresh database of the kind given as the parameter (``indirect``), with tenure's
    schema and the workload's tables. At the end every worker is continued, SIGKILLed
    and reaped, and each worker's log tail printed."""
    kind: str = request.param
    require_store(kind, tmp_path)
    with STORE_FACTORIES[kind](tmp_path) as base_url:
        url = f"{base_url}?synchronous=normal" if kind == "sqlite" else base_url
        store = make_store(url)
        await store.open(migrate=True)
        cluster = Faults(kind, url, store, database_for(url), tmp_path)
        try:
            cluster.create_tables()
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
