"""The store-fault tests' harness: real worker processes (``runner.py``) on a real store,
and raw access to the database server behind it, to cut connections and restart it.

A :class:`FaultCluster` (:class:`support.cluster.WorkerCluster`) owns every worker process
it starts; the ``fault_cluster`` fixture (conftest.py) SIGKILLs and reaps them all when
the test ends, passed or failed, restarts the database server if a test left it down,
and prints each worker's log tail.

Everything is observed through the database: the ``fault_commits`` table the handlers
write through fenced transactions (read over a connection opened again after a server
restart, so that the observation itself survives it), and tenure's own tables through
the store API. Waits poll with a deadline, never sleep a fixed time. Database errors
while polling (the server is down, restarting) count as "not yet".

Times compared with the database's ``at`` come from the database's clock
(``self.db.now()``), never from this process's clock.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from support.cluster import WorkerCluster
from support.history import Commit, TaskId, assert_fenced_history
from support.processes import WorkerProc
from support.rawdb import DatabaseUnavailable
from support.sql import create_table, insert
from support.timing import Timing
from tenure.errors import StoreError

__all__ = [
    "Commit",
    "FaultCluster",
    "TaskId",
    "Timing",
    "assert_fenced_history",
    "insert_commit_sql",
    "kill_signal",
    "recovery",
]

#: The ``fault_commits`` table: ``committed_at`` is the database's clock inside the fenced
#: transaction.
_COMMITS = (
    "id {id}, kind {text} NOT NULL, tkey {text} NOT NULL, term BIGINT NOT NULL, worker {text} NOT NULL, "
    "slot {real} NOT NULL, committed_at {real} NOT NULL"
)
_COLUMNS = "id, kind, tkey, term, worker, slot, committed_at"


def insert_commit_sql(dialect: str) -> str:
    """The handler's fenced insert: ``(kind, tkey, term, worker, slot)``, ``committed_at``
    the database's clock."""
    return insert(dialect, "fault_commits", ["kind", "tkey", "term", "worker", "slot"], now="committed_at")


class FaultCluster(WorkerCluster):
    """A store of one kind, raw access to its database, and the workers started on it."""

    program = Path(__file__).with_name("runner.py")
    poll = 0.05
    default_within = 30.0
    not_yet = (StoreError, DatabaseUnavailable)

    def create_commits_table(self) -> None:
        self.db.query(create_table(self.dialect, "fault_commits", _COMMITS))

    def commits(self) -> list[Commit]:
        """Every accepted commit, in id order (per task, the order they committed in)."""
        return [
            Commit(
                id=int(id_), kind=str(kind), key=str(key), term=int(term), worker=str(w), slot=float(slot), at=float(at)
            )
            for id_, kind, key, term, w, slot, at in self.db.query(f"SELECT {_COLUMNS} FROM fault_commits ORDER BY id")
        ]


def recovery(commits: list[Commit], tasks: Collection[TaskId], after: float) -> dict[str, float]:
    """For each task, database seconds from ``after`` to its first commit after it."""
    first: dict[TaskId, float] = {}
    for c in commits:
        if c.task in tasks and c.at > after and c.task not in first:
            first[c.task] = c.at - after
    return {f"{k}/{key}": round(d, 3) for (k, key), d in sorted(first.items())}


def kill_signal(w: WorkerProc) -> None:
    """SIGKILL a worker on purpose (wait_for then does not treat its death as a failure)."""
    w.kill()
