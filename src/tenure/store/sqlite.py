"""The embedded store: one SQLite file shared by every process on one machine.

Write transactions start with ``BEGIN IMMEDIATE``, which takes SQLite's single write
lock at once: while a fenced transaction is open no other process can take its task
over, so the ownership check made at its start holds until its commit. Readers keep
reading (WAL). The clock is the host's (``julianday('now')``), shared by all processes
on the machine: the embedded store's clock promise is "one host, one clock".

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with options
``busy_timeout`` (seconds a writer waits for the lock, default 5), ``synchronous``
(``full`` by default, so a committed term survives power loss; ``normal`` is faster and
survives process crashes only) and ``pool`` (connections for fenced transactions and
admin work, default 4); the ranges are :data:`OPTIONS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import sqlite3
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import aiosqlite

from tenure.desired import DesiredTask
from tenure.errors import (
    InvalidStoreURL,
    LeaseLost,
    StatementRefused,
    StoreError,
    StoreUnavailable,
)
from tenure.inputs import quote
from tenure.models import Claim, Run, SlotDone
from tenure.store.fence import Fence, FencedSession, Op
from tenure.store.liveness import (
    FileLiveness,
    Liveness,
    holding,
    liveness_option,
    lock_file_free,
)
from tenure.store.rows import TASK_COLUMNS, done_before, run_params, task_from_row
from tenure.store.sqlfile import load_queries, split_statements
from tenure.store.sqlstore import Args, SQLStore, one_row
from tenure.store.statements import sqlite_pragma_allowed
from tenure.store.sync import desired_columns
from tenure.store.urls import MIN_TIMEOUT, NumberOption, number_options

log = logging.getLogger("tenure.store.sqlite")

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
Q = load_queries("sqlite", {"now": _NOW, "task_columns": TASK_COLUMNS})

T = TypeVar("T")

#: How often listen() looks at the wake file (seconds) where inotify is not available: a
#: handoff waits at most this long for the other workers to look for free tasks, instead
#: of a whole poll interval.
WAKE_CHECK = 0.05


def ring(path: Path) -> None:
    """Touch the wake file (creating it if need be), so that every listener wakes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.utime(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # listeners then find the change at their next poll
        log.warning("cannot touch the wake file %r: %s", str(path), exc)


#: inotify(7) events that touching the wake file makes: its creation, its times changed.
_IN_ATTRIB, _IN_MOVED_TO, _IN_CREATE = 0x004, 0x080, 0x100
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def wake_watch(path: Path) -> int | None:
    """An inotify descriptor (Linux) that turns readable when the wake file at ``path`` is
    touched, or None where there is none: :meth:`SQLiteStore.listen` then reads the file's
    status every :data:`WAKE_CHECK` seconds. The folder is watched, not the file, which may
    not exist yet (or be replaced)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            return None
        folder = os.fsencode(path.parent)
        if libc.inotify_add_watch(fd, folder, _IN_ATTRIB | _IN_CREATE | _IN_MOVED_TO) < 0:
            os.close(fd)
            return None
    except (OSError, AttributeError):
        return None
    return fd


def wake_events(fd: int, name: bytes) -> bool:
    """Read every pending event of a :func:`wake_watch` descriptor: True if one was the
    wake file's (the other files of the folder, the database's own, are passed over)."""
    touched = False
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return touched
        if not data:
            return touched
        at = 0
        while at + _EVENT.size <= len(data):
            _, _, _, length = _EVENT.unpack_from(data, at)
            if data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0") == name:
                touched = True
            at += _EVENT.size + length


def wake_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the wake file is touched (its status change time, nanoseconds)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def write_lock_free(path: Path, *, wait: float = 0.0) -> bool:
    """True if the write lock of the database file at ``path`` can be taken within ``wait``
    seconds (then given back at once): no process is inside a write transaction. For the
    demo and the tests, which look from outside the store whether a stopped worker left a
    transaction open."""
    with contextlib.closing(sqlite3.connect(path, timeout=wait, isolation_level=None)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            raise
        db.execute("ROLLBACK")
        return True


#: Longest file name (bytes) most file systems take (NAME_MAX): the database's ...
NAME_MAX = 255
#: ... and the longest name tenure and SQLite keep beside it: ``<name>-live-<20 hex digits>``
#: (a worker's liveness lock file; the ``-wal``, ``-shm`` and ``-wake`` files are shorter).
SIBLING_SUFFIX = len("-live-") + 20


#: tenure's options of a sqlite URL, besides ``synchronous``.
OPTIONS = (
    NumberOption(
        name="busy_timeout",
        default=5.0,
        unit="seconds",
        low=MIN_TIMEOUT,
        high=600,
        why="SQLite counts it in whole milliseconds, and 0 would not wait at all",
    ),
    NumberOption(name="pool", default=4, unit="connections", low=1, high=64, whole=True),
)


@dataclass(frozen=True)
class SQLiteOptions:
    """What a sqlite:// URL says besides the file."""

    busy_timeout: float
    synchronous: str  # FULL or NORMAL
    pool: int
    liveness: str  # session or lease


def parse_sqlite_url(url: str) -> tuple[Path, SQLiteOptions]:
    """Split a ``sqlite:///path`` URL into a file path and its options."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidStoreURL(f"sqlite URL {quote(url)} does not parse: {exc}") from None
    if parts.scheme != "sqlite":
        raise InvalidStoreURL(f"not a sqlite URL: {quote(url)}")
    if parts.netloc:
        raise InvalidStoreURL(
            f"sqlite URL {quote(url)} has a host part; write sqlite:///relative.db or sqlite:////abs.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise InvalidStoreURL(f"sqlite URL {quote(url)} names no file")
    if path == ":memory:":
        raise InvalidStoreURL("the embedded store needs a file shared by processes, not :memory:")
    if "\x00" in path:
        raise InvalidStoreURL(f"sqlite URL {quote(url)} names a file with a NUL character")
    name_bytes = len(os.fsencode(Path(path).name))
    if name_bytes > NAME_MAX - SIBLING_SUFFIX:
        # SQLite would open it, but a worker's lock file beside it could not be created.
        raise InvalidStoreURL(
            f"sqlite URL {quote(url)} names a file of {name_bytes} bytes; the limit is "
            f"{NAME_MAX - SIBLING_SUFFIX}, so that the files kept beside it (name-live-…) fit the file "
            f"system's {NAME_MAX}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = {k for k, _ in query} - {"busy_timeout", "synchronous", "pool", "liveness"}
    if unknown:
        raise InvalidStoreURL(f"unknown sqlite URL option(s): {', '.join(quote(u) for u in sorted(unknown)[:5])}")
    numbers = number_options("sqlite", query, OPTIONS)
    synchronous = [v for k, v in query if k == "synchronous"]
    if len(synchronous) > 1:
        raise InvalidStoreURL("sqlite URL option synchronous is given more than once")
    sync = (synchronous[0] if synchronous else "full").upper()
    if sync not in ("FULL", "NORMAL"):
        raise InvalidStoreURL(f"sqlite URL option synchronous must be full or normal, got {quote(synchronous[0])}")
    liveness = liveness_option("sqlite", query)
    return Path(path), SQLiteOptions(
        busy_timeout=numbers["busy_timeout"], synchronous=sync, pool=int(numbers["pool"]), liveness=liveness
    )


class _Authorizer:
    """SQLite's own refusal, when a handler's statement is prepared, of what a fenced
    transaction may not run: the second line behind :mod:`tenure.store.statements`.

    Installed once on every pooled connection and armed only while a handler's statement
    is prepared and run, on the connection's thread. (SQLite asks it when a statement is
    prepared, and the driver caches prepared statements by their text; every statement
    it would deny is also refused by the scanner, which sees every text first.)
    """

    _DENIED = frozenset(
        {
            sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH,
            # Temporary objects would outlive the transaction on a pooled connection.
            sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TABLE,
            sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW,
        }
    )  # fmt: skip
    _SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master", "sqlite_schema", "sqlite_temp_schema"})

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if not self.armed:
            return sqlite3.SQLITE_OK
        if action in self._DENIED:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_INSERT and db == "temp" and arg1 in self._SCHEMA_TABLES:
            # A temporary object made by naming the schema (CREATE TABLE "temp".t, a temp
            # trigger on a main table): SQLite asks only CREATE_TABLE for it, but every
            # one is a row added to the temp schema.
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and not sqlite_pragma_allowed(arg1 or "", arg2):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


class _Fenced(FencedSession):
    """The FencedTransaction handed to a handler (see :class:`FencedSession`).

    Each statement is one call on the connection's thread; the first also runs
    ``BEGIN IMMEDIATE`` (SQLite's only write lock, held from then on, keeps any takeover
    out) and the fence check. The final fence check, the slot and ``COMMIT`` run as one
    call there too, back to back: no other statement and no hop to the event loop between
    the check and the commit.
    """

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, authorizer: _Authorizer, fence: Fence) -> None:
        super().__init__(fence)
        self._conn = conn
        self._authorizer = authorizer
        self._guard = {"kind": fence.kind, "key": fence.key, "worker": fence.worker_id, "term": fence.term}
        self._open = False  # the connection's in_transaction, as its thread last saw it

    def backslash_escapes(self) -> bool | None:
        return False

    def in_transaction(self) -> bool:
        return self._open

    def _holds(self, db: sqlite3.Connection) -> bool:
        cur = db.execute(Q["fence_check"], self._guard)
        try:
            return cur.fetchone() is not None
        finally:
            cur.close()

    async def _begin(self, then: Callable[[sqlite3.Connection], T]) -> T:
        """``BEGIN IMMEDIATE`` and the fence check, then ``then``, as one call."""
        self.begun = True

        def call(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            if not self._holds(db):
                db.rollback()
                raise self.fence.not_owner()
            return then(db)

        try:
            return await _on_thread(self._conn, call)
        except sqlite3.OperationalError as exc:
            if not self._conn.in_transaction:  # BEGIN IMMEDIATE itself waited past busy_timeout
                self.begun = False
                raise StoreUnavailable(f"SQLite store is busy: {exc}") from exc
            raise

    async def send(self, op: Op, sql: str, params: Any) -> Any:
        def statement(db: sqlite3.Connection) -> Any:
            self._authorizer.armed = True
            try:
                if op == "executemany":
                    db.executemany(sql, params).close()
                    return None
                cur = db.execute(sql, params)
                try:
                    if op == "execute":
                        return cur.rowcount
                    if op == "fetchall":
                        return [tuple(r) for r in cur.fetchall()]
                    row = cur.fetchone()
                    return None if row is None else tuple(row)
                finally:
                    cur.close()  # an unfinished statement would make COMMIT fail
            except sqlite3.DatabaseError as exc:
                if "not authorized" in str(exc):
                    raise StatementRefused(
                        f"SQLite's authorizer refused a statement in the fenced transaction of {self.fence.what}: "
                        "it would end or change the transaction, or the connection"
                    ) from exc
                raise
            finally:
                self._authorizer.armed = False
                self._open = db.in_transaction

        if self.begun:
            return await _on_thread(self._conn, statement)
        return await self._begin(statement)

    async def commit(self) -> None:
        slot = self.fence.slot

        def finish(db: sqlite3.Connection) -> None:
            if not self._holds(db):
                db.rollback()
                raise self.fence.expired()
            if slot is not None:
                db.execute(Q["advance_slot"], {**self._guard, "slot": slot, "triggered": 0}).close()
            db.execute("COMMIT")

        if self.begun:
            await _on_thread(self._conn, finish)
        else:
            await self._begin(finish)
        self.reusable = True

    def translate(self, exc: Exception) -> Exception:
        return _translate(exc) if isinstance(exc, sqlite3.Error) else exc

    async def roll_back(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            await _on_thread(self._conn, lambda db: db.rollback())
            self.reusable = True


class _Session:
    """A pooled connection as the shared store methods use it (see :class:`Session`).

    Cursors are closed as soon as read: a statement left unfinished (a RETURNING or a
    SELECT read for one row, kept alive by a traceback) makes SQLite refuse COMMIT with
    "SQL statements in progress".
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        #: Touch the wake file once the transaction commits.
        self.woken = False

    async def one(self, sql: str, args: Args = None) -> Any:
        async with self.conn.execute(sql, args or {}) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, args: Args = None) -> list[Any]:
        async with self.conn.execute(sql, args or {}) as cur:
            return list(await cur.fetchall())

    async def count(self, sql: str, args: Args = None) -> int:
        async with self.conn.execute(sql, args or {}) as cur:
            return cur.rowcount

    async def runmany(self, sql: str, rows: Sequence[Any]) -> None:
        await self.conn.executemany(sql, rows)

    async def notify(self) -> None:
        self.woken = True


class SQLiteStore(SQLStore[_Session]):
    """The embedded store (see the module docstring)."""

    dialect = "sqlite"
    supports_listen = True
    q = Q

    def __init__(self, url: str) -> None:
        self._path, options = parse_sqlite_url(url)
        self._url = url
        self._busy_timeout = options.busy_timeout
        self._pool_size = options.pool
        self._synchronous = options.synchronous
        self._session_liveness = options.liveness == "session"
        #: Touched after a commit that frees tasks or changes them: listen() watches it.
        self._wake_path = self._path.resolve().with_name(f"{self._path.name}-wake")
        self._liveness: dict[str, Liveness] = {}
        self._pool: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []
        self._lease_conn: aiosqlite.Connection | None = None
        self._lease_lock = asyncio.Lock()
        self._authorizers: dict[aiosqlite.Connection, _Authorizer] = {}

    @property
    def display_url(self) -> str:
        return self._url

    # -- connections ----------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
            try:
                await self._use_wal(conn)
                await conn.execute(f"PRAGMA synchronous={self._synchronous}")
                # Claims and the cluster view test other workers' lock files from SQL.
                await conn.create_function("tenure_lock_free", 1, lock_file_free)
                authorizer = _Authorizer()
                await conn.set_authorizer(authorizer)
            except BaseException:
                # Its thread would outlive the store (and the event loop) otherwise.
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {quote(str(self._path))}: {exc}") from exc
        self._all.append(conn)
        self._authorizers[conn] = authorizer
        return conn

    async def _use_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch the file to WAL, waiting for other openers as any other statement would.

        Several processes opening a new file at once race to switch its journal mode, and
        SQLite answers the losers "database is locked" at once, without the busy handler:
        they retry until the busy timeout instead.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                await conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.01)

    def _connected(self) -> bool:
        return bool(self._all)

    async def _open_connections(self) -> None:
        parent = self._path.parent
        try:
            is_dir = parent.is_dir()
        except OSError as exc:  # a path too long for the system, a loop of links...
            raise StoreUnavailable(f"cannot open SQLite store {quote(str(self._path))}: {exc.strerror}") from exc
        if not is_dir:
            raise StoreUnavailable(f"cannot open SQLite store: folder {quote(str(parent))} does not exist")
        try:
            for _ in range(self._pool_size):
                self._pool.put_nowait(await self._connect())
            # Lease upkeep gets its own connection so it never queues behind handlers' work.
            self._lease_conn = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conns, self._all = self._all, []
        self._schema_ok = False
        for conn in conns:
            with contextlib.suppress(sqlite3.Error, ValueError):  # best effort on the way out
                await conn.close()
        self._pool = asyncio.Queue()
        self._lease_conn = None
        self._authorizers = {}

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[aiosqlite.Connection]:
        if not self._all:
            raise StoreError("the store is not open")
        conn = await self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put_nowait(conn)

    async def _read(self, fn: Callable[[_Session], Awaitable[T]], *, what: str) -> T:
        async with self._conn() as conn:
            return await self._in_tx(conn, fn, write=False)

    async def _write(self, fn: Callable[[_Session], Awaitable[T]], *, what: str, single: bool = False) -> T:
        async with self._conn() as conn:
            return await self._in_tx(conn, fn, write=True)

    async def _in_tx(self, conn: aiosqlite.Connection, fn: Callable[[_Session], Awaitable[T]], *, write: bool) -> T:
        """Run ``fn`` in one transaction on ``conn`` (``BEGIN IMMEDIATE`` to write),
        translating errors; touch the wake file after a commit that asked to notify."""
        s = _Session(conn)
        try:
            await _begin(conn, "BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = await fn(s)
                await conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed or was cancelled: a connection must never
                # go back to the pool inside a transaction.
                await asyncio.shield(_rollback(conn))
                raise
            if s.woken:
                ring(self._wake_path)
            return result
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    # -- schema -------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return str(self._path)

    async def _run_script(self, s: _Session, script: str) -> None:
        # executescript would commit our transaction; run statements one by one.
        for statement in split_statements(script):
            await s.count(statement)

    # -- kinds and tasks ------------------------------------------------------------------

    async def _sync_write(self, s: _Session, query: str, kind: str, tasks: Sequence[DesiredTask]) -> None:
        # The write lock (BEGIN IMMEDIATE) keeps every other writer out from the read to
        # the commit. New and changed rows go through executemany: one prepared statement
        # run in-process per row, as cheap as a batch statement here, with periods bound
        # as the very doubles compared at the next sync rather than through JSON text.
        sql = Q["insert_task" if query == "sync_add" else query]
        await s.runmany(sql, [_row(kind, d) for d in tasks])

    def _array(self, values: list[str]) -> Any:
        return json.dumps(values)

    # -- membership -----------------------------------------------------------------------

    async def _on_lease(self, fn: Callable[[_Session], Awaitable[T]], *, transaction: bool, what: str) -> T:
        # Always a write transaction: SQLite has no round trips to save.
        if self._lease_conn is None:
            raise StoreError("the store is not open")
        async with self._lease_lock:
            return await self._in_tx(self._lease_conn, fn, write=True)

    def hold_liveness(self, worker_id: str, *, check_every: float) -> AbstractAsyncContextManager[Liveness]:
        # A lock file cannot be taken from a live process: nothing to watch.
        if not self._session_liveness:
            return holding(self._liveness, Liveness(worker_id))
        return holding(self._liveness, FileLiveness(worker_id, self._path))

    # -- ownership ------------------------------------------------------------------------

    async def claim_tasks(self, worker_id: str, *, kinds: Sequence[str], limit: int, start: int = 0) -> list[Claim]:
        if limit <= 0 or not kinds:
            return []

        async def go(s: _Session) -> list[Claim]:
            live = await s.one(Q["worker_is_live"], {"worker": worker_id})
            if live is None or not live[0]:
                raise LeaseLost(f"worker {worker_id!r} has no live lease; it cannot claim tasks")
            if await s.count(Q["end_dead_leases"], {"worker": worker_id}):
                # The dead workers' tasks are free: wake the others to claim their shares
                # now, as a release does (the claimer was woken by its watch, or polled).
                await s.notify()
            candidates = await s.all(Q["claim_candidates"], {"kinds": json.dumps(list(kinds)), "limit": limit})
            if not candidates:
                return []
            (last_term,) = await one_row(s, Q["take_terms"], {"count": len(candidates)})
            first_term = int(last_term) - len(candidates) + 1
            # One call each on the connection's thread, not two per task: the claimers woken
            # by a release queue for SQLite's one write lock, one whole claim after another.
            await s.runmany(
                Q["claim_one"],
                [
                    {"worker": worker_id, "term": term, "had_owner": had_owner,
                     "old_expiry": old_expiry, "kind": kind, "key": key}
                    for term, (kind, key, old_expiry, had_owner) in enumerate(candidates, start=first_term)
                ],
            )  # fmt: skip
            rows = await s.all(Q["claimed_tasks"], {"worker": worker_id, "first": first_term, "last": int(last_term)})
            if len(rows) != len(candidates):  # pragma: no cover - the write lock is ours
                raise StoreError(f"claimed {len(candidates)} tasks but found {len(rows)} with their new terms")
            tasks = [task_from_row(r) for r in rows]
            return [Claim(task=t, done_before=done_before(t)) for t in tasks]

        return await self._write(go, what="claiming tasks")

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever tasks are released or changed; runs until cancelled.

        SQLite cannot notify, but its processes share one host: a commit that frees or
        changes tasks touches the file ``<db>-wake``. On Linux an inotify watch of its
        folder turns readable at once (no statement, no timer: the idle cluster sends the
        database nothing more); elsewhere this reads the file's status every
        :data:`WAKE_CHECK` seconds. Calls ``wake`` once at the start, as a listener that
        has just connected would.
        """
        fd = wake_watch(self._wake_path)
        if fd is None:
            await self._listen_by_stat(wake)
            return
        loop = asyncio.get_running_loop()
        name = os.fsencode(self._wake_path.name)

        def readable() -> None:
            if wake_events(fd, name):
                wake()

        loop.add_reader(fd, readable)
        try:
            wake()
            await asyncio.Event().wait()  # until cancelled
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _listen_by_stat(self, wake: Callable[[], None]) -> None:
        wake()
        last = wake_stamp(self._wake_path)
        while True:
            await asyncio.sleep(WAKE_CHECK)
            stamp = wake_stamp(self._wake_path)
            if stamp != last:
                last = stamp
                wake()

    # -- fencing --------------------------------------------------------------------------

    @asynccontextmanager
    async def _fenced_session(self, fence: Fence) -> AsyncIterator[_Fenced]:
        async with self._conn() as conn:
            tx = _Fenced(conn, self._authorizers[conn], fence)
            try:
                yield tx
            finally:
                if not tx.reusable or tx.discard:
                    # A call of ours may still be queued or running on the connection's
                    # thread (its caller was cancelled): a rollback queued behind it ends
                    # whatever it began before anyone else uses the connection.
                    _queue_rollback(conn)

    # -- runs -----------------------------------------------------------------------------

    async def _advance_slots(self, s: _Session, slots: Sequence[SlotDone]) -> None:
        if slots:
            await s.runmany(
                Q["advance_slot"],
                [
                    {"kind": d.kind, "key": d.key, "term": d.term, "slot": d.slot, "triggered": d.triggered}
                    for d in slots
                ],
            )

    async def record_runs(self, runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        if not runs and not slots:
            return

        async def go(s: _Session) -> None:
            if runs:
                await s.runmany(Q["insert_run"], [run_params(r) for r in runs])
            await self._advance_slots(s, slots)

        await self._write(go, what="recording runs")


# -- helpers ------------------------------------------------------------------------------


# aiosqlite runs every call on a connection in order, on the connection's own thread. Two of
# its internals let a fenced transaction use that: ``_execute`` runs a function of ours
# there as one call (a fence check and its COMMIT with nothing between them), and ``_tx``
# queues one at once, without awaiting (a rollback that must be ahead of the connection's
# next user). aiosqlite is pinned to 0.22.x for them.


async def _on_thread(conn: aiosqlite.Connection, call: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``call`` with the connection's sqlite3 connection, on its thread, as one call."""
    run = cast(Callable[[Callable[[], T]], Awaitable[T]], conn._execute)
    return await run(lambda: call(conn._conn))


def _queue_rollback(conn: aiosqlite.Connection) -> None:
    """Queue a rollback on the connection's thread now, behind every call queued so far."""

    def rollback() -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):
            conn._conn.rollback()

    conn._tx.put_nowait((None, rollback))


async def _begin(conn: aiosqlite.Connection, sql: str) -> None:
    """Start a transaction, leaving none open if the caller is cancelled meanwhile.

    aiosqlite runs a statement in the connection's thread whatever becomes of the task
    awaiting it: a ``BEGIN IMMEDIATE`` still waiting for the write lock when its caller is
    cancelled (a run past its timeout, a worker stopping) would take the lock later, on
    a connection back in the pool with nobody to end its transaction, and hold SQLite's
    write lock against every process. A rollback queued behind it (the thread runs
    statements in order) ends that transaction before anyone else uses the connection.
    """
    try:
        await conn.execute(sql)
    except asyncio.CancelledError:
        await asyncio.shield(_rollback(conn))
        raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # no transaction was open: BEGIN itself failed
        await conn.execute("ROLLBACK")


def _translate(exc: sqlite3.Error) -> StoreError:
    """The store's error for a driver error: never the driver's own, so that callers that
    handle StoreError (the worker's loops) survive it, also for a constraint a known case
    did not catch (those raise TaskExists and the like)."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return StoreUnavailable(f"SQLite store is busy: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"SQLite constraint failed: {exc}")
    return StoreError(f"SQLite error: {exc}")


def _row(kind: str, d: DesiredTask) -> dict[str, Any]:
    key, every, cron, params, enabled = desired_columns(d)
    return {"kind": kind, "key": key, "every": every, "cron": cron, "params": params, "enabled": int(enabled)}
