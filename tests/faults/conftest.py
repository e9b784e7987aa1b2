"""Fixtures of the fault suite: the workload's worker processes on each kind of store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.stores import worker_cluster

from .harness import Faults


@pytest.fixture
async def faults(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Faults]:
    """A fresh database of the kind given as the parameter (``indirect``), with tenure's
    schema and the workload's tables (:func:`support.stores.worker_cluster`: at the end
    every worker is continued, SIGKILLed and reaped, and each worker's log tail printed)."""
    async with worker_cluster(Faults, request.param, tmp_path) as cluster:
        cluster.create_tables()
        yield cluster
