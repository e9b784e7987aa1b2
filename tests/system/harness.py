"""The system tests' harness: child processes sharing one SQLite file, driven over pipes.

Each child process runs ``fence_child.py`` (see its docstring for the protocol). A
:class:`Cluster` owns every child it starts; the ``cluster`` fixture (conftest.py) kills
and reaps them all when the test ends, passed or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from support.processes import wait_for
from support.rawdb import SQLiteDB
from tenure.schedule import Every
from tenure.store import Store

__all__ = ["JSON", "KIND", "Child", "Cluster", "wait_for"]

JSON = dict[str, Any]

CHILD = Path(__file__).with_name("fence_child.py")
KIND = "dispatch"
#: How long any single answer from a child may take before the test fails.
REPLY_TIMEOUT = 15.0
POLL = 0.01


class Child:
    """The test's handle on one child process."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.name = name
        self.proc = proc
        self.stderr = stderr

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _explain(self, what: str) -> str:
        tail = self.stderr.read_text(errors="replace")[-3000:] if self.stderr.exists() else ""
        return f"child {self.name} (pid {self.pid}): {what}\n--- its stderr ---\n{tail}"

    async def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()

    async def recv(self, within: float = REPLY_TIMEOUT) -> JSON:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        except TimeoutError:
            raise AssertionError(self._explain(f"no answer within {within} s")) from None
        if not line:
            raise AssertionError(self._explain(f"exited (code {self.proc.returncode}) instead of answering"))
        reply = json.loads(line)
        assert isinstance(reply, dict)
        if reply.get("error") == "crash":
            raise AssertionError(self._explain(f"crashed: {reply.get('tb')}"))
        return reply

    async def call(self, op: str, **args: Any) -> JSON:
        """Send a command and return its answer, whatever it says."""
        await self.send(op, **args)
        return await self.recv()

    async def ok(self, op: str, **args: Any) -> JSON:
        """Send a command that must succeed, and return its answer."""
        reply = await self.call(op, **args)
        assert reply.get("ok") is True, self._explain(f"{op} {args} failed: {reply}")
        return reply

    async def expect_silent(self, seconds: float) -> None:
        """Assert that the child says nothing for ``seconds`` (its command is still blocked).

        This is a negative check, never a wait for something to happen: a store that let
        the command through would make the child answer, and the test fail.
        """
        assert self.proc.stdout is not None
        with contextlib.suppress(TimeoutError):  # readline keeps buffered data when cancelled
            line = await asyncio.wait_for(self.proc.stdout.readline(), seconds)
            raise AssertionError(self._explain(f"answered while it should be blocked: {line!r}"))

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the child (stopped or not); :meth:`wait` reaps it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait(self) -> int:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), REPLY_TIMEOUT)


class Cluster:
    """One SQLite store file, the test's own connection to it, and the children using it."""

    def __init__(self, path: Path, store: Store, tmp: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"  # path is absolute: sqlite:////tmp/...
        self.store = store
        self.db = SQLiteDB(self.url)
        self._tmp = tmp
        self.children: list[Child] = []

    # -- processes ----------------------------------------------------------------------

    async def spawn(self, *names: str, options: str = "") -> list[Child]:
        """Start one child per name (the name is its worker id) and wait until all are ready.

        ``options`` are store URL options for these children (``pool=1``).
        """
        url = f"{self.url}?{options}" if options else self.url
        started = []
        for name in names:
            stderr = self._tmp / f"child-{name}-{len(self.children)}.stderr"
            with stderr.open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(CHILD),
                    url,
                    name,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                )
            child = Child(name, proc, stderr)
            self.children.append(child)
            started.append(child)
        for child in started:
            ready = await child.recv()
            assert ready.get("ready") is True, ready
        return started

    async def reap(self) -> None:
        """Kill every child, then wait for each one to be gone."""
        for child in self.children:
            child.kill()
        failures = []
        for child in self.children:
            try:
                await child.wait()
            except Exception as exc:  # keep reaping the others; report afterwards
                failures.append(exc)
        if failures:
            raise failures[0]

    # -- database -----------------------------------------------------------------------

    def decisions(self) -> list[tuple[str, int, str, int]]:
        """Every committed row of the ``decisions`` table, in the order written."""
        rows = self.db.query("SELECT task, term, writer, n FROM decisions ORDER BY rowid")
        return [(str(t), int(term), str(w), int(n)) for t, term, w, n in rows]

    def term_counter(self) -> int:
        ((value,),) = self.db.query("SELECT value FROM tenure_counters WHERE name = 'term'")
        return int(value)

    async def add_task(self, key: str) -> None:
        await self.store.add_task(kind=KIND, key=key, schedule=Every(5.0), params_json="{}", enabled=True)

    async def lease_expiry(self, worker_id: str) -> float | None:
        for w in await self.store.list_workers():
            if w.id == worker_id:
                return w.expires_at
        return None

    async def wait_expired(self, worker_id: str, within: float = REPLY_TIMEOUT) -> None:
        """Wait until the worker's lease has run out on the database's clock.

        Only reads: it works while another process holds the write lock.
        """

        async def expired() -> bool:
            expiry = await self.lease_expiry(worker_id)
            return expiry is None or await self.store.now() > expiry

        await wait_for(expired, f"lease of {worker_id} to expire", within=within, poll=POLL)

    async def pause_outside_write(self, child: Child) -> None:
        """SIGSTOP ``child`` at a moment it holds no write transaction.

        A child with a heartbeat renews its lease in short write transactions; stopped in
        the middle of one, it would hold SQLite's write lock for as long as it stays
        stopped. Stop it, check that the lock is free, and if not let it finish and retry.
        """

        async def stopped_idle() -> bool:
            child.pause()
            if self.db.write_lock_free():
                return True
            child.resume()
            return False

        await wait_for(
            stopped_idle, f"a moment to stop {child.name} outside a transaction", within=REPLY_TIMEOUT, poll=POLL
        )
