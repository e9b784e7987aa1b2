"""Raw access to the database behind a store, for what the Store API cannot do on purpose
(forge a newer schema version, read a table the tests made). One class per dialect
(SQLite, PostgreSQL, MySQL/MariaDB); :func:`raw_db` picks it from the store URL.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any, Protocol
from urllib.parse import urlsplit

from tenure.store.sqlite import parse_sqlite_url

#: A table the fenced-transaction tests write to, as a handler would write its decisions.
PROBE_TABLE = "contract_probe"


class RawDB(Protocol):
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

    def set_schema_version(self, version: int) -> None: ...

    def read_schema_version(self) -> int | None: ...

    def count_rows(self, table: str) -> int: ...

    def create_probe_table(self) -> None: ...

    def probe_notes(self) -> list[str]: ...

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own (autocommit); return its rows."""
        ...

    def set_task_params(self, kind: str, key: str, text: str) -> None:
        """Overwrite a task's stored params text, as an older version or a direct write could."""

    def set_task_key(self, kind: str, key: str, new_key: str) -> None:
        """Rename a task's key in place, bypassing every check tenure makes."""


class _TaskRows:
    """Direct writes to task rows, shared by the dialects (``?`` becomes the dialect's placeholder)."""

    placeholder = "?"
    key_column = "key"

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _update_task(self, assignment: str, kind: str, key: str, value: str) -> None:
        p, k = self.placeholder, self.key_column
        self._execute(f"UPDATE tenure_tasks SET {assignment} = {p} WHERE kind = {p} AND {k} = {p}", (value, kind, key))

    def set_task_params(self, kind: str, key: str, text: str) -> None:
        self._update_task("params", kind, key, text)

    def set_task_key(self, kind: str, key: str, new_key: str) -> None:
        self._update_task(self.key_column, kind, key, new_key)


class SQLiteRaw(_TaskRows):
    dialect = "sqlite"
    clock_is_host = True
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (?)"
    select_probe_sql = f"SELECT note FROM {PROBE_TABLE} ORDER BY note"
    slow_insert_probe_sql = (
        f"INSERT INTO {PROBE_TABLE} (note) SELECT ? FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) SELECT count(*) FROM c)"
    )

    def __init__(self, url: str) -> None:
        self._path, _ = parse_sqlite_url(url)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self._path, timeout=10)) as conn:
            with conn:  # commits
                rows = conn.execute(sql, params).fetchall()
            return [tuple(r) for r in rows]

    def set_schema_version(self, version: int) -> None:
        self._execute("UPDATE tenure_meta SET value = ? WHERE name = 'schema_version'", (str(version),))
        assert self.read_schema_version() == version

    def read_schema_version(self) -> int | None:
        rows = self._execute("SELECT value FROM tenure_meta WHERE name = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def count_rows(self, table: str) -> int:
        return int(self._execute(f"SELECT count(*) FROM {table}")[0][0])

    def create_probe_table(self) -> None:
        self._execute(f"CREATE TABLE {PROBE_TABLE} (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")

    def probe_notes(self) -> list[str]:
        return [str(r[0]) for r in self._execute(self.select_probe_sql)]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._execute(sql)


class PostgreSQLRaw(_TaskRows):
    dialect = "postgresql"
    placeholder = "%s"
    clock_is_host = False  # the server's clock; on 127.0.0.1 it is the host's anyway
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (%s)"
    select_probe_sql = f"SELECT note FROM {PROBE_TABLE} ORDER BY note"
    slow_insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) SELECT %s FROM pg_sleep(0.2)"

    def __init__(self, url: str) -> None:
        self._url = url

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self._url, autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def set_schema_version(self, version: int) -> None:
        self._execute("UPDATE tenure_meta SET value = %s WHERE name = 'schema_version'", (str(version),))
        assert self.read_schema_version() == version

    def read_schema_version(self) -> int | None:
        rows = self._execute("SELECT value FROM tenure_meta WHERE name = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def count_rows(self, table: str) -> int:
        return int(self._execute(f"SELECT count(*) FROM {table}")[0][0])

    def create_probe_table(self) -> None:
        self._execute(f"CREATE TABLE {PROBE_TABLE} (id SERIAL PRIMARY KEY, note TEXT NOT NULL)")

    def probe_notes(self) -> list[str]:
        return [str(r[0]) for r in self._execute(self.select_probe_sql)]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._execute(sql)


class MySQLRaw(_TaskRows):
    dialect = "mysql"
    placeholder = "%s"
    key_column = "`key`"
    clock_is_host = False
    insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) VALUES (%s)"
    select_probe_sql = f"SELECT note FROM {PROBE_TABLE} ORDER BY note"
    slow_insert_probe_sql = f"INSERT INTO {PROBE_TABLE} (note) SELECT %s FROM (SELECT SLEEP(0.2)) AS pause"

    def __init__(self, url: str) -> None:
        self._parts = urlsplit(url)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import asyncio
        import concurrent.futures

        import asyncmy

        p = self._parts

        async def go() -> list[tuple[Any, ...]]:
            conn = await asyncmy.connect(
                host=p.hostname or "127.0.0.1",
                port=p.port or 3306,
                user=p.username or "root",
                password=p.password or "",
                database=p.path.lstrip("/"),
                autocommit=True,
            )
            try:
                async with conn.cursor() as cur:
                    await cur.execute(sql, params or None)
                    return [tuple(r) for r in await cur.fetchall()] if cur.description else []
            finally:
                conn.close()

        # Tests call this from inside pytest-asyncio's loop: asyncio.run needs its own thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def set_schema_version(self, version: int) -> None:
        self._execute("UPDATE tenure_meta SET value = %s WHERE name = 'schema_version'", (str(version),))
        assert self.read_schema_version() == version

    def read_schema_version(self) -> int | None:
        rows = self._execute("SELECT value FROM tenure_meta WHERE name = 'schema_version'")
        return int(rows[0][0]) if rows else None

    def count_rows(self, table: str) -> int:
        return int(self._execute(f"SELECT count(*) FROM {table}")[0][0])

    def create_probe_table(self) -> None:
        self._execute(
            f"CREATE TABLE {PROBE_TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT NOT NULL) ENGINE=InnoDB"
        )

    def probe_notes(self) -> list[str]:
        return [str(r[0]) for r in self._execute(self.select_probe_sql)]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._execute(sql)


def raw_db(url: str) -> RawDB:
    """Raw access to the database a store URL names."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteRaw(url)
    if scheme in ("postgresql", "postgres"):
        return PostgreSQLRaw(url)
    if scheme in ("mysql", "mariadb"):
        return MySQLRaw(url)
    raise NotImplementedError(f"no raw test access for {scheme} stores yet")
