"""The fault suite's harness: a :class:`support.cluster.WorkerCluster` (worker processes,
raw database access, waits with deadlines, reaping) running this suite's ``runner.py``
workload, and reading back its recorded history for :mod:`support.history`'s checker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support.cluster import WorkerCluster
from support.history import Attempt, Commit, Decision, Report, check
from support.rawdb import DatabaseUnavailable
from support.sql import create_table
from tenure.errors import StoreError

from .network import DelayProxy, Isolated

KIND = "job"
_COLUMNS = (
    "worker {text} NOT NULL, kind {text} NOT NULL, tkey {text} NOT NULL, term BIGINT NOT NULL, "
    "slot {real} NOT NULL, at_db {real} NOT NULL"
)


class Faults(WorkerCluster):
    """A :class:`~support.cluster.WorkerCluster` running the fault suite's workload, and
    the network faults (:mod:`.network`) set up for its workers, torn down by :meth:`reap`."""

    program = Path(__file__).with_name("runner.py")
    poll = 0.05
    default_within = 30.0
    not_yet = (StoreError, DatabaseUnavailable)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.networks: list[Isolated | DelayProxy] = []

    def isolated(self) -> Isolated:
        """A network namespace a worker can be started in (``prefix=net.prefix,
        url=net.url``) and cut off from the database."""
        net = Isolated(self.url)
        self.networks.append(net)
        return net

    def delayed(self, *, delay: float, jitter: float, spike: float = 3.0, seed: int = 1) -> DelayProxy:
        """A relay adding ``delay ± jitter`` seconds each way, and stalls of ``spike``
        seconds on demand (start a worker with ``url=proxy.url``)."""
        proxy = DelayProxy(
            self.url, delay=delay, jitter=jitter, spike=spike, seed=seed, log=self.tmp / "delay-proxy.log"
        )
        self.networks.append(proxy)
        return proxy

    def create_tables(self) -> None:
        self.db.query(create_table(self.dialect, "fault_attempts", f"id {{id}}, {_COLUMNS}, accepted INTEGER NOT NULL"))
        self.db.query(create_table(self.dialect, "fault_decisions", f"id {{id}}, {_COLUMNS}"))

    async def add_jobs(self, keys: Iterable[str], *, every: float, **params: Any) -> list[tuple[str, str]]:
        return await self.add_tasks(KIND, keys, every=every, params=params)

    # -- the recorded history -------------------------------------------------------------

    def attempts(self) -> list[Attempt]:
        out = [
            Attempt(
                seq=int(r[0]),
                worker=str(r[1]),
                kind=str(r[2]),
                key=str(r[3]),
                term=int(r[4]),
                slot=float(r[5]),
                at=float(r[6]),
                accepted=True,
            )
            for r in self.db.query("SELECT id, worker, kind, tkey, term, slot, at_db FROM fault_attempts ORDER BY id")
        ]
        for w in self.workers.values():
            for e in w.events("refused"):
                out.append(
                    Attempt(
                        seq=-1,
                        worker=w.name,
                        kind=e["kind"],
                        key=e["key"],
                        term=int(e["term"]),
                        slot=float(e["slot"]),
                        at=float(e["t"]),
                        accepted=False,
                        reason=e.get("reason", ""),
                    )
                )
        return out

    def commits(self) -> list[Commit]:
        """Accepted attempts as :class:`~support.history.Commit` (the waits use them)."""
        return [
            Commit(id=a.seq, kind=a.kind, key=a.key, term=a.term, worker=a.worker, slot=a.slot, at=a.at)
            for a in self.attempts()
            if a.accepted
        ]

    def decisions(self) -> list[Decision]:
        return [
            Decision(worker=str(r[0]), kind=str(r[1]), key=str(r[2]), term=int(r[3]), slot=float(r[4]))
            for r in self.db.query("SELECT worker, kind, tkey, term, slot FROM fault_decisions")
        ]

    def check(self, **kw: Any) -> Report:
        return check(self.attempts(), self.decisions(), **kw)

    def events_of(self, name: str, ev: str) -> list[dict[str, Any]]:
        return self.workers[name].events(ev)

    async def wait_event(self, name: str, ev: str, *, after: int = 0, within: float = 20.0) -> dict[str, Any]:
        """Wait until worker ``name`` has more than ``after`` events ``ev``; return the newest."""

        async def seen() -> bool:
            return len(self.events_of(name, ev)) > after

        await self.wait_for(seen, f"{name} to note {ev!r}", within=within)
        return self.events_of(name, ev)[-1]

    def stop(self, name: str) -> None:
        os.kill(self.workers[name].pid, signal.SIGSTOP)

    def cont(self, name: str) -> None:
        os.kill(self.workers[name].pid, signal.SIGCONT)

    def reap(self) -> None:
        for w in self.workers.values():  # a stopped process must be continued to die cleanly
            if w.alive():
                os.kill(w.pid, signal.SIGCONT)
        try:
            super().reap()
        finally:
            for net in self.networks:
                net.close()
