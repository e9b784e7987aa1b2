"""Scratch databases of every store kind under test, and the fixture every multi-process
suite builds on.

To test another store, write a factory (a context manager that makes an empty database,
yields its URL and drops the database afterwards), add it to ``STORE_FACTORIES`` and its
id to ``STORE_KINDS``: the store contract suite and every test built on the
``store_url``, ``store`` and ``app`` fixtures (``tests/conftest.py``) and on
:func:`worker_cluster` then run on it too.

``TENURE_TEST_STORES`` (comma-separated ids, default: all) chooses the kinds to run, e.g.
``TENURE_TEST_STORES=sqlite``; ``TENURE_TEST_POSTGRESQL`` is the server's maintenance URL
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and ``TENURE_TEST_MARIADB``
the MariaDB/MySQL one (default ``mysql://root@127.0.0.1:3306/test``), on which a scratch
database is created and dropped for each test.

A server that does not answer fails its tests under CI (``CI`` set), so CI never passes
by skipping them; on a developer machine they are skipped (:func:`require_store`), and
the run ends with a loud banner saying which stores were not tested (:func:`unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from tenure.errors import StoreError
from tenure.store import make_store

from .cluster import WorkerCluster
from .rawdb import raw_db

C = TypeVar("C", bound=WorkerCluster)


@contextmanager
def _sqlite_store(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file for one test (``tmp_path`` is absolute: ``sqlite:////abs``)."""
    path = tmp_path / "tenure.db"
    assert path.is_absolute()
    yield f"sqlite:///{path}"


@contextmanager
def _postgresql_store(tmp_path: Path) -> Iterator[str]:
    """A scratch database on the PostgreSQL server, dropped after the test."""
    import psycopg  # only needed when PostgreSQL is under test

    admin = os.environ.get("TENURE_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"tenure_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_mysql_admin(admin_url: str, sql: str) -> None:
    """Run one statement on a MySQL/MariaDB server (asyncmy is async; tests need it sync)."""
    import asyncio
    import concurrent.futures

    import asyncmy

    p = urlsplit(admin_url)

    async def go() -> None:
        conn = await asyncmy.connect(
            host=p.hostname or "127.0.0.1",
            port=p.port or 3306,
            user=p.username or "root",
            password=p.password or "",
            autocommit=True,
            connect_timeout=5,
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    # A fixture may run inside pytest-asyncio's loop: give asyncio.run a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


@contextmanager
def _mariadb_store(tmp_path: Path) -> Iterator[str]:
    """A scratch database on the MariaDB (or MySQL) server, dropped after the test."""
    admin = os.environ.get("TENURE_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")
    name = f"tenure_test_{uuid.uuid4().hex[:16]}"
    run_mysql_admin(admin, f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    finally:
        run_mysql_admin(admin, f"DROP DATABASE IF EXISTS {name}")


#: One factory per store kind: given a scratch folder, make an empty database and yield its URL.
STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "sqlite": _sqlite_store,
    "postgresql": _postgresql_store,
    "mariadb": _mariadb_store,
}

#: Store kinds every store-backed test runs against, in order.
STORE_KINDS: list[str] = [
    k.strip() for k in os.environ.get("TENURE_TEST_STORES", ",".join(STORE_FACTORIES)).split(",") if k.strip()
]
assert set(STORE_KINDS) <= set(STORE_FACTORIES), f"unknown store kind in TENURE_TEST_STORES: {STORE_KINDS}"

_unavailable: dict[str, str | None] = {}


def _why_unavailable(kind: str, tmp_path: Path) -> str | None:
    """None if a scratch database of ``kind`` can be made, else why not (checked once)."""
    if kind not in _unavailable:
        try:
            with STORE_FACTORIES[kind](tmp_path):
                pass
            _unavailable[kind] = None
        except Exception as exc:
            _unavailable[kind] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _unavailable[kind]


def require_store(kind: str, tmp_path: Path) -> None:
    """Fail (under CI) or skip (elsewhere) a test whose store's server does not answer."""
    why = _why_unavailable(kind, tmp_path)
    if why is None:
        return
    message = f"the {kind} server is unreachable ({why})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must test every store")
    pytest.skip(f"NOT TESTED ON {kind.upper()}: {message}")


def unavailable() -> dict[str, str]:
    """The store kinds whose server did not answer, and why."""
    return {k: why for k, why in _unavailable.items() if why is not None}


@contextlib.asynccontextmanager
async def worker_cluster(cls: type[C], kind: str, tmp_path: Path, *, restarts_server: bool = False) -> AsyncIterator[C]:
    """A fresh database of ``kind`` with tenure's schema, and a cluster of class ``cls``
    (a :class:`~support.cluster.WorkerCluster`) on it, for a suite's fixture.

    An SQLite store runs with ``synchronous=normal``: commits are not fsynced, so the many
    small transactions of several workers do not make the timings depend on the disk
    (durability across power loss is not what these suites are about).

    At the end, whatever the test's outcome: every worker is SIGKILLed and reaped (SIGKILL
    also ends a process stopped with SIGSTOP) and each one's log tail printed (pytest shows
    it when the test failed); with ``restarts_server`` (a suite whose tests stop the
    server), the server is started again if the test left it down, before the scratch
    database is dropped. Other suites never start a server: one a restart test stopped on
    purpose, meanwhile, must stay down.
    """
    require_store(kind, tmp_path)
    with STORE_FACTORIES[kind](tmp_path) as base_url:
        url = f"{base_url}?synchronous=normal" if kind == "sqlite" else base_url
        db = raw_db(url, keep=True)
        try:
            store = make_store(url)
            await store.open(migrate=True)
            cluster = cls(kind=kind, url=url, store=store, db=db, tmp=tmp_path)
            try:
                yield cluster
            finally:
                try:
                    cluster.reap()
                finally:
                    cluster.print_logs()
                    with contextlib.suppress(StoreError):
                        await store.close()
        finally:
            try:
                if restarts_server:
                    db.start_server()  # a no-op if it runs; the scratch database is dropped next
            finally:
                db.close()
