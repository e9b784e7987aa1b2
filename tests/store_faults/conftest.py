"""Fixtures of the store-fault tests: real worker processes on each kind of store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.stores import STORE_KINDS, worker_cluster

from .harness import FaultCluster

#: Store kinds with a database server (connections to cut, a server to restart).
SERVER_KINDS = [k for k in STORE_KINDS if k != "sqlite"]


@pytest.fixture
async def fault_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FaultCluster]:
    """A fresh database of the kind given as the fixture's parameter (``indirect``), with
    tenure's schema and a ``fault_commits`` table, and every worker started on it
    (:func:`support.stores.worker_cluster`: at the end, whatever the test's outcome, every
    worker is SIGKILLed and reaped, the database server started again if the test left
    it down, and each worker's log tail printed)."""
    async with worker_cluster(FaultCluster, request.param, tmp_path, restarts_server=True) as cluster:
        cluster.create_commits_table()
        yield cluster
