"""Raw SQL on the database behind a store, for the runtime tests and their workers: the
``commits`` table (its DDL and the handlers' insert, per dialect), and which of a
process's sessions are inside a transaction.

Shared by the test (``harness.py``) and the worker processes (``worker_child.py``, which
puts ``tests/`` on ``sys.path`` to import it), so both sides agree on the table. Only the
standard library and the store's own drivers are imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from store_faults.harness import client_ports
from tenure.store.sqlite import parse_sqlite_url

__all__ = [
    "COMMIT_COLUMNS",
    "MARK",
    "RawSQL",
    "client_ports",
    "commits_ddl",
    "dialect_of",
    "insert_commit_sql",
    "no_transaction_open",
    "raw_sql",
]

T = TypeVar("T")

#: Column types of the ``commits`` table per dialect: id column, text, float, table suffix.
#: MariaDB cannot index TEXT without a length, and ``key`` is a reserved word there: the
#: task key's column is ``tkey`` everywhere.
_TYPES = {
    "sqlite": ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "REAL", ""),
    "postgresql": ("BIGSERIAL PRIMARY KEY", "TEXT", "DOUBLE PRECISION", ""),
    "mysql": ("BIGINT AUTO_INCREMENT PRIMARY KEY", "VARCHAR(255)", "DOUBLE", " ENGINE=InnoDB"),
}
#: The database's clock, epoch seconds, inside a statement.
_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
}
#: Parameter placeholders of each driver.
MARK = {"sqlite": "?", "postgresql": "%s", "mysql": "%s"}

#: How long MariaDB/MySQL may serve INNODB_TRX from its cache (TRX_I_S_CACHE_MIN_QUERY_TIME).
_TRX_CACHE_AGE = 0.12

COMMIT_COLUMNS = "id, kind, tkey, term, worker, slot, started, at"


def dialect_of(url: str) -> str:
    """The store dialect (``Store.dialect``, ``ctx.dialect``) of a store URL."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    raise NotImplementedError(f"no runtime tests for {scheme} stores")


def commits_ddl(dialect: str) -> str:
    pk, text, real, engine = _TYPES[dialect]
    return (
        f"CREATE TABLE commits (id {pk}, kind {text} NOT NULL, tkey {text} NOT NULL, term BIGINT NOT NULL, "
        f"worker {text} NOT NULL, slot {real} NOT NULL, started {real} NOT NULL, at {real} NOT NULL){engine}"
    )


def insert_commit_sql(dialect: str) -> str:
    """The handlers' fenced insert: ``(kind, tkey, term, worker, slot, started)``, ``at`` the
    database's clock."""
    m = MARK[dialect]
    return (
        "INSERT INTO commits (kind, tkey, term, worker, slot, started, at) "
        f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {_NOW[dialect]})"
    )


class RawSQL(Protocol):
    """Statements outside the store API, each committed on its own (autocommit)."""

    dialect: str

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def in_transaction(self, pid: int) -> list[str]:
        """The sessions of process ``pid`` (a worker, running or stopped) that are inside
        a transaction, described; empty if none. Not for SQLite (no sessions to see)."""
        ...

    def close(self) -> None: ...


class SQLiteSQL:
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        self._path, _ = parse_sqlite_url(url)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self._path, timeout=10, isolation_level=None)) as db:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]

    def in_transaction(self, pid: int) -> list[str]:
        raise NotImplementedError("SQLite has no sessions to look at: see write_lock_free()")

    def write_lock_free(self, wait: float = 0.0) -> bool:
        """True if SQLite's write lock can be taken within ``wait`` seconds (then given back):
        nobody, in any process, is inside a write transaction."""
        with contextlib.closing(sqlite3.connect(self._path, timeout=wait, isolation_level=None)) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return False
                raise
            db.execute("ROLLBACK")
            return True

    def close(self) -> None:
        pass


class PostgreSQLSQL:
    """One psycopg connection, kept open (autocommit)."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(sql.encode(), params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def in_transaction(self, pid: int) -> list[str]:
        ports = sorted(client_ports(pid))
        if not ports:
            return []
        rows = self.rows(
            "SELECT client_port, state, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY(%s) "
            "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
            (ports,),
        )
        return [f"port {port} {state}: {query}" for port, state, query in rows]

    def close(self) -> None:
        self._conn.close()


class MySQLSQL:
    """One asyncmy connection (the store's driver; it is async only), kept open
    (autocommit) on an event loop of its own thread, so calls are plain and synchronous
    whether or not the caller runs an event loop."""

    dialect = "mysql"

    def __init__(self, url: str) -> None:
        import asyncmy

        p = urlsplit(url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mysql-raw", daemon=True)
        self._thread.start()
        self._conn: Any = self._run(
            asyncmy.connect(
                host=p.hostname or "127.0.0.1",
                port=p.port or 3306,
                user=unquote(p.username or "root"),
                password=unquote(p.password or ""),
                database=p.path.lstrip("/"),
                autocommit=True,
                connect_timeout=5,
            )
        )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            async with self._conn.cursor() as cur:
                await cur.execute(sql, params or None)
                return [tuple(r) for r in await cur.fetchall()] if cur.description else []

        return self._run(go())

    def in_transaction(self, pid: int) -> list[str]:
        # A transaction shows in INNODB_TRX from its first statement on (before that it
        # holds nothing); the session's client port is the end of PROCESSLIST.HOST.
        ports = client_ports(pid)
        if not ports:
            return []
        # InnoDB serves INNODB_TRX from a cache it refills only when the last fill is over
        # 0.1 s old: wait that long, or a reading just before could hide a transaction
        # begun since.
        time.sleep(_TRX_CACHE_AGE)
        ((me,),) = self.rows("SELECT CONNECTION_ID()")
        rows = self.rows(
            "SELECT p.ID, p.HOST, t.trx_state, t.trx_started FROM information_schema.INNODB_TRX t "
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
        )
        return [
            f"{host} {state} since {since}"
            for id_, host, state, since in rows
            if id_ != me and ":" in host and int(host.rsplit(":", 1)[1]) in ports
        ]

    def close(self) -> None:
        async def shut() -> None:  # on the connection's own loop: transports are not thread-safe
            self._conn.close()

        with contextlib.suppress(Exception):
            self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def raw_sql(url: str) -> RawSQL:
    """Raw SQL on the database a store URL names (close it when done)."""
    dialect = dialect_of(url)
    if dialect == "sqlite":
        return SQLiteSQL(url)
    if dialect == "postgresql":
        return PostgreSQLSQL(url)
    return MySQLSQL(url)


def no_transaction_open(url: str, pid: int, *, wait: float = 0.0) -> bool:
    """True if process ``pid`` is inside no transaction of the database at ``url`` (on
    SQLite, whose sessions cannot be seen: nobody holds the write lock)."""
    db = raw_sql(url)
    try:
        if isinstance(db, SQLiteSQL):
            return db.write_lock_free(wait)
        return not db.in_transaction(pid)
    finally:
        db.close()
