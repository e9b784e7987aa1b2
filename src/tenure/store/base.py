"""The store contract: everything tenure asks of a database.

Every store module implements :class:`Store`, and one test suite
(``tests/store_contract``) holds each of them to it. Rules every implementation keeps:

- **The database owns time.** Every lease decision compares against the database
  server's clock at statement time. Callers never pass "now".
- **Terms come from one counter that never goes back**, so a term is never handed out
  twice, even to a task deleted and created again.
- **Guarded statements carry the term.** A write that depends on ownership names the
  owner and the term in its ``WHERE`` and treats zero rows as :class:`~tenure.LeaseLost`.
- **Fenced transactions check inside the transaction**, holding a lock that stops a
  takeover until they end, and check the lease again in the same step as the commit.
- **Driver errors are translated** into :mod:`tenure.errors` at this boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypedDict, Unpack

from tenure.desired import DesiredTask, SyncResult
from tenure.errors import SchemaMissing, SchemaTooNew
from tenure.models import Claim, ClusterView, KindInfo, Lease, Pause, Run, SlotDone, Task, WorkerInfo, WorkerLoad
from tenure.schedule import Schedule
from tenure.store.liveness import Liveness

#: The schema version this code reads and writes.
SCHEMA_VERSION = 9


def schema_too_new(version: int, where: str) -> SchemaTooNew:
    """The error for a schema version (read from the database ``where``) above ours."""
    return SchemaTooNew(
        f"{where} has schema version {version}, newer than this tenure ({SCHEMA_VERSION}); upgrade tenure"
    )


def require_current_schema(version: int | None, where: str) -> None:
    """Raise unless ``version`` (read from the database ``where``) is :data:`SCHEMA_VERSION`."""
    if version is None:
        raise SchemaMissing(f"{where} has no tenure schema; run `tenure migrate`")
    if version > SCHEMA_VERSION:
        raise schema_too_new(version, where)
    if version < SCHEMA_VERSION:
        raise SchemaMissing(f"{where} has schema version {version}; run `tenure migrate` to reach {SCHEMA_VERSION}")


class FencedTransaction(Protocol):
    """An open database transaction, valid only while its task's ownership holds.

    SQL and its placeholders are the store's own dialect (``?`` on SQLite, ``%s`` on
    PostgreSQL and MySQL). Pass values as parameters, never in the SQL text. One
    statement per call.

    The transaction is tenure's: a statement that would end or change it, or the
    session, is refused before it reaches the database
    (:class:`~tenure.errors.StatementRefused`; :mod:`tenure.store.statements` says which
    per store), and one that ends it anyway is detected right after
    (:class:`~tenure.errors.TransactionBroken`); either way nothing written in the block
    is kept and the block raises. Calls from several tasks take turns. Once the block has
    ended, every call raises :class:`~tenure.errors.TransactionClosed` and touches no
    connection.

    A statement (or the commit) that the database refuses raises
    :class:`~tenure.errors.StoreError` (:class:`~tenure.errors.StoreUnavailable` if the
    database could not answer), never the driver's exception, which is its ``__cause__``;
    the same on every store (``tests/store_contract/test_errors.py``).
    """

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 if unknown)."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return all its rows."""
        ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run a query and return its first row, or None."""
        ...

    async def abort(self, reason: str) -> None:
        """End the transaction now, from outside its block (tenure's worker calls it when
        the run is cancelled, say a sync handler past its timeout): roll it back once any
        statement in flight has ended. Every later call raises, and the block's end
        raises :class:`~tenure.errors.LeaseLost` with ``reason``."""
        ...


class RunQuery(TypedDict, total=False):
    """Which recorded runs ``list_runs`` lists (:meth:`tenure.App.list_runs`,
    :meth:`tenure.Store.list_runs`), most recent first: those of ``kind``, ``key``,
    ``worker`` and ``outcome`` (an :class:`Outcome` value), each left out or None for
    any, and at most ``limit`` of them (50 when left out)."""

    kind: str | None
    key: str | None
    worker: str | None
    outcome: str | None
    limit: int


def full_run_query(where: RunQuery) -> RunQuery:
    """``where`` with every field, those left out at their default. A name that is not a
    field raises TypeError, as an unknown keyword argument would."""
    unknown = where.keys() - RunQuery.__optional_keys__
    if unknown:
        raise TypeError(f"list_runs() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return {"kind": None, "key": None, "worker": None, "outcome": None, "limit": 50, **where}


class Store(Protocol):
    """A database that holds tasks, workers, ownership, terms and runs."""

    #: The store's URL with any password hidden, fit for logs.
    @property
    def display_url(self) -> str: ...

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``: which SQL fenced transactions speak."""
        ...

    @property
    def supports_listen(self) -> bool:
        """Does :meth:`listen` hear changes as they happen? If not, it returns at once and
        workers rely on polling alone."""
        ...

    @property
    def claim_chunk(self) -> int:
        """Most tasks a worker asks :meth:`claim_tasks` for at once: one short of more
        claims again at once, a round after another."""
        ...

    # -- life cycle and schema ---------------------------------------------------------

    async def open(self, *, migrate: bool) -> None:
        """Connect. With ``migrate``, create or upgrade the schema first.

        Raises :class:`~tenure.errors.StoreUnavailable` if the database does not answer,
        :class:`~tenure.errors.SchemaMissing` if there is no schema and ``migrate`` is
        false, :class:`~tenure.errors.SchemaTooNew` if the schema is newer than this code.
        After a schema error the store stays connected, so that :meth:`migrate` can
        follow; :meth:`close` it otherwise.
        """
        ...

    async def close(self) -> None:
        """Close all connections. Idempotent."""
        ...

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations in order; return (version before, version after).

        Never drops data. Refuses (:class:`~tenure.errors.SchemaTooNew`) a schema newer
        than :data:`SCHEMA_VERSION`. Safe to run from several processes at once.
        """
        ...

    async def schema_version(self) -> int | None:
        """The schema version in the database, or None if it has no tenure schema."""
        ...

    async def now(self) -> float:
        """The database's clock, in seconds since the Unix epoch."""
        ...

    # -- kinds and tasks (admin) --------------------------------------------------------

    async def publish_kinds(self, kinds: Sequence[KindInfo]) -> None:
        """Record kinds an app can run (upsert), so tools without its code know them."""
        ...

    async def list_kinds(self) -> list[KindInfo]:
        """Kinds published so far, by name."""
        ...

    # Every admin change below (add_task, set_enabled, trigger, remove_task, sync_tasks)
    # also advances the change counter read by cluster_view().

    async def add_task(self, *, kind: str, key: str, schedule: Schedule, params_json: str, enabled: bool) -> Task:
        """Create a task with no owner. Raises :class:`~tenure.errors.TaskExists`.

        Inputs are already validated by the caller; the store stores them verbatim.
        """
        ...

    async def get_task(self, kind: str, key: str) -> Task | None:
        """One task, or None."""
        ...

    async def list_tasks(self, *, kind: str | None = None, owner: str | None = None) -> list[Task]:
        """Tasks ordered by kind then key, optionally filtered by kind and by owner."""
        ...

    async def set_enabled(self, kind: str, key: str, enabled: bool, *, cancel: bool = False) -> Task:
        """Enable or disable a task and bump its version. Ownership is left alone: the
        owner notices the new version and stops (or starts) running it.

        With ``cancel`` (disabling only), the ownership ends in the same statement: the
        task is freed as released, its term kept, so from that moment the owner's run in
        progress can no longer commit (its fence fails), whether or not the owner has
        noticed; the owner cancels that run when it sees the task gone.

        Raises :class:`~tenure.errors.TaskNotFound`.
        """
        ...

    async def trigger(self, kind: str, key: str) -> Task:
        """Ask for one extra run as soon as possible (records the database time asked)."""
        ...

    async def remove_task(self, kind: str, key: str) -> None:
        """Delete a task and its ownership. Its terms are never reused.

        Raises :class:`~tenure.errors.TaskNotFound`.
        """
        ...

    async def sync_tasks(
        self, kind: str, desired: Sequence[DesiredTask], *, remove_missing: bool, dry_run: bool
    ) -> SyncResult:
        """Make ``kind``'s tasks what ``desired`` says, in one transaction.

        ``desired`` is validated by the caller (keys normalised and unique). Within one
        transaction, the kind's rows are compared as :func:`tenure.store.sync.plan_sync`
        does, then:

        - a desired task with no row is added (no owner, term 0, as :meth:`add_task`);
        - a row whose schedule, parameters or enabled flag differ from the desired task's
          gets the desired ones, its version bumped and ``updated_at`` set; its owner, term,
          last slot and trigger are kept (the owner notices the new version);
        - a row of the kind absent from ``desired`` is deleted with ``remove_missing``
          (its terms are never reused), else disabled (version bumped) if enabled;
        - other kinds' rows are never touched.

        If anything changed, the change counter read by :meth:`cluster_view` advances (and
        listeners are woken). Syncs of one kind are serialised: two at once cannot both
        add one task. A single-task change racing a sync (an ``add_task`` of a key the sync
        adds too) is not an error: the sync does not overwrite it, and counts the key as
        added. Writes go in batch statements, not one per task. With ``dry_run`` nothing
        is written and the result is what the call would do now. The result's keys are
        as stored, in key order.
        """
        ...

    # -- pauses -------------------------------------------------------------------------

    async def set_pause(self, kind: str | None, *, by: str, cancel: bool) -> Pause:
        """Pause ``kind`` (None: every kind) and return the pause as stored.

        Pausing what is already paused keeps its time (database clock) and author; a
        ``cancel`` asked for now is remembered. Advances the change counter read by
        :meth:`cluster_view` (and wakes listeners). Tasks, owners and terms are untouched.
        """
        ...

    async def clear_pause(self, kind: str | None) -> Pause | None:
        """Resume ``kind`` (None: the pause of every kind; a kind's own pause is another
        row). Returns the pause that was lifted, or None if there was none (nothing changes
        then). Advances the change counter when a pause was lifted."""
        ...

    async def list_pauses(self) -> list[Pause]:
        """Every pause in force, the whole store's first, then by kind."""
        ...

    # -- membership ---------------------------------------------------------------------

    def hold_liveness(self, worker_id: str, *, check_every: float) -> AbstractAsyncContextManager[Liveness]:
        """The worker's session-bound liveness lock (see :mod:`tenure.store.liveness`), for
        the block's duration; let go when the block ends (after :meth:`leave`).

        Entering takes nothing: the worker calls :meth:`Liveness.ensure` before each
        :meth:`register_worker`, which then records the lock in the worker's row. The
        store watches the lock's session (probing it at most every ``check_every``
        seconds where it must ask the server) and sets :attr:`Liveness.lost` when it goes.
        With the URL option ``liveness=lease`` the handle holds nothing and is never lost.
        """
        ...

    async def register_worker(
        self, *, worker_id: str, host: str, pid: int, ttl: float, kinds: Sequence[str] = ()
    ) -> Lease:
        """Join the cluster with a lease of ``ttl`` seconds of database time, publishing
        ``kinds``, the kinds this worker runs (replacing those of an earlier row of the id:
        a worker restarted with another kind list publishes the new one).

        If a row for ``worker_id`` exists with an expired lease (the same worker coming
        back after a pause), its tasks are freed as expired first, in the same
        transaction, so none of its old terms can commit again. Raises
        :class:`~tenure.errors.WorkerIdInUse` if a live worker holds the id.

        While this process holds ``worker_id``'s liveness lock (:meth:`hold_liveness`), the
        row records it; and a row with a live lease that recorded a lock is taken over
        the same way as an expired one: its lock was free when this process took it, so
        the session that held it is gone.
        """
        ...

    async def renew_lease(self, worker_id: str, ttl: float, load: WorkerLoad | None = None) -> Lease:
        """Extend a live lease to database now + ``ttl``. One write, whatever the number
        of tasks held. Raises :class:`~tenure.errors.LeaseLost` if the lease had already
        expired or the row is gone: an expired lease is never revived.

        ``load`` is published in the same statement, replacing the row's last one (None
        publishes none): :meth:`list_workers` returns it as it was written. A join
        (:meth:`register_worker`) clears it.
        """
        ...

    async def set_draining(self, worker_id: str, draining: bool) -> bool:
        """Mark a worker draining (it hands its tasks over and takes no more).

        Returns False if no such worker exists.
        """
        ...

    async def leave(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        """Graceful exit: remember ``slots``, free every task this worker owns as
        released, and delete its membership row. Returns the number of tasks freed."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """All membership rows, live or expired, by id, with the kinds each published."""
        ...

    async def reap_workers(self, older_than: float) -> int:
        """Delete rows of workers whose lease expired over ``older_than`` seconds ago
        and who own no task. Returns how many were deleted."""
        ...

    # -- ownership ----------------------------------------------------------------------

    async def claim_tasks(self, worker_id: str, *, kinds: Sequence[str], limit: int, start: int = 0) -> list[Claim]:
        """Take up to ``limit`` enabled tasks of ``kinds`` that have no live owner.

        First, in the same transaction, the lease of every other worker whose row records
        a liveness lock that is now free ends at the database's now (also when nothing is
        then claimed), except where another transaction holds that worker's row (a
        concurrent claim ending the same lease, a registration taking the id over): such a
        row is passed over, never waited for, and that transaction or the next claim ends
        the lease. A task is free if it has no owner, its owner's lease has expired, or its
        owner's recorded liveness lock is free; a task freed from an owner records when:
        its owner's lease end, or the database's now if that is earlier. Each claimed task
        gets a new term from the counter. Refuses (:class:`~tenure.errors.LeaseLost`) if the
        caller's own lease is not live. Concurrent callers never claim the same task.

        ``start`` is a hint of where to begin among the free tasks (in key order, wrapping
        around to the first): workers claiming together pass different ones so that each
        takes its own stretch instead of all passing over the rows the others hold. Which
        tasks are claimed is never promised; PostgreSQL and MySQL/MariaDB follow the hint,
        SQLite (one writer at a time) ignores it.
        """
        ...

    async def release_tasks(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        """Give up the named tasks (owner and term must match), remembering their last
        slots. Returns how many were released (a task named twice counts once). One
        statement for the whole batch, whatever its size."""
        ...

    async def owned_tasks(self, worker_id: str) -> list[Task]:
        """The tasks this worker currently owns, live lease or not."""
        ...

    async def cluster_view(self) -> ClusterView:
        """The change counter, the live non-draining workers with the kinds each runs, and
        the enabled tasks counted per kind (and in all), read in one statement: what a
        worker needs each poll for its fair share of each kind. A
        worker whose recorded liveness lock is free is not live, whatever its lease says."""
        ...

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever tasks are released or changed, until cancelled.

        A store whose database cannot notify (:attr:`supports_listen` false) returns at
        once; workers then rely on polling alone.
        """
        ...

    # -- fencing ------------------------------------------------------------------------

    def fenced(
        self,
        *,
        worker_id: str,
        kind: str,
        key: str,
        term: int,
        slot: float | None = None,
        precommit: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[FencedTransaction]:
        """A transaction that commits only while ``worker_id`` owns the task at ``term``
        with a live lease, on the database's clock.

        Entering sends nothing. The first statement begins the transaction and checks the
        fence in the same round trip, taking a lock that blocks any takeover until the
        transaction ends (the task row's, or SQLite's write lock); the statement runs only
        if the check holds. At the end of the block the fence is checked again and the
        transaction committed *in one step*: the check and ``COMMIT`` reach the database
        together and the check failing stops the commit, so no pause or delay of this
        process can come between them (on SQLite, which has no server, they run back to
        back on the connection's thread). A block with no statement is checked the same
        way. If a check fails, raises :class:`~tenure.errors.LeaseLost` (at the first
        statement, or at the end) and keeps nothing written inside. If the body raises,
        rolls back and re-raises. With ``slot``, the task's last slot is advanced in the
        same step as the final check.

        ``precommit`` is called at the end of the block, immediately before the final
        check and the commit are sent; if it raises (the run is past its timeout or was
        cancelled), nothing is committed and the error propagates.
        """
        ...

    # -- runs ---------------------------------------------------------------------------

    async def record_runs(self, runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        """Advance tasks' last slots (guarded by owner term), then append run records.

        The slots are written first and committed at once, apart from the runs: a task
        row is never left locked while the store waits on this process (a slow or cut-off
        worker would otherwise keep the task from claimers). If appending the runs fails,
        the slots may stay advanced; calling again with the same arguments is harmless, as a
        slot only moves forward."""
        ...

    async def list_runs(self, **where: Unpack[RunQuery]) -> list[Run]:
        """Recorded runs, most recent first, those ``where`` asks for (:class:`RunQuery`)."""
        ...

    async def prune_runs(self, *, older_than: float) -> int:
        """Delete run records that ended over ``older_than`` seconds ago (database time)."""
        ...
