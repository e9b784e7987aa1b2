"""Life cycle and schema: open, migrate, versions, the clock."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tenure.errors import SchemaMissing, SchemaTooNew
from tenure.store import SCHEMA_VERSION, Store, make_store

from .dialect import raw_db
from .helpers import add, register, task_of


async def test_open_with_migrate_creates_current_schema(store: Store) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    # The schema is usable at once: a task round-trips.
    await add(store, "dispatch", "barcelona")
    assert (await task_of(store, "dispatch", "barcelona")).key == "barcelona"


async def test_migrate_is_idempotent_and_keeps_data(store: Store, store_url: str) -> None:
    await add(store, "dispatch", "barcelona", params_json='{"zone":1}')
    assert await store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert await store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    # A second store on the same database migrating on open changes nothing either.
    other = make_store(store_url)
    await other.open(migrate=True)
    try:
        assert await other.schema_version() == SCHEMA_VERSION
        assert (await task_of(other, "dispatch", "barcelona")).params == {"zone": 1}
    finally:
        await other.close()
    assert [t.key for t in await store.list_tasks()] == ["barcelona"]


async def test_the_last_migration_runs_again_after_an_interrupted_migrate(store: Store, store_url: str) -> None:
    """DDL commits on its own on MySQL/MariaDB: a migrate cut off after a script's DDL but
    before the version was recorded runs that script again, over its own work (the
    version 9 index, which it must neither add twice nor fail on)."""
    await add(store, "dispatch", "barcelona")
    raw = raw_db(store_url)
    previous = SCHEMA_VERSION - 1
    raw.query(f"UPDATE tenure_meta SET value = '{previous}' WHERE name = 'schema_version'")
    assert await store.migrate() == (previous, SCHEMA_VERSION)
    assert await store.schema_version() == SCHEMA_VERSION
    if raw.dialect == "mysql":
        indexes = raw.query(
            "SELECT DISTINCT index_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND table_name = 'tenure_tasks'"
        )
        assert {"tenure_tasks_owner_key", "tenure_tasks_task"} <= {r[0] for r in indexes}
        assert "tenure_tasks_owner" not in {r[0] for r in indexes}
    await register(store, "w1")
    assert [c.task.key for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=5)] == ["barcelona"]


async def test_concurrent_migrations_agree(store_url: str) -> None:
    stores = [make_store(store_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open(migrate=True) for s in stores))
        versions = await asyncio.gather(*(s.schema_version() for s in stores))
        assert versions == [SCHEMA_VERSION] * 3
    finally:
        for s in stores:
            await s.close()


async def test_sqlite_new_file_opened_by_many_stores_at_once(tmp_path: Path) -> None:
    # The first opens of a new file race to switch it to WAL, and SQLite answers the
    # losers "database is locked" at once (no busy handler): about one round in fifteen
    # failed before they retried. A failed open must not leave a connection thread behind.
    before = set(threading.enumerate())
    for i in range(40):
        stores = [make_store(f"sqlite:///{tmp_path}/new{i}.db") for _ in range(6)]
        try:
            await asyncio.gather(*(s.open(migrate=True) for s in stores))
        finally:
            for s in stores:
                await s.close()
    # A closed connection's thread has been told to stop and answered; it may still be on
    # its last lines when close() returns, so give each a moment to end. One that was
    # never told (a leak) runs on and fails the check.
    left = [t for t in threading.enumerate() if t not in before]
    for t in left:
        t.join(timeout=5)
    assert not [t for t in left if t.is_alive()], "connection threads left running after close"


async def test_open_without_migrate_on_empty_database_is_schema_missing(store_url: str) -> None:
    s = make_store(store_url)
    try:
        with pytest.raises(SchemaMissing, match="migrate"):
            await s.open(migrate=False)
        # A refused open is not an open store: opening again really checks or migrates.
        await s.open(migrate=True)
        assert await s.schema_version() == SCHEMA_VERSION
    finally:
        await s.close()


async def test_migrate_after_schema_missing_reports_versions(store_url: str) -> None:
    # App.migrate relies on this: connect without migrating, then migrate and report.
    s = make_store(store_url)
    try:
        with pytest.raises(SchemaMissing):
            await s.open(migrate=False)
        assert await s.migrate() == (0, SCHEMA_VERSION)
        assert await s.schema_version() == SCHEMA_VERSION
    finally:
        await s.close()


async def test_open_without_migrate_on_migrated_database(store: Store, store_url: str) -> None:
    await add(store, "dispatch", "lisbon")
    other = make_store(store_url)
    await other.open(migrate=False)
    try:
        assert await other.schema_version() == SCHEMA_VERSION
        assert (await task_of(other, "dispatch", "lisbon")).key == "lisbon"
    finally:
        await other.close()


@pytest.mark.parametrize("migrate", [True, False])
async def test_schema_newer_than_code_is_refused(store: Store, store_url: str, migrate: bool) -> None:
    await add(store, "dispatch", "barcelona")
    await store.close()
    raw = raw_db(store_url)
    raw.set_schema_version(SCHEMA_VERSION + 1)

    newer = make_store(store_url)
    try:
        with pytest.raises(SchemaTooNew) as info:
            await newer.open(migrate=migrate)
    finally:
        await newer.close()
    assert str(SCHEMA_VERSION + 1) in str(info.value)
    assert "upgrade" in str(info.value)
    # Nothing was touched: the version stays, the data stays.
    assert raw.read_schema_version() == SCHEMA_VERSION + 1
    assert raw.count_rows("tenure_tasks") == 1


async def test_migrate_on_open_store_refuses_newer_schema(store: Store, store_url: str) -> None:
    await add(store, "dispatch", "barcelona")
    raw = raw_db(store_url)
    raw.set_schema_version(SCHEMA_VERSION + 5)
    assert await store.schema_version() == SCHEMA_VERSION + 5
    with pytest.raises(SchemaTooNew):
        await store.migrate()
    assert raw.read_schema_version() == SCHEMA_VERSION + 5
    assert raw.count_rows("tenure_tasks") == 1


async def test_close_is_idempotent(store_url: str) -> None:
    s = make_store(store_url)
    await s.open(migrate=True)
    await s.close()
    await s.close()
    # And it can be opened again afterwards.
    await s.open(migrate=False)
    try:
        assert await s.schema_version() == SCHEMA_VERSION
    finally:
        await s.close()


async def test_dialect_and_display_url(store: Store, store_url: str) -> None:
    assert store.dialect in ("sqlite", "postgresql", "mysql")
    assert store.dialect == raw_db(store_url).dialect
    assert store.display_url
    password = urlsplit(store_url).password
    if password:
        assert password not in store.display_url
    else:
        assert store.display_url == store_url


async def test_now_is_the_database_clock(store: Store, store_url: str) -> None:
    first = await store.now()
    if raw_db(store_url).clock_is_host:
        assert abs(first - time.time()) < 2.0
    # The clock moves forward (poll, with a deadline, until it ticks).
    deadline = time.monotonic() + 5
    later = await store.now()
    while later <= first and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        later = await store.now()
    assert later > first
