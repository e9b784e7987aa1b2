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
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenure.models import Run, Task
from tenure.schedule import Every
from tenure.store import Store

from .rawsql import COMMIT_COLUMNS, RawSQL, SQLiteSQL

CHILD = Path(__file__).with_name("worker_child.py")
#: How often waits re-check their condition.
POLL = 0.02
#: Longest any wait may take before the test fails (each test passes a tighter one where
#: the wait is itself the property under test).
DEFAULT_WITHIN = 20.0

TaskId = tuple[str, str]


@dataclass(frozen=True, kw_only=True)
class Timing:
    """A worker's lease settings, as passed to ``worker_child.py``."""

    ttl: float = 1.5
    heartbeat: float = 0.3
    poll: float = 0.25
    grace: float = 1.0
    trust_margin: float = 0.3
    #: The worker's cap on runs in progress (None: the default).
    concurrency: int | None = None

    def argv(self) -> list[str]:
        cap = [] if self.concurrency is None else ["--concurrency", str(self.concurrency)]
        return [
            "--ttl", str(self.ttl), "--heartbeat", str(self.heartbeat), "--poll", str(self.poll),
            "--grace", str(self.grace), "--trust-margin", str(self.trust_margin), *cap,
        ]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Commit:
    """One row of the ``commits`` table: a run whose fenced commit the database accepted."""

    id: int
    kind: str
    key: str
    term: int
    worker: str
    slot: float
    started: float
    at: float

    @property
    def task(self) -> TaskId:
        return (self.kind, self.key)


class WorkerProc:
    """The test's handle on one worker process."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, events: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log
        self.events_path = events
        #: When the test stopped it with SIGKILL/SIGSTOP/SIGTERM (time.time()), by signal name.
        self.signalled: dict[str, float] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> float:
        """Send ``sig`` and return the time it was sent."""
        at = time.time()
        os.kill(self.pid, sig)
        self.signalled[sig.name] = at
        return at

    def kill(self) -> None:
        """SIGKILL (also ends a stopped process); :meth:`wait_exit` or the fixture reaps it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait_exit(self, within: float = DEFAULT_WITHIN) -> tuple[int, float]:
        """Wait for the process to end; return its exit code and when the test saw it end."""
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGUSR1)  # it writes its threads' stacks to its log,
                    os.kill(self.pid, signal.SIGUSR2)  # and its asyncio tasks' (worker_child.py)
                await asyncio.sleep(0.3)
                raise AssertionError(self.explain(f"did not exit within {within} s"))
            await asyncio.sleep(0.005)
        return code, time.time()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, ev: str | None = None) -> list[dict[str, Any]]:
        """The worker's side-channel events, in order (``ev``: only that kind of event)."""
        if not self.events_path.exists():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            if line.endswith("}"):  # a line cut by SIGKILL mid-write is ignored
                rec = json.loads(line)
                if ev is None or rec["ev"] == ev:
                    out.append(rec)
        return out

    def explain(self, what: str) -> str:
        return f"worker {self.name} (pid {self.pid}): {what}\n--- its log (tail) ---\n{self.log()[-4000:]}"


class Cluster:
    """One store, the test's connections to it (the store API, and raw SQL for the
    ``commits`` table and the term counter), and the workers using it."""

    def __init__(self, url: str, store: Store, db: RawSQL, tmp: Path) -> None:
        self.url = url
        self.store = store
        self.db = db
        self.dialect = store.dialect
        self.tmp = tmp
        self.control = tmp / "control"
        self.control.mkdir()
        self.workers: dict[str, WorkerProc] = {}

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, *, scenario: str = "tick", timing: Timing | None = None) -> WorkerProc:
        """Start a worker process with id ``name`` (not waiting for it to join)."""
        assert name not in self.workers or not self.workers[name].alive(), f"{name} already runs"
        n = len(self.workers)
        log = self.tmp / f"worker-{name}-{n}.log"
        events = self.tmp / f"events-{name}.jsonl"
        argv = [
            sys.executable, str(CHILD), self.url, "--id", name, "--scenario", scenario,
            "--events", str(events), "--control", str(self.control), *(timing or Timing()).argv(),
        ]  # fmt: skip
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        w = WorkerProc(name, proc, log, events)
        self.workers[name] = w
        return w

    async def start_all(
        self, names: Iterable[str], *, scenario: str = "tick", timing: Timing | None = None
    ) -> list[WorkerProc]:
        """Start workers and wait until each one has joined (has a live lease)."""
        started = [self.start(n, scenario=scenario, timing=timing) for n in names]
        for w in started:
            await self.wait_joined(w)
        return started

    async def wait_joined(self, w: WorkerProc, *, within: float = DEFAULT_WITHIN) -> None:
        async def joined() -> bool:
            if not w.alive():
                raise AssertionError(w.explain(f"exited with {w.proc.returncode} before joining"))
            return w.name in await self.live_workers()

        await self.wait_for(joined, f"{w.name} to join", within=within)

    def reap(self) -> None:
        """SIGKILL every worker still running and wait until each one is gone."""
        for w in self.workers.values():
            w.kill()
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)

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
        deadline = time.monotonic() + DEFAULT_WITHIN
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
            await asyncio.sleep(POLL)
        raise AssertionError(w.explain("found no moment to stop it outside a transaction"))

    def _outside_transaction(self, w: WorkerProc) -> bool:
        if isinstance(self.db, SQLiteSQL):
            return self.db.write_lock_free(wait=0.5)  # others' short transactions may hold it briefly
        # A statement it sent just before the stop may still be reaching the server.
        time.sleep(0.05)
        return not self.db.in_transaction(w.pid)

    # -- database -------------------------------------------------------------------------

    def commits(self) -> list[Commit]:
        """Every accepted fenced commit, in id order (per task, the order they committed in:
        a task's commits are serialized by its fence)."""
        rows = self.db.rows(f"SELECT {COMMIT_COLUMNS} FROM commits ORDER BY id")
        return [
            Commit(id=int(i), kind=k, key=key, term=int(t), worker=w, slot=float(s), started=float(st), at=float(at))
            for i, k, key, t, w, s, st, at in rows
        ]

    def term_counter(self) -> int:
        """How many terms were ever handed out: one per change of owner."""
        if self.dialect == "postgresql":  # a sequence: last_value counts only once called
            sql = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tenure_term_seq"
        else:
            sql = "SELECT value FROM tenure_counters WHERE name = 'term'"
        ((value,),) = self.db.rows(sql)
        return int(value)

    async def add_tasks(
        self, kind: str, keys: Iterable[str], *, every: float, params: dict[str, Any] | None = None
    ) -> list[TaskId]:
        added = []
        for key in keys:
            await self.store.add_task(
                kind=kind, key=key, schedule=Every(every), params_json=json.dumps(params or {}), enabled=True
            )
            added.append((kind, key))
        return added

    async def tasks(self) -> dict[TaskId, Task]:
        return {(t.kind, t.key): t for t in await self.store.list_tasks()}

    async def owned_by(self, worker: str) -> dict[TaskId, int]:
        """The tasks the store says ``worker`` owns, with their terms."""
        return {(t.kind, t.key): t.term for t in await self.store.list_tasks(owner=worker)}

    async def live_workers(self) -> set[str]:
        now = await self.store.now()
        return {w.id for w in await self.store.list_workers() if w.expires_at > now}

    async def runs(self, **filters: Any) -> list[Run]:
        """Recorded runs, oldest first."""
        return list(reversed(await self.store.list_runs(limit=10_000, **filters)))

    async def wait_for(
        self, condition: Callable[[], Awaitable[bool]], what: str, *, within: float = DEFAULT_WITHIN
    ) -> float:
        """Poll ``condition`` until it holds; return when it did. Fails after ``within`` s,
        and also as soon as a worker the test did not signal has died."""
        deadline = time.monotonic() + within
        while True:
            if await condition():
                return time.time()
            for w in self.workers.values():
                if not w.alive() and not w.signalled:
                    raise AssertionError(w.explain(f"died ({w.proc.returncode}) while waiting for {what}"))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(POLL)

    async def holds(self, invariant: Callable[[], Awaitable[bool]], what: str, *, seconds: float) -> None:
        """Check that ``invariant`` keeps holding for ``seconds``: a negative check (nothing
        that should not happen happens), never a wait for something to happen."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert await invariant(), f"{what} stopped holding"
            await asyncio.sleep(POLL)

    async def wait_balanced(self, names: Iterable[str], *, within: float = DEFAULT_WITHIN) -> dict[str, int]:
        """Wait until the named workers hold every enabled task between them, fairly
        (counts differ by at most one), and every task has committed at its current term.
        Returns the count each one holds."""
        names = sorted(names)

        async def balanced() -> bool:
            tasks = await self.tasks()
            counts = dict.fromkeys(names, 0)
            for t in tasks.values():
                if t.enabled:
                    if t.owner not in counts:
                        return False
                    counts[t.owner] += 1
            if max(counts.values()) - min(counts.values()) > 1:
                return False
            committed = {(c.kind, c.key, c.term) for c in self.commits()}
            return all((t.kind, t.key, t.term) in committed for t in tasks.values() if t.enabled)

        await self.wait_for(balanced, f"{names} to share the tasks and commit", within=within)
        return {n: len(await self.owned_by(n)) for n in names}


def assert_fenced_history(commits: list[Commit]) -> None:
    """Safety over the whole history: for each task, in commit order, terms never go back,
    each term belongs to one worker only, and no slot is committed twice."""
    by_task: dict[TaskId, list[Commit]] = {}
    for c in commits:
        by_task.setdefault(c.task, []).append(c)
    for task, cs in by_task.items():
        owner_of_term: dict[int, str] = {}
        for prev, cur in itertools.pairwise(cs):
            assert cur.term >= prev.term, f"{task}: term went back from {prev} to {cur}"
        for c in cs:
            assert owner_of_term.setdefault(c.term, c.worker) == c.worker, (
                f"{task}: term {c.term} committed by {owner_of_term[c.term]} and {c.worker}"
            )
        slots = [c.slot for c in cs]
        assert len(slots) == len(set(slots)), f"{task}: a slot was committed twice: {sorted(slots)}"


def first_commit_after(commits: list[Commit], task: TaskId, *, after_id: int, not_by: str) -> Commit | None:
    """The first commit of ``task`` with an id above ``after_id`` by a worker other than ``not_by``."""
    for c in commits:
        if c.task == task and c.id > after_id and c.worker != not_by:
            return c
    return None
