"""Plain connections to the store's database, for the demo's own tables.

tenure hands a handler fenced transactions only; everything else a user's code does with
its database goes through the user's own driver. The demo does the same: the dispatch
domain reads orders with a plain connection, the controller inserts orders and the
checker reads the history with one. Each connection has the interface of a fenced
transaction (``execute``, ``executemany``, ``fetchall``, ``fetchone``), so code that
writes decisions can be handed either.

SQL is written with ``?`` placeholders and :func:`sql` turns them into the dialect's
(``%s`` on PostgreSQL and MySQL). Drivers: those of the stores (:mod:`sqlite3`, psycopg 3,
asyncmy, the last driven from a thread of its own since it is asynchronous only).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from tenure.errors import StoreUnavailable
from tenure.store import dialect_of

T = TypeVar("T")


class Statements(Protocol):
    """What both a fenced transaction (``ctx.fenced_sync()``) and a plain connection offer."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...


def sql(text: str, dialect: str) -> str:
    """``text`` written with ``?`` placeholders, in the placeholder style of ``dialect``."""
    return text if dialect == "sqlite" else text.replace("?", "%s")


class Connection:
    """One autocommit connection; :meth:`transaction` groups statements atomically."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)
        self._raw: Any = _connect(url, self.dialect)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cursor(self) -> Any:
        return self._raw.cursor()

    def execute(self, text: str, params: Sequence[Any] = ()) -> int:
        cur = self._cursor()
        try:
            cur.execute(sql(text, self.dialect), tuple(params))
            return int(cur.rowcount)
        finally:
            cur.close()

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cur = self._cursor()
        try:
            cur.executemany(sql(text, self.dialect), [tuple(r) for r in rows])
        finally:
            cur.close()

    def fetchall(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._cursor()
        try:
            cur.execute(sql(text, self.dialect), tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def fetchone(self, text: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.fetchall(text, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: committed if the block ends normally, else rolled back.

        On SQLite it takes the write lock at once (``BEGIN IMMEDIATE``), as tenure does.
        """
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"
        self.execute(begin)
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")


class Pool:
    """A few connections shared by threads (a worker runs its sync handlers in a pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Connection(self.url)
        try:
            yield conn
        except BaseException:
            conn.close()  # in an unknown state: do not hand it out again
            raise
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _connect(url: str, dialect: str) -> Any:
    try:
        if dialect == "sqlite":
            from tenure.store.sqlite import parse_sqlite_url

            path, _ = parse_sqlite_url(url)
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            return conn
        if dialect == "postgresql":
            import psycopg

            from tenure.store.postgresql import parse_postgresql_url

            libpq, options = parse_postgresql_url(url)
            return psycopg.connect(libpq, autocommit=True, connect_timeout=int(options["connect_timeout"]))
        return _connect_mysql(url)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnavailable(f"cannot connect to the demo's database: {exc}") from exc
    except ImportError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("psycopg", "asyncmy"):
            raise StoreUnavailable(f"cannot connect to the demo's database: {exc}") from exc
        raise


def _connect_mysql(url: str) -> Any:
    """The MySQL store's driver, asyncmy, is asynchronous only: drive one connection from
    a private event loop in its own thread, behind the DB-API calls this module makes."""
    from tenure.store.mysql import connect_args, parse_mysql_url

    return _AsyncmyConnection(connect_args(parse_mysql_url(url)))


class _AsyncmyConnection:
    def __init__(self, args: dict[str, Any]) -> None:
        import asyncmy

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-mysql", daemon=True)
        self._thread.start()

        async def connect() -> Any:
            return await asyncmy.connect(**args)

        try:
            self.conn = self.call(connect())
        except BaseException:
            self._stop()
            raise

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def cursor(self) -> _AsyncmyCursor:
        return _AsyncmyCursor(self)

    def close(self) -> None:
        async def close() -> None:
            await self.conn.ensure_closed()

        try:
            self.call(close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class _AsyncmyCursor:
    def __init__(self, conn: _AsyncmyConnection) -> None:
        self._conn = conn
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, text: str, params: tuple[Any, ...]) -> None:
        async def go() -> None:
            async with self._conn.conn.cursor() as cur:
                await cur.execute(text, params or None)
                self.rowcount = cur.rowcount
                self._rows = [tuple(r) for r in await cur.fetchall()] if cur.description else []

        self._conn.call(go())

    def executemany(self, text: str, rows: list[tuple[Any, ...]]) -> None:
        async def go() -> None:
            async with self._conn.conn.cursor() as cur:
                await cur.executemany(text, rows)
                self.rowcount = cur.rowcount

        self._conn.call(go())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def close(self) -> None:
        self._rows = []
