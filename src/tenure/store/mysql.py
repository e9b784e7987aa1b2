"""The MySQL/MariaDB store, on asyncmy (async) with a connection pool.

Supported servers: **MySQL 8.0.17+** and **MariaDB 10.6+**. Claims need
``SKIP LOCKED`` (MySQL 8.0.1, MariaDB 10.6) and ``JSON_TABLE`` (MySQL 8.0.4, MariaDB
10.6), and names compare byte for byte under a binary NO PAD collation
(``utf8mb4_0900_bin``, MySQL 8.0.17; ``utf8mb4_nopad_bin``, MariaDB). :meth:`open`
reads the server's version and refuses older ones.

How the contract's guarantees are kept here:

- **The clock.** Every lease decision uses ``SYSDATE(6)``, the server's clock when the
  expression is *evaluated*. ``NOW(6)`` would be the time the *statement started*
  (unlike PostgreSQL's ``now()`` it is not frozen for a whole transaction, but a
  statement that waited on a row lock would still judge a lease by the time before the
  wait: a renewal queued behind a lock past the lease's end would revive it). Sessions
  run with ``time_zone = '+00:00'`` so that no daylight-saving jump ever falls inside a
  statement, and the expression subtracts the session's offset anyway
  (``NOW(6) - UTC_TIMESTAMP(6)``, exact: both are the statement's start), so a handler
  that changes its session's time zone cannot skew the clock. (Handlers' own SQL thus
  sees ``NOW()`` in UTC; ``TIMESTAMP`` columns hold the same instants.) ``TIMESTAMPDIFF`` from
  1970 rather than ``UNIX_TIMESTAMP()``, which stops at 2038 on MariaDB before 11.5 and
  MySQL before 8.0.28. Times are stored as ``DOUBLE`` epoch seconds, never
  ``TIMESTAMP``. With ``--sysdate-is-now`` a server turns ``SYSDATE()`` into ``NOW()``:
  still correct, only judged at statement start.
- **Claims** lock free task rows with ``SELECT … FOR UPDATE SKIP LOCKED`` and write
  owner and terms to all of them in one ``UPDATE`` joined to a ``JSON_TABLE`` of the
  claimed keys (MySQL has no ``UPDATE … FROM`` nor ``RETURNING``); run records' slots are
  advanced, and releases applied, the same way, one statement per batch. A claim first
  reads, without locking, which workers' liveness locks are free; only if some are does
  it lock their rows (``SKIP LOCKED``: a row another claim holds is passed over) to end
  their leases, and judge owners by their locks too.
- **Terms** come from one counter row, taken with
  ``UPDATE … SET value = LAST_INSERT_ID(value + n)``. It commits (or rolls back) with
  the claim that uses it, so the counter is never behind a stored term, even after a
  crash. (An ``AUTO_INCREMENT`` table would not hand out a consecutive block per claim
  under ``innodb_autoinc_lock_mode = 2`` and grows a table to clean; MariaDB's
  sequences do not exist on MySQL.)
- **Found rows.** Connections set ``CLIENT_FOUND_ROWS``: an ``UPDATE`` then counts the
  rows its ``WHERE`` matched, not only those whose values changed, so a guarded update
  that writes equal values (``set_draining`` twice) is not mistaken for a missing row
  or a lost lease. Handlers' ``tx.execute`` counts the same way as on PostgreSQL.
- **Isolation is READ COMMITTED** on every session. InnoDB's default, REPEATABLE READ,
  makes plain reads see the snapshot taken at the transaction's first read while
  locking reads and writes see the latest committed rows: a fenced transaction's
  re-check before commit would judge the lease by the worker row as it was when the
  transaction began, ignoring the renewals since (a handler longer than the TTL could
  never commit). REPEATABLE READ also takes gap and next-key locks, and keeps the lock
  on every row a locking scan examined; READ COMMITTED releases the rows that did not
  match, so a claim scanning past tasks of live owners does not block their commits.
- **Fenced transactions** lock the task row (``SELECT … FOR UPDATE``) after checking
  owner, term and lease (liveness is a subquery, whose rows InnoDB does not lock), claims
  pass over locked rows (``SKIP LOCKED``), and the lease is checked again on the server's
  clock just before ``COMMIT``.
- **A paused worker cannot block a takeover** past the failover bound: sessions carry
  ``innodb_lock_wait_timeout`` and ``lock_wait_timeout`` (``lock_timeout``) and an idle
  transaction limit (``idle_tx_timeout``): MariaDB's ``idle_transaction_timeout`` ends a
  session left idle inside a transaction. MySQL has no such setting: its sessions get
  ``wait_timeout = idle_tx_timeout`` instead, which ends *any* session idle that long,
  so the pool recycles idle connections well before (and reconnects). Both get
  ``net_read_timeout`` / ``net_write_timeout`` of the same length, for a client paused
  in the middle of a packet. The server rolls back what a killed session held.
- **Sessions** also pin each flavor's default ``sql_mode`` (strict), so a server
  configured with ``ANSI_QUOTES``, ``ORACLE`` or a non-strict mode cannot change how
  tenure's SQL parses or silently cut what it stores.
- **Lease upkeep** has a connection of its own, so renewals never queue behind
  handlers' transactions: the liveness lock's (below), as on PostgreSQL, or with
  ``liveness=lease`` a pool of one; a renewal is two autocommitted statements (the
  update, then a read of it) rather than a transaction. Waiting for a free pooled connection is bounded
  by ``connect_timeout`` (then :class:`~tenure.errors.StoreUnavailable`).
- **Wake-ups without notifications.** MySQL has no ``LISTEN``/``NOTIFY``. Each worker's
  *wait connection* waits up to a heartbeat for the liveness lock of the worker it
  watches (``GET_LOCK``, let go at once if taken: that worker is gone; see
  :mod:`tenure.store.liveness`), or for its own while it watches none, then checks that
  its own lock is still held by its liveness session: the wait is the liveness probe,
  so an idle cluster sends nothing more than it did. (Not ``SLEEP``: all sleepers share
  one server mutex, on which a ``KILL`` spins for up to 2 s when several are killed at
  once.) A transaction that frees or changes
  tasks (the ones that notify on PostgreSQL) moves a wake counter before it commits, and
  then reads the sessions inside a wait of this database
  (``information_schema.PROCESSLIST``) and sends each a ``KILL QUERY``: the interrupted
  wait wakes its worker, which polls at once. Those connections run nothing but waits,
  so a kill can only end a wait. A kill that reaches none (sent between two waits, or as
  one ends on its own: the server drops it) loses nothing: a wait does not wait if the
  counter moved since the previous one read it (:class:`_Waits`). The liveness lock sits
  on another connection, which sends nothing once it holds the lock but the lease's
  short statements, so the lock still dies the moment its process does (the server
  notices a closed socket between statements, not during a statement such as a wait).
  Waking needs users that see and may end each other's sessions: every worker as one
  database user, or ``CONNECTION ADMIN``; where the server refuses
  the kill, the store says so once and workers poll. With ``liveness=lease`` there are no
  waits, and workers poll.

Cancelling an operation mid-statement closes its connection (never reused, the server
rolls back) and, if a statement was running, kills it on the server from a fresh
connection, so it does not go on holding locks.

URL: ``mysql://user:password@host:port/dbname?…`` (or ``mariadb://``). tenure's own
options, removed before connecting: ``pool`` (connections, default 8),
``idle_tx_timeout`` (seconds, default 2), ``lock_timeout`` (seconds, default 5),
``connect_timeout`` (seconds, default 5); MySQL counts them in whole seconds, rounded
up; their ranges are :data:`OPTIONS`. Driver options: ``unix_socket`` (path), ``ssl`` (``true``/``false``), ``ssl_ca``,
``ssl_cert``, ``ssl_key`` (paths; any of them turns TLS on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncmy
import asyncmy.errors
from asyncmy.connection import Connection
from asyncmy.constants import CLIENT, SERVER_STATUS
from asyncmy.pool import Pool

from tenure.desired import DesiredTask
from tenure.errors import (
    InvalidStoreURL,
    LeaseLost,
    StoreError,
    StoreUnavailable,
    TenureError,
    WorkerIdInUse,
)
from tenure.inputs import quote
from tenure.models import Claim, ClusterView, Lease, Run, SlotDone, WorkerLoad
from tenure.store.fence import Fence, FencedSession, Op
from tenure.store.liveness import (
    POOLING_HINT,
    Liveness,
    held_token,
    holding,
    listen,
    liveness_option,
    mysql_name,
    stopped,
)
from tenure.store.rows import (
    TASK_COLUMNS,
    CountedTasks,
    done_before,
    encode_worker_kinds,
    load_params,
    merged_slots,
    run_params,
    task_from_row,
)
from tenure.store.sqlfile import load_queries, split_statements
from tenure.store.sqlstore import SQLStore, lease_from_row
from tenure.store.sync import batches, desired_columns, task_size
from tenure.store.urls import hide_password, number_options, server_options, shown

log = logging.getLogger("tenure.store.mysql")

T = TypeVar("T")

#: The server's clock at evaluation, in epoch seconds, whatever the session's time zone.
_NOW = (
    "((TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', SYSDATE(6))"
    " - TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), NOW(6))) / 1e6)"
)
#: The statement's start, in epoch seconds: constant within a statement (index-friendly).
_STMT_NOW = "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) / 1e6)"

#: Run records a multi-row INSERT: the loop turns between statements of a flush.
_INSERT_ROWS = 250
#: Oldest servers with SKIP LOCKED, JSON_TABLE and a binary NO PAD collation.
MIN_MYSQL = (8, 0, 17)
MIN_MARIADB = (10, 6, 0)

_COLLATION = {"mysql": "utf8mb4_0900_bin", "mariadb": "utf8mb4_nopad_bin"}
_Q = {
    flavor: load_queries(
        "mysql",
        {
            "now": _NOW,
            "stmt_now": _STMT_NOW,
            "collation": collation,
            "task_columns": TASK_COLUMNS.replace(" key,", " `key`,"),
            "task_columns_t": ", ".join(f"t.`{c.strip()}`" for c in TASK_COLUMNS.split(",")),
        },
    )
    for flavor, collation in _COLLATION.items()
}

#: The SQL mode of every session: each flavor's own default, pinned, so that a server
#: configured otherwise (ANSI_QUOTES, ORACLE, EMPTY_STRING_IS_NULL, non-strict, …) cannot
#: change how tenure's SQL parses or what it stores. Strict: a value that does not fit is
#: an error, never silently cut. Handlers' SQL in fenced transactions runs under it too.
_SQL_MODE = {
    "mysql": "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
    "mariadb": "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
}

#: The servers take these timeouts in whole seconds, from 1 to a year (lock_wait_timeout,
#: wait_timeout and idle_transaction_timeout all stop at 31536000).
_SECONDS_WHY = "MySQL and MariaDB count it in whole seconds (rounded up), up to a year"
#: tenure's own options, removed before connecting.
OPTIONS = server_options(timeout_high=31536000, why=_SECONDS_WHY)
_OWN_OPTIONS = {o.name for o in OPTIONS} | {"liveness"}
_DRIVER_OPTIONS = {"unix_socket", "ssl", "ssl_ca", "ssl_cert", "ssl_key"}

# Error numbers that mean "the server or the connection is not there right now".
_CONNECTION_ERRORS = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1152,  # aborted connection
    1158,  # net read error
    1159,  # net read timeout
    1160,  # net write error
    1161,  # net write timeout
    1927,  # MariaDB: connection was killed (idle_transaction_timeout, KILL)
    4031,  # MySQL: disconnected by the server for inactivity (wait_timeout)
}
# Error numbers after which the connection is fine but the store could not do its work now.
_TRANSIENT_ERRORS = {
    1205,  # lock wait timeout
    1213,  # deadlock (the server rolled the transaction back)
    1290,  # --read-only (a failover in progress)
    1792,  # read-only transaction
    1836,  # read-only mode
    1317,  # query interrupted (KILL QUERY)
    1969,  # MariaDB: max_statement_time exceeded
    3024,  # MySQL: max_execution_time exceeded
}


@dataclass(frozen=True)
class MySQLOptions:
    """What a mysql:// URL says: where to connect, and tenure's own settings."""

    host: str | None
    port: int
    user: str | None
    password: str
    database: str
    unix_socket: str | None
    ssl: dict[str, Any] | bool | None
    pool: int
    idle_tx_timeout: int
    lock_timeout: int
    connect_timeout: int
    liveness: str = "session"


def parse_mysql_url(url: str) -> MySQLOptions:
    """Parse a ``mysql://`` or ``mariadb://`` URL. Raises :class:`InvalidStoreURL`."""
    url_shown = shown(url)
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as exc:
        raise InvalidStoreURL(f"mysql URL {url_shown} does not parse: {exc}") from None
    if parts.scheme not in ("mysql", "mariadb"):
        raise InvalidStoreURL(f"not a mysql URL: {url_shown}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise InvalidStoreURL(f"mysql URL {url_shown} names no database (mysql://user@host/dbname)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = {k for k, _ in query} - _OWN_OPTIONS - _DRIVER_OPTIONS
    if unknown:
        raise InvalidStoreURL(
            f"unknown mysql URL option(s): {', '.join(quote(u) for u in sorted(unknown)[:5])} "
            f"(known: {', '.join(sorted(_OWN_OPTIONS | _DRIVER_OPTIONS))})"
        )
    values = dict(query)
    numbers = number_options("mysql", query, OPTIONS)
    unix_socket = values.get("unix_socket") or None
    if not parts.hostname and not unix_socket:
        raise InvalidStoreURL(f"mysql URL {url_shown} names no host")
    ssl: dict[str, Any] | bool | None = None
    flag = values.get("ssl", "").lower()
    if flag not in ("", "true", "false", "1", "0", "yes", "no"):
        raise InvalidStoreURL(f"mysql URL option ssl must be true or false, not {quote(values['ssl'])}")
    files = {k[4:]: values[k] for k in ("ssl_ca", "ssl_cert", "ssl_key") if values.get(k)}
    if files:
        ssl = files
    elif flag in ("true", "1", "yes"):
        ssl = True
    return MySQLOptions(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else "",
        database=database,
        unix_socket=unix_socket,
        ssl=ssl,
        pool=int(numbers["pool"]),
        idle_tx_timeout=math.ceil(numbers["idle_tx_timeout"]),
        lock_timeout=math.ceil(numbers["lock_timeout"]),
        connect_timeout=math.ceil(numbers["connect_timeout"]),
        liveness=liveness_option("mysql", query),
    )


def connect_args(o: MySQLOptions) -> dict[str, Any]:
    """``asyncmy.connect()``'s arguments for the database of a parsed URL: utf8mb4, and
    autocommit (transactions are explicit: BEGIN … COMMIT)."""
    return {
        "host": o.host,
        "port": o.port,
        "user": o.user,
        "password": o.password,
        "database": o.database,
        "unix_socket": o.unix_socket,
        "ssl": o.ssl,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": o.connect_timeout,
    }


@dataclass(frozen=True)
class _Server:
    """What :meth:`MySQLStore.open` learnt about the server."""

    flavor: str  # "mysql" or "mariadb"
    version: tuple[int, int, int]
    banner: str


def parse_server_version(banner: str) -> _Server:
    """Tell MySQL from MariaDB and read the version from ``SELECT VERSION()``."""
    flavor = "mariadb" if "mariadb" in banner.lower() else "mysql"
    text = banner
    if flavor == "mariadb" and text.startswith("5.5.5-"):  # old replication-compatible prefix
        text = text[len("5.5.5-") :]
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if m is None:
        raise StoreError(f"cannot read the server version from {banner!r}")
    major, minor, patch = (int(g) for g in m.groups())
    return _Server(flavor=flavor, version=(major, minor, patch), banner=banner)


def check_server_version(server: _Server) -> None:
    """Refuse servers without what this store relies on (raises :class:`StoreError`)."""
    minimum = MIN_MARIADB if server.flavor == "mariadb" else MIN_MYSQL
    if server.version < minimum:
        raise StoreError(
            f"{'MariaDB' if server.flavor == 'mariadb' else 'MySQL'} {server.banner} is too old for tenure: "
            f"it needs MySQL {'.'.join(map(str, MIN_MYSQL))}+ or MariaDB {'.'.join(map(str, MIN_MARIADB))}+ "
            "(SKIP LOCKED, JSON_TABLE and a binary NO PAD collation)"
        )


# -- errors -------------------------------------------------------------------------------


def _errno(exc: BaseException) -> int:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _connection_lost(exc: BaseException) -> bool:
    """Is the connection unusable after ``exc`` (it must be closed, never reused)?"""
    if isinstance(exc, OSError | asyncmy.errors.InterfaceError):
        return True
    if isinstance(exc, asyncmy.errors.Error):
        n = _errno(exc)
        return 2000 <= n < 3000 or n in _CONNECTION_ERRORS or n == 0
    return False


def _unavailable(exc: BaseException) -> bool:
    """Does ``exc`` mean the store cannot answer right now (worth retrying later)?"""
    return _connection_lost(exc) or (isinstance(exc, asyncmy.errors.Error) and _errno(exc) in _TRANSIENT_ERRORS)


def _translate(exc: BaseException, what: str) -> StoreError:
    if _unavailable(exc):
        return StoreUnavailable(f"MySQL store unavailable {what}: {exc}")
    return StoreError(f"MySQL error {what}: {exc}")


_DRIVER_ERRORS = (asyncmy.errors.Error, OSError)


# -- connections --------------------------------------------------------------------------


class _Session:
    """One connection taken from a pool, and what is known of its state.

    ``busy``: a statement was sent and its answer not read (the task was cancelled
    meanwhile); ``broken``: the connection failed. Either way it is closed, never reused.
    ``error`` is the last driver error one of its statements raised.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.busy = False
        self.broken = False
        self.error: BaseException | None = None
        #: Wake the waiting workers once the transaction commits.
        self.woken = False

    @property
    def reusable(self) -> bool:
        return not (self.busy or self.broken)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        self.busy = True
        try:
            result = await fn()
        except _DRIVER_ERRORS as exc:
            # The server answered with an error (the connection is fine), or the
            # connection failed (it is not).
            self.busy = False
            self.broken = self.broken or _connection_lost(exc)
            self.error = exc
            raise
        self.busy = False
        return result

    async def run(self, sql: str, args: Any = None) -> tuple[int, list[tuple[Any, ...]], int]:
        """Run one statement: (row count, rows, last insert id)."""

        async def go() -> tuple[int, list[tuple[Any, ...]], int]:
            cur = self.conn.cursor()
            rowcount = await cur.execute(sql, args)
            rows = [tuple(r) for r in await cur.fetchall()] if cur.description else []
            lastrowid = int(cur.lastrowid or 0)
            await cur.close()
            return rowcount, rows, lastrowid

        return await self._call(go)

    async def runmany(self, sql: str, rows: Sequence[Any]) -> None:
        async def go() -> None:
            cur = self.conn.cursor()
            await cur.executemany(sql, rows)
            await cur.close()

        await self._call(go)

    async def one(self, sql: str, args: Any = None) -> tuple[Any, ...] | None:
        _, rows, _ = await self.run(sql, args)
        return rows[0] if rows else None

    async def all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        return (await self.run(sql, args))[1]

    async def count(self, sql: str, args: Any = None) -> int:
        return (await self.run(sql, args))[0]

    async def notify(self) -> None:
        """MySQL cannot notify: the store interrupts the workers' waits once the
        transaction commits (:meth:`MySQLStore._wake_listeners`)."""
        self.woken = True

    async def begin(self) -> None:
        await self._call(self.conn.begin)

    async def commit(self) -> None:
        await self._call(self.conn.commit)

    async def rollback(self) -> None:
        """Roll back if the connection can; otherwise leave it to be closed (the server
        rolls back a closed session). Never raises a driver error."""
        if self.reusable:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._call(self.conn.rollback)

    async def batch(self, sql: str) -> tuple[int, list[tuple[Any, ...]]]:
        """Run statements sent as one text, in one round trip (the server runs them in
        order and stops at the first error); return the last one's (row count, rows)."""

        async def go() -> tuple[int, list[tuple[Any, ...]]]:
            cur = self.conn.cursor()
            await cur.execute(sql)  # no arguments: the text is sent as it is
            while True:
                rows = [tuple(r) for r in await cur.fetchall()] if cur.description else []
                count: int = cur.rowcount  # type: ignore[assignment]  # an int; asyncmy types it object
                last = (count, rows)
                if not await cur.nextset():
                    break
            await cur.close()
            return last

        return await self._call(go)

    def mogrify(self, sql: str, args: Any) -> str:
        """``sql`` with ``args`` quoted into it, as the driver would send it."""
        text: str = self.conn.cursor().mogrify(sql, args)
        return text


def _fence_refused(exc: BaseException) -> bool:
    """Is ``exc`` the tenure_fence procedure saying the fence does not hold?"""
    return isinstance(exc, asyncmy.errors.Error) and _errno(exc) == 1644 and "tenure: fence" in str(exc)


class _Fenced(FencedSession):
    """The FencedTransaction handed to a handler (see :class:`FencedSession`).

    Its connection is taken from the pool at the first statement, never before. Round
    trips: ``START TRANSACTION``, the fence (``CALL tenure_fence``, which locks the task
    row or fails) and the handler's first statement go as one text; each later statement
    is one round trip; the final fence check (which records the slot) and ``COMMIT`` go
    as one text, the check stopping the batch if it fails, so the commit never runs then.
    A block with no statement commits in one round trip too.
    """

    dialect = "mysql"

    def __init__(self, store: MySQLStore, pool: Pool, fence: Fence) -> None:
        super().__init__(fence)
        self._store = store
        self._pool = pool
        self.session: _Session | None = None

    def _call_fence(self, s: _Session, slot: float | None) -> str:
        f = self.fence
        return s.mogrify(self._store.q["fence"], {"kind": f.kind, "key": f.key, "worker": f.worker_id,
                                                    "term": f.term, "slot": slot})  # fmt: skip

    def backslash_escapes(self) -> bool | None:
        if self.session is None:
            return None  # tenure's sessions pin a sql_mode without NO_BACKSLASH_ESCAPES
        status: int = getattr(self.session.conn, "server_status", 0)  # not in asyncmy's stubs
        return not status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES

    def in_transaction(self) -> bool:
        return self.session is not None and bool(self.session.conn.get_transaction_status())

    async def _begin_with(self, text: Callable[[_Session], str]) -> tuple[int, list[tuple[Any, ...]]]:
        """Send ``START TRANSACTION`` and ``text(session)`` as one batch, on a connection
        taken now. If the pooled connection turns out dead (MySQL ends sessions idle for
        ``wait_timeout``), try once more on another: everything in the batch ran inside
        the transaction it began, which the server rolls back with a dead session."""
        for attempt in (1, 2):
            self.session = s = _Session(await self._store._acquire(self._pool))
            self.begun = True
            try:
                return await s.batch("START TRANSACTION;\n" + text(s))
            except _DRIVER_ERRORS:
                if attempt == 2 or not s.broken:
                    raise
                self._store._give_back(self._pool, s, None)
                self.session, self.begun = None, False
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, op: Op, sql: str, params: Any) -> Any:
        if op == "executemany":
            rows = [tuple(r) for r in params]
            if not self.begun:
                await self._lock(lambda s: self._call_fence(s, None))
            if rows:
                assert self.session is not None
                await self.session.runmany(sql, rows)
            return None
        args = _args(params)
        if not self.begun:
            count, rows = await self._lock(lambda s: self._call_fence(s, None) + ";\n" + s.mogrify(sql, args))
        else:
            assert self.session is not None
            count, rows, _ = await self.session.run(sql, args)
        if op == "execute":
            return count
        if op == "fetchall":
            return rows
        return rows[0] if rows else None

    async def _lock(self, text: Callable[[_Session], str]) -> tuple[int, list[tuple[Any, ...]]]:
        try:
            return await self._begin_with(text)
        except asyncmy.errors.Error as exc:
            if _fence_refused(exc):
                raise self.fence.not_owner() from exc
            raise

    async def commit(self) -> None:
        begun = self.begun
        try:
            if begun:
                assert self.session is not None
                await self.session.batch(self._call_fence(self.session, self.fence.slot) + ";\nCOMMIT")
            else:
                await self._begin_with(lambda s: self._call_fence(s, self.fence.slot) + ";\nCOMMIT")
        except asyncmy.errors.Error as exc:
            if _fence_refused(exc):
                raise (self.fence.expired() if begun else self.fence.not_owner()) from exc
            raise
        assert self.session is not None
        self.reusable = self.session.reusable and not self.in_transaction()

    def translate(self, exc: Exception) -> Exception:
        if isinstance(exc, _DRIVER_ERRORS):
            return _translate(exc, f"during the fenced transaction of {self.fence.what}")
        return exc

    async def roll_back(self) -> None:
        if self.session is None:
            self.reusable = True
            return
        await self.session.rollback()
        self.reusable = self.session.reusable and not self.in_transaction()


class MySQLStore(SQLStore[_Session]):
    """The MySQL/MariaDB store (see the module docstring)."""

    dialect = "mysql"

    def __init__(self, url: str) -> None:
        self._options = parse_mysql_url(url)
        self._display = hide_password(url)
        self._server: _Server | None = None
        self._pool: Pool | None = None
        self._lease_pool: Pool | None = None
        self._kills: set[asyncio.Task[None]] = set()
        self._liveness: dict[str, Liveness] = {}
        #: Wake-ups ride on the sessions that liveness=session trusts (see listen()).
        self.supports_listen = self._options.liveness == "session"
        #: The server refused a KILL QUERY of a wait: workers rely on polling.
        self._kill_refused = False
        #: The enabled tasks' counts of the last cluster view that counted them.
        self._counted = CountedTasks()

    @property
    def display_url(self) -> str:
        return self._display

    @property
    def q(self) -> dict[str, str]:
        return _Q[self._server.flavor if self._server else "mysql"]

    # -- connections ----------------------------------------------------------------------

    def _connect_args(self, server: _Server | None) -> dict[str, Any]:
        # Found rows, not changed rows: see the module docstring.
        args = connect_args(self._options) | {"client_flag": CLIENT.FOUND_ROWS, "program_name": "tenure"}
        if server is not None:
            args["init_command"] = self._session_setup(server)
        return args

    def _session_setup(self, server: _Server) -> str:
        """One SET statement (asyncmy runs a single init command) for every new session."""
        o = self._options
        isolation = "transaction_isolation"
        if server.flavor == "mariadb" and server.version < (11, 1, 0):
            isolation = "tx_isolation"  # MariaDB's name before 11.1
        assignments = [
            f"SESSION {isolation} = 'READ-COMMITTED'",
            f"SESSION sql_mode = '{_SQL_MODE[server.flavor]}'",
            "SESSION time_zone = '+00:00'",
            f"SESSION innodb_lock_wait_timeout = {o.lock_timeout}",
            f"SESSION lock_wait_timeout = {o.lock_timeout}",
            f"SESSION net_read_timeout = {max(o.idle_tx_timeout, 5)}",
            f"SESSION net_write_timeout = {max(o.idle_tx_timeout, 5)}",
        ]
        if server.flavor == "mariadb":
            assignments.append(f"SESSION idle_transaction_timeout = {o.idle_tx_timeout}")
        else:
            assignments.append(f"SESSION wait_timeout = {o.idle_tx_timeout}")
        return "SET " + ", ".join(assignments)

    def _recycle(self, server: _Server) -> int:
        """Seconds a pooled connection may stay idle before the pool replaces it."""
        if server.flavor == "mariadb":
            return 600
        # MySQL ends sessions idle for wait_timeout (= idle_tx_timeout): replace them before.
        return max(1, self._options.idle_tx_timeout // 2)

    async def _probe(self) -> _Server:
        """Connect once to learn the server's flavor and version; refuse old ones."""
        try:
            async with asyncmy.connect(**self._connect_args(None)) as conn:
                cur = conn.cursor()
                await cur.execute("SELECT VERSION()")
                row = await cur.fetchone()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to MySQL store {self._display}: {exc}") from exc
        server = parse_server_version(str(row[0]))
        check_server_version(server)
        return server

    def _connected(self) -> bool:
        return self._pool is not None

    async def _open_connections(self) -> None:
        server = await self._probe()
        pool = lease_pool = None
        try:
            args = self._connect_args(server)
            recycle = self._recycle(server)
            pool = await asyncmy.create_pool(minsize=1, maxsize=self._options.pool, pool_recycle=recycle, **args)
            if self._options.liveness != "session":
                # With session liveness the lease's statements go on the lock's connection.
                lease_pool = await asyncmy.create_pool(minsize=1, maxsize=1, pool_recycle=recycle, **args)
        except _DRIVER_ERRORS as exc:
            for p in (pool, lease_pool):
                if p is not None:
                    await _close_pool(p)
            raise StoreUnavailable(f"cannot connect to MySQL store {self._display}: {exc}") from exc
        self._server, self._pool, self._lease_pool = server, pool, lease_pool

    async def close(self) -> None:
        pools = [p for p in (self._pool, self._lease_pool) if p is not None]
        self._pool = self._lease_pool = None
        self._schema_ok = False
        for p in pools:
            await _close_pool(p)
        if self._kills:
            await asyncio.wait(set(self._kills), timeout=self._options.connect_timeout + 1)

    @asynccontextmanager
    async def _session(
        self, pool: Pool | None = None, *, begin: bool = False, holder: _NamedLockLiveness | None = None
    ) -> AsyncIterator[_Session]:
        """A connection from ``pool`` (the main pool by default), returned when done; with
        ``holder``, its lock's connection instead (:meth:`_NamedLockLiveness.session`).

        With ``begin``, the connection is inside a transaction (BEGIN sent); if BEGIN
        fails because the server had dropped the pooled connection (MySQL's
        ``wait_timeout``, a restart), it is tried once more on another connection:
        nothing had happened yet. The caller commits or rolls back.

        A connection in an unknown state (cancelled mid-statement, broken, or left in a
        transaction) is closed rather than reused: the server rolls back what it held.
        """
        if holder is not None:
            async with holder.session() as s:
                if begin:
                    try:
                        await s.begin()
                    except _DRIVER_ERRORS as exc:
                        raise _translate(exc, "starting a transaction") from exc
                yield s
            return
        pool = pool or self._pool
        if pool is None:
            raise StoreError("the store is not open")
        for attempt in (1, 2):
            session = _Session(await self._acquire(pool))
            try:
                if begin:
                    await session.begin()
            except BaseException as exc:
                self._give_back(pool, session, exc)
                if attempt == 1 and isinstance(exc, Exception) and session.broken:
                    continue
                if isinstance(exc, _DRIVER_ERRORS):
                    raise _translate(exc, "starting a transaction") from exc
                raise
            break
        try:
            yield session
        except BaseException as exc:
            self._give_back(pool, session, exc)
            raise
        self._give_back(pool, session, None)

    async def _acquire(self, pool: Pool) -> Connection:
        """A connection from ``pool``, waiting at most ``connect_timeout`` for one to be free."""
        try:
            if pool.freesize:  # no waiting (a new connection has its own connect timeout)
                return await pool.acquire()
            getter = asyncio.ensure_future(_checkout(pool))
            try:
                done, _ = await asyncio.wait({getter}, timeout=self._options.connect_timeout)
            except BaseException:  # cancelled while waiting
                _abandon(pool, getter)
                raise
            if not done:
                _abandon(pool, getter)
                raise StoreUnavailable(
                    f"no connection to MySQL store {self._display} free within {self._options.connect_timeout}s"
                )
            return getter.result()
        except RuntimeError as exc:  # the pool was closed under us
            raise StoreError("the store is not open") from exc
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to MySQL store {self._display}: {exc}") from exc

    def _give_back(self, pool: Pool, session: _Session, exc: BaseException | None, *, retire: bool = False) -> None:
        conn = session.conn
        if session.busy and exc is not None and not isinstance(exc, Exception):
            self._kill_later(conn)  # cancelled while the server runs a statement
        if retire or not session.reusable or not isinstance(exc, Exception | None) or conn.get_transaction_status():
            conn.close()
        pool.release(conn)

    async def _write(
        self,
        fn: Callable[[_Session], Awaitable[T]],
        *,
        what: str = "",
        single: bool = False,
        pool: Pool | None = None,
        holder: _NamedLockLiveness | None = None,
    ) -> T:
        """Run ``fn`` in one transaction, translating driver errors (``single`` or not)."""
        async with self._session(pool, begin=True, holder=holder) as s:
            try:
                result = await fn(s)
                if s.woken and self.supports_listen:
                    await s.run(self.q["wake_bump"])
                await s.commit()
            except TenureError:
                await s.rollback()
                raise
            except _DRIVER_ERRORS as exc:
                await s.rollback()
                raise _translate(exc, what) from exc
            if s.woken:
                await self._wake_listeners(s)
            return result

    async def _wake_listeners(self, s: _Session) -> None:
        """After a commit that freed or changed tasks: ``KILL QUERY`` every wait of this
        database, so that each worker polls now instead of at its next poll.

        Only waits are found (``wake_targets``: sessions sleeping in one now), and their
        connections run nothing else, so a kill can only end a wait (a wait that ended
        in between makes the kill hit an idle session, where it is dropped). Never raises
        a driver error: the change is committed, and the workers see it at their next
        poll anyway. If the server refuses the kill (another user's session, without the
        privilege to end it), this store says so once and stops trying."""
        if not self.supports_listen or self._kill_refused:
            return
        q = self.q
        try:
            for (thread,) in await s.all(q["wake_targets"]):
                try:
                    await s.run(q["wake"], {"id": int(thread)})
                except asyncmy.errors.Error as exc:
                    if _errno(exc) == 1094:  # unknown thread: the session ended meanwhile
                        continue
                    if _errno(exc) not in (1095, 1227):  # not owner of the thread; access denied
                        raise
                    self._kill_refused = True
                    log.warning(
                        "the server refused to interrupt another worker's wait (%s): workers see "
                        "releases and changes at their next poll instead of at once; run every worker "
                        "as one database user, or grant CONNECTION ADMIN (MariaDB, MySQL CONNECTION_ADMIN)",
                        exc,
                    )
                    return
        except _DRIVER_ERRORS as exc:
            log.warning("could not wake the workers after a change (they see it at their next poll): %s", exc)

    async def _read(
        self,
        fn: Callable[[_Session], Awaitable[T]],
        *,
        what: str = "",
        pool: Pool | None = None,
        holder: _NamedLockLiveness | None = None,
    ) -> T:
        """Run ``fn``'s statements each in its own transaction: for reads of a single
        statement (one statement reads one consistent snapshot), and idempotent writes.

        Retried once on another connection if the pooled one turns out to be dead.
        """
        for attempt in (1, 2):
            async with self._session(pool, holder=holder) as s:
                try:
                    return await fn(s)
                except _DRIVER_ERRORS as exc:
                    if attempt == 1 and s.broken:
                        continue
                    raise _translate(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _kill_later(self, conn: Connection) -> None:
        """Kill, from a fresh connection, the server thread of a cancelled statement."""
        try:
            thread_id = conn.thread_id()
        except Exception:  # never connected
            return

        async def kill() -> None:
            with contextlib.suppress(Exception):
                async with asyncmy.connect(**self._connect_args(None)) as other:
                    cur = other.cursor()
                    await cur.execute("KILL CONNECTION %s", (thread_id,))

        task = asyncio.get_running_loop().create_task(kill(), name=f"tenure-mysql-kill-{thread_id}")
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    # -- schema -------------------------------------------------------------------------

    async def _migrating(self, go: Callable[[_Session], Awaitable[T]]) -> T:
        # DDL commits on its own in MySQL: no transaction around it. A named lock keeps
        # concurrent migrations apart, and every migration statement can run again.
        if self._server is None:
            raise StoreError("the store is not open")
        q = self.q
        wait = max(30, self._options.lock_timeout)
        async with self._session() as s:
            try:
                got = await s.one(q["migrate_lock"], {"wait": wait})
                if not got or got[0] != 1:
                    raise StoreUnavailable(f"another `tenure migrate` held {self._display} for {wait}s")
                try:
                    await s.run(q["notes_off"])
                    if not (await s.one(q["meta_exists"]) or (0,))[0]:
                        await s.run(q["create_meta"])
                    return await go(s)
                finally:
                    if s.reusable:
                        await s.run(q["notes_default"])
                        await s.run(q["migrate_unlock"])
            except _DRIVER_ERRORS as exc:
                raise _translate(exc, "migrating the schema") from exc

    async def _run_script(self, s: _Session, script: str) -> None:
        assert self._server is not None  # checked by _migrating
        script = script.replace("{collation}", _COLLATION[self._server.flavor]).replace("{now}", _NOW)
        for statement in split_statements(script):
            await s.run(statement)

    # -- kinds and tasks ------------------------------------------------------------------

    async def _on_lease(self, fn: Callable[[_Session], Awaitable[T]], *, transaction: bool, what: str) -> T:
        """Run a lease statement on the connection of the liveness lock this store holds
        (one worker a store, as a worker process has), as PostgreSQL does: a worker keeps
        three connections at rest instead of four (40 workers fit MariaDB's default
        ``max_connections`` of 151). Else on the lease pool (``liveness=lease``), or on the
        pool for a caller that holds no lock (a test of the store alone). A lease
        statement is short, so a process that dies under one still frees its lock at once
        (unlike a ``SLEEP``, see :class:`_NamedLockLiveness`)."""
        holders = [h for h in self._liveness.values() if isinstance(h, _NamedLockLiveness)]
        holder = next((h for h in holders if h.held), holders[0]) if holders else None
        if transaction:
            return await self._write(fn, pool=self._lease_pool, what=what, holder=holder)
        return await self._read(fn, pool=self._lease_pool, what=what, holder=holder)

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncmy.errors.IntegrityError) and _errno(exc) == 1062

    async def _sync_write(self, s: _Session, query: str, kind: str, tasks: Sequence[DesiredTask]) -> None:
        for batch in batches(tasks, task_size):
            rows = [[k, every, cron, params, int(on)] for k, every, cron, params, on in map(desired_columns, batch)]
            await s.run(self.q[query], {"kind": kind, "tasks": json.dumps(rows, ensure_ascii=False)})

    # -- membership -----------------------------------------------------------------------

    def hold_liveness(self, worker_id: str, *, check_every: float) -> AbstractAsyncContextManager[Liveness]:
        if self._options.liveness != "session":
            return holding(self._liveness, Liveness(worker_id))
        return holding(self._liveness, _NamedLockLiveness(self, worker_id, check_every))

    async def register_worker(
        self, *, worker_id: str, host: str, pid: int, ttl: float, kinds: Sequence[str] = ()
    ) -> Lease:
        liveness = held_token(self._liveness, worker_id)
        args = {
            "worker": worker_id,
            "host": host,
            "pid": pid,
            "ttl": ttl,
            "kinds": encode_worker_kinds(kinds),
            "liveness": liveness,
        }

        async def go(s: _Session) -> Lease:
            live = await s.one(self.q["worker_is_live"], {"worker": worker_id})
            if live is not None and live[0]:
                if not (live[1] and liveness is not None):
                    raise WorkerIdInUse(f"worker id {worker_id!r} is held by a live worker")
                await s.run(self.q["end_lease"], {"worker": worker_id})
            if live is None:
                try:
                    await s.run(self.q["insert_worker"], args)
                except asyncmy.errors.IntegrityError as exc:
                    if _errno(exc) == 1062:  # registered by someone else meanwhile
                        raise WorkerIdInUse(f"worker id {worker_id!r} is held by a live worker") from exc
                    raise
            else:
                # The same worker back after its lease expired: free its tasks as expired
                # first, so none of its old terms can commit again.
                await s.run(self.q["free_expired_worker_tasks"], {"worker": worker_id})
                await s.run(self.q["revive_worker"], args)
            return await self._lease(s, worker_id)

        return await self._on_lease(go, transaction=True, what="registering the worker")

    async def _lease(self, s: _Session, worker_id: str) -> Lease:
        row = await s.one(self.q["lease_of"], {"worker": worker_id})
        if row is None:  # pragma: no cover - written in the same transaction
            raise LeaseLost(f"lease of worker {worker_id!r} is gone")
        return lease_from_row(worker_id, row)

    async def renew_lease(self, worker_id: str, ttl: float, load: WorkerLoad | None = None) -> Lease:
        # Two autocommitted statements rather than a transaction (half the round trips on
        # the heartbeat path): only this worker renews its row, so the read that follows
        # returns this renewal's times (and the latest draining flag). Running it again
        # after a lost connection is harmless: it extends a live lease or refuses.
        async def go(s: _Session) -> Lease:
            if await s.count(self.q["renew_lease"], {"worker": worker_id, "ttl": ttl, **load_params(load)}) != 1:
                raise LeaseLost(f"lease of worker {worker_id!r} has expired or was removed")
            row = await s.one(self.q["lease_of"], {"worker": worker_id})
            if row is None:
                raise LeaseLost(f"worker {worker_id!r} left the cluster")
            return lease_from_row(worker_id, row)

        return await self._on_lease(go, transaction=False, what="renewing the lease")

    async def reap_workers(self, older_than: float) -> int:
        async def go(s: _Session) -> int:
            ids = [r[0] for r in await s.all(self.q["reap_candidates"], {"older_than": older_than})]
            if not ids:
                return 0
            return await s.count(self.q["reap_workers"], {"ids": tuple(ids), "older_than": older_than})

        return await self._write(go, what="reaping workers")

    # -- ownership ------------------------------------------------------------------------

    async def claim_tasks(self, worker_id: str, *, kinds: Sequence[str], limit: int, start: int = 0) -> list[Claim]:
        if limit <= 0 or not kinds:
            return []

        async def go(s: _Session) -> list[Claim]:
            q = self.q
            dead = tuple(r[0] for r in await s.all(q["dead_workers"], {"worker": worker_id}))
            if dead:
                mine = tuple(r[0] for r in await s.all(q["lock_dead_workers"], {"ids": dead}))
                if mine:
                    await s.run(q["end_dead_leases"], {"ids": mine})
                    # Their tasks are free: wake the other workers to claim their shares
                    # now, as a release does (this claimer may have been woken alone).
                    await s.notify()
            args = {"worker": worker_id, "kinds": tuple(kinds), "limit": int(limit), "dead": len(dead)}
            # Free tasks, from this claimer's place on, then those of owners that are gone:
            # each walk of the owner index reads only what it takes (schema version 9).
            # The first `limit` of both by key are claimed, as on PostgreSQL; the rest stay
            # locked until the commit.
            place = None
            if start > 0:
                place = await s.one(q["claim_place"], {"kinds": tuple(kinds), "start": int(start)})
            args["place_kind"], args["place_key"] = place or ("", "")
            candidates = await s.all(q["claim_free"], args)
            if place is not None and len(candidates) < limit:
                candidates += await s.all(q["claim_free_before"], {**args, "limit": int(limit) - len(candidates)})
            lapsed = tuple(r[0] for r in await s.all(q["lapsed_owners"], {"dead": len(dead)}))
            if lapsed:
                candidates += await s.all(q["claim_lapsed"], {**args, "owners": lapsed})
                candidates = sorted(candidates, key=lambda c: (c[0], c[1]))[:limit]
            if not candidates:
                live = await s.one(q["lease_is_live"], {"worker": worker_id})
                if live is None or not live[0]:
                    raise LeaseLost(f"worker {worker_id!r} has no live lease; it cannot claim tasks")
                return []
            _, _, last = await s.run(q["take_terms"], {"count": len(candidates)})
            first = last - len(candidates) + 1
            claims = [
                [kind, key, first + i, 1 if had_owner else 0, None if old_expiry is None else float(old_expiry)]
                for i, (kind, key, had_owner, old_expiry) in enumerate(candidates)
            ]
            claimed = json.dumps(claims, ensure_ascii=False)
            await s.run(q["claim_apply"], {"claims": claimed, "worker": worker_id})
            rows = await s.all(q["claimed_tasks"], {"worker": worker_id, "claims": claimed})
            if len(rows) != len(candidates):  # pragma: no cover - the rows are locked
                raise StoreError(f"claimed {len(candidates)} tasks but found {len(rows)} with their new terms")
            tasks = [task_from_row(r) for r in rows]
            return [Claim(task=t, done_before=done_before(t)) for t in tasks]

        return await self._write(go, what="claiming tasks")

    async def cluster_view(self) -> ClusterView:
        # The counts change only with the change counter: the query counts only when the
        # counter (value, and the stamp each change sets, schema version 9) differs from
        # the last one counted here, and this store keeps the counts (CountedTasks).
        args = self._counted.args()

        async def go(s: _Session) -> list[Any]:
            return await s.all(self.q["cluster_view"], args)

        return self._counted.view(await self._read(go, what="reading the cluster view"))

    # -- fencing --------------------------------------------------------------------------

    @asynccontextmanager
    async def _fenced_session(self, fence: Fence) -> AsyncIterator[_Fenced]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        tx = _Fenced(self, pool, fence)
        failure: BaseException | None = None
        try:
            yield tx
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if tx.session is not None:
                # A connection whose session may carry state past the transaction (user
                # variables, named locks) is closed: the server drops that state with it.
                self._give_back(pool, tx.session, failure, retire=tx.touched_session or tx.discard or not tx.reusable)

    # -- wake-ups -------------------------------------------------------------------------

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever tasks are released or changed; runs until cancelled.

        MySQL cannot notify; instead a listener's connection sleeps in a wait (``SELECT
        SLEEP(…)``), and a writer that frees or changes tasks interrupts every wait of the
        database (:meth:`_wake_listeners`). While this store holds a worker's liveness lock,
        that lock's wait connection is the listener (its waits are also the liveness
        probe); otherwise a connection of its own waits :data:`LISTEN_WAIT` seconds at a
        time. Calls ``wake`` once at the start and after each reconnection, as wake-ups
        sent while no wait slept are lost. With ``liveness=lease`` (a proxy between
        tenure and the server, whose session ids cannot be trusted) it returns at once
        and workers poll.
        """
        if not self.supports_listen:
            return
        session = next((h for h in self._liveness.values() if isinstance(h, _NamedLockLiveness)), None)
        errors = (*_DRIVER_ERRORS, TimeoutError)
        await listen(wake, None if session is None else session.wakes, self._listen_on_connection, errors)

    async def _listen_on_connection(self, wake: Callable[[], None], connected: Callable[[], None]) -> None:
        conn = None
        try:
            conn = await asyncmy.connect(**self._connect_args(None))
            await conn.cursor().execute(self.q["liveness_session"])
            connected()
            waits = _Waits(conn, self.q["listen_wait"], {}, every=LISTEN_WAIT, wake=wake)
            while True:
                await waits.wait()  # the first wakes at once
                _stop_if_cancelled()
        except (*_DRIVER_ERRORS, TimeoutError):
            _stop_if_cancelled()
            raise
        finally:
            if conn is not None:
                conn.close()

    # -- runs -----------------------------------------------------------------------------

    async def _advance_slots(self, s: _Session, slots: Sequence[SlotDone]) -> None:
        """Advance last slots (guarded by term) in one statement."""
        if slots:
            await s.run(self.q["advance_slot"], {"slots": json.dumps(merged_slots(slots), ensure_ascii=False)})

    async def record_runs(self, runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        async def insert_runs(s: _Session) -> None:
            # The driver quotes every value in Python and sends one multi-row INSERT per
            # call: 2,000 rows at once held the worker's loop ~30 ms (bench/loop_block.py).
            for i in range(0, len(runs), _INSERT_ROWS):
                await s.runmany(self.q["insert_run"], [run_params(r) for r in runs[i : i + _INSERT_ROWS]])

        # Slots first, in one statement that commits on the server at once: a task row is
        # then never locked across a round trip to this worker, which may be slow or cut
        # off (claims skip locked rows, so such a lock would hold the task from them).
        if slots:
            await self._read(lambda s: self._advance_slots(s, slots), what="recording slots")
        if runs:
            await self._write(insert_runs, what="recording runs")


# -- helpers ------------------------------------------------------------------------------


async def _checkout(pool: Pool) -> Connection:
    return await pool.acquire()


def _abandon(pool: Pool, getter: asyncio.Future[Connection]) -> None:
    """Stop waiting for a connection; give it back if it arrives anyway."""

    def give_back(f: asyncio.Future[Connection]) -> None:
        if not f.cancelled() and f.exception() is None:
            pool.release(f.result())

    getter.cancel()
    getter.add_done_callback(give_back)


async def _close_pool(pool: Pool) -> None:
    with contextlib.suppress(Exception):
        pool.close()
        pool.terminate()  # connections still handed out (a cancelled operation) close too
        await asyncio.wait_for(pool.wait_closed(), 5)


def _args(params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Handlers' parameters; none at all means the SQL is sent as written (a literal %
    needs no doubling), as DB-API drivers do."""
    return tuple(params) if params else None


#: Errors that end a wait early without harm: woken (KILL QUERY) or cut by a statement
#: time limit (MariaDB's max_statement_time, MySQL's max_execution_time). Either way the
#: worker polls once more than it had to.
_INTERRUPTED = {1317, 1969, 3024}

#: How long a listener that holds no liveness lock sleeps in one wait (seconds).
LISTEN_WAIT = 5.0


def _stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop. A wait cancelled just as its
    statement returned (a ``KILL QUERY`` of it, or its end) may return its row anyway:
    Python 3.11's ``asyncio.wait_for`` then drops the cancellation, and a loop of waits
    would outlive whoever cancelled it (who waits for it to end)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _ask(conn: Connection, sql: str, args: dict[str, Any], *, within: float) -> tuple[Any, ...] | None:
    """Run one statement of a wait connection: its first row, or None if it was
    interrupted (woken). Raises TimeoutError after ``within`` seconds, and driver errors."""

    async def go() -> tuple[Any, ...] | None:
        cur = conn.cursor()
        await cur.execute(sql, args)
        row = await cur.fetchone()
        return None if row is None else tuple(row)

    try:
        return await asyncio.wait_for(go(), within)
    except asyncmy.errors.Error as exc:
        if _errno(exc) in _INTERRUPTED:
            return None
        raise


@dataclass(eq=False)
class _Waits:
    """The waits of one wait connection (see "Wake-ups" in the module docstring).

    Each wait passes the wake counter the previous one saw, and returns at once if it has
    moved since: a wake-up sent while no wait of this connection was visible to the
    writer (between two waits, or as one ends on its own, when the server drops the
    ``KILL QUERY``) is then not lost. A wait interrupted by a ``KILL QUERY`` does not
    call ``wake`` itself: the change that sent it moved the counter, so the next wait
    returns at once and does (one call per change rather than two), unless wake-ups
    interrupt every wait for ``every`` seconds, when it calls ``wake`` anyway.
    """

    conn: Connection
    sql: str
    #: The statement's own arguments (the caller may change them between waits).
    args: dict[str, Any]
    every: float = field(kw_only=True)
    wake: Callable[[], None] = field(kw_only=True)
    #: The wake counter the last wait read; None before the first, which thus wakes.
    seen: int | None = field(default=None, init=False)
    #: When a wait last answered (monotonic clock).
    answered: float = field(default_factory=time.monotonic, init=False)

    async def wait(self) -> tuple[Any, ...] | None:
        """Wait once, for ``every`` seconds or until woken, calling ``wake`` as the class
        says; the wait's row, or None if it was interrupted. Raises TimeoutError if it
        does not answer within ``every`` of its sleep's end, and driver errors."""
        overdue = time.monotonic() - self.answered >= self.every
        args = {**self.args, "seen": self.seen, "wait": 0 if overdue else self.every}
        row = await _ask(self.conn, self.sql, args, within=2 * self.every)
        if row is None:
            if overdue:
                self.wake()
            return None
        self.seen = int(row[1])
        if row[0] is None:  # a wait on a lock answers NULL when interrupted
            if overdue:
                self.wake()
            return None
        self.answered = time.monotonic()
        if int(row[0]) == 2:
            self.wake()
        return row


class _NamedLockLiveness(Liveness):
    """``GET_LOCK`` on a connection of its own, kept for the worker's life, and a second
    connection that waits for wake-ups and probes the lock.

    The lock's connection sends nothing once the lock is taken but the lease's statements
    (:meth:`session`), which take milliseconds. A session idle in the
    server ends the moment its process dies (the server is reading its socket), which is
    what makes a crash visible at once; a session inside a statement would not: ``SLEEP()``
    does not look at its socket, so a lock on a sleeping session outlives a killed process
    by up to the sleep (measured on MariaDB 10.11).

    The wait connection waits in ``liveness_wait`` for ``check_every`` seconds at a time
    for the lock of the worker this one watches (:meth:`Liveness.watch`; while it watches
    none, for its own lock, held by the lock's session; a lock it takes because its
    holder is gone it lets go at once, and a watched worker found gone wakes the worker),
    then checks in the same statement that its own lock is still held by the lock's
    session:
    one statement per interval, the liveness probe. A writer that frees or changes tasks
    interrupts the sleep with ``KILL QUERY`` (:meth:`MySQLStore._wake_listeners`), which
    wakes the worker (:attr:`wakes`) as a ``NOTIFY`` does on PostgreSQL (:class:`_Waits`).
    A probe that fails, says no, or does not answer within ``check_every`` of its sleep's
    end marks the lock lost; the worker then fences itself and takes it again on new
    connections.
    """

    mode = "session"

    def __init__(self, store: MySQLStore, worker_id: str, check_every: float) -> None:
        super().__init__(worker_id)
        self._store = store
        self._name = mysql_name(store._options.database, worker_id)
        self._every = max(0.2, check_every)
        self._conn: Connection | None = None
        self._waits: Connection | None = None
        self._thread = 0
        #: The lease's statements take turns on the lock's connection (:meth:`session`).
        self._turn = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        #: The lock the waits wait for: the watched worker's (and its id), or this one's
        #: own while it watches none or the watched one was found gone.
        self._target_name = self._name
        self._target: str | None = None
        #: Called on every wake-up, and once each time the lock is taken (wake-ups sent
        #: while no wait of ours slept are lost).
        self.wakes: list[Callable[[], None]] = []

    @property
    def token(self) -> str | None:
        return self._name if self.held else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[_Session]:
        """The lock's connection, for the lease's statements, one caller at a time. Raises
        :class:`~tenure.errors.StoreUnavailable` if the lock is gone. A connection left in
        an unknown state (broken, cancelled inside a statement, inside a transaction)
        marks the lock lost: the worker fences itself and takes it again on new
        connections."""
        async with self._turn:
            conn = self._conn
            if conn is None or self.lost.is_set():
                raise StoreUnavailable(f"the liveness session of worker {self.worker_id!r} is gone")
            s = _Session(conn)
            try:
                yield s
            except BaseException:
                if not s.reusable or conn.get_transaction_status():
                    self._mark_lost("the liveness connection was left in an unknown state")
                raise

    async def _connect(self, *, lease: bool = False) -> Connection:
        """A connection that lives as long as the lock; with ``lease``, set up as the pool's
        are, for the lease's statements."""
        store = self._store
        try:
            conn = await asyncmy.connect(**store._connect_args(store._server if lease else None))
            await conn.cursor().execute(store.q["liveness_session"])
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to MySQL store {store._display}: {exc}") from exc
        return conn

    async def _take(self) -> None:
        store = self._store
        q = store.q
        conn = await self._connect(lease=True)
        waits: Connection | None = None
        try:
            cur = conn.cursor()
            await cur.execute(q["liveness_take"], {"name": self._name})
            got = await cur.fetchone()
            if not got or got[0] != 1:
                raise WorkerIdInUse(
                    f"worker id {self.worker_id!r} is held by a live worker (its liveness lock is taken)"
                )
            await cur.execute(q["liveness_mine"], {"name": self._name})
            mine = await cur.fetchone()
            if not mine or mine[0] != 1:
                raise InvalidStoreURL(
                    f"the liveness lock just taken on {store._display} does not show as this session's: " + POOLING_HINT
                )
            waits = await self._connect()
        except BaseException as exc:
            for c in (conn, waits):
                if c is not None:
                    with contextlib.suppress(Exception):
                        await c.ensure_closed()
            if isinstance(exc, _DRIVER_ERRORS):
                raise StoreUnavailable(f"cannot take the liveness lock on {store._display}: {exc}") from exc
            raise
        self._conn, self._waits, self._thread = conn, waits, int(got[1])
        self._watch = asyncio.create_task(self._wait_and_probe(waits), name="tenure-liveness")

    def _wake(self) -> None:
        for wake in list(self.wakes):
            wake()

    def _retarget(self, target: str | None) -> None:
        """The next wait waits for ``target``'s lock (within ``check_every``: a wait in
        progress is not interrupted), instead of this worker's own."""
        super()._retarget(target)
        self._target = target
        self._target_name = self._name if target is None else mysql_name(self._store._options.database, target)

    async def _wait_and_probe(self, conn: Connection) -> None:
        args = {"name": self._name, "holder": self._thread, "target": self._name}
        waits = _Waits(conn, self._store.q["liveness_wait"], args, every=self._every, wake=self._wake)
        while True:
            _stop_if_cancelled()
            target, waits.args["target"] = self._target, self._target_name
            try:
                row = await waits.wait()
            except TimeoutError:
                self._mark_lost(f"the liveness session did not answer within {self._every:g}s")
                return
            except _DRIVER_ERRORS as exc:
                self._mark_lost(f"the liveness session ended ({exc})")
                return
            if row is not None and row[2] != 1:
                self._mark_lost("the liveness lock is no longer held by this worker's session")
                return
            if row is not None and row[0] == 1 and target is not None and target == self._target:
                # The watched worker is gone: wake once, and wait on our own lock until a
                # poll has seen the membership change (watch() then retargets).
                self._target_name = self._name
                self._watched_gone(target)

    async def _drop(self) -> None:
        conn, waits, watch, thread = self._conn, self._waits, self._watch, self._thread
        self._conn, self._waits, self._watch, self._thread = None, None, None, 0
        await stopped(watch)
        waiting = 0
        if waits is not None:
            with contextlib.suppress(Exception):
                waiting = int(waits.thread_id())
            with contextlib.suppress(Exception):
                waits.close()
        if conn is None:
            return
        q = self._store.q
        alive = not self.lost.is_set()
        turn = False
        if alive:
            try:
                await asyncio.wait_for(self._turn.acquire(), 2.0)
                turn = True
            except TimeoutError:
                alive = False  # a lease statement still holds the connection: end it from another
        try:
            if alive:
                with contextlib.suppress(Exception):
                    # A wait in flight goes on in the server after its connection closed: end
                    # it before letting the lock go, or it would take the lock.
                    if waiting:
                        await asyncio.wait_for(conn.cursor().execute("KILL QUERY %s", (waiting,)), 2.0)
                    await asyncio.wait_for(conn.cursor().execute(q["liveness_unlock"], {"name": self._name}), 2.0)
            with contextlib.suppress(Exception):
                conn.close()
        finally:
            if turn:
                self._turn.release()
        if not alive and thread:
            # The session may live on in the server unseen (a half-open connection): end it,
            # if it still holds the lock, so that the lock is free for our next one.
            with contextlib.suppress(Exception):
                async with asyncmy.connect(**self._store._connect_args(None)) as other:
                    cur = other.cursor()
                    await cur.execute(q["liveness_holder"], {"name": self._name})
                    holder = await cur.fetchone()
                    if holder and holder[0] in (thread, waiting):
                        # Our lock session, or our wait, which takes the lock when the
                        # lock session ends.
                        await cur.execute("KILL CONNECTION %s", (holder[0],))
