"""The demo's worker processes: start, kill, pause, resume, stop, and watch them.

Every worker is a real process (``python -m tenure.demo.worker NAME``) whose logs go to
a file in the demo's folder. :class:`WorkerProcesses` owns them:
:meth:`WorkerProcesses.close` ends every one still running, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tenure.config import ENV_NAMES, Settings
from tenure.demo.db import Connection
from tenure.store import dialect_of

#: The domain's log lines around planning (see domain.PLANNING and domain.PLANNED).
_PLAN_LINE = re.compile(r"dispatch (\S+) term (\d+): (planning|plan ready)")


@dataclass(eq=False)
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    state: str = "running"  # running, paused, killed, stopped
    #: Cities this worker is planning a dispatch for right now, with the term (from its log).
    planning: dict[str, int] = field(default_factory=dict)
    _log_offset: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_log(self) -> None:
        """Follow the log: which cities is it between reading and committing?"""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._log_offset += end + 1
        for line in chunk[: end + 1].decode(errors="replace").splitlines():
            m = _PLAN_LINE.search(line)
            if m is None:
                continue
            city, term, what = m.group(1), int(m.group(2)), m.group(3)
            if what == "planning":
                self.planning[city] = term
            else:
                self.planning.pop(city, None)


class WorkerProcesses:
    """The demo's worker processes, all on one store."""

    def __init__(self, url: str, folder: Path, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.folder = folder
        self.dialect = dialect_of(url)
        self.workers: dict[str, WorkerProc] = {}
        self._count = 0
        base = dict(os.environ if env is None else env)
        for name in ENV_NAMES.values():  # the demo's timings, whatever the caller's environment says
            base.pop(name, None)
        base.update(
            {
                "TENURE_STORE": url,
                ENV_NAMES["lease_ttl"]: str(settings.lease_ttl),
                ENV_NAMES["heartbeat"]: str(settings.heartbeat),
                ENV_NAMES["poll"]: str(settings.poll),
                ENV_NAMES["grace"]: str(settings.grace),
                ENV_NAMES["trust_margin"]: str(settings.trust_margin),
            }
        )
        self._env = base

    def start(self) -> WorkerProc:
        self._count += 1
        name = f"w{self._count}"
        log_path = self.folder / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tenure.demo.worker", name],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        w = WorkerProc(name, proc, log_path, log_file)
        self.workers[name] = w
        return w

    def running(self) -> list[WorkerProc]:
        return [w for w in self.workers.values() if w.state == "running" and w.alive()]

    def signal(self, w: WorkerProc, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, sig)

    async def kill(self, w: WorkerProc) -> None:
        """SIGKILL, and wait until the process is gone."""
        self.signal(w, signal.SIGKILL)
        w.state = "killed"
        await self._reaped(w, within=10.0)

    def pause(self, w: WorkerProc) -> None:
        self.signal(w, signal.SIGSTOP)
        w.state = "paused"

    def resume(self, w: WorkerProc) -> None:
        self.signal(w, signal.SIGCONT)
        if w.state == "paused":
            w.state = "running"

    async def stop_all(self, *, grace: float) -> dict[str, int | None]:
        """SIGCONT and SIGTERM every live worker, wait up to ``grace``, SIGKILL the rest.

        Returns each worker's exit status.
        """
        live = [w for w in self.workers.values() if w.alive()]
        for w in live:
            self.resume(w)
            self.signal(w, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for w in live:
            await self._reaped(w, within=max(0.0, deadline - time.monotonic()))
        for w in live:
            if w.alive():
                self.signal(w, signal.SIGKILL)
                await self._reaped(w, within=10.0)
            w.state = "stopped" if w.proc.returncode == 0 else w.state
        return {w.name: w.proc.returncode for w in live}

    async def _reaped(self, w: WorkerProc, *, within: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(w.proc.wait, within)

    def close(self) -> None:
        """SIGKILL whatever still runs (a stopped process too), reap it, close the logs."""
        for w in self.workers.values():
            if w.proc.poll() is None:
                self.signal(w, signal.SIGKILL)
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)
            w.log_file.close()

    # -- is a stopped worker holding a transaction? ------------------------------------------

    def no_open_transaction(self) -> bool:
        """True if no connection to the database holds a transaction open for long.

        Called just after a worker was stopped with SIGSTOP: a worker stopped inside a
        transaction would hold its locks for as long as it stays stopped (on SQLite the
        single write lock, blocking every worker; on a server the task's row, until the
        server's idle-in-transaction timeout). The demo pauses workers outside
        transactions, as a real stall mostly strikes: this tells whether it did.
        """
        if self.dialect == "sqlite":
            from tenure.store.sqlite import parse_sqlite_url, write_lock_free

            return write_lock_free(parse_sqlite_url(self.url)[0], wait=0.5)
        # On a server: give a transaction that was open when the worker stopped the time
        # to look old, then look for one that old.
        if self.dialect == "postgresql":
            time.sleep(0.6)
            query = (
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start < clock_timestamp() - interval '0.5 seconds' "
                # A worker's watch of another's lock waits inside its statement all the
                # time, holding nothing a pause could keep from the others.
                "AND application_name <> 'tenure-watch'"
            )
        else:
            time.sleep(1.2)  # innodb_trx times are whole seconds
            query = (
                "SELECT COUNT(*) FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_started < NOW() - INTERVAL 1 SECOND"
            )
        try:
            with Connection(self.url) as db:
                row = db.fetchone(query)
        except Exception:  # cannot tell (no privilege, another server): pause anyway
            return True
        return row is not None and int(row[0]) == 0
