"""tenure: periodic keyed tasks across a cluster of workers, fenced by a SQL database.

The public API is what ``__all__`` lists; everything else may change.
"""

from tenure.app import App
from tenure.config import Settings
from tenure.context import Context, SyncFencedTransaction
from tenure.desired import SyncResult, TaskSpec
from tenure.errors import (
    FencedBlockOpen,
    FencedTransactionError,
    InvalidInput,
    InvalidKey,
    InvalidKind,
    InvalidParams,
    InvalidSchedule,
    InvalidSettings,
    InvalidStoreURL,
    LeaseLost,
    SchemaError,
    SchemaMissing,
    SchemaTooNew,
    StatementRefused,
    StoreError,
    StoreUnavailable,
    TaskExists,
    TaskNotFound,
    TenureError,
    TransactionBroken,
    TransactionClosed,
    UnknownKind,
    WorkerIdInUse,
)
from tenure.kinds import TaskKind
from tenure.models import Outcome, Run, Task, WorkerInfo, WorkerLoad
from tenure.schedule import Cron, Every, Misfire
from tenure.store import FencedTransaction, Store

__version__ = "0.1.0"

__all__ = [
    "App",
    "Context",
    "Cron",
    "Every",
    "FencedBlockOpen",
    "FencedTransaction",
    "FencedTransactionError",
    "InvalidInput",
    "InvalidKey",
    "InvalidKind",
    "InvalidParams",
    "InvalidSchedule",
    "InvalidSettings",
    "InvalidStoreURL",
    "LeaseLost",
    "Misfire",
    "Outcome",
    "Run",
    "SchemaError",
    "SchemaMissing",
    "SchemaTooNew",
    "Settings",
    "StatementRefused",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SyncFencedTransaction",
    "SyncResult",
    "Task",
    "TaskExists",
    "TaskKind",
    "TaskNotFound",
    "TaskSpec",
    "TenureError",
    "TransactionBroken",
    "TransactionClosed",
    "UnknownKind",
    "WorkerIdInUse",
    "WorkerInfo",
    "WorkerLoad",
    "__version__",
]
