"""Worker processes on one store, observed through the database.

A :class:`WorkerCluster` owns every worker process it starts (a child program built on
:mod:`support.child`); the suite's fixture reaps them all when the test ends, passed or
failed (:func:`support.stores.worker_cluster`). Waits poll a condition with a deadline,
never sleep a fixed time, and fail at once when a worker the test did not signal dies.
Each suite subclasses it with its workload: the program its workers run and where their
commits are read from (:meth:`WorkerCluster.commits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tenure.models import Run, Task
from tenure.schedule import Every
from tenure.store import Store

from .history import Commit, TaskId
from .processes import WorkerProc
from .rawdb import DatabaseUnavailable, RawDB
from .timing import Timing


def fair_counts(
    tasks: Iterable[Task], owners: Iterable[str], commits: Callable[[], Iterable[Commit]]
) -> dict[str, int] | None:
    """How many of the enabled ``tasks`` each of ``owners`` holds, if they hold them all
    between them, fairly (counts differ by at most one), and each task has a commit at its
    current term (``commits`` is read only then); else None."""
    enabled = [t for t in tasks if t.enabled]
    counts = dict.fromkeys(owners, 0)
    for t in enabled:
        if t.owner not in counts:
            return None
        counts[t.owner] += 1
    if max(counts.values()) - min(counts.values()) > 1:
        return None
    committed = {(c.kind, c.key, c.term) for c in commits()}
    if not all((t.kind, t.key, t.term) in committed for t in enabled):
        return None
    return counts


class WorkerCluster:
    """One store, the test's raw access to its database, and the workers using it."""

    #: The child program :meth:`start` runs.
    program: ClassVar[Path]
    #: How often waits re-check their condition.
    poll: ClassVar[float] = 0.02
    #: Longest any wait may take unless the test passes a tighter one.
    default_within: ClassVar[float] = 20.0
    #: Errors that make a wait's condition count as "not yet" (the database is down).
    not_yet: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self, *, kind: str, url: str, store: Store, db: RawDB, tmp: Path) -> None:
        self.kind = kind
        self.url = url
        self.store = store
        self.db = db
        self.dialect = store.dialect
        self.tmp = tmp
        self.workers: dict[str, WorkerProc] = {}

    # -- processes --------------------------------------------------------------------------

    def start(
        self,
        name: str,
        *,
        timing: Timing | None = None,
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
        url: str | None = None,
    ) -> WorkerProc:
        """Start a worker process with id ``name`` running :attr:`program` (not waiting for
        it to join). ``args``: the program's own flags; ``prefix``: e.g. a ``faketime`` or
        ``ip netns exec`` command line that execs the worker, so the process keeps its
        pid; ``url``: the store as this worker reaches it, say through a relay."""
        assert name not in self.workers or not self.workers[name].alive(), f"{name} already runs"
        argv = [
            *prefix, sys.executable, str(self.program), url or self.url, "--id", name,
            "--events", str(self.tmp / f"events-{name}.jsonl"), *(timing or Timing()).argv(), *args,
        ]  # fmt: skip
        log = self.tmp / f"worker-{name}-{len(self.workers)}.log"
        w = WorkerProc.spawn(name, argv, log=log, events=self.tmp / f"events-{name}.jsonl", env=env)
        self.workers[name] = w
        return w

    def pids(self, names: Iterable[str] | None = None) -> list[int]:
        return [self.workers[n].pid for n in (names if names is not None else self.workers)]

    def reap(self) -> None:
        """SIGKILL every worker still running and wait until each one is gone."""
        for w in self.workers.values():
            w.kill()
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)

    def print_logs(self) -> None:
        """Print each worker's log tail (pytest shows it when the test failed)."""
        for w in self.workers.values():
            print(f"=== worker {w.name} (exit {w.proc.returncode}) log tail ===")
            print(w.log()[-3000:])

    def log_has(self, name: str, text: str, *, after_line: int = 0) -> bool:
        return text in "\n".join(self.workers[name].log().splitlines()[after_line:])

    def log_lines(self, name: str) -> int:
        return len(self.workers[name].log().splitlines())

    # -- observation ------------------------------------------------------------------------

    def commits(self) -> Sequence[Commit]:
        """Every accepted fenced commit of the workload, in commit order per task."""
        raise NotImplementedError

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
        self, condition: Callable[[], Awaitable[bool]], what: str, *, within: float | None = None
    ) -> float:
        """Poll ``condition`` until it holds; return when it did (``time.time()``). Fails
        after ``within`` s, and as soon as a worker the test did not signal has died.
        Errors in :attr:`not_yet` count as "not yet"."""
        within = self.default_within if within is None else within
        deadline = time.monotonic() + within
        last_error = ""
        while True:
            try:
                if await condition():
                    return time.time()
            except self.not_yet as exc:
                last_error = f" (last database error: {exc})"
            for w in self.workers.values():
                if not w.alive() and not w.signalled:
                    raise AssertionError(w.explain(f"died ({w.proc.returncode}) while waiting for {what}"))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within} s waiting for {what}{last_error}")
            await asyncio.sleep(self.poll)

    async def holds(self, invariant: Callable[[], Awaitable[bool]], what: str, *, seconds: float) -> None:
        """Check that ``invariant`` keeps holding for ``seconds``: a negative check (nothing
        that should not happen happens), never a wait for something to happen."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert await invariant(), f"{what} stopped holding"
            await asyncio.sleep(self.poll)

    async def wait_balanced(self, names: Iterable[str], *, within: float | None = None) -> dict[str, int]:
        """Wait until the named workers hold every enabled task between them, fairly
        (counts differ by at most one), and every task has committed at its current term.
        Returns the count each one holds."""
        names = sorted(names)

        async def balanced() -> bool:
            return fair_counts((await self.tasks()).values(), names, self.commits) is not None

        await self.wait_for(balanced, f"{names} to share the tasks and commit", within=within)
        return {n: len(await self.owned_by(n)) for n in names}

    async def wait_all_commit_after(
        self, tasks: Iterable[TaskId], after: float, what: str, *, within: float | None = None
    ) -> None:
        """Wait until every task has a commit whose database time is after ``after``."""
        wanted = set(tasks)

        async def done() -> bool:
            return wanted <= {c.task for c in self.commits() if c.at > after}

        await self.wait_for(done, what, within=within)

    async def first_answer(self, *, within: float | None = None) -> float:
        """Poll the database until it answers; return its clock at that first answer."""
        deadline = time.monotonic() + (self.default_within if within is None else within)
        while True:
            try:
                return self.db.now()
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)
