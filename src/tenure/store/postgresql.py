"""The PostgreSQL store, on psycopg 3 (async) with a connection pool.

- Time is ``clock_timestamp()``: the server's clock at evaluation, not ``now()``, which
  is frozen at the start of the transaction.
- Terms come from a sequence.
- A fenced transaction locks its task row (``SELECT … FOR UPDATE``) after checking
  owner, term and lease; claims pass over locked rows (``SKIP LOCKED``), so no takeover
  can happen between the check and the commit, and the lease is checked again on the
  server's clock just before ``COMMIT``.
- Sessions carry ``idle_in_transaction_session_timeout`` and ``lock_timeout``, so a
  worker paused (SIGSTOP) inside an open transaction cannot hold its locks past the
  failover bound: the server ends its session and rolls it back.
- Admin changes and releases send ``NOTIFY tenure_changes``; :meth:`listen` wakes idle
  workers at once instead of at their next poll.
- Connections: a pool (``pool``, one connection kept open) for everything but the lease,
  and one session per worker for its liveness lock, its ``LISTEN`` and its lease
  statements (join, renewals), so that a renewal never queues behind the pool; and one
  that waits for the liveness lock of the worker this one watches
  (:meth:`_AdvisoryLiveness._watch_others`): three connections a worker at rest, two with
  ``watch=off``. With ``liveness=lease`` the lease has a pool of one connection and
  ``LISTEN`` a connection of its own instead, and nothing is watched.

URL: ``postgresql://user:password@host:port/dbname?…``. tenure's own options, removed
before the rest goes to libpq: ``pool`` (connections, default 8), ``idle_tx_timeout``
(seconds, default 2), ``lock_timeout`` (seconds, default 5), ``connect_timeout``
(seconds, default 5); their ranges are :data:`OPTIONS` (timeouts reach the server in
whole milliseconds, never as 0, which would mean "no limit"); ``liveness`` (``session``,
the default, or ``lease`` behind a transaction-pooling proxy: see
:mod:`tenure.store.liveness`); ``watch`` (``on``, the default, or ``off``: no connection
to watch another worker's liveness lock, and a crash is found at the others' next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tenure.desired import DesiredTask
from tenure.errors import (
    InvalidStoreURL,
    LeaseLost,
    StoreError,
    StoreUnavailable,
    TenureError,
    TransactionClosed,
    WorkerIdInUse,
)
from tenure.inputs import ECHO_LIMIT, cut
from tenure.models import Claim, ClusterView, Run, SlotDone, Task
from tenure.store.fence import Fence, FencedSession, Op
from tenure.store.liveness import (
    POOLING_HINT,
    Liveness,
    holding,
    listen,
    liveness_option,
    postgresql_key,
    stopped,
)
from tenure.store.rows import TASK_COLUMNS, CountedTasks, done_before, merged_slots, task_from_row
from tenure.store.sqlfile import load_queries
from tenure.store.sqlstore import Args, SQLStore, one_row
from tenure.store.sync import batches, desired_columns, task_size
from tenure.store.urls import check_user_part, hide_password, number_options, server_options, shown

log = logging.getLogger("tenure.store.postgresql")

_NOW = "extract(epoch from clock_timestamp())::double precision"
#: The keys of the session advisory locks held now in this database (liveness.postgresql_key).
_HELD_LOCKS = (
    "SELECT (l.classid::bigint << 32) | l.objid::bigint AS key FROM pg_locks l "
    "WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    # A worker holds its lock exclusively; a watcher (_AdvisoryLiveness._watch_others) is
    # granted it shared for an instant, when the worker is gone, and must not count.
    "AND l.mode = 'ExclusiveLock'"
)
Q = load_queries(
    "postgresql",
    {
        "now": _NOW,
        "held_locks": _HELD_LOCKS,
        "task_columns": TASK_COLUMNS,
        "task_columns_t": ", ".join(f"t.{c.strip()}" for c in TASK_COLUMNS.split(",")),
    },
)
#: Rows of a claim turned into tasks between two turns of the event loop.
_ROWS_BETWEEN_YIELDS = 500
#: Attempts of a store transaction the server aborted as a deadlock victim.
_DEADLOCK_RETRIES = 3

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
#: PostgreSQL takes both timeouts as whole milliseconds in a 32-bit integer, and 0 turns them off.
_MS_WHY = "PostgreSQL counts it in whole milliseconds, up to 2147483647, and 0 would turn it off"
#: tenure's own options, removed before the rest of the URL goes to libpq.
OPTIONS = server_options(timeout_high=2147483.647, why=_MS_WHY)


def _ended_by_server(conn: Conn) -> bool:
    """Has the server ended this idle pooled connection?

    A pooled connection never listens, and nothing else comes unasked: an idle connection
    with something to read holds the server's goodbye (the FATAL message of a
    ``pg_terminate_backend``, a shutdown or a restart) or the end of the socket. One
    non-blocking poll of the socket finds it, instead of the caller's statement failing;
    at worst a harmless message costs a fresh connection."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


@asynccontextmanager
async def _live_connection(pool: AsyncConnectionPool[Conn], wait: float | None = None) -> AsyncIterator[Conn]:
    """A connection from ``pool`` that the server has not ended while it sat idle.

    After a server restart or a failover every idle connection in the pool is dead, and
    a caller who drew them one by one would fail once for each (a readiness probe
    answering 503 eight times in a row). The dead ones are closed, which makes the pool
    replace them, and the next one is tried."""
    for _ in range(pool.max_size):
        async with pool.connection(wait) as conn:
            if not _ended_by_server(conn):
                yield conn
                return
            await conn.close()
    async with pool.connection(wait) as conn:  # by now one the pool has just opened
        yield conn


def watch_option(query: Sequence[tuple[str, str]]) -> bool:
    """The ``watch`` option of a PostgreSQL URL: ``on`` (default), or ``off`` to keep a
    worker's connections at two (no watch connection; a crash is then noticed at the
    others' next poll)."""
    given = [v for k, v in query if k == "watch"]
    if len(given) > 1:
        raise InvalidStoreURL("postgresql URL option watch is given more than once")
    value = given[0].strip().lower() if given else "on"
    if value not in ("on", "off"):
        raise InvalidStoreURL(
            f"postgresql URL option watch must be on or off, got {shown(given[0])} "
            "(off: no connection to watch another worker's liveness lock)"
        )
    return value == "on"


def parse_postgresql_url(url: str) -> tuple[str, dict[str, float]]:
    """Split our options off a PostgreSQL URL; return (libpq URL, our options).

    Timeouts come back rounded to the millisecond, as the server will take them. The
    rest of the URL is checked by libpq's own parser (unknown parameters are refused).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidStoreURL(f"postgresql URL {shown(url)} does not parse: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidStoreURL(f"not a postgresql URL: {shown(url)}")
    check_user_part("postgresql", url, parts.netloc)
    if not parts.hostname and "host=" not in parts.query:
        raise InvalidStoreURL(f"postgresql URL {shown(url)} names no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = number_options("postgresql", query, OPTIONS)
    for name in ("idle_tx_timeout", "lock_timeout", "connect_timeout"):
        options[name] = round(options[name] * 1000) / 1000
    options["session_liveness"] = 1.0 if liveness_option("postgresql", query) == "session" else 0.0
    options["watch"] = 1.0 if watch_option(query) else 0.0
    ours = {o.name for o in OPTIONS} | {"liveness", "watch"}
    rest = [(k, v) for k, v in query if k not in ours]
    # quote, not quote_plus: libpq reads '+' as a plus sign, not a space.
    # Not urlunsplit: it drops an empty host ("postgresql:///db?host=/run/postgresql", a
    # Unix socket, became "postgresql:/db?…", which libpq refuses).
    libpq = f"postgresql://{parts.netloc}{parts.path}"
    if rest:
        libpq += "?" + urlencode(rest, quote_via=quote)
    if parts.fragment:
        libpq += "#" + parts.fragment
    try:
        conninfo_to_dict(libpq)
    except psycopg.Error as exc:
        raise InvalidStoreURL(f"postgresql URL {shown(url)} does not parse: {cut(str(exc), ECHO_LIMIT)}") from None
    return libpq, options


#: The SQLSTATE tenure_fence() raises when the fence does not hold (schema version 2).
FENCE_REFUSED = "TN001"
#: Sent after a fenced transaction's COMMIT: every setting goes back to the session's
#: default, should the handler have changed one for the session in a way the statement
#: check cannot see (a DO block, a function or procedure of its own). Not only those
#: tenure's guarantees name: synchronous_commit off would make later claims and commits
#: on the pooled connection non-durable, default_transaction_read_only would fail them.
#: RESET ALL costs the server less than four single RESETs (~3 against ~10 µs, measured).
_RESETS = "RESET ALL"
_INTRANS = psycopg.pq.TransactionStatus.INTRANS
_INERROR = psycopg.pq.TransactionStatus.INERROR
_IDLE = psycopg.pq.TransactionStatus.IDLE


class _Fenced(FencedSession):
    """The FencedTransaction handed to a handler (see :class:`FencedSession`).

    Two round trips for a block of one statement: ``BEGIN``, the fence (``tenure_fence``,
    which locks the task row or fails) and the handler's first statement travel as one
    query string; the final fence check (which records the slot), ``COMMIT`` and
    ``RESET ALL`` (:data:`_RESETS`) travel as another, the check failing the transaction if the fence no
    longer holds, so that the ``COMMIT`` behind it never runs. Each other statement is
    one round trip (an ``executemany`` too); a block with no statement, one.

    Why query strings (values quoted in by psycopg, as its client-side cursors do) rather
    than pipeline mode: psycopg ends a pipeline with a Flush after its Sync, and a message
    after the Sync switches off the server's ``idle_in_transaction_session_timeout`` for
    the rest of the transaction, the very timeout that ends a paused worker's transaction
    and frees its task. A query string ends with the server's ReadyForQuery, which arms it.
    """

    dialect = "postgresql"

    def __init__(self, conn: Conn, fence: Fence) -> None:
        super().__init__(fence)
        self._conn = conn
        self._quoter = psycopg.AsyncClientCursor(conn)
        self._guard = {"kind": fence.kind, "key": fence.key, "worker": fence.worker_id, "term": fence.term}

    def backslash_escapes(self) -> bool | None:
        return self._conn.info.parameter_status("standard_conforming_strings") == "off"

    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status in (_INTRANS, _INERROR)

    def _quoted(self, sql: str, params: Any) -> str:
        return self._quoter.mogrify(sql, params)

    def _fence_sql(self, slot: float | None) -> str:
        return self._quoted(Q["fence"], {**self._guard, "slot": slot})

    async def send(self, op: Op, sql: str, params: Any) -> Any:
        cur = self._conn.cursor()
        statements = [self._quoted(sql, row) for row in params] if op == "executemany" else []
        if self.begun:
            if op == "executemany":
                if statements:
                    await cur.execute(";\n".join(statements).encode(), prepare=False)
            else:
                await cur.execute(sql, params)
        else:
            self.begun = True
            # psycopg forgets its prepared statements when it sees DROP or ALTER succeed,
            # as it must (the objects they name may come back different): it sees that
            # only in a statement of its own.
            alone = self.checked.lead in ("drop", "alter") and op != "executemany"
            batch = ["BEGIN", self._fence_sql(None)]
            if op == "executemany":
                batch += statements
            elif not alone:
                batch.append(self._quoted(sql, params))
            try:
                await cur.execute(";\n".join(batch).encode(), prepare=False)
            except psycopg.Error as exc:
                if exc.sqlstate == FENCE_REFUSED:
                    raise self.fence.not_owner() from exc
                raise
            if alone:
                await cur.execute(sql, params)
            while cur.nextset():  # to the handler's result, the last one
                pass
        if op == "execute":
            return cur.rowcount
        if op == "fetchall":
            return [tuple(r) for r in await cur.fetchall()]
        if op == "fetchone":
            row = await cur.fetchone()
            return None if row is None else tuple(row)
        return None

    async def commit(self) -> None:
        conn = self._conn
        begun = self.begun
        if begun and conn.info.transaction_status == _INERROR:
            raise TransactionClosed(
                f"a statement in the fenced transaction of {self.fence.what} failed, which ended it; "
                "nothing written in the block was kept"
            )
        # Without BEGIN (nothing was written), the check is a transaction of its own.
        text = self._fence_sql(self.fence.slot)
        if begun:
            text += ";\nCOMMIT;\n" + _RESETS
        try:
            await conn.cursor().execute(text.encode(), prepare=False)
        except psycopg.Error as exc:
            if exc.sqlstate == FENCE_REFUSED:
                raise (self.fence.expired() if begun else self.fence.not_owner()) from exc
            raise
        self.reusable = conn.info.transaction_status == _IDLE

    def translate(self, exc: Exception) -> Exception:
        return _translate(exc, self.fence) if isinstance(exc, psycopg.Error) else exc

    async def roll_back(self) -> None:
        conn = self._conn
        if conn.closed or conn.info.transaction_status not in (_INTRANS, _INERROR, _IDLE):
            return  # in an unknown state (a statement cut short): the store closes it
        with contextlib.suppress(psycopg.Error):
            # psycopg's own rollback, which also resets its prepared statements as it must
            # after a ROLLBACK. Settings changed in the transaction are undone with it.
            await conn.rollback()
            self.reusable = conn.info.transaction_status == _IDLE


class _Session:
    """A pooled connection as the shared store methods use it (see :class:`Session`)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def one(self, sql: str, args: Args = None) -> Any:
        cur = await self.conn.execute(sql.encode(), {} if args is None else args)
        return await cur.fetchone()

    async def all(self, sql: str, args: Args = None) -> list[Any]:
        cur = await self.conn.execute(sql.encode(), {} if args is None else args)
        return list(await cur.fetchall())

    async def count(self, sql: str, args: Args = None) -> int:
        cur = await self.conn.execute(sql.encode(), {} if args is None else args)
        return cur.rowcount

    async def runmany(self, sql: str, rows: Sequence[Any]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(sql.encode(), rows)

    async def notify(self) -> None:
        await self.conn.execute(Q["notify"].encode())


class PostgreSQLStore(SQLStore[_Session]):
    """The PostgreSQL store (see the module docstring)."""

    dialect = "postgresql"
    supports_listen = True
    #: A worker's whole share at a fleet's start in one statement: claims of 500 took 40
    #: workers five rounds each for 100,000 tasks, each round a cluster read and a claim
    #: that walks past the rows the others hold (SKIP LOCKED); one statement of 2,500 cut
    #: the server's CPU for the 100,000 claims by a quarter. Rows are locked only for
    #: the statement, and turned into tasks in chunks that let the event loop turn.
    claim_chunk = 5_000
    returning = True
    q = Q

    def __init__(self, url: str) -> None:
        self._libpq_url, self._options = parse_postgresql_url(url)
        #: The URL's own libpq ``options`` (``-c search_path=…``): the connection keyword
        #: that carries tenure's session limits would replace them, not add to them.
        self._libpq_options = conninfo_to_dict(self._libpq_url).get("options") or ""
        self._display = hide_password(url)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._lease_pool: AsyncConnectionPool[Conn] | None = None
        self._liveness: dict[str, Liveness] = {}
        #: The enabled tasks' counts of the last cluster view that counted them.
        self._counted = CountedTasks()

    @property
    def display_url(self) -> str:
        return self._display

    # -- connections ----------------------------------------------------------------------

    def _connect_kwargs(self, name: str) -> dict[str, Any]:
        """What every connection of ours is opened with: autocommit, the session limits that
        end a paused worker's transaction, and a name the server's activity view shows."""
        o = self._options
        limits = (
            f"-c idle_in_transaction_session_timeout={round(o['idle_tx_timeout'] * 1000)} "
            f"-c lock_timeout={round(o['lock_timeout'] * 1000)}"
        )
        return {
            "autocommit": True,
            # The URL's options first, tenure's limits last: the last -c of a setting wins,
            # so options can add settings (a search_path) but not switch the limits off.
            "options": f"{self._libpq_options} {limits}".strip(),
            "connect_timeout": max(1, int(o["connect_timeout"])),
            "application_name": f"tenure-{name}",
        }

    def _make_pool(self, size: int, name: str) -> AsyncConnectionPool[Conn]:
        o = self._options
        return AsyncConnectionPool(
            self._libpq_url,
            min_size=1,
            max_size=size,
            kwargs=self._connect_kwargs(name),
            timeout=o["connect_timeout"],
            # psycopg_pool retries a lost connection with a delay that doubles (1 s, 2 s, 4 s…)
            # for this long, 5 minutes by default: after a long outage a worker could wait
            # minutes for its next attempt while the server is back. A series as long as a
            # request waits for a connection keeps attempts at most 2 s apart with the
            # default 5 s (a request that timed out starts a new series at once).
            reconnect_timeout=o["connect_timeout"],
            open=False,
            name=f"tenure-{name}",
        )

    def _connected(self) -> bool:
        return self._pool is not None

    async def _open_connections(self) -> None:
        await self._try_one_connection()
        pool = self._make_pool(int(self._options["pool"]), "main")
        # With session liveness a worker's lease statements go on its liveness session
        # (_AdvisoryLiveness.call); only a lease-mode store keeps a connection for them.
        lease_pool = None if self._options["session_liveness"] else self._make_pool(1, "lease")
        try:
            await pool.open(wait=True, timeout=self._options["connect_timeout"])
            if lease_pool is not None:
                await lease_pool.open(wait=True, timeout=self._options["connect_timeout"])
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            if lease_pool is not None:
                await lease_pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {self._display}: {exc}") from exc
        self._pool, self._lease_pool = pool, lease_pool

    async def _try_one_connection(self) -> None:
        """Connect once before opening the pools, and raise
        :class:`~tenure.errors.StoreUnavailable` with the server's or libpq's reason.

        A pool that cannot connect retries until its timeout and then says only "pool
        initialization incomplete after 5.0 sec", whatever the cause (no server, no such
        database, a bad port, a refused password); one plain attempt names it, at once
        where the server answers."""
        timeout = self._options["connect_timeout"]
        try:
            async with asyncio.timeout(timeout):
                conn = await psycopg.AsyncConnection.connect(self._libpq_url, **self._connect_kwargs("main"))
        except TimeoutError:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL store {self._display}: no answer within {timeout:g}s"
            ) from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {self._display}: {cut(str(exc))}") from exc
        await conn.close()

    async def close(self) -> None:
        pools = [p for p in (self._pool, self._lease_pool) if p is not None]
        self._pool = self._lease_pool = None
        self._schema_ok = False
        for p in pools:
            with contextlib.suppress(Exception):
                await p.close()

    async def _write(
        self,
        fn: Callable[[_Session], Awaitable[T]],
        *,
        what: str = "",
        single: bool = False,
        pool: AsyncConnectionPool[Conn] | None = None,
    ) -> T:
        """Run ``fn`` in one transaction, translating driver errors; with ``single`` (one
        statement), autocommitted as :meth:`_read` does."""
        return await self._call(fn, pool, transaction=not single)

    async def _read(
        self, fn: Callable[[_Session], Awaitable[T]], *, what: str = "", pool: AsyncConnectionPool[Conn] | None = None
    ) -> T:
        """Run ``fn``'s statements each in its own transaction (the pool's connections
        autocommit): for single-statement reads and writes, one round trip instead of
        three (BEGIN, the statement, COMMIT). That matters on a slow network, where a
        renewal must come back well within the lease."""
        return await self._call(fn, pool, transaction=False)

    async def _on_lease(self, fn: Callable[[_Session], Awaitable[T]], *, transaction: bool, what: str) -> T:
        """Run a lease statement on the liveness session this store holds (one worker a
        store, as a worker process has), else on the lease pool (``liveness=lease``), or on
        the pool for a caller that holds no lock (a test of the store alone)."""
        sessions = [h for h in self._liveness.values() if isinstance(h, _AdvisoryLiveness)]
        if sessions:
            session = next((h for h in sessions if h.held), sessions[0])
            return await self._call(fn, None, transaction=transaction, session=session)
        return await self._call(fn, self._lease_pool, transaction=transaction)

    async def _call(
        self,
        fn: Callable[[_Session], Awaitable[T]],
        pool: AsyncConnectionPool[Conn] | None,
        *,
        transaction: bool,
        session: _AdvisoryLiveness | None = None,
    ) -> T:
        pool = pool or self._pool
        if pool is None:
            raise StoreError("the store is not open")

        async def on(conn: Conn) -> T:
            if not transaction:
                return await fn(_Session(conn))
            async with conn.transaction():
                return await fn(_Session(conn))

        try:
            for attempt in range(_DEADLOCK_RETRIES):
                try:
                    if session is not None:
                        return await session.call(on)
                    async with _live_connection(pool) as conn:
                        return await on(conn)
                except psycopg.errors.DeadlockDetected:
                    # The server rolled the whole transaction back: running it again is
                    # safe (two workers' releases and slot updates can cross on a row).
                    if attempt == _DEADLOCK_RETRIES - 1:
                        raise
                    log.info("deadlock with another worker's transaction; retrying")
            raise AssertionError("unreachable")  # pragma: no cover
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    # -- schema -------------------------------------------------------------------------

    async def _run_script(self, s: _Session, script: str) -> None:
        await s.conn.execute(script.encode())  # our own file, several statements, no parameters

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    async def _sync_write(self, s: _Session, query: str, kind: str, tasks: Sequence[DesiredTask]) -> None:
        async with s.conn.cursor() as cur:
            for batch in batches(tasks, task_size):
                await cur.execute(Q[query].encode(), {"kind": kind, **_columns(batch)})

    def _array(self, values: list[str]) -> Any:
        return values

    # -- membership -----------------------------------------------------------------------

    def hold_liveness(self, worker_id: str, *, check_every: float) -> AbstractAsyncContextManager[Liveness]:
        if not self._options["session_liveness"]:
            return holding(self._liveness, Liveness(worker_id))
        return holding(self._liveness, _AdvisoryLiveness(self, worker_id, watch=bool(self._options["watch"])))

    # -- ownership ------------------------------------------------------------------------

    async def claim_tasks(self, worker_id: str, *, kinds: Sequence[str], limit: int, start: int = 0) -> list[Claim]:
        if limit <= 0 or not kinds:
            return []

        async def claim(s: _Session) -> list[Any]:
            args = {"worker": worker_id, "kinds": list(kinds), "limit": limit, "start": max(start, 0)}
            return await s.all(Q["claim"], args)

        async def is_live(s: _Session) -> bool:
            live = await s.one(Q["worker_is_live"], {"worker": worker_id})
            return live is not None and bool(live[0])

        # One statement, committed by the server as it ends (autocommit), not by a COMMIT
        # the worker sends once it has read the rows: at a fleet's start, 40 workers on two
        # busy cores took up to a second to get round to it, with the tasks locked, owned
        # by nobody, meanwhile (bench/fleet.py).
        rows = await self._write(claim, single=True)
        if not rows and not await self._read(is_live):
            raise LeaseLost(f"worker {worker_id!r} has no live lease; it cannot claim tasks")
        tasks: list[Task] = []
        for i in range(0, len(rows), _ROWS_BETWEEN_YIELDS):
            if i:
                await asyncio.sleep(0)  # thousands of rows: let the loop turn between chunks
            tasks.extend(task_from_row(r) for r in rows[i : i + _ROWS_BETWEEN_YIELDS])
        tasks.sort(key=lambda t: t.term)
        return [Claim(task=t, done_before=done_before(t)) for t in tasks]

    async def cluster_view(self) -> ClusterView:
        # The counts change only with the change counter: the query counts only when the
        # counter (value, and row version as the stamp) differs from the last one counted
        # here, and this store keeps the counts (CountedTasks).
        args = self._counted.args()

        async def go(s: _Session) -> list[Any]:
            return await s.all(Q["cluster_view"], args)

        return self._counted.view(await self._read(go, what="reading the cluster view"))

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever tasks are released or changed; runs until cancelled.

        Reconnects with backoff; after reconnecting it calls ``wake`` once, since
        notifications sent while it was away are lost. While this store holds a worker's
        liveness lock, that session listens (and calls ``wake`` once each time the lock is
        taken again); no connection is opened for it.
        """
        session = next((h for h in self._liveness.values() if isinstance(h, _AdvisoryLiveness)), None)
        await listen(wake, None if session is None else session.wakes, self._listen_on_connection, (psycopg.Error,))

    async def _listen_on_connection(self, wake: Callable[[], None], connected: Callable[[], None]) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._libpq_url,
            autocommit=True,
            connect_timeout=max(1, int(self._options["connect_timeout"])),
        )
        async with conn:
            await conn.execute(Q["listen"].encode())
            connected()
            wake()
            async for _ in conn.notifies():
                wake()

    # -- fencing --------------------------------------------------------------------------

    @asynccontextmanager
    async def _fenced_session(self, fence: Fence) -> AsyncIterator[_Fenced]:
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with _live_connection(self._pool) as conn:
                tx = _Fenced(conn, fence)
                try:
                    yield tx
                finally:
                    if not tx.reusable or tx.discard or tx.touched_session:
                        # In an unknown state, or carrying session state past the transaction
                        # (a session advisory lock, a temporary table): the pool replaces it.
                        await conn.close()
        except psycopg.Error as exc:  # taking a connection, or giving it back
            raise _translate(exc, fence) from exc

    # -- runs -----------------------------------------------------------------------------

    async def _advance_slots(self, s: _Session, slots: Sequence[SlotDone]) -> None:
        if slots:
            await s.count(Q["advance_slots"], {"slots": _batch(merged_slots(slots))})

    async def record_runs(self, runs: Sequence[Run], slots: Sequence[SlotDone]) -> None:
        async def insert_runs(s: _Session) -> None:
            rows = [
                [r.kind, r.key, r.worker, r.term, r.scheduled_at, r.started_at, r.ended_at, r.outcome.value, r.error]
                for r in runs
            ]
            await s.count(Q["insert_runs"], {"runs": _batch(rows)})

        # Slots first, in a statement of their own that commits on the server at once: a
        # task row is then never locked across a round trip to this worker, which may be
        # slow or cut off (a claimer skips locked rows, so such a lock would hold the task
        # from it).
        if slots:
            await self._read(lambda s: self._advance_slots(s, slots))
        if runs:
            await self._write(insert_runs, single=True)


def _batch(rows: list[list[Any]]) -> str:
    """A batch of rows as one JSON parameter: it travels as one statement, and the C
    encoder does in one call what per-element quoting of text arrays does in Python.
    Floats keep every bit (``repr`` is exact, and so is the server's parse)."""
    return json.dumps(rows, ensure_ascii=False, allow_nan=False)


# -- helpers ------------------------------------------------------------------------------


def _translate(exc: psycopg.Error, fence: Fence | None = None) -> TenureError:
    """The store's error for a driver error (``fence``: in that fenced transaction)."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(f"PostgreSQL store did not answer: {exc}")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        if fence is not None:
            return StoreUnavailable(f"task {fence.what} is locked by another transaction: {exc}")
        return StoreUnavailable(f"PostgreSQL lock wait timed out: {exc}")
    if fence is not None and isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        # The server ended the transaction because it sat idle past idle_tx_timeout (a
        # paused or stalled worker): that is what lets a takeover proceed, so this run's
        # ownership cannot be vouched for. Nothing it wrote was kept.
        return LeaseLost(f"fenced transaction of {fence.what} was idle too long and ended by the server")
    where = "" if fence is None else f" during the fenced transaction of {fence.what}"
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(f"PostgreSQL store unavailable{where}: {exc}")
    return StoreError(f"PostgreSQL error{where}: {exc}")


def _columns(tasks: Sequence[DesiredTask]) -> dict[str, list[Any]]:
    """Desired tasks as the parallel arrays sync_add and sync_update unnest."""
    keys, every, cron, params, enabled = zip(*(desired_columns(d) for d in tasks), strict=True)
    return {
        "keys": list(keys),
        "every": list(every),
        "cron": list(cron),
        "params": list(params),
        "enabled": list(enabled),
    }


class _AdvisoryLiveness(Liveness):
    """A session-level advisory lock on a connection of its own, kept for the worker's life:
    the worker's *session*. It also ``LISTEN``s for the store's changes, and carries the
    worker's lease statements (:meth:`call`), so that a worker holds two connections at
    rest for them, this one and its pool's first (four before: the pool's, the lease's,
    this one, and one for ``LISTEN``), and a third to watch another worker's lock
    (:meth:`_watch_others`, unless ``watch=off``).

    Between statements a task waits on the session for notifications, which wake the
    worker (:attr:`wakes`), and for the session's end, which marks the lock lost: the
    socket turns readable only then, or when the server ends the session (a restart,
    ``pg_terminate_backend``) or the connection breaks. A statement pauses that wait (the
    driver keeps notifications that arrive meanwhile and hands them over when it resumes).
    The lock is never let go but by :meth:`release` or the session's end, so it still
    drops exactly when the process dies.
    """

    mode = "session"

    def __init__(self, store: PostgreSQLStore, worker_id: str, *, watch: bool = True) -> None:
        super().__init__(worker_id)
        self._store = store
        self._may_watch = watch
        #: The task that waits for the watched worker's lock, on a connection of its own
        #: (opened at the first target), and what tells it the target changed.
        self._watcher: asyncio.Task[None] | None = None
        self._retargeted = asyncio.Event()
        self._key = postgresql_key(worker_id)
        self._conn: Conn | None = None
        self._backend = 0
        self._watch: asyncio.Task[None] | None = None
        #: One statement at a time on the session.
        self._turn = asyncio.Lock()
        #: Called on every notification, and once each time the lock is taken (those sent
        #: while no session listened are lost).
        self.wakes: list[Callable[[], None]] = []

    @property
    def token(self) -> int | None:
        return self._key if self.held else None

    async def call(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on the session (the lease's statements). Raises
        :class:`~tenure.errors.StoreUnavailable` if the session is gone; driver errors pass
        through, and a session that ended under ``fn`` marks the lock lost."""
        async with self._turn:
            conn = self._conn
            if conn is None or conn.closed or self.lost.is_set():
                raise StoreUnavailable(f"the liveness session of worker {self.worker_id!r} is gone")
            await self._stop_watch()
            try:
                return await fn(conn)
            finally:
                # A session dropped meanwhile (the lock taken again on a new one) is not ours
                # to judge: only the current one can be lost.
                if conn is self._conn:
                    if conn.closed or conn.broken:
                        self._mark_lost("the liveness connection was closed")
                    else:
                        self._start_watch(conn)

    async def _take(self) -> None:
        store = self._store
        try:
            conn = await psycopg.AsyncConnection.connect(store._libpq_url, **store._connect_kwargs("session"))
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL store {store._display}: {exc}") from exc
        try:
            got = await one_row(_Session(conn), Q["liveness_take"], {"key": self._key})
            if not got[0]:
                raise WorkerIdInUse(
                    f"worker id {self.worker_id!r} is held by a live worker (its liveness lock is taken)"
                )
            # Under a transaction-pooling proxy the next statement may run in another
            # server session, which does not hold the lock taken by the previous one.
            mine = await one_row(_Session(conn), Q["liveness_mine"], {"key": self._key})
            if not mine[0]:
                raise InvalidStoreURL(
                    f"the liveness lock just taken on {store._display} does not show as this session's: " + POOLING_HINT
                )
            await conn.execute(Q["listen"].encode())
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailable(f"cannot take the liveness lock on {store._display}: {exc}") from exc
            raise
        self._conn, self._backend = conn, int(got[1])
        self._start_watch(conn)
        self._wake()  # what was notified while no session of ours listened is lost

    def _wake(self) -> None:
        for wake in list(self.wakes):
            wake()

    def _start_watch(self, conn: Conn) -> None:
        self._watch = asyncio.create_task(self._watch_session(conn), name="tenure-liveness")

    async def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        await stopped(watch)

    async def _watch_session(self, conn: Conn) -> None:
        try:
            async for _ in conn.notifies():
                self._wake()
            why = "the liveness connection was closed"
        except psycopg.Error as exc:
            why = f"the liveness session ended ({cut(str(exc).strip(), ECHO_LIMIT)})"
        self._mark_lost(why)

    async def release(self) -> None:
        watcher, self._watcher = self._watcher, None
        await stopped(watcher)
        await super().release()

    def _retarget(self, target: str | None) -> None:
        super()._retarget(target)
        if not self._may_watch:
            return
        self._retargeted.set()
        if self._watcher is None and target is not None:
            self._watcher = asyncio.create_task(self._watch_others(), name="tenure-liveness-watch")

    async def _watch_others(self) -> None:
        """Wait for the watched worker's lock (:meth:`Liveness.watch`) on a connection kept
        for it: ``pg_advisory_xact_lock_shared``, granted when the worker's session ends and
        let go at once (the statement's own transaction ends with it); the wait sends
        nothing while it blocks. A worker watched that is gone wakes this one once; a new
        target cancels the wait in progress. The connection waits without a lock timeout,
        and asks the server to look at its socket every second (PostgreSQL 14 and later)
        so that a wait of a process that died does not hold a server connection; before
        14 the wait is renewed every minute instead. Failures are retried with backoff:
        the watch only makes takeovers sooner, polls still find a dead worker."""
        store = self._store
        conn: Conn | None = None
        fired: str | None = None
        delay = 0.2
        try:
            while True:
                self._retargeted.clear()
                target = self._watched
                if target is None or target == fired:
                    await self._retargeted.wait()
                    fired = None  # a membership seen anew: watch again, even the same worker
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(store._libpq_url, **store._connect_kwargs("watch"))
                        if conn.info.server_version >= 140000:
                            await conn.execute(b"SET lock_timeout = 0")
                            await conn.execute(b"SET client_connection_check_interval = '1s'")
                        else:
                            await conn.execute(b"SET lock_timeout = '60s'")
                    if await self._wait_free(conn, target):
                        fired = target
                        self._watched_gone(target)
                    delay = 0.2
                except psycopg.Error as exc:
                    log.warning("watching the liveness lock of %s failed (%s); retrying in %.1fs", target, exc, delay)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.cancel_safe(), 1.0)
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _wait_free(self, conn: Conn, target: str) -> bool:
        """Wait until ``target``'s lock is free (True) or the target changed (False)."""
        wait = asyncio.ensure_future(conn.execute(Q["watch_wait"].encode(), {"key": postgresql_key(target)}))
        changed = asyncio.ensure_future(self._retargeted.wait())
        try:
            await asyncio.wait({wait, changed}, return_when=asyncio.FIRST_COMPLETED)
            if not wait.done():
                # Retargeted: end the wait on the server, and read its error off the connection.
                await conn.cancel_safe(timeout=5.0)
            await wait
        except (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
            return False  # cancelled for a new target; or, before PostgreSQL 14, a minute passed
        except BaseException:
            if not wait.done():
                wait.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(wait, 2.0)
            raise
        finally:
            changed.cancel()
        return True

    async def _drop(self) -> None:
        conn, backend = self._conn, self._backend
        self._conn, self._backend = None, 0
        await self._stop_watch()
        if conn is None:
            return
        alive = not conn.closed and not self.lost.is_set()
        with contextlib.suppress(Exception):
            if alive:
                await conn.execute(Q["liveness_unlock"].encode(), {"key": self._key})
        with contextlib.suppress(Exception):
            await conn.close()
        if not alive and backend and self._store._pool is not None:
            # The session may live on in the server unseen (a half-open connection): end it,
            # so that the lock is free for the next one (our own, once we join again).
            with contextlib.suppress(Exception):
                async with _live_connection(self._store._pool, wait=1.0) as other:
                    await other.execute(Q["liveness_terminate"].encode(), {"pid": backend, "key": self._key})
