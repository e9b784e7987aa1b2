"""What a handler receives: its task, its fencing token, and fenced commits."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from tenure import metrics, tracing
from tenure.errors import FencedBlockOpen, FencedTransactionError, LeaseLost
from tenure.store.base import FencedTransaction, Store

log = logging.getLogger("tenure.context")

#: The fenced block open in this asyncio task (and the tasks it started inside it), or in
#: this sync handler's thread (and what it sent to the loop from there), if any.
_OPEN_BLOCK: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenure_open_fenced_block", default=None)


def _refuse_nesting() -> None:
    """Nested, the inner block waits for the outer one's lock (the task's row on a server,
    the write lock on SQLite) until the lease or a timeout gives out, and the run looks
    like a lost lease, or the worker fences itself."""
    outer = _OPEN_BLOCK.get()
    if outer is not None:
        raise FencedTransactionError(
            f"a fenced block of {outer} is already open here: blocks cannot nest "
            "(the inner one would wait for the outer one's lock); write through the outer transaction"
        )


def refuse_inside_fenced_block(call: str) -> None:
    """Raise :class:`FencedBlockOpen` if a fenced block is open here (in this asyncio
    task, or in the sync handler's thread that sent this call to the loop).

    An App call that writes to the store, made from inside the block, would wait for the
    block's own lock: on SQLite any write does (renewals then fail and the worker fences
    itself), on a server a change to the run's own task does."""
    block = _OPEN_BLOCK.get()
    if block is not None:
        raise FencedBlockOpen(
            f"App.{call}() was called inside the fenced block of {block}: its change would wait for "
            "the lock the block holds and is not part of its transaction; call it after the block"
        )


class Context:
    """One run of one task, as its handler sees it.

    Built by the worker for each run; tests may build one directly.

    - ``kind``, ``key``, ``params``: the task.
    - ``token``: the task's current term, its fencing token. Hand it to any other system
      the handler writes to, so that system can refuse writes from an older term.
    - ``scheduled_at``: the slot this run is for (epoch seconds, database clock).
    - ``worker_id``: the worker running it.
    - ``cancelled``: set when the run must stop (lease lost, timeout, worker stopping);
      a sync handler can poll ``is_cancelled``.
    - ``deadline``: when the run's timeout ends, in :func:`time.monotonic` seconds (None:
      no timeout). A run past it, or cancelled, cannot commit: :meth:`fenced` checks on
      entry and again at commit time.

    ``kind``, ``key``, ``token``, ``scheduled_at`` and ``worker_id`` are read-only: a fenced
    commit records the run's slot as the task's last, and a handler that moved it ("postpone
    myself" by an hour) stopped its task on every worker until that hour had passed.
    ``deadline`` is read-only too (it was documented, and was not there at all).
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
        deadline: float | None = None,
    ) -> None:
        self._kind = kind
        self._key = key
        self.params = params
        self._token = token
        self._scheduled_at = scheduled_at
        self._worker_id = worker_id
        self._store = store
        self._lease_trusted = lease_trusted
        self._deadline = deadline
        # Fenced transactions open right now, ended from here if the run is cancelled.
        self._open: set[FencedTransaction] = set()
        self._aborting: set[asyncio.Task[None]] = set()
        # Made on first use: most handlers never wait on it, and a run's start is hot.
        self._cancelled: asyncio.Event | None = None
        self._stopped = False  # a plain bool: reads and writes are atomic across threads
        self._ended = False
        self._loop = asyncio.get_running_loop()
        #: A fenced commit of this run was accepted, and with it the database recorded
        #: ``scheduled_at`` as the task's last slot: the worker need not write it again.
        self.slot_recorded = False

    def __repr__(self) -> str:
        return f"<Context {self.kind}/{self.key} term={self.token} worker={self.worker_id}>"

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def key(self) -> str:
        return self._key

    @property
    def token(self) -> int:
        return self._token

    @property
    def scheduled_at(self) -> float:
        return self._scheduled_at

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def deadline(self) -> float | None:
        return self._deadline

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
        """Signal the handler to stop (called by the worker, on its event loop).

        A fenced transaction the handler holds open is rolled back at once (once a
        statement in flight has ended): a sync handler's thread cannot be stopped, and on
        SQLite its transaction would hold the store's only write lock meanwhile. Its later
        statements raise :class:`~tenure.TransactionClosed`; a block that ends anyway
        raises :class:`~tenure.LeaseLost`.
        """
        self._stopped = True
        if self._cancelled is not None:
            self._cancelled.set()
        self._abort_open(
            f"run of {self.kind}/{self.key} at term {self.token} was cancelled; its fenced transaction was rolled back"
        )

    def end(self) -> None:
        """The run has ended (called by the worker, on its event loop): nothing of it may
        commit any more. A handler may leave work behind (a task it started, a thread, this
        context kept in a global); its fenced blocks are refused from now on, and one still
        open is rolled back, as at a cancellation: it would commit under the task's next
        run, and on SQLite hold the store's only write lock meanwhile. (``is_cancelled``
        stays as it was: the run was not cancelled.)"""
        self._ended = True
        if self._open and not self._stopped:  # if cancelled, they were rolled back then
            self._abort_open(
                f"run of {self.kind}/{self.key} at term {self.token} had ended; "
                "its fenced transaction, still open, was rolled back"
            )

    def _abort_open(self, reason: str) -> None:
        for tx in self._open:
            # A task of the run's own (it outlives this synchronous call, not the run: the
            # block's end waits for it); kept here so that it is not collected midway.
            task = self._loop.create_task(tx.abort(reason), name=f"tenure-abort-{self.kind}/{self.key}")
            self._aborting.add(task)
            task.add_done_callback(self._aborted)

    def _aborted(self, task: asyncio.Task[None]) -> None:
        self._aborting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("rolling back the fenced transaction of %s/%s failed: %s", self.kind, self.key, exc)

    def _refusal(self) -> str | None:
        """Why this run may not commit now, or None."""
        if self._ended:
            return f"run of {self.kind}/{self.key} at term {self.token} has ended; not committing"
        if self.is_cancelled:
            # A run past its timeout (a sync handler's thread cannot be killed) or stopped
            # by its worker is over: the task may already be running again.
            return f"run of {self.kind}/{self.key} at term {self.token} was cancelled; not committing"
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return f"run of {self.kind}/{self.key} at term {self.token} is past its timeout; not committing"
        task = _current_task()
        if task is not None and task.cancelling():
            # Asked to stop (its timeout, its worker) and the handler caught the
            # cancellation inside the block: it must not commit as if nothing happened.
            return f"run of {self.kind}/{self.key} at term {self.token} was cancelled; not committing"
        if not self._lease_trusted():
            return f"worker {self.worker_id!r} cannot vouch for its lease on {self.kind}/{self.key}"
        return None

    def _precommit(self) -> None:
        why = self._refusal()
        if why is not None:
            raise LeaseLost(why)

    @asynccontextmanager
    async def fenced(self) -> AsyncIterator[FencedTransaction]:
        """A transaction that commits only while this worker still owns the task at
        ``token`` with a live lease, checked by the database inside the transaction.

        Raises :class:`~tenure.LeaseLost` (and keeps nothing written inside) if the
        worker lost the task (at the block's first statement or at its end), if its own
        clock says the lease can no longer be trusted (which spares a round trip that the
        database would refuse anyway), or if the run is past its timeout or was cancelled:
        checked on entry and again immediately before the commit is sent.

        The transaction is only valid inside the block; statements that would end or
        change it are refused (see :class:`~tenure.FencedTransaction`).
        """
        _refuse_nesting()
        span = tracing.start_commit(kind=self.kind, key=self.key, term=self.token)
        why = self._refusal()
        if why is not None:
            metrics.FENCED_REFUSED.labels(self.kind).inc()
            tracing.end_commit(span, "refused", why)
            raise LeaseLost(why)
        try:
            async with self._store.fenced(
                worker_id=self.worker_id,
                kind=self.kind,
                key=self.key,
                term=self.token,
                slot=self.scheduled_at,
                precommit=self._precommit,
            ) as tx:
                self._open.add(tx)
                opened = _OPEN_BLOCK.set(f"{self.kind}/{self.key}")
                try:
                    yield tx
                finally:
                    self._open.discard(tx)
                    # fenced_sync() enters and exits from two tasks of their own, whose
                    # contexts differ: there the mark is gone with the first one already.
                    with contextlib.suppress(ValueError):
                        _OPEN_BLOCK.reset(opened)
        except LeaseLost as exc:
            metrics.FENCED_REFUSED.labels(self.kind).inc()
            tracing.end_commit(span, "refused", str(exc))
            raise
        except BaseException as exc:
            tracing.end_commit(span, "rolled_back", repr(exc))
            raise
        self.slot_recorded = True
        metrics.FENCED_COMMITTED.labels(self.kind).inc()
        tracing.end_commit(span, "accepted")

    @contextmanager
    def fenced_sync(self) -> Iterator[SyncFencedTransaction]:
        """:meth:`fenced` for synchronous handlers, which run in a thread.

        Must not be called from the event loop's own thread.
        """
        loop = self._loop
        if _running_loop() is loop:
            raise RuntimeError("fenced_sync() is for handlers running in a thread; use `async with ctx.fenced()`")
        _refuse_nesting()
        cm = self.fenced()
        tx = asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result()
        # Marked in the handler's thread too: what it sends to the loop from inside the
        # block (a nested block, an App call through run_coroutine_threadsafe) runs in a
        # task that copies the thread's context, not the task that opened the block.
        opened = _OPEN_BLOCK.set(f"{self.kind}/{self.key}")
        try:
            try:
                yield SyncFencedTransaction(tx, loop)
            finally:
                _OPEN_BLOCK.reset(opened)
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


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
