"""Testing an application's handlers: run one as a worker would, on a real store.

:class:`HandlerTester` opens a store (by default a fresh SQLite file in a temporary
folder, schema created), joins it as a worker, and runs a handler of an :class:`~tenure.App`
for one task with a real :class:`~tenure.Context`: the task's term as ``ctx.token``, and
fenced transactions that the database checks, as in production. :meth:`HandlerTester.take_over`
hands a task to another worker, as a failover does, so that a test can show that a run
which lost its task commits nothing::

    import tenure.testing

    async def test_dispatch_commits_its_plan() -> None:
        async with tenure.testing.HandlerTester(app) as t:
            await t.run("dispatch", "barcelona", params={"zone": "west"})
            ...  # read what the handler wrote at t.store_url

    async def test_a_stale_dispatch_writes_nothing() -> None:
        async with tenure.testing.HandlerTester(app) as t:
            stale = await t.context("dispatch", "barcelona")
            await t.take_over("dispatch", "barcelona")
            with pytest.raises(tenure.LeaseLost):
                await dispatch(stale)

Nothing here is a mock: the store is real, and so are claims, terms and the fence. What
it leaves out is the worker's scheduling (slots, timeouts, retries): a handler runs when
the test says so, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, cast

from tenure.app import App
from tenure.context import Context
from tenure.models import SlotDone
from tenure.schedule import Every
from tenure.store import Store, make_store
from tenure.worker.executor import is_async_handler

__all__ = ["HandlerTester"]

#: The testers' leases: long enough that no test sees one run out.
_TTL = 3600.0
#: A task's schedule when its kind has none (the tester runs it only when told anyway).
_DEFAULT_EVERY = 60.0


class HandlerTester:
    """Runs an app's handlers against a real store, one run at a time (see the module).

    ``store_url``: the store to use (its schema is created or upgraded); by default a
    fresh SQLite file in a temporary folder, removed on exit. The app's own store is not
    used. ``worker_id``: the worker
    the runs belong to. Use it as an async context manager.
    """

    def __init__(self, app: App, *, store_url: str | None = None, worker_id: str = "tenure-testing") -> None:
        self._app = app
        self._url = store_url
        self._worker_id = worker_id
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._store: Store | None = None
        self._others = 0

    @property
    def store_url(self) -> str:
        """The URL of the store the handlers run against (read what they wrote there)."""
        if self._url is None:
            raise RuntimeError("the HandlerTester is not open: use it as `async with`")
        return self._url

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the HandlerTester is not open: use it as `async with`")
        return self._store

    async def __aenter__(self) -> HandlerTester:
        if self._url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tenure-testing-")
            self._url = f"sqlite:///{os.path.join(self._tmp.name, 'tenure.db')}"
        store = make_store(self._url)
        await store.open(migrate=True)
        self._store = store
        await self._join(self._worker_id)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._store is not None:
                await self._store.close()
        finally:
            self._store = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
                self._url = None

    async def _join(self, worker_id: str) -> None:
        await self.store.register_worker(
            worker_id=worker_id, host=socket.gethostname(), pid=os.getpid(), ttl=_TTL, kinds=list(self._app.kinds)
        )

    async def context(self, kind: str, key: str, *, params: dict[str, Any] | None = None) -> Context:
        """A handler's context for task ``kind``/``key``, owned by this tester's worker.

        The task is added if missing (enabled, with ``params``, on the kind's schedule)
        and claimed if no live worker owns it, which gives it a new term, ``ctx.token``.
        ``params`` (default: the stored ones) are what ``ctx.params`` holds. Raises
        ``KeyError`` for a kind the app does not register, and ``RuntimeError`` if
        another live worker owns the task (after :meth:`take_over`).
        """
        registered = self._app.kinds[kind]
        store = self.store
        task = await store.get_task(kind, key)
        if task is None:
            task = await store.add_task(
                kind=kind,
                key=key,
                schedule=registered.schedule or Every(_DEFAULT_EVERY),
                params_json=json.dumps(params or {}),
                enabled=True,
            )
        if task.owner != self._worker_id:
            claims = await store.claim_tasks(self._worker_id, kinds=[kind], limit=1_000_000)
            mine = [c.task for c in claims if c.task.key == task.key]
            if not mine:
                raise RuntimeError(f"task {kind}/{key} is owned by {task.owner}, a live worker")
            task = mine[0]
        return Context(
            store=store,
            worker_id=self._worker_id,
            kind=kind,
            key=task.key,
            params=dict(task.params) if params is None else params,
            token=task.term,
            scheduled_at=await store.now(),
        )

    async def run(self, kind: str, key: str, *, params: dict[str, Any] | None = None) -> None:
        """Run the app's handler for ``kind`` once for task ``key`` (see :meth:`context`);
        what it raises propagates. A plain ``def`` handler runs in a thread, as on a worker."""
        ctx = await self.context(kind, key, params=params)
        handler = self._app.kinds[kind].handler
        if is_async_handler(handler):
            await cast("Awaitable[None]", handler(ctx))
        else:
            await asyncio.to_thread(handler, ctx)

    async def take_over(self, kind: str, key: str) -> int:
        """Hand task ``kind``/``key`` to another worker, as a failover does, and return its
        new term: every context made for it before can no longer commit (its fenced
        transactions raise :class:`~tenure.LeaseLost`). The other worker stays live, so
        this tester cannot run the task again."""
        store = self.store
        task = await store.get_task(kind, key)
        if task is None or task.owner != self._worker_id:
            raise RuntimeError(f"task {kind}/{key} is not owned by this tester")
        slot = SlotDone(kind=kind, key=task.key, term=task.term, slot=await store.now())
        await store.release_tasks(self._worker_id, [slot])
        self._others += 1
        other = f"{self._worker_id}-other-{self._others}"
        await self._join(other)
        claims = await store.claim_tasks(other, kinds=[kind], limit=1_000_000)
        taken = [c.task for c in claims if c.task.key == task.key]
        if not taken:
            raise RuntimeError(f"task {kind}/{key} could not be taken over")
        return taken[0].term
