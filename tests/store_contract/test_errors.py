"""One rule for driver errors, on every store.

What the database refuses reaches the caller as a :class:`~tenure.errors.StoreError`,
never as the driver's own exception (``sqlite3``, ``psycopg``, ``asyncmy``), with the
driver's exception as ``__cause__``: from a store method, from a statement in a fenced
transaction, and from a fenced block that lets it through. The database answered, so it
is not :class:`~tenure.errors.StoreUnavailable`; nothing written where it failed is kept.
"""

from __future__ import annotations

import pytest

from tenure.errors import StoreError, StoreUnavailable, TaskNotFound
from tenure.store import Store

from .dialect import PROBE_TABLE, RawDB, raw_db
from .helpers import add, owned

#: The top-level modules of the stores' drivers.
DRIVERS = {"sqlite3", "psycopg", "asyncmy", "pymysql"}


def assert_refused_by_database(exc: BaseException) -> None:
    """``exc`` is the store's error for an error its driver raised."""
    assert isinstance(exc, StoreError), repr(exc)
    assert not isinstance(exc, StoreUnavailable), repr(exc)
    assert type(exc).__module__.split(".")[0] == "tenure", repr(exc)
    cause = exc.__cause__
    assert cause is not None
    assert type(cause).__module__.split(".")[0] in DRIVERS, repr(cause)


@pytest.mark.parametrize(
    "bad_sql",
    [
        pytest.param(f"SELECT no_such_column FROM {PROBE_TABLE}", id="unknown-column"),
        pytest.param(f"INSERT INTO {PROBE_TABLE} (id, note) VALUES (1, 'again')", id="duplicate-key"),
    ],
)
async def test_a_fenced_statement_the_database_refuses_is_a_store_error(
    store: Store, probe: RawDB, bad_sql: str
) -> None:
    claim = await owned(store)

    async def commit() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(f"INSERT INTO {PROBE_TABLE} (id, note) VALUES (1, 'first')")
            await tx.execute(bad_sql)

    with pytest.raises(StoreError) as caught:
        await commit()
    assert_refused_by_database(caught.value)
    assert probe.probe_notes() == []


async def test_a_handler_catching_a_refused_statement_sees_the_store_error(store: Store, probe: RawDB) -> None:
    claim = await owned(store)

    seen: list[BaseException] = []

    class Done(Exception):
        pass

    async def handler() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(probe.insert_probe_sql, ("before",))
            try:
                await tx.fetchall(f"SELECT no_such_column FROM {PROBE_TABLE}")
            except Exception as exc:  # what a handler's own except clause would see
                seen.append(exc)
            raise Done

    with pytest.raises(Done):
        await handler()
    (exc,) = seen
    assert_refused_by_database(exc)
    assert probe.probe_notes() == []


async def test_store_methods_on_a_damaged_schema_raise_store_errors(store: Store, store_url: str) -> None:
    await add(store, "dispatch", "barcelona")
    raw = raw_db(store_url)
    raw.query("DROP TABLE tenure_runs")
    with pytest.raises(StoreError) as caught:
        await store.list_runs()
    assert_refused_by_database(caught.value)
    with pytest.raises(StoreError) as caught:
        await store.prune_runs(older_than=0.0)
    assert_refused_by_database(caught.value)
    # A write that fails half-way keeps nothing: the task is added, then the change
    # counter's table is missing.
    raw.query("DROP TABLE tenure_counters")
    with pytest.raises(StoreError) as caught:
        await add(store, "dispatch", "lisbon")
    assert_refused_by_database(caught.value)
    assert await store.get_task("dispatch", "lisbon") is None
    with pytest.raises(TaskNotFound):
        await store.remove_task("dispatch", "lisbon")
