"""The fenced transaction a handler holds: its life, the same on every store.

Each store supplies the database side (the abstract methods of :class:`FencedSession`:
send a statement, read the driver's transaction status, commit with the final fence
check, roll back). This class keeps the promises that do not depend on the database:

- **Transaction control is tenure's.** Every statement is read by
  :func:`tenure.store.statements.check` before it is sent; a refused one ends the
  transaction (rolled back at once).
- **The safety net.** After every statement, even one that failed, the driver says
  whether the transaction is still open; if it is not (something ended it that the
  check did not see), the transaction is broken: the connection is discarded and nothing
  more runs in it.
- **One thing at a time.** Statements (from the handler, or from a task it started) and
  the commit take turns: nothing runs beside the commit, and a statement that was
  waiting for its turn when the block ended is refused rather than run after it.
- **Dead once its block ends.** From then on (or from a refusal, a break, an abort),
  every call raises :class:`~tenure.errors.TransactionClosed` and touches no connection.
- **One error rule.** A driver error from a statement or from the commit reaches the
  handler as the store's translation of it (:meth:`FencedSession.translate`): a
  :class:`~tenure.errors.StoreError` (:class:`~tenure.errors.StoreUnavailable` if the
  database could not answer), or :class:`~tenure.errors.LeaseLost` where the error means
  the fence no longer holds, with the driver's exception as ``__cause__``, on every store.
- **The run's own check at commit time.** The ``precommit`` callback (the run's
  deadline and cancellation) is called immediately before the store's final fence check
  and ``COMMIT`` go out, in the same step.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tenure.errors import (
    FencedTransactionError,
    LeaseLost,
    StatementRefused,
    TenureError,
    TransactionBroken,
    TransactionClosed,
)
from tenure.store import statements

Op = Literal["execute", "executemany", "fetchall", "fetchone"]


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced transaction is guarded by: owner, task, term, and the slot to record."""

    worker_id: str
    kind: str
    key: str
    term: int
    slot: float | None = None

    @property
    def what(self) -> str:
        return f"{self.kind}/{self.key} at term {self.term}"

    def not_owner(self) -> LeaseLost:
        return LeaseLost(f"worker {self.worker_id!r} no longer owns {self.what}")

    def expired(self) -> LeaseLost:
        return LeaseLost(f"lease of worker {self.worker_id!r} expired before committing {self.what}")


class FencedSession(ABC):
    """The :class:`~tenure.store.base.FencedTransaction` a store hands to a handler.

    A store builds one per fenced block, runs the block inside :meth:`lifetime`, and
    after it reads :attr:`reusable`, :attr:`discard` and :attr:`touched_session` to
    decide whether the connection goes back to its pool. ``begun`` tells the store's
    methods whether a transaction may be open on the server (the first statement sends
    ``BEGIN`` and takes the fence's lock with it).
    """

    dialect: ClassVar[str]

    def __init__(self, fence: Fence) -> None:
        self.fence = fence
        #: A transaction may be open on the server (its BEGIN was sent).
        self.begun = False
        #: The connection is in a known state, with no transaction open: it may be reused.
        self.reusable = False
        #: Something ended the transaction behind tenure's back: never reuse the connection.
        self.discard = False
        #: A statement may have left state on the session (see statements.Checked).
        self.touched_session = False
        #: What the statement check found in the statement being sent.
        self.checked = statements.Checked()
        self._turn = asyncio.Lock()
        self._over: TenureError | None = None  # why nothing more may run, once set

    # -- what a handler calls -----------------------------------------------------------

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        result: int = await self._statement("execute", sql, params)
        return result

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._statement("executemany", sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = await self._statement("fetchall", sql, params)
        return result

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        result: tuple[Any, ...] | None = await self._statement("fetchone", sql, params)
        return result

    async def abort(self, reason: str) -> None:
        """End the transaction now, from outside its block (the run was cancelled): roll
        it back once any statement in flight has ended. Every later call raises, and the
        block's end raises :class:`~tenure.errors.LeaseLost` with ``reason``."""
        if self._over is not None:
            return
        async with self._turn:
            if self._over is None:
                self._over = LeaseLost(reason)
                await self._roll_back_safely()

    # -- what a store implements --------------------------------------------------------

    @abstractmethod
    def backslash_escapes(self) -> bool | None:
        """Does the server read a backslash in a plain string literal as an escape?
        (None: the dialect's default.)"""

    @abstractmethod
    async def send(self, op: Op, sql: str, params: Any) -> Any:
        """Run one of the handler's statements; the first one also begins the
        transaction and takes the fence's lock (raising LeaseLost if it fails)."""

    @abstractmethod
    def in_transaction(self) -> bool:
        """Does the driver say the transaction is still open (failed or not)?"""

    @abstractmethod
    async def commit(self) -> None:
        """Check the fence, record the slot and commit in one step; raise LeaseLost (and
        leave nothing committed) if the check fails. Sets ``reusable`` on success."""

    @abstractmethod
    def translate(self, exc: Exception) -> Exception:
        """The tenure error for the driver's ``exc``, or ``exc`` itself if it is not the
        driver's (see :mod:`tenure.errors`)."""

    @abstractmethod
    async def roll_back(self) -> None:
        """Roll back whatever is open; set ``reusable`` if the connection is in a known
        state afterwards. Never raises a driver error."""

    # -- the life of a block ------------------------------------------------------------

    @asynccontextmanager
    async def lifetime(self, precommit: Callable[[], None] | None) -> AsyncIterator[FencedSession]:
        """Run the handler's block: commit at its end, roll back if it raised."""
        try:
            yield self
        except BaseException:
            await self._end(commit=False, precommit=None)
            raise
        await self._end(commit=True, precommit=precommit)

    async def _end(self, *, commit: bool, precommit: Callable[[], None] | None) -> None:
        async with self._turn:
            over = self._over
            self._over = TransactionClosed(
                f"the fenced transaction of {self.fence.what} is over: its block has ended "
                "(a transaction object is only valid inside `async with ctx.fenced()`)"
            )
            if over is not None:
                if not self.reusable and not self.discard:
                    # A statement cut short (cancelled midway): the driver may have brought
                    # the connection back to a known state, and then it rolls back.
                    await self._roll_back_safely()
                if commit:  # the handler caught what ended the transaction, and went on
                    if isinstance(over, LeaseLost):
                        raise LeaseLost(str(over))
                    raise TransactionClosed(
                        f"the fenced transaction of {self.fence.what} was ended inside its block "
                        f"({over}); nothing written in the block was kept"
                    ) from over
                return
            if not commit:
                await self._roll_back_safely()
                return
            try:
                if precommit is not None:
                    precommit()
                await self.commit()
            except BaseException as exc:
                await self._roll_back_safely()
                self._raise_translated(exc)
                raise

    async def _statement(self, op: Op, sql: str, params: Any) -> Any:
        self._refuse_if_over()
        async with self._turn:
            self._refuse_if_over()  # the block may have ended while this call waited its turn
            try:
                checked = statements.check(
                    sql, self.dialect, backslash_escapes=self.backslash_escapes(), with_params=bool(params)
                )
            except StatementRefused as exc:
                self._over = exc
                await self._roll_back_safely()
                raise
            self.touched_session = self.touched_session or checked.touches_session
            self.checked = checked
            try:
                result = await self.send(op, sql, params)
            except (LeaseLost, FencedTransactionError) as exc:
                self._over = exc
                await self._roll_back_safely()
                raise
            except BaseException as exc:
                # The handler's SQL failed (it may go on), or the call was cancelled midway.
                if not isinstance(exc, Exception):
                    self._over = TransactionClosed(f"a statement of {self.fence.what} was cancelled midway")
                elif self.begun and not self.in_transaction():
                    self._over = TransactionBroken(f"the transaction of {self.fence.what} ended with an error: {exc}")
                    self.discard = True
                self._raise_translated(exc)
                raise
            if not self.in_transaction():
                self._over = TransactionBroken(
                    f"a statement ended the fenced transaction of {self.fence.what} inside its block; "
                    "the connection is discarded and nothing more runs in it"
                )
                await self._roll_back_safely()
                self.discard = True  # whatever ended the transaction may have changed the session too
                raise self._over
            return result

    def _raise_translated(self, exc: BaseException) -> None:
        """Raise the store's translation of a driver error (from it); return otherwise."""
        if isinstance(exc, Exception) and not isinstance(exc, TenureError):
            translated = self.translate(exc)
            if translated is not exc:
                raise translated from exc

    def _refuse_if_over(self) -> None:
        if self._over is not None:
            if isinstance(self._over, TransactionClosed):
                raise TransactionClosed(str(self._over))
            raise TransactionClosed(
                f"the fenced transaction of {self.fence.what} was ended ({self._over}); nothing more runs in it"
            ) from self._over

    async def _roll_back_safely(self) -> None:
        if not self.begun:
            self.reusable = True
            return
        await self.roll_back()
