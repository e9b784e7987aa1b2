"""Raw access to the database behind a store URL, outside the store API: one class per
dialect, :func:`raw_db` picks it (by ``tenure.store.dialect_of``, as ``make_store`` does).

What it offers: statements (:meth:`RawDB.query`, each committed on its own), the
database's clock, which sessions of a process are inside a transaction (on SQLite, whose
sessions cannot be seen: whether anyone holds the write lock), cutting a process's
connections, stopping and starting the server, and what the store contract tests write
behind the store's back (a newer schema version, a probe table a fenced transaction
writes to, task rows no check of tenure's would let through).

By default each statement runs on a connection of its own. With ``keep=True`` (for
polling, which the multi-process suites do many times a second) one connection is kept
open, and opened again after a failure, so observation survives a server restart; close
such an object when done. A database that does not answer raises
:class:`DatabaseUnavailable`.

A process's sessions are found by the local TCP ports of its sockets
(:func:`client_ports`), which is how the servers name a client. MySQL/MariaDB's session
list and ``KILL`` need a user that sees every session: the tests' URLs use ``root``, as
``.ci/run`` does. Only the standard library, tenure and the stores' own drivers are
imported here: worker child programs use it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Collection, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from tenure.store import dialect_of
from tenure.store.sqlite import parse_sqlite_url, write_lock_free

from .processes import wait_until
from .sql import DB_NOW, MARK, create_table

T = TypeVar("T")

#: How long MariaDB/MySQL may serve INNODB_TRX from its cache (TRX_I_S_CACHE_MIN_QUERY_TIME).
_TRX_CACHE_AGE = 0.12


class DatabaseUnavailable(Exception):
    """The test's own raw access to the database failed (e.g. the server is down)."""


#: A table the fenced-transaction tests write to, as a handler would write its decisions.
PROBE_TABLE = "contract_probe"


class RawDB(Protocol):
    """Raw access to one database, and to its server."""

    #: The store's ``dialect`` for this database.
    dialect: str
    #: Does the database take its time from this host's clock (so now() ~ time.time())?
    clock_is_host: bool
    #: ``INSERT INTO contract_probe (note) VALUES (<placeholder>)`` in the store's dialect.
    insert_probe_sql: str
    #: ``SELECT note FROM contract_probe ORDER BY note`` in the store's dialect.
    select_probe_sql: str
    #: An INSERT of one probe row (note given as a parameter) that takes about 0.2 s of
    #: the database's time: a statement still in flight when something else happens.
    slow_insert_probe_sql: str

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (committed on its own); return its rows."""
        ...

    def now(self) -> float:
        """The database's clock, epoch seconds."""
        ...

    def no_transaction_open(self, pid: int, *, wait: float = 0.0) -> bool:
        """True if process ``pid`` (running or stopped) is inside no transaction: on a
        server, none of its sessions has one open; on SQLite, whose sessions cannot be
        seen, nobody holds the write lock (waiting up to ``wait`` s for it)."""
        ...

    def cut(self, pids: Collection[int]) -> list[str]:
        """Kill every database session of these processes; describe the sessions killed."""
        ...

    def server_up(self) -> bool: ...

    def stop_server(self) -> None: ...

    def start_server(self) -> None:
        """Start the server if it is down (a no-op if it runs, or has none)."""
        ...

    def close(self) -> None: ...

    # -- what the store contract tests write behind the store's back -----------------------

    def set_schema_version(self, version: int) -> None: ...

    def read_schema_version(self) -> int | None: ...

    def count_rows(self, table: str) -> int: ...

    def create_probe_table(self) -> None: ...

    def probe_notes(self) -> list[str]: ...

    def set_task_params(self, kind: str, key: str, text: str) -> None:
        """Overwrite a task's stored params text, as an older version or a direct write could."""

    def set_task_key(self, kind: str, key: str, new_key: str) -> None:
        """Rename a task's key in place, bypassing every check tenure makes."""


class _Common:
    """What every dialect does the same way, over its :meth:`query`."""

    dialect: str
    #: The task key's column (a reserved word on MySQL/MariaDB).
    key_column = "key"
    select_probe_sql = f"SELECT note FROM {PROBE_TABLE} ORDER BY note"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def now(self) -> float:
        return float(self.query(f"SELECT {DB_NOW[self.dialect]}")[0][0])

    def set_schema_version(self, version: int) -> None:
        m = MARK[self.dialect]
        self.query(f"UPDATE tenure_meta SET value = {m} WHERE name = 'schema_version'", (str(version),))
        assert self.read_schema_version() == version

    def read_schema_version(self) -> int | None:
        rows = self.query("SELECT value FROM tenure_meta WHERE name = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def count_rows(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])

    def create_probe_table(self) -> None:
        self.query(create_table(self.dialect, PROBE_TABLE, "id {id}, note TEXT NOT NULL"))

    def probe_notes(self) -> list[str]:
        return [str(r[0]) for r in self.query(self.select_probe_sql)]

    def _update_task(self, assignment: str, kind: str, key: str, value: str) -> None:
        m, k = MARK[self.dialect], self.key_column
        self.query(f"UPDATE tenure_tasks SET {assignment} = {m} WHERE kind = {m} AND {k} = {m}", (value, kind, key))

    def set_task_params(self, kind: str, key: str, text: str) -> None:
        self._update_task("params", kind, key, text)

    def set_task_key(self, kind: str, key: str, new_key: str) -> None:
        self._update_task(self.key_column, kind, key, new_key)


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process ``pid`` has open (from /proc), which is how
    the database server names a client connection (``client_port``, ``host:port``)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if m:
                    inodes.add(m.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _tool(name: str) -> str:
    """The full path of a command-line tool the harness runs."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        raise AssertionError(f"{name} is not installed, or not on PATH")
    return path


class SQLiteDB(_Common):
    """An SQLite file: a connection of its own per statement; no sessions, no server."""

    dialect = "sqlite"
    clock_is_host = True
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (?)"
    # SQLite cannot sleep: a count that keeps it busy about as long as the servers'
    # 0.2-s sleeps (~0.25 s here). Counting to 400,000 took 49 ms, as long as the 50 ms
    # the tests wait before cancelling it: on a quiet machine the statement finished
    # first and the cancel found nothing to cancel (CI failed once).
    slow_insert_probe_sql = (
        f"INSERT INTO {PROBE_TABLE} (note) SELECT ? FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c)"
    )

    def __init__(self, url: str, *, keep: bool = False) -> None:
        self.path, _ = parse_sqlite_url(url)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]

    def write_lock_free(self, wait: float = 0.0) -> bool:
        """True if SQLite's write lock can be taken within ``wait`` seconds (then given back):
        nobody, in any process, is inside a write transaction."""
        return write_lock_free(self.path, wait=wait)

    def no_transaction_open(self, pid: int, *, wait: float = 0.0) -> bool:
        return self.write_lock_free(wait)

    def cut(self, pids: Collection[int]) -> list[str]:
        raise NotImplementedError("an embedded SQLite store has no connections to cut")

    def server_up(self) -> bool:
        return True

    def stop_server(self) -> None:
        raise NotImplementedError("an embedded SQLite store has no server")

    def start_server(self) -> None:
        pass

    def close(self) -> None:
        pass


class PostgreSQLDB(_Common):
    """A PostgreSQL database over psycopg (autocommit); its server is the Debian cluster
    on the URL's port."""

    dialect = "postgresql"
    clock_is_host = False  # the server's clock; on 127.0.0.1 it is the host's anyway
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (%s)"
    slow_insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) SELECT %s FROM pg_sleep(0.2)"

    def __init__(self, url: str, *, keep: bool = False) -> None:
        self._url = url
        self._keep = keep
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._conn: Any = None
        self._lock = threading.Lock()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with self._lock:
            kept = self._conn is not None
            try:
                while True:
                    try:
                        if self._conn is None:
                            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
                        cur = self._conn.execute(sql.encode(), params)
                        return [tuple(r) for r in cur.fetchall()] if cur.description else []
                    except psycopg.OperationalError as exc:
                        self._drop()
                        if not kept:
                            raise DatabaseUnavailable(str(exc)) from exc
                        kept = False  # the kept connection died (a restart): once more, on a new one
            finally:
                if not self._keep:
                    self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _sessions(self, pids: Collection[int]) -> list[int]:
        return sorted(set().union(*(client_ports(p) for p in pids)))

    def no_transaction_open(self, pid: int, *, wait: float = 0.0) -> bool:
        return not self.in_transaction(pid)

    def in_transaction(self, pid: int) -> list[str]:
        """The sessions of process ``pid`` inside a transaction, described."""
        ports = self._sessions([pid])
        if not ports:
            return []
        rows = self.query(
            "SELECT client_port, state, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY(%s) "
            "AND xact_start IS NOT NULL AND pid <> pg_backend_pid() "
            # The watch of another worker's lock (issue 17) waits inside its statement all
            # the time, holding nothing: it is not a transaction a stop would keep open.
            "AND application_name <> 'tenure-watch'",
            (ports,),
        )
        return [f"port {port} {state}: {query}" for port, state, query in rows]

    def cut(self, pids: Collection[int]) -> list[str]:
        ports = self._sessions(pids)
        assert ports, f"processes {sorted(pids)} have no TCP connection open (is the store URL on TCP?)"
        rows = self.query(
            "SELECT application_name, state, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND client_port = ANY(%s)",
            (ports,),
        )
        return [f"{app or '(listen)'}:{state}" for app, state, _ in rows]

    def _cluster(self) -> tuple[str, str]:
        out = subprocess.run([_tool("pg_lsclusters"), "--no-header"], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            version, name, port, *_ = line.split()
            if int(port) == self._port:
                return version, name
        raise AssertionError(f"no PostgreSQL cluster of this host listens on port {self._port}:\n{out}")

    def _ctl(self, action: str) -> None:
        version, name = self._cluster()
        subprocess.run(
            [_tool("pg_ctlcluster"), "--skip-systemctl-redirect", version, name, action],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def server_up(self) -> bool:
        ready = [_tool("pg_isready"), "-q", "-h", self._host, "-p", str(self._port)]
        return subprocess.run(ready, check=False).returncode == 0

    def stop_server(self) -> None:
        self._ctl("stop")  # waits until the server is down

    def start_server(self) -> None:
        if not self.server_up():
            self._ctl("start")
        wait_until(self.server_up, "PostgreSQL to accept connections", within=30)

    def close(self) -> None:
        with self._lock:
            self._drop()


class MySQLDB(_Common):
    """A MySQL/MariaDB database over asyncmy (the store's driver; it is async only,
    autocommit), on an event loop of its own thread, so calls are plain and synchronous
    whether or not the caller runs an event loop. The server is stopped and started with
    its command-line tools, as ``.ci/run`` does."""

    dialect = "mysql"
    key_column = "`key`"
    clock_is_host = False
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (%s)"
    slow_insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) SELECT %s FROM (SELECT SLEEP(0.2)) AS pause"

    def __init__(self, url: str, *, keep: bool = False) -> None:
        self._keep = keep
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 3306
        self._user = unquote(parts.username or "root")
        self._password = unquote(parts.password or "")
        self._db = parts.path.lstrip("/")
        self._restart_args: list[str] = []
        self._pid_file = ""
        self._conn: Any = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:  # the kept connection's loop, started on first use
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="mysql-raw", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import asyncmy
        from asyncmy.errors import DataError, IntegrityError, NotSupportedError, ProgrammingError

        async def connect() -> Any:
            return await asyncmy.connect(
                host=self._host,
                port=self._port,
                user=self._user,
                password=self._password,
                database=self._db,
                autocommit=True,
                connect_timeout=5,
            )

        async def run(conn: Any) -> list[tuple[Any, ...]]:
            async with conn.cursor() as cur:
                await cur.execute(sql, params or None)
                return [tuple(r) for r in await cur.fetchall()] if cur.description else []

        async def kept() -> list[tuple[Any, ...]]:
            if self._conn is None:
                self._conn = await connect()
            return await run(self._conn)

        async def once() -> list[tuple[Any, ...]]:
            conn = await connect()
            try:
                return await run(conn)
            finally:
                conn.close()

        with self._lock:  # one statement at a time on the connection (a thread may stop the server)
            retry = self._conn is not None
            while True:
                try:
                    if self._keep:
                        return self._run(kept())
                    # A loop of its own, in a thread: the caller may be inside pytest-asyncio's.
                    with concurrent.futures.ThreadPoolExecutor(1) as pool:
                        return pool.submit(asyncio.run, once()).result(timeout=30)
                except (ProgrammingError, IntegrityError, DataError, NotSupportedError):
                    raise  # the statement's fault, not the connection's
                except Exception as exc:
                    self._drop()
                    if not retry:
                        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
                    retry = False  # the kept connection died (a restart): once more, on a new one

    def _drop(self) -> None:
        async def shut() -> None:  # on the connection's own loop: transports are not thread-safe
            self._conn.close()

        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._run(shut())
            self._conn = None

    def no_transaction_open(self, pid: int, *, wait: float = 0.0) -> bool:
        return not self.in_transaction(pid)

    def in_transaction(self, pid: int) -> list[str]:
        """The sessions of process ``pid`` inside a transaction, described."""
        # A transaction shows in INNODB_TRX from its first statement on (before that it
        # holds nothing); the session's client port is the end of PROCESSLIST.HOST.
        ports = client_ports(pid)
        if not ports:
            return []
        # InnoDB serves INNODB_TRX from a cache it refills only when the last fill is over
        # 0.1 s old: wait that long, or a reading just before could hide a transaction
        # begun since.
        time.sleep(_TRX_CACHE_AGE)
        ((me,),) = self.query("SELECT CONNECTION_ID()")
        # Not an autocommitted read that takes no lock (a worker's wait reads the wake
        # counter while it waits): it holds nothing a pause could keep from others.
        rows = self.query(
            "SELECT p.ID, p.HOST, t.trx_state, t.trx_started FROM information_schema.INNODB_TRX t "
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            "WHERE t.trx_autocommit_non_locking = 0"
        )
        return [
            f"{host} {state} since {since}"
            for id_, host, state, since in rows
            if id_ != me and ":" in host and int(host.rsplit(":", 1)[1]) in ports
        ]

    def cut(self, pids: Collection[int]) -> list[str]:
        ports = set().union(*(client_ports(p) for p in pids))
        assert ports, f"processes {sorted(pids)} have no TCP connection open (is the store URL on TCP?)"
        sessions = {
            int(id_): str(command)
            for id_, host, command in self.query(
                "SELECT ID, HOST, COMMAND FROM information_schema.PROCESSLIST WHERE HOST LIKE '%:%'"
            )
            if int(str(host).rsplit(":", 1)[1]) in ports
        }
        for id_ in sessions:
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                self.query(f"KILL CONNECTION {id_}")
        return [f"{id_}:{command}" for id_, command in sessions.items()]

    def _admin(self, command: str) -> list[str]:
        argv = [_tool("mariadb-admin"), "--protocol=TCP", "-h", self._host, "-P", str(self._port)]
        return [*argv, "-u", "root", command]

    def server_up(self) -> bool:
        return subprocess.run(self._admin("ping"), check=False, capture_output=True, timeout=10).returncode == 0

    def stop_server(self) -> None:
        # Remember how the server runs, to start it again the same way (the default
        # instance, or another one on another port).
        row = self.query("SELECT @@datadir, @@port, @@socket, @@pid_file")[0]
        datadir, port, socket, pid_file = (str(v) for v in row)
        self._restart_args = [f"--datadir={datadir}", f"--port={port}", f"--socket={socket}", f"--pid-file={pid_file}"]
        self._pid_file = pid_file
        pid = Path(pid_file).read_text().strip() if Path(pid_file).is_file() else None
        subprocess.run(self._admin("shutdown"), check=True, capture_output=True, timeout=60)
        wait_until(lambda: not self.server_up(), "MariaDB to stop answering", within=30)
        if pid:  # and to exit: until then, starting it again would be a no-op
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), "MariaDB to exit", within=30)

    def start_server(self) -> None:
        if not self.server_up():
            # As .ci/run starts it; with the settings it ran with if this harness stopped it.
            argv = [_tool("start-stop-daemon"), "--start", "--oknodo", "--background"]
            if self._pid_file:
                argv += ["--pidfile", self._pid_file]
            argv += ["--exec", "/usr/sbin/mariadbd"]
            if self._restart_args:
                argv += ["--", *self._restart_args]
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        wait_until(self.server_up, "MariaDB to accept connections", within=30)

    def close(self) -> None:
        with self._lock:
            self._drop()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = self._thread = None


def raw_db(url: str, *, keep: bool = False) -> RawDB:
    """Raw access to the database a store URL names (with ``keep``, over a connection kept
    open: close it when done)."""
    dialect = dialect_of(url)
    if dialect == "sqlite":
        return SQLiteDB(url)
    if dialect == "postgresql":
        return PostgreSQLDB(url, keep=keep)
    return MySQLDB(url, keep=keep)


def no_transaction_open(url: str, pid: int, *, wait: float = 0.0) -> bool:
    """:meth:`RawDB.no_transaction_open` on a connection of its own (for worker children)."""
    db = raw_db(url)
    try:
        return db.no_transaction_open(pid, wait=wait)
    finally:
        db.close()
