"""The runtime tests' harness: real worker processes (``worker_child.py``) on one store
(each kind in ``STORE_KINDS``: an SQLite file, a PostgreSQL or a MariaDB database).

A :class:`Cluster` owns every worker process it starts; the ``cluster`` fixture
(conftest.py) SIGKILLs and reaps them all when the test ends, passed or failed, and
prints each one's log tail so a failure can be read.

Everything is observed through the database (tenure's own tables through the store
API, the ``commits`` table the handlers write through fenced transactions) and the
workers' event files; waits poll those with a deadline, never sleep a fixed time.
All times are epoch seconds of the host's clock, which is also the database's clock: the
embedded store's (``julianday('now')``), and the servers' under test, which run on this
host (``127.0.0.1``); so the test's ``time.time()`` marks and the database's timestamps
are on one clock.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import history
from support.cluster import WorkerCluster, fair_counts
from support.history import TaskId, assert_fenced_history
from support.processes import WorkerProc
from support.rawdb import RawDB, SQLiteDB
from support.sql import create_table, insert
from support.timing import Timing
from tenure.store import Store

__all__ = [
    "Cluster",
    "Commit",
    "TaskId",
    "Timing",
    "WorkerProc",
    "assert_fenced_history",
    "commits_ddl",
    "fair_counts",
    "first_commit_after",
    "insert_commit_sql",
]


@dataclass(frozen=True, kw_only=True)
class Commit(history.Commit):
    """One row of the ``commits`` table: a run whose fenced commit the database accepted;
    ``started`` is when its handler started (the worker's clock, which is the host's)."""

    started: float


#: The ``commits`` table the handlers write through fenced transactions: ``at`` is the
#: database's clock inside the transaction, ``started`` the handler's start (worker clock).
_COMMITS = (
    "id {id}, kind {text} NOT NULL, tkey {text} NOT NULL, term BIGINT NOT NULL, worker {text} NOT NULL, "
    "slot {real} NOT NULL, started {real} NOT NULL, at {real} NOT NULL"
)
COMMIT_COLUMNS = "id, kind, tkey, term, worker, slot, started, at"


def commits_ddl(dialect: str) -> str:
    return create_table(dialect, "commits", _COMMITS)


def insert_commit_sql(dialect: str) -> str:
    """The handlers' fenced insert: ``(kind, tkey, term, worker, slot, started)``, ``at`` the
    database's clock."""
    return insert(dialect, "commits", ["kind", "tkey", "term", "worker", "slot", "started"], now="at")


class Cluster(WorkerCluster):
    """One store, the test's connections to it (the store API, and raw SQL for the
    ``commits`` table and the term counter), and the workers using it."""

    program = Path(__file__).with_name("worker_child.py")

    def __init__(self, *, kind: str, url: str, store: Store, db: RawDB, tmp: Path) -> None:
        super().__init__(kind=kind, url=url, store=store, db=db, tmp=tmp)
        self.control = tmp / "control"
        self.control.mkdir()

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, *, scenario: str = "tick", args: Sequence[str] = (), **options: Any) -> WorkerProc:
        """Start a worker process with id ``name`` running ``scenario`` (not waiting for it
        to join; ``options``: those of :meth:`WorkerCluster.start`)."""
        args = ["--scenario", scenario, "--control", str(self.control), *args]
        return super().start(name, args=args, **options)

    async def start_all(
        self, names: Iterable[str], *, scenario: str = "tick", timing: Timing | None = None
    ) -> list[WorkerProc]:
        """Start workers and wait until each one has joined (has a live lease)."""
        started = [self.start(n, scenario=scenario, timing=timing) for n in names]
        for w in started:
            await self.wait_joined(w)
        return started

    async def wait_joined(self, w: WorkerProc, *, within: float | None = None) -> None:
        async def joined() -> bool:
            if not w.alive():
                raise AssertionError(w.explain(f"exited with {w.proc.returncode} before joining"))
            return w.name in await self.live_workers()

        await self.wait_for(joined, f"{w.name} to join", within=within)

    async def pause_outside_transaction(self, w: WorkerProc, *, ready: Callable[[], bool] = lambda: True) -> float:
        """SIGSTOP ``w`` at a moment when ``ready()`` holds and it is inside no transaction.

        A process stopped inside a write transaction would keep what it locked for as long
        as it stays stopped: on SQLite the single write lock (stalling every worker); on a
        server the rows it wrote (claims of them waiting up to ``lock_timeout``), until the
        server ends the idle transaction (``idle_tx_timeout``). Neither is what these tests
        are about. So: stop, check, and if it is inside one, let it go on and try again.
        On SQLite the check is that the write lock is free (whoever holds it); on a server,
        that none of ``w``'s own sessions has a transaction open. Returns when it was stopped.
        """
        deadline = time.monotonic() + self.default_within
        tries = 0
        while time.monotonic() < deadline:
            if ready():
                at = w.send(signal.SIGSTOP)
                tries += 1
                await asyncio.sleep(0.01)  # let the signal land
                if self._outside_transaction(w):
                    print(f"{w.name} stopped outside a transaction at try {tries}")
                    return at
                w.send(signal.SIGCONT)
            await asyncio.sleep(self.poll)
        raise AssertionError(w.explain("found no moment to stop it outside a transaction"))

    def _outside_transaction(self, w: WorkerProc) -> bool:
        if isinstance(self.db, SQLiteDB):
            return self.db.write_lock_free(wait=0.5)  # others' short transactions may hold it briefly
        # A statement it sent just before the stop may still be reaching the server.
        time.sleep(0.05)
        return self.db.no_transaction_open(w.pid)

    # -- database -------------------------------------------------------------------------

    def commits(self) -> list[Commit]:
        """Every accepted fenced commit, in id order (per task, the order they committed in:
        a task's commits are serialized by its fence)."""
        rows = self.db.query(f"SELECT {COMMIT_COLUMNS} FROM commits ORDER BY id")
        return [
            Commit(id=int(i), kind=k, key=key, term=int(t), worker=w, slot=float(s), at=float(at), started=float(st))
            for i, k, key, t, w, s, st, at in rows
        ]

    def term_counter(self) -> int:
        """How many terms were ever handed out: one per change of owner."""
        if self.dialect == "postgresql":  # a sequence: last_value counts only once called
            sql = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tenure_term_seq"
        else:
            sql = "SELECT value FROM tenure_counters WHERE name = 'term'"
        ((value,),) = self.db.query(sql)
        return int(value)


def first_commit_after(commits: list[Commit], task: TaskId, *, after_id: int, not_by: str) -> Commit | None:
    """The first commit of ``task`` with an id above ``after_id`` by a worker other than ``not_by``."""
    for c in commits:
        if c.task == task and c.id > after_id and c.worker != not_by:
            return c
    return None
