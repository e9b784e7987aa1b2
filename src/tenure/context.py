"""What a handler receives: its task, its fencing token, and fenced commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from tenure import metrics
from tenure.errors import LeaseLost
from tenure.store.base import FencedTransaction, Store


class Context:
    """One run of one task, as its handler sees it.

    Built by the worker for each run; tests may build one directly.

    - ``kind``, ``key``, ``params``: the task.
    - ``token``: the task's current term, its fencing token. Hand it to any other system
      the handler writes to, so that system can refuse writes from an older term.
    - ``scheduled_at``: the slot this run is for (epoch seconds, database clock).
    - ``cancelled``: set when the run must stop (lease lost, timeout, worker stopping);
      a sync handler can poll ``is_cancelled``.
    """

    def __init__(
        self,
        *,
        store: Store,
        worker_id: str,
        kind: str,
        key: str,
        params: dict[str, Any],
        token: int,
        scheduled_at: float,
        lease_trusted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kind = kind
        self.key = key
        self.params = params
        self.token = token
        self.scheduled_at = scheduled_at
        self.worker_id = worker_id
        self._store = store
        self._lease_trusted = lease_trusted
        # Made on first use: most handlers never wait on it, and a run's start is hot.
        self._cancelled: asyncio.Event | None = None
        self._stopped = False  # a plain bool: reads and writes are atomic across threads
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"<Context {self.kind}/{self.key} term={self.token} worker={self.worker_id}>"

    @property
    def dialect(self) -> str:
        """The SQL dialect of fenced transactions: ``sqlite``, ``postgresql`` or ``mysql``."""
        return self._store.dialect

    @property
    def cancelled(self) -> asyncio.Event:
        """An event set when the run must stop; ``await ctx.cancelled.wait()``."""
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
            if self._stopped:
                self._cancelled.set()
        return self._cancelled

    @property
    def is_cancelled(self) -> bool:
        """True once the run must stop. Safe to read from a handler's thread."""
        return self._stopped

    def cancel(self) -> None:
        """Signal the handler to stop (called by the worker, on its event loop)."""
        self._stopped = True
        if self._cancelled is not None:
            self._cancelled.set()

    @asynccontextmanager
    async def fenced(self) -> AsyncIterator[FencedTransaction]:
        """A transaction that commits only while this worker still owns the task at
        ``token`` with a live lease, checked by the database inside the transaction.

        Raises :class:`~tenure.LeaseLost` (and keeps nothing written inside) if the
        worker lost the task, or if its own clock says the lease can no longer be
        trusted, which spares a round trip that the database would refuse anyway.
        """
        if self.is_cancelled:
            metrics.FENCED_REFUSED.labels(self.kind).inc()
            # A run past its timeout (a sync handler's thread cannot be killed) or stopped
            # by its worker is over: the task may already be running again.
            raise LeaseLost(f"run of {self.kind}/{self.key} at term {self.token} was cancelled; not committing")
        if not self._lease_trusted():
            metrics.FENCED_REFUSED.labels(self.kind).inc()
            raise LeaseLost(f"worker {self.worker_id!r} cannot vouch for its lease on {self.kind}/{self.key}")
        try:
            async with self._store.fenced(
                worker_id=self.worker_id, kind=self.kind, key=self.key, term=self.token, slot=self.scheduled_at
            ) as tx:
                yield tx
        except LeaseLost:
            metrics.FENCED_REFUSED.labels(self.kind).inc()
            raise
        metrics.FENCED_COMMITTED.labels(self.kind).inc()

    @contextmanager
    def fenced_sync(self) -> Iterator[SyncFencedTransaction]:
        """:meth:`fenced` for synchronous handlers, which run in a thread.

        Must not be called from the event loop's own thread.
        """
        loop = self._loop
        if _running_loop() is loop:
            raise RuntimeError("fenced_sync() is for handlers running in a thread; use `async with ctx.fenced()`")
        cm = self.fenced()
        tx = asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result()
        try:
            yield SyncFencedTransaction(tx, loop)
        except BaseException as exc:
            asyncio.run_coroutine_threadsafe(cm.__aexit__(type(exc), exc, exc.__traceback__), loop).result()
            raise
        asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result()


class SyncFencedTransaction:
    """A :class:`FencedTransaction` usable from a handler's thread."""

    def __init__(self, tx: FencedTransaction, loop: asyncio.AbstractEventLoop) -> None:
        self._tx = tx
        self._loop = loop

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return asyncio.run_coroutine_threadsafe(self._tx.execute(sql, params), self._loop).result()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        asyncio.run_coroutine_threadsafe(self._tx.executemany(sql, rows), self._loop).result()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return asyncio.run_coroutine_threadsafe(self._tx.fetchall(sql, params), self._loop).result()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return asyncio.run_coroutine_threadsafe(self._tx.fetchone(sql, params), self._loop).result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
