"""Every error tenure raises on purpose.

::

    TenureError
    ├── InvalidInput (ValueError)          the caller's input is wrong; nothing was changed
    │   ├── InvalidKind
    │   ├── UnknownKind
    │   ├── InvalidKey
    │   ├── InvalidSchedule
    │   ├── InvalidParams
    │   ├── InvalidSettings
    │   └── InvalidStoreURL
    ├── TaskNotFound (LookupError)
    ├── TaskExists
    ├── WorkerIdInUse
    ├── LeaseLost                          a fenced commit was refused, or a lease could not be kept
    ├── FencedTransactionError             a handler's use of its fenced transaction could let a write
    │   │                                  past the fence: nothing written in the block is kept
    │   ├── StatementRefused               a statement that ends or changes the transaction or session
    │   ├── TransactionBroken              the database says the transaction ended inside the block
    │   └── TransactionClosed              the transaction is over (its block ended, or it broke)
    └── StoreError                         the database failed, or its schema does not fit this code
        ├── StoreUnavailable
        └── SchemaError
            ├── SchemaMissing
            └── SchemaTooNew

Store modules translate driver exceptions into these at their boundary, keeping the
driver's exception as ``__cause__``.
"""

from __future__ import annotations


class TenureError(Exception):
    """Base class of every error tenure raises on purpose."""


class InvalidInput(TenureError, ValueError):
    """The caller's input is malformed or out of range. Nothing was changed.

    In a batch (the desired tasks of :meth:`tenure.App.sync_tasks`), ``entry`` is the key
    of the entry at fault, as it was given; otherwise None.
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class InvalidKind(InvalidInput):
    """A task kind name is empty, too long or uses characters kinds may not use."""


class UnknownKind(InvalidInput):
    """The kind has no registered handler (in this app, or in any app that ran on the store)."""


class InvalidKey(InvalidInput):
    """A task key is empty, too long, or holds control characters or edge whitespace."""


class InvalidSchedule(InvalidInput):
    """A schedule is missing, ambiguous, non-positive, or a cron expression that does not parse."""


class InvalidParams(InvalidInput):
    """Task parameters are not a JSON object, or are larger than the configured limit."""


class InvalidSettings(InvalidInput):
    """A worker or store setting is out of range or inconsistent with another."""


class InvalidStoreURL(InvalidInput):
    """A store URL does not parse or names a database tenure does not support."""


class TaskNotFound(TenureError, LookupError):
    """No task with this kind and key exists."""


class TaskExists(TenureError):
    """A task with this kind and key already exists."""


class WorkerIdInUse(TenureError):
    """Another live worker holds a lease under this worker id."""


class LeaseLost(TenureError):
    """This worker no longer owns the task at this term, or its lease has expired.

    Raised by a fenced commit that the database refused (nothing written inside it is
    kept) and by lease renewal once the lease has already expired.
    """


class FencedTransactionError(TenureError):
    """A handler used its fenced transaction in a way that could let a write past the
    fence. The transaction is rolled back: nothing written inside the block is kept, and
    the block raises even if the handler caught the error."""


class StatementRefused(FencedTransactionError):
    """A statement in a fenced transaction would end or change the transaction or the
    session (``COMMIT``, ``ROLLBACK``, ``BEGIN``, savepoints, session ``SET``, and on
    MySQL/MariaDB anything outside plain DML, since so many statements commit implicitly).
    Refused before it reached the database."""


class TransactionBroken(FencedTransactionError):
    """The database reports that a fenced transaction ended inside its block (a statement
    committed or rolled it back). The connection is discarded; nothing after the break is
    kept."""


class TransactionClosed(FencedTransactionError):
    """A fenced transaction was used after its block ended, after it was ended by tenure
    (a refused statement, a break, the run's cancellation), or once a statement in it had
    failed. No connection is touched."""


class FencedBlockOpen(TenureError):
    """An :class:`~tenure.App` call that changes the store was made inside an open fenced
    block of the same run. Its change would not be part of the block's transaction, and
    it would wait for the lock the block holds (SQLite's write lock; on a server, the
    task's row) until the run timed out. Nothing was changed; call it after the block."""


class StoreError(TenureError):
    """The store's database failed in a way tenure could not hide."""


class StoreUnavailable(StoreError):
    """The store's database cannot be reached or did not answer in time."""


class SchemaError(StoreError):
    """The database schema does not fit this version of tenure."""


class SchemaMissing(SchemaError):
    """The database has no tenure schema yet: run ``tenure migrate``."""


class SchemaTooNew(SchemaError):
    """The database schema is newer than this code: upgrade tenure before using it."""
