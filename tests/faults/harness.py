"""The fault suite's harness: ``tests/store_faults``' :class:`FaultCluster` (worker
processes, raw database access, waits with deadlines, reaping), running this suite's
``runner.py`` workload, and reading back its recorded history for :mod:`.checker`."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from store_faults.harness import Commit, FaultCluster
from tenure.schedule import Every

from .checker import Attempt, Decision, Report, check
from .network import DelayProxy, Isolated

RUNNER = Path(__file__).with_name("runner.py")
KIND = "job"

_TYPES = {
    "sqlite": ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "REAL", ""),
    "postgresql": ("BIGSERIAL PRIMARY KEY", "TEXT", "DOUBLE PRECISION", ""),
    "mysql": ("BIGINT AUTO_INCREMENT PRIMARY KEY", "VARCHAR(200)", "DOUBLE", " ENGINE=InnoDB"),
}


class Faults(FaultCluster):
    """A :class:`FaultCluster` running the fault suite's workload, and the network faults
    (:mod:`.network`) set up for its workers, torn down by :meth:`reap`."""

    runner = RUNNER

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

    def _sql(self, sql: str) -> list[Any]:
        rows: list[Any] = self.db._rows(sql)  # type: ignore[attr-defined]
        return rows

    def create_tables(self) -> None:
        pk, text, real, engine = _TYPES[self.db.dialect]
        cols = f"worker {text} NOT NULL, kind {text} NOT NULL, tkey {text} NOT NULL, term BIGINT NOT NULL, "
        cols += f"slot {real} NOT NULL, at_db {real} NOT NULL"
        self._sql(f"CREATE TABLE fault_attempts (id {pk}, {cols}, accepted INTEGER NOT NULL){engine}")
        self._sql(f"CREATE TABLE fault_decisions (id {pk}, {cols}){engine}")

    async def add_jobs(self, keys: Iterable[str], *, every: float, **params: Any) -> list[tuple[str, str]]:
        out = []
        for key in keys:
            await self.store.add_task(
                kind=KIND, key=key, schedule=Every(every), params_json=json.dumps(params), enabled=True
            )
            out.append((KIND, key))
        return out

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
            for r in self._sql("SELECT id, worker, kind, tkey, term, slot, at_db FROM fault_attempts ORDER BY id")
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
        """Accepted attempts as the store-fault harness's ``Commit`` (its waits use them)."""
        return [
            Commit(id=a.seq, kind=a.kind, key=a.key, term=a.term, worker=a.worker, slot=a.slot, committed_at=a.at)
            for a in self.attempts()
            if a.accepted
        ]

    def decisions(self) -> list[Decision]:
        return [
            Decision(worker=str(r[0]), kind=str(r[1]), key=str(r[2]), term=int(r[3]), slot=float(r[4]))
            for r in self._sql("SELECT worker, kind, tkey, term, slot FROM fault_decisions")
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
