"""The domain logic every SQL store shares, written once over named queries.

A dialect module (:mod:`~tenure.store.sqlite`, :mod:`~tenure.store.postgresql`,
:mod:`~tenure.store.mysql`) subclasses :class:`SQLStore` and supplies two things:

- **a connector**: how a transaction (:meth:`SQLStore._write`), a read
  (:meth:`SQLStore._read`) and lease upkeep on its own connection
  (:meth:`SQLStore._on_lease`) run on its driver, each handing the function a
  :class:`Session` and translating driver errors into :mod:`tenure.errors` (the same
  translation its fenced session applies, :meth:`~tenure.store.fence.FencedSession.translate`);
- **what truly differs** between databases: claiming, the fenced session
  (:meth:`SQLStore._fenced_session`), how migrations run, slot upserts, batch writes of a
  sync, listening, liveness; and capability flags (:attr:`SQLStore.supports_listen`,
  :attr:`SQLStore.returning`) where a dialect can do more.

The methods here run the dialect's named queries (``self.q[name]``, loaded from its
``sql/<dialect>/queries.sql``; every dialect has the same names for the same work) with
a mapping of parameters, and keep the contract of :class:`~tenure.store.base.Store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar, Unpack

from tenure.desired import DesiredTask, SyncResult
from tenure.errors import LeaseLost, StoreError, TaskExists, TaskNotFound, WorkerIdInUse
from tenure.inputs import quote
from tenure.models import (
    ALL_KINDS,
    ClusterView,
    KindInfo,
    Lease,
    Pause,
    Run,
    SlotDone,
    Task,
    WorkerInfo,
    WorkerLoad,
    pause_from_row,
)
from tenure.schedule import Schedule
from tenure.store.base import SCHEMA_VERSION, RunQuery, full_run_query, require_current_schema, schema_too_new
from tenure.store.fence import Fence, FencedSession
from tenure.store.liveness import Liveness, held_token
from tenure.store.rows import (
    cluster_view_from_rows,
    encode_worker_kinds,
    kind_from_row,
    load_params,
    run_from_row,
    schedule_columns,
    task_from_row,
    worker_from_row,
)
from tenure.store.sqlfile import load_migrations
from tenure.store.sync import batches, plan_sync, stored_task

T = TypeVar("T")
Args = Mapping[str, Any] | None


class Session(Protocol):
    """One connection, inside a transaction or autocommitting, as the store's methods use it.

    Statements are the dialect's own SQL with named parameters. Driver errors pass through
    unchanged: the connector that handed out the session translates them.
    """

    async def one(self, sql: str, args: Args = None) -> Any:
        """Run a statement; its first row, or None."""
        ...

    async def all(self, sql: str, args: Args = None) -> list[Any]:
        """Run a query; all its rows."""
        ...

    async def count(self, sql: str, args: Args = None) -> int:
        """Run a statement; the number of rows it matched."""
        ...

    async def runmany(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per parameter row."""
        ...

    async def notify(self) -> None:
        """Wake the store's listeners once this transaction commits (nothing where the
        dialect cannot notify: see :attr:`SQLStore.supports_listen`)."""
        ...


S = TypeVar("S", bound=Session)


#: Task rows turned into :class:`Task` objects between two turns of the event loop.
ROWS_PER_TURN = 500


async def tasks_from_rows(rows: Sequence[Any]) -> list[Task]:
    """Tasks from rows, :data:`ROWS_PER_TURN` at a time: a worker re-reading its 10,000
    tasks spent 35-70 ms building them, holding its event loop (and its runs) that long."""
    tasks: list[Task] = []
    for start in range(0, len(rows), ROWS_PER_TURN):
        if start:
            await asyncio.sleep(0)
        tasks.extend(task_from_row(r) for r in rows[start : start + ROWS_PER_TURN])
    return tasks


def lease_from_row(worker_id: str, row: Any) -> Lease:
    """A lease from a row of (expires_at, db_now, draining)."""
    return Lease(worker_id=worker_id, expires_at=float(row[0]), db_now=float(row[1]), draining=bool(row[2]))


async def one_row(s: Session, sql: str, args: Args = None) -> Any:
    """The first row of a query that always returns one."""
    row = await s.one(sql, args)
    if row is None:  # pragma: no cover - the query always returns a row
        raise StoreError(f"query returned no row: {sql.splitlines()[0]}")
    return row


class SQLStore(Generic[S]):
    """What the three SQL stores share (see the module docstring).

    Subclasses set :attr:`dialect` and the capability flags, provide :attr:`q` and the
    connector methods, and implement the rest of :class:`~tenure.store.base.Store`.
    """

    dialect: str
    #: The schema was found current (or migrated) by :meth:`open`.
    _schema_ok = False
    #: The liveness handles held now, by worker id (see :meth:`hold_liveness`).
    _liveness: dict[str, Liveness]
    #: Does :meth:`listen` hear changes as they happen? (Without, workers rely on polling.)
    supports_listen: bool = False
    #: Most tasks a worker claims in one call (:meth:`claim_tasks`). SQLite holds its one
    #: write lock, and MySQL/MariaDB its row locks, for the whole claim: 500 keeps a claim
    #: short; a worker short of more claims again at once.
    claim_chunk: int = 500
    #: Do the dialect's task-changing statements (``insert_task``, ``set_enabled``,
    #: ``disable_cancel``, ``trigger``) return the task row (``RETURNING``)?
    returning: bool = False

    @property
    def q(self) -> Mapping[str, str]:
        """The dialect's named queries."""
        raise NotImplementedError

    @property
    def display_url(self) -> str:
        raise NotImplementedError

    @property
    def _where(self) -> str:
        """The database, as messages name it."""
        return self.display_url

    # -- the connector (each dialect's) -----------------------------------------------------

    async def _read(self, fn: Callable[[S], Awaitable[T]], *, what: str) -> T:
        """Run ``fn``'s reads, each statement seeing one consistent snapshot."""
        raise NotImplementedError

    async def _write(self, fn: Callable[[S], Awaitable[T]], *, what: str, single: bool = False) -> T:
        """Run ``fn`` in one transaction, committed if it returns, rolled back if it raises.

        ``single``: ``fn`` sends one statement, which a dialect may autocommit instead.
        ``what`` names the work in error messages."""
        raise NotImplementedError

    async def _on_lease(self, fn: Callable[[S], Awaitable[T]], *, transaction: bool, what: str) -> T:
        """Run ``fn`` on the lease connection, kept apart so that lease upkeep never queues
        behind handlers' work: in one transaction, or (if the dialect can) autocommitting."""
        raise NotImplementedError

    def _fenced_session(self, fence: Fence) -> AbstractAsyncContextManager[FencedSession]:
        """The dialect's fenced session for ``fence``, on a connection of the store's; when
        the block ends the connection goes back, or is discarded as the session's state
        (reusable, discard, touched_session) says."""
        raise NotImplementedError

    def _is_duplicate(self, exc: BaseException) -> bool:
        """Is ``exc`` the driver's error for a row whose primary key exists?"""
        raise NotImplementedError

    def _connected(self) -> bool:
        """Are the store's connections (or pools) there?"""
        raise NotImplementedError

    async def _open_connections(self) -> None:
        """Make the store's connections (or pools); raise StoreUnavailable if it cannot."""
        raise NotImplementedError

    async def _migrating(self, go: Callable[[S], Awaitable[T]]) -> T:
        """Run ``go`` with the schema to itself, ``tenure_meta`` existing. By default in one
        transaction (the dialect's DDL is transactional), first taking its
        ``migrate_lock`` if it has one (SQLite's write lock already keeps others out)."""

        async def run(s: S) -> T:
            if "migrate_lock" in self.q:
                await s.count(self.q["migrate_lock"])
            await s.count(self.q["create_meta"])
            return await go(s)

        return await self._write(run, what="migrating the schema")

    async def _run_script(self, s: S, script: str) -> None:
        """Run one migration file, several statements."""
        raise NotImplementedError

    async def _advance_slots(self, s: S, slots: Sequence[SlotDone]) -> None:
        """Advance tasks' last slots, each guarded by its term."""
        raise NotImplementedError

    async def _sync_write(self, s: S, query: str, kind: str, tasks: Sequence[DesiredTask]) -> None:
        """Run ``sync_add`` or ``sync_update`` for ``tasks``, in batches."""
        raise NotImplementedError

    def _array(self, values: list[str]) -> Any:
        """A list of keys as the dialect's queries take it (a JSON text by default)."""
        return json.dumps(values, ensure_ascii=False)

    # -- shared pieces ----------------------------------------------------------------------

    async def _changed(self, s: S) -> None:
        """Advance the change counter read by cluster_view(), and wake listeners."""
        await s.count(self.q["bump_changes"])
        await s.notify()

    async def _task(self, s: S, kind: str, key: str) -> Task:
        row = await s.one(self.q["get_task"], {"kind": kind, "key": key})
        if row is None:
            raise TaskNotFound(f"no task {kind}/{key}")
        return task_from_row(row)

    async def _change_task(self, s: S, query: str, args: Mapping[str, Any]) -> Task | None:
        """Run ``query``, which changes (or adds) the task ``args`` names; the task as it
        now is, or None if no row matched."""
        if self.returning:
            row = await s.one(self.q[query], args)
            return None if row is None else task_from_row(row)
        if await s.count(self.q[query], args) != 1:
            return None
        return await self._task(s, args["kind"], args["key"])

    # -- life cycle and schema --------------------------------------------------------------

    async def open(self, *, migrate: bool) -> None:
        if self._connected() and self._schema_ok:
            return
        if not self._connected():
            await self._open_connections()
        # A schema refused here leaves the store connected (so migrate() can follow), but
        # not open: the next open() checks or migrates again instead of returning early.
        if migrate:
            await self.migrate()
        else:
            require_current_schema(await self.schema_version(), self._where)
        self._schema_ok = True

    async def _schema_version(self, s: S) -> int | None:
        exists = await s.one(self.q["meta_exists"])
        if not exists or not exists[0]:
            return None
        row = await s.one(self.q["schema_version"])
        if row is None:
            return None
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            version = -1
        if version < 0:
            # Written by hand, or another program's table of the same name: refused before
            # any migration runs on it (int() raised ValueError, a traceback, before).
            raise StoreError(
                f"{self._where} records schema version {quote(row[0])}, which is not a version tenure "
                "wrote; nothing was changed: repair tenure_meta or name another store"
            )
        return version

    async def schema_version(self) -> int | None:
        return await self._read(self._schema_version, what="reading the schema version")

    async def migrate(self) -> tuple[int, int]:
        log = logging.getLogger(type(self).__module__)

        async def go(s: S) -> tuple[int, int]:
            before = await self._schema_version(s) or 0
            if before > SCHEMA_VERSION:
                raise schema_too_new(before, self._where)
            for version, script in load_migrations(self.dialect):
                if version <= before:
                    continue
                await self._run_script(s, script)
                await s.count(self.q["set_schema_version"], {"version": str(version)})
                log.info("migrated %s to schema version %d", self._where, version)
            return before, SCHEMA_VERSION

        return await self._migrating(go)

    # -- clock ------------------------------------------------------------------------------

    async def now(self) -> float:
        async def go(s: S) -> float:
            return float((await one_row(s, self.q["now"]))[0])

        return await self._read(go, what="reading the clock")

    # -- kinds and tasks --------------------------------------------------------------------

    async def publish_kinds(self, kinds: Sequence[KindInfo]) -> None:
        if not kinds:
            return
        rows = []
        for k in kinds:
            every, cron = schedule_columns(k.schedule) if k.schedule else (None, None)
            rows.append({"kind": k.kind, "every": every, "cron": cron, "timeout": k.timeout})

        async def go(s: S) -> None:
            # One statement per kind (a handful, once per worker start): MySQL's upsert
            # names its parameters twice, which its driver's batch rewriting cannot take.
            for row in rows:
                await s.count(self.q["publish_kind"], row)

        await self._write(go, what="publishing kinds")

    async def list_kinds(self) -> list[KindInfo]:
        async def go(s: S) -> list[KindInfo]:
            return [kind_from_row(r) for r in await s.all(self.q["list_kinds"])]

        return await self._read(go, what="listing kinds")

    async def add_task(self, *, kind: str, key: str, schedule: Schedule, params_json: str, enabled: bool) -> Task:
        every, cron = schedule_columns(schedule)
        args = {"kind": kind, "key": key, "every": every, "cron": cron, "params": params_json, "enabled": enabled}

        async def go(s: S) -> Task:
            try:
                task = await self._change_task(s, "insert_task", args)
            except Exception as exc:
                if self._is_duplicate(exc):
                    raise TaskExists(f"task {kind}/{key} already exists") from exc
                raise
            if task is None:  # pragma: no cover - an INSERT that did not fail added its row
                raise StoreError(f"task {kind}/{key} was not added")
            await self._changed(s)
            return task

        return await self._write(go, what="adding a task")

    async def get_task(self, kind: str, key: str) -> Task | None:
        async def go(s: S) -> Task | None:
            row = await s.one(self.q["get_task"], {"kind": kind, "key": key})
            return None if row is None else task_from_row(row)

        return await self._read(go, what="reading a task")

    async def list_tasks(self, *, kind: str | None = None, owner: str | None = None) -> list[Task]:
        async def go(s: S) -> list[Task]:
            return await tasks_from_rows(await s.all(self.q["list_tasks"], {"kind": kind, "owner": owner}))

        return await self._read(go, what="listing tasks")

    async def _update_task(self, query: str, kind: str, key: str, **extra: Any) -> Task:
        async def go(s: S) -> Task:
            task = await self._change_task(s, query, {"kind": kind, "key": key, **extra})
            if task is None:
                raise TaskNotFound(f"no task {kind}/{key}")
            await self._changed(s)
            return task

        return await self._write(go, what="changing a task")

    async def set_enabled(self, kind: str, key: str, enabled: bool, *, cancel: bool = False) -> Task:
        if cancel and not enabled:
            return await self._update_task("disable_cancel", kind, key)
        return await self._update_task("set_enabled", kind, key, enabled=enabled)

    async def trigger(self, kind: str, key: str) -> Task:
        return await self._update_task("trigger", kind, key)

    async def remove_task(self, kind: str, key: str) -> None:
        async def go(s: S) -> None:
            if await s.count(self.q["delete_task"], {"kind": kind, "key": key}) != 1:
                raise TaskNotFound(f"no task {kind}/{key}")
            await self._changed(s)

        await self._write(go, what="removing a task")

    async def sync_tasks(
        self, kind: str, desired: Sequence[DesiredTask], *, remove_missing: bool, dry_run: bool
    ) -> SyncResult:
        q = self.q

        async def go(s: S) -> SyncResult:
            # A dialect without a sync_lock query (SQLite) holds the store's write lock
            # from the read to the commit.
            if not dry_run and "sync_lock" in q:
                await s.count(q["sync_lock"], {"kind": kind})
            stored = [stored_task(r) for r in await s.all(q["sync_read"], {"kind": kind})]
            plan = plan_sync(kind, stored, desired, remove_missing=remove_missing)
            if dry_run or not plan.changed:
                return plan.result(dry_run=dry_run)
            for query, tasks in (("sync_add", plan.add), ("sync_update", plan.update)):
                if tasks:
                    await self._sync_write(s, query, kind, tasks)
            for query, keys in (("sync_disable", plan.disable), ("sync_remove", plan.remove)):
                for key_batch in batches(keys, len):
                    await s.count(q[query], {"kind": kind, "keys": self._array(list(key_batch))})
            await self._changed(s)
            return plan.result(dry_run=False)

        if dry_run:
            return await self._read(go, what="planning a sync")
        return await self._write(go, what="syncing tasks")

    # -- pauses -----------------------------------------------------------------------------

    async def set_pause(self, kind: str | None, *, by: str, cancel: bool) -> Pause:
        scope = ALL_KINDS if kind is None else kind

        async def go(s: S) -> Pause:
            await s.count(self.q["set_pause"], {"scope": scope, "by": by, "cancel": cancel})
            await self._changed(s)
            return pause_from_row(await one_row(s, self.q["get_pause"], {"scope": scope}))

        return await self._write(go, what="pausing")

    async def clear_pause(self, kind: str | None) -> Pause | None:
        scope = ALL_KINDS if kind is None else kind

        async def go(s: S) -> Pause | None:
            row = await s.one(self.q["lock_pause"], {"scope": scope})
            if row is None:
                return None
            await s.count(self.q["delete_pause"], {"scope": scope})
            await self._changed(s)
            return pause_from_row(row)

        return await self._write(go, what="resuming")

    async def list_pauses(self) -> list[Pause]:
        async def go(s: S) -> list[Pause]:
            return [pause_from_row(r) for r in await s.all(self.q["list_pauses"])]

        return await self._read(go, what="listing pauses")

    # -- membership -------------------------------------------------------------------------

    async def register_worker(
        self, *, worker_id: str, host: str, pid: int, ttl: float, kinds: Sequence[str] = ()
    ) -> Lease:
        """As the contract says, for dialects whose ``upsert_worker`` returns the lease
        (``RETURNING``)."""
        q = self.q
        liveness = held_token(self._liveness, worker_id)
        args = {"worker": worker_id, "host": host, "pid": pid, "ttl": ttl}
        args |= {"kinds": encode_worker_kinds(kinds), "liveness": liveness}

        async def go(s: S) -> Lease:
            live = await s.one(q["worker_is_live"], {"worker": worker_id})
            if live is not None and live[0]:
                if not (live[1] and liveness is not None):
                    raise WorkerIdInUse(f"worker id {worker_id!r} is held by a live worker")
                await s.count(q["end_lease"], {"worker": worker_id})
            if live is not None:
                await s.count(q["free_expired_worker_tasks"], {"worker": worker_id})
            row = await s.one(q["upsert_worker"], args)
            if row is None:
                raise WorkerIdInUse(f"worker id {worker_id!r} is held by a live worker")
            return lease_from_row(worker_id, row)

        return await self._on_lease(go, transaction=True, what="registering the worker")

    async def renew_lease(self, worker_id: str, ttl: float, load: WorkerLoad | None = None) -> Lease:
        """As the contract says, for dialects whose ``renew_lease`` returns the lease: one
        statement, one round trip on the heartbeat path (the load travels in it)."""

        async def go(s: S) -> Lease:
            row = await s.one(self.q["renew_lease"], {"worker": worker_id, "ttl": ttl, **load_params(load)})
            if row is None:
                raise LeaseLost(f"lease of worker {worker_id!r} has expired or was removed")
            return lease_from_row(worker_id, row)

        return await self._on_lease(go, transaction=False, what="renewing the lease")

    async def set_draining(self, worker_id: str, draining: bool) -> bool:
        async def go(s: S) -> bool:
            # MySQL counts found rows: 1 even when the worker was already in that state.
            found = await s.count(self.q["set_draining"], {"worker": worker_id, "draining": draining}) == 1
            await s.notify()
            return found

        return await self._write(go, what="setting draining")

    async def leave(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        async def go(s: S) -> int:
            await self._advance_slots(s, slots)
            freed = await s.count(self.q["release_all"], {"worker": worker_id})
            await s.count(self.q["delete_worker"], {"worker": worker_id})
            await s.notify()
            return freed

        return await self._write(go, what="leaving the cluster")

    async def list_workers(self) -> list[WorkerInfo]:
        async def go(s: S) -> list[WorkerInfo]:
            return [worker_from_row(r) for r in await s.all(self.q["list_workers"])]

        return await self._read(go, what="listing workers")

    async def reap_workers(self, older_than: float) -> int:
        async def go(s: S) -> int:
            return await s.count(self.q["reap_workers"], {"older_than": older_than})

        return await self._write(go, what="reaping workers", single=True)

    # -- ownership --------------------------------------------------------------------------

    async def release_tasks(self, worker_id: str, slots: Sequence[SlotDone]) -> int:
        if not slots:
            return 0

        # One statement for the whole batch (a statement per task cost a round trip each),
        # each task once, in key order like every other writer, so that two never wait on
        # each other.
        tasks = json.dumps(sorted({(d.kind, d.key, d.term) for d in slots}), ensure_ascii=False)

        async def go(s: S) -> int:
            await self._advance_slots(s, slots)
            released = await s.count(self.q["release_tasks"], {"worker": worker_id, "tasks": tasks})
            if released:
                await s.notify()
            return released

        return await self._write(go, what="releasing tasks")

    async def owned_tasks(self, worker_id: str) -> list[Task]:
        async def go(s: S) -> list[Task]:
            return await tasks_from_rows(await s.all(self.q["owned_tasks"], {"worker": worker_id}))

        return await self._read(go, what="listing owned tasks")

    async def cluster_view(self) -> ClusterView:
        async def go(s: S) -> ClusterView:
            return cluster_view_from_rows(await s.all(self.q["cluster_view"]))

        return await self._read(go, what="reading the cluster view")

    async def listen(self, wake: Callable[[], None]) -> None:
        """Without :attr:`supports_listen`, return at once: workers rely on polling."""
        return

    # -- fencing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def fenced(
        self,
        *,
        worker_id: str,
        kind: str,
        key: str,
        term: int,
        slot: float | None = None,
        precommit: Callable[[], None] | None = None,
    ) -> AsyncIterator[FencedSession]:
        fence = Fence(worker_id=worker_id, kind=kind, key=key, term=term, slot=slot)
        async with self._fenced_session(fence) as tx, tx.lifetime(precommit):
            yield tx

    # -- runs -------------------------------------------------------------------------------

    async def list_runs(self, **where: Unpack[RunQuery]) -> list[Run]:
        query = full_run_query(where)
        args = {**query, "limit": int(query["limit"])}

        async def go(s: S) -> list[Run]:
            return [run_from_row(r) for r in await s.all(self.q["list_runs"], args)]

        return await self._read(go, what="listing runs")

    async def prune_runs(self, *, older_than: float) -> int:
        async def go(s: S) -> int:
            return await s.count(self.q["prune_runs"], {"older_than": older_than})

        return await self._write(go, what="pruning runs", single=True)
