"""Nothing a handler does with its fenced transaction gets a write past the fence (issue 11):
transaction control and session changes are refused (or detected), the transaction is
dead once its block ends, statements and the commit take turns, connections go back to
the pool clean, and MariaDB claims do not wait behind other tasks' fenced transactions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tenure.errors import (
    LeaseLost,
    StatementRefused,
    StoreUnavailable,
    TransactionBroken,
    TransactionClosed,
)
from tenure.models import SlotDone
from tenure.store import FencedTransaction, Store, statements

from .dialect import PROBE_TABLE, RawDB, raw_db
from .helpers import add, assert_cancelled_block_keeps_nothing, opened, owned, register, task_of

#: Statements that would end or change the transaction or the session, per dialect.
REFUSED = {
    "sqlite": [
        "COMMIT",
        "  commit;",
        "/* hidden */ COMMIT",
        "END",
        "ROLLBACK",
        "BEGIN",
        "BEGIN IMMEDIATE",
        "SAVEPOINT s",
        "RELEASE s",
        "ATTACH DATABASE ':memory:' AS other",
        "DETACH other",
        "VACUUM",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA wal_checkpoint",
        "CREATE TEMP TABLE scratch (a INTEGER)",
        # The temp schema named, quoted: a temporary table or trigger all the same.
        'CREATE TABLE "temp".scratch (a INTEGER)',
        "CREATE TABLE [temp].scratch (a INTEGER)",
        f'CREATE TRIGGER "temp".shadow AFTER INSERT ON {PROBE_TABLE} BEGIN SELECT 1; END',
        f"INSERT INTO {PROBE_TABLE} (note) VALUES ('x'); COMMIT",
    ],
    "postgresql": [
        "COMMIT",
        "commit -- the block's",
        "END",
        "ROLLBACK",
        "ABORT",
        "BEGIN",
        "START TRANSACTION",
        "SAVEPOINT s",
        "RELEASE SAVEPOINT s",
        "PREPARE TRANSACTION 'x'",
        "SET idle_in_transaction_session_timeout = 0",
        "SET SESSION statement_timeout = 0",
        "SET LOCAL idle_in_transaction_session_timeout = 0",
        'SET LOCAL "lock_timeout" TO 0',
        "RESET ALL",
        "DISCARD ALL",
        "LISTEN somewhere",
        "SELECT set_config('idle_in_transaction_session_timeout', '0', false)",
        f"INSERT INTO {PROBE_TABLE} (note) VALUES ($$x$$); COMMIT",
        "/* nested /* comment */ still a comment */ COMMIT",
    ],
    "mysql": [
        "COMMIT",
        "ROLLBACK",
        "BEGIN",
        "START TRANSACTION",
        "SAVEPOINT s",
        f"TRUNCATE {PROBE_TABLE}",
        f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INT)",
        "CREATE TABLE scratch (id INT)",
        f"ALTER TABLE {PROBE_TABLE} ADD COLUMN extra INT",
        f"LOCK TABLES {PROBE_TABLE} WRITE",
        "SET autocommit = 1",
        "SET SESSION innodb_lock_wait_timeout = 100",
        "CALL some_procedure()",
        "/*!COMMIT*/",
        f"SELECT 1 /*! ; TRUNCATE {PROBE_TABLE} */",
        f"INSERT INTO {PROBE_TABLE} (note) VALUES ('x'); COMMIT",
        f"SELECT 'a\\'; COMMIT; -- ' FROM {PROBE_TABLE}; COMMIT",
    ],
}

#: Statements a fenced transaction runs, per dialect (each must not end the transaction).
ALLOWED = {
    "sqlite": ["PRAGMA table_info(contract_probe)", "SELECT 'COMMIT; ROLLBACK'", "CREATE TABLE kept (a INTEGER)"],
    "postgresql": [
        "SET LOCAL statement_timeout = '5s'",
        "SET CONSTRAINTS ALL DEFERRED",
        "SELECT $tag$ COMMIT; $tag$",
        "CREATE TABLE kept (a integer)",
        'SELECT 1 AS "commit"',
    ],
    "mysql": ["SELECT 'COMMIT; ROLLBACK'", "DO 1", "SELECT 5--1", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"],
}


def with_options(url: str, **options: str) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in options.items())


# -- transaction control ---------------------------------------------------------------


async def test_transaction_control_is_refused_and_nothing_is_kept(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    for statement in REFUSED[probe.dialect]:
        got: list[BaseException] = []

        async def careless(statement: str, got: list[BaseException]) -> None:
            async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=50.0) as tx:
                await tx.execute(probe.insert_probe_sql, ("before",))
                try:
                    await tx.execute(statement)
                except StatementRefused as exc:  # a careless handler goes on regardless
                    got.append(exc)
                try:
                    await tx.execute(probe.insert_probe_sql, ("after",))
                except TransactionClosed as exc:
                    got.append(exc)

        with pytest.raises(TransactionClosed, match="nothing written in the block was kept"):
            await careless(statement, got)
        assert [type(e) for e in got] == [StatementRefused, TransactionClosed], statement
        assert probe.probe_notes() == [], f"{statement!r} let writes through"
        assert (await task_of(store, "dispatch", "barcelona")).last_slot is None, statement
    # The store is still usable, and the next block commits.
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=60.0) as tx:
        await tx.execute(probe.insert_probe_sql, ("next",))
    assert probe.probe_notes() == ["next"]
    assert (await task_of(store, "dispatch", "barcelona")).last_slot == 60.0


async def test_allowed_statements_run_in_the_transaction(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        for statement in ALLOWED[probe.dialect]:
            await tx.execute(statement)
        await tx.execute(probe.insert_probe_sql, ("kept",))
    assert probe.probe_notes() == ["kept"]


async def test_a_commit_the_scanner_missed_is_caught_by_the_database(
    store: Store, probe: RawDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second lines: with the statement check blinded, a raw COMMIT reaches the
    database. SQLite's authorizer refuses it; on a server the driver's transaction status
    shows the transaction ended, the block breaks, and nothing after the break runs."""
    claim = await owned(store)
    monkeypatch.setattr(statements, "check", lambda sql, dialect, **kw: statements.Checked())
    got: list[BaseException] = []

    async def careless() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(probe.insert_probe_sql, ("before",))
            try:
                await tx.execute("COMMIT")
            except (StatementRefused, TransactionBroken) as exc:
                got.append(exc)
            try:
                await tx.execute(probe.insert_probe_sql, ("after",))
            except TransactionClosed as exc:
                got.append(exc)

    with pytest.raises(TransactionClosed):
        await careless()
    if probe.dialect == "sqlite":
        assert [type(e) for e in got] == [StatementRefused, TransactionClosed]
        assert probe.probe_notes() == []
    else:
        assert [type(e) for e in got] == [TransactionBroken, TransactionClosed]
        # What came before the break was committed by it: that is what the statement
        # check is there for. Nothing after it ran.
        assert probe.probe_notes() == ["before"]
    monkeypatch.undo()
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        await tx.execute(probe.insert_probe_sql, ("next",))
    assert probe.probe_notes()[-1] == "next"


async def test_a_quoted_placeholder_cannot_smuggle_statements_past_the_check(store: Store, probe: RawDB) -> None:
    """The drivers substitute parameters into the text client-side (psycopg for the
    statement that travels with BEGIN and the fence, asyncmy always), placeholders inside
    quotes included: with ``'%s'`` a value is read as SQL, which the check, reading the
    statement as written, never saw. Such a statement is refused; nothing is kept."""
    if probe.dialect == "sqlite":
        pytest.skip("SQLite binds parameters in the prepared statement: a quoted ? is a character")
    claim = await owned(store)
    careless = probe.insert_probe_sql.split("VALUES")[0] + "VALUES ('%s')"
    value = f"); COMMIT; INSERT INTO {PROBE_TABLE} (note) VALUES (107),("

    async def handler() -> None:
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(careless, (value,))
            raise RuntimeError("the block fails: nothing in it may be kept")

    with pytest.raises(StatementRefused, match="placeholder"):
        await handler()
    assert probe.probe_notes() == []


# -- the transaction outlives its block ---------------------------------------------------


async def test_a_transaction_kept_past_its_block_is_dead_and_touches_no_connection(
    store_url: str, store: Store, probe: RawDB
) -> None:
    claim = await owned(store)
    async with opened(with_options(store_url, pool="1")) as one:  # every block on one connection
        kept: list[FencedTransaction] = []
        async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.execute(probe.insert_probe_sql, ("inside",))
            kept.append(tx)
        with pytest.raises(TransactionClosed, match="its block has ended"):
            await kept[0].execute(probe.insert_probe_sql, ("after the block",))
        # The connection it had now holds another task's transaction: the kept object
        # must not write into it.
        async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx2:
            await tx2.execute(probe.insert_probe_sql, ("second",))
            with pytest.raises(TransactionClosed):
                await kept[0].execute(probe.insert_probe_sql, ("stale, in another's transaction",))
            with pytest.raises(TransactionClosed):
                await kept[0].fetchall(probe.select_probe_sql)
            with pytest.raises(TransactionClosed):
                await kept[0].executemany(probe.insert_probe_sql, [("many",)])
    assert probe.probe_notes() == ["inside", "second"]


async def test_statements_and_the_commit_take_turns(store: Store, probe: RawDB) -> None:
    """A statement a handler's background task has in flight when the block ends runs
    before the commit, never beside or after it; one that starts after is refused."""
    claim = await owned(store)
    in_flight: asyncio.Task[int] | None = None
    late: asyncio.Task[int] | None = None
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        await tx.execute(probe.insert_probe_sql, ("first",))
        in_flight = asyncio.create_task(tx.execute(probe.slow_insert_probe_sql, ("background",)))
        await asyncio.sleep(0.05)  # let it be sent: the block ends while the database runs it
    assert in_flight.done()
    assert in_flight.result() == 1
    assert probe.probe_notes() == ["background", "first"]
    async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
        await tx.execute(probe.insert_probe_sql, ("second",))
        late = asyncio.create_task(tx.execute(probe.insert_probe_sql, ("late",)))  # starts after the block
    with pytest.raises(TransactionClosed):
        await late
    assert probe.probe_notes() == ["background", "first", "second"]


# -- sessions go back clean ---------------------------------------------------------------


async def test_session_state_does_not_leak_to_the_next_transaction(store_url: str, store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    raw = raw_db(store_url)
    async with opened(with_options(store_url, pool="1")) as one:
        if probe.dialect == "postgresql":
            # A function the scanner cannot see into switches the idle-in-transaction
            # timeout off for the session: it must not outlive the transaction.
            raw.query(
                "CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS "
                "$$ SELECT set_config('idle_in_transaction_session_timeout', '0', false) $$"
            )
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                assert await tx.fetchone("SELECT leak()") == ("0",)
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                assert await tx.fetchone("SHOW idle_in_transaction_session_timeout") == ("2s",)
            # Any other setting, set for the session in a DO block (its body is a string to
            # the scanner): commits no longer durable, transactions read-only by default.
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute(
                    "DO $$ BEGIN SET synchronous_commit = off; SET default_transaction_read_only = on; END $$"
                )
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute(probe.insert_probe_sql, ("after the DO block",))
                assert await tx.fetchone("SHOW synchronous_commit") == ("on",)
            assert probe.probe_notes() == ["after the DO block"]
            # A session advisory lock must not stay held by a pooled connection.
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute("SELECT pg_advisory_lock(4242)")
            await wait_until(lambda: raw.query("SELECT pg_try_advisory_lock(4242)")[0][0] is True)
        elif probe.dialect == "mysql":
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.fetchone("SELECT @leaked := 42")
                assert await tx.fetchone("SELECT GET_LOCK('tenure-contract-leak', 0)") == (1,)
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                assert await tx.fetchone("SELECT @leaked") == (None,)
            await wait_until(lambda: raw.query("SELECT IS_FREE_LOCK('tenure-contract-leak')")[0][0] == 1)
        else:
            pytest.skip("SQLite refuses what would change its connection (see REFUSED)")


async def wait_until(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- MariaDB claims and slots do not wait on other tasks' rows ------------------------------


async def test_claims_slots_and_releases_of_free_tasks_do_not_wait_behind_a_fenced_transaction(
    store_url: str, store: Store, probe: RawDB
) -> None:
    """On a fresh, unanalysed table, with one task's row locked by an open fenced
    transaction, claiming other (free) tasks, recording their slots and releasing them must
    not wait.
    (MariaDB planned the claim's UPDATE … JOIN as a full scan, which waited on that row.)"""
    if probe.dialect == "sqlite":
        pytest.skip("SQLite has one write lock: every writer waits for an open fenced transaction")
    claim = await owned(store, key="held")
    for key in ("free-a", "free-b", "free-c"):
        await add(store, "dispatch", key)
    # The rival waits at most a second for a lock: a wait fails the claim instead of
    # slowing it.
    async with opened(with_options(store_url, lock_timeout="1")) as rival:
        await register(rival, "w2")
        async with store.fenced(worker_id="w1", kind="dispatch", key="held", term=claim.term) as tx:
            await tx.execute(probe.insert_probe_sql, ("holding the row",))
            claims = await rival.claim_tasks("w2", kinds=["dispatch"], limit=10)
            assert sorted(c.task.key for c in claims) == ["free-a", "free-b", "free-c"]
            slots = [SlotDone(kind="dispatch", key=c.task.key, term=c.term, slot=100.0) for c in claims]
            await rival.record_runs([], slots)
            assert await rival.release_tasks("w2", slots) == 3
        for k in ("free-a", "free-b", "free-c"):
            task = await task_of(store, "dispatch", k)
            assert (task.last_slot, task.owner) == (100.0, None)


async def test_a_refused_lock_wait_is_reported_not_hidden(store_url: str, store: Store, probe: RawDB) -> None:
    """Calibration of the test above: a rival that must wait on the held row (it writes
    that very task) does fail within its one-second lock wait."""
    if probe.dialect == "sqlite":
        pytest.skip("SQLite has one write lock")
    claim = await owned(store, key="held")
    async with (
        opened(with_options(store_url, lock_timeout="1")) as rival,
        store.fenced(worker_id="w1", kind="dispatch", key="held", term=claim.term) as tx,
    ):
        await tx.execute(probe.insert_probe_sql, ("holding the row",))
        with pytest.raises(StoreUnavailable):
            await rival.set_enabled("dispatch", "held", False)


# -- the first statement carries the fence ------------------------------------------------


async def test_lease_lost_at_the_first_statement_runs_nothing(store: Store, probe: RawDB) -> None:
    claim = await owned(store)
    await store.leave("w1", [])
    await register(store, "w2")
    (taken,) = await store.claim_tasks("w2", kinds=["dispatch"], limit=1)
    ran_after = False

    async def stale() -> None:
        nonlocal ran_after
        async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
            await tx.fetchall(probe.select_probe_sql)
            ran_after = True

    with pytest.raises(LeaseLost, match="no longer owns"):
        await stale()
    assert not ran_after
    async with store.fenced(worker_id="w2", kind="dispatch", key="barcelona", term=taken.term) as tx:
        await tx.execute(probe.insert_probe_sql, ("w2",))
    assert probe.probe_notes() == ["w2"]


async def test_rollbacks_and_ddl_leave_the_connection_fit_for_what_comes_next(store_url: str, probe: RawDB) -> None:
    """Statements the driver prepares (after a few uses) must survive the rollbacks and
    DDL of fenced transactions on the same connection. (psycopg forgets its prepared
    statements when it sees ROLLBACK, DROP or ALTER succeed: seen in pipeline mode, that
    came one statement too late and deallocated the next prepared one behind its back.)"""
    async with opened(with_options(store_url, pool="1")) as one:
        claim = await owned(one)

        class Boom(Exception):
            pass

        async def commits(n: int, first: int) -> None:
            for i in range(first, first + n):
                # First on the connection after the previous block: a batch, which the
                # driver prepares at once.
                await one.record_runs([], [SlotDone(kind="dispatch", key="barcelona", term=claim.term, slot=i)])
                async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                    await tx.execute(probe.insert_probe_sql, (f"n{i:02d}",))

        async def failing() -> None:
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute(probe.insert_probe_sql, ("rolled back",))
                raise Boom

        await commits(8, 0)  # by now the driver prepares the statements it sees again and again
        with pytest.raises(Boom):
            await failing()
        await commits(8, 8)
        if probe.dialect != "mysql":  # DDL commits at once there, and is refused
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute("CREATE TABLE scratch (a integer)")
            async with one.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                await tx.execute("DROP TABLE scratch")
                await tx.executemany(probe.insert_probe_sql, [("d1",), ("d2",)])  # a batch, prepared at once
            await commits(8, 16)
        assert (await task_of(one, "dispatch", "barcelona")).last_slot == (23 if probe.dialect != "mysql" else 15)
    assert "rolled back" not in probe.probe_notes()


@pytest.mark.parametrize("statement", ["execute", "executemany"])
async def test_the_server_ends_a_fenced_transaction_left_idle(store_url: str, probe: RawDB, statement: str) -> None:
    """A worker paused inside its fenced transaction must not hold the task past
    ``idle_tx_timeout``: the server ends the transaction, whatever the last statement
    was. (Before, after a pipeline or an ``executemany`` on PostgreSQL, the server's
    timeout was off for the rest of the transaction: a Flush after the Sync disarms it.)"""
    if probe.dialect == "sqlite":
        pytest.skip("SQLite has no server to end a transaction")
    async with opened(with_options(store_url, idle_tx_timeout="1")) as s:
        claim = await owned(s)

        async def paused() -> None:
            async with s.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                if statement == "execute":
                    await tx.execute(probe.insert_probe_sql, ("idle",))
                else:
                    await tx.executemany(probe.insert_probe_sql, [("idle",), ("idle too",)])
                await asyncio.sleep(2.5)  # idle in the transaction, well past idle_tx_timeout

        with pytest.raises((LeaseLost, StoreUnavailable)):
            await paused()
    assert probe.probe_notes() == []


async def test_a_statement_cancelled_midway_keeps_nothing_and_the_store_goes_on(store: Store, probe: RawDB) -> None:
    """A run cancelled while its statement runs on the database (its timeout, its lease
    lost): nothing of the block is kept, and the next block commits."""
    claim = await owned(store)
    # Cancelled 50 ms into the slow statement: it is on its way to the database.
    await assert_cancelled_block_keeps_nothing(
        store, probe, claim.term, lambda tx: tx.execute(probe.slow_insert_probe_sql, ("slow",)), wait=0.05
    )
