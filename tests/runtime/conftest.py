"""Fixtures of the runtime tests: real worker processes sharing one store, of each kind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.stores import STORE_KINDS, worker_cluster

from .harness import Cluster, commits_ddl


@pytest.fixture(params=STORE_KINDS)
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A fresh database of each store kind with a ``commits`` table, and every worker
    started on it (:func:`support.stores.worker_cluster`: reaped at the end, whatever the
    test's outcome, with each one's log tail printed)."""
    async with worker_cluster(Cluster, request.param, tmp_path) as c:
        # The tests compare their own time.time() marks with the database's timestamps.
        skew = await c.store.now() - time.time()
        assert abs(skew) < 0.5, f"the {c.kind} server's clock is {skew:+.3f}s off this host's: not on this host?"
        c.db.query(commits_ddl(c.dialect))
        yield c
