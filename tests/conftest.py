"""Shared fixtures: a fresh store of every kind under test, and an App on it.

To test another store, write a factory (a context manager that makes an empty database,
yields its URL and drops the database afterwards), add it to ``STORE_FACTORIES`` and its
id to ``STORE_KINDS``. The store contract suite and every test built on ``store_url``,
``store`` or ``app`` then run on it too. Dialect-specific test helpers (raw access to the
database behind a store) live in ``tests/store_contract/dialect.py``.

``TENURE_TEST_STORES`` (comma-separated ids, default: all) chooses the kinds to run, e.g.
``TENURE_TEST_STORES=sqlite``; ``TENURE_TEST_POSTGRESQL`` is the server's maintenance URL
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and ``TENURE_TEST_MARIADB``
the MariaDB/MySQL one (default ``mysql://root@127.0.0.1:3306/test``), on which a scratch
database is created and dropped for each test.

A server that does not answer fails its tests under CI (``CI`` set), so CI never passes
by skipping them; on a developer machine they are skipped, and the run ends with a loud
banner saying which stores were not tested.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import tenure
from tenure.store import Store, make_store


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


#: Seconds spent per test folder (setup, call and teardown), shown at the end of the run:
#: issue 7 asks the fault suite to stay under ten minutes for all three stores.
_seconds_by_folder: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    folder = report.nodeid.split("::")[0].rpartition("/")[0]
    _seconds_by_folder[folder] = _seconds_by_folder.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missing = {k: why for k, why in _unavailable.items() if why is not None}
    for kind, why in missing.items():
        terminalreporter.write_sep("!", f"{kind.upper()} WAS NOT TESTED: server unreachable ({why})", red=True)
    if _seconds_by_folder:
        terminalreporter.write_sep("-", "seconds by test folder")
        for folder, seconds in sorted(_seconds_by_folder.items()):
            terminalreporter.write_line(f"{folder or '.':<24}{seconds:8.1f}")


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of each store kind."""
    require_store(request.param, tmp_path)
    with STORE_FACTORIES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """The store at ``store_url``, opened with its schema created."""
    s = make_store(store_url)
    await s.open(migrate=True)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[tenure.App]:
    """An opened App on ``store_url`` with one kind, ``dispatch`` (every 5 s)."""
    a = tenure.App(store_url)

    @a.task("dispatch", every=5.0)
    async def dispatch(ctx: tenure.Context) -> None:  # never run by these tests
        raise AssertionError("the dispatch handler was not expected to run")

    await a.open(migrate=True)
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Put the root logger back as it was: CLI commands run in-process (``tenure worker``,
    ``tenure dashboard``) configure logging, and a handler left behind would write to a
    capture stream closed after its test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
