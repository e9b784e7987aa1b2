"""The dispatch domain, written as a user of tenure would write it.

Every city has couriers and receives orders. A ``dispatch`` task per city runs every
second on whichever worker owns the city:

1. it reads the city's open orders, free couriers and deliveries that are due, with a
   plain connection (reading needs no fence: see below);
2. it plans: pairs the oldest orders with free couriers. Routing is slow work, so the
   handler is a plain ``def`` and runs in a thread;
3. it commits the plan in one fenced transaction: deliveries due are completed (their
   couriers freed), each assignment is written as a row carrying the term that wrote it
   (``ctx.token``), orders and couriers are marked, and one ``demo_dispatches`` row
   records the commit.

Reading outside the fence is safe because the commit is fenced: a commit at term T is
accepted only while T is still the city's current term, so nobody else can have written
for this city between this worker's reads (made after it took the city at term T) and
its commit. A worker that stalled between reading and committing (a pause, a GC, a slow
network) has its commit refused with :class:`tenure.LeaseLost`; the domain records each
refusal in ``demo_refusals`` and logs it.

``TENURE_DEMO_UNFENCED=1`` (read by this module only, for the test that shows the
checker catching a broken system) makes the commit go through a plain connection
instead of ``ctx.fenced_sync()``: the same statements, no fence.

Tables (created by :func:`create_schema`, all prefixed ``demo_``): ``demo_cities``,
``demo_city_events`` (opened, disabled, enabled: when each city was in service),
``demo_couriers``, ``demo_orders``, ``demo_assignments``, ``demo_dispatches``,
``demo_refusals``, ``demo_marks`` (setup, start and end of the run). Times are epoch seconds on
the database's clock.

Run workers by hand with ``TENURE_STORE=… tenure worker tenure.demo.domain:app`` after
``tenure demo`` has created the tables, or let ``tenure demo`` start them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import tenure
from tenure.demo.db import Connection, Pool, Statements, sql

log = logging.getLogger("tenure.demo.dispatch")

#: Seconds between two dispatches of a city.
PERIOD = 1.0
#: Short leases, so that failovers happen within the demo's minute.
SETTINGS = tenure.Settings(lease_ttl=3.0, heartbeat=0.5, poll=0.5, grace=2.0, trust_margin=0.5)
#: At most this many orders are planned per dispatch.
BATCH = 20
#: Test-only switch: commit without the fence (see the module docstring).
UNFENCED_ENV = "TENURE_DEMO_UNFENCED"

#: Log messages the chaos monkey reads to find a worker in the middle of a dispatch.
PLANNING = "dispatch %s term %d: planning %d orders for %d free couriers"
PLANNED = "dispatch %s term %d: plan ready"

app = tenure.App(settings=SETTINGS)
_pool: Pool | None = None


def now_expr(dialect: str) -> str:
    """An SQL expression for the database's clock, in epoch seconds (as tenure reads it)."""
    if dialect == "sqlite":
        return "((julianday('now') - 2440587.5) * 86400.0)"
    if dialect == "postgresql":
        return "(EXTRACT(EPOCH FROM clock_timestamp())::float8)"
    return "(UNIX_TIMESTAMP(SYSDATE(6)))"


def db_now(db: Statements, dialect: str) -> float:
    row = db.fetchone(f"SELECT {now_expr(dialect)}")
    assert row is not None
    return float(row[0])


def unfenced() -> bool:
    return os.environ.get(UNFENCED_ENV, "") not in ("", "0")


def _connections() -> Pool:
    global _pool
    if _pool is None:
        _pool = Pool(app.store_url)
    return _pool


# -- the task ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a dispatch reads before planning."""

    orders: list[tuple[int, float]]  # (order id, delivery seconds), oldest first
    couriers: list[int]  # free courier ids
    due: list[tuple[int, int, int]]  # (assignment id, order id, courier id) due by now


@dataclass(frozen=True)
class Plan:
    assign: list[tuple[int, int, float]]  # (order id, courier id, delivery seconds)
    complete: list[tuple[int, int, int]]


@app.task("dispatch", every=PERIOD, timeout=2.0)
def dispatch(ctx: tenure.Context) -> None:
    """Assign the city's free couriers to its open orders, fenced by the city's term."""
    if ctx.is_cancelled:
        return
    city, term = ctx.key, ctx.token
    with _connections().connection() as db:
        snap = read(db, city)
    log.info(PLANNING, city, term, len(snap.orders), len(snap.couriers))
    plan = make_plan(snap)
    time.sleep(0.15 + 0.02 * len(plan.assign))  # routing: the slow part, outside any transaction
    log.info(PLANNED, city, term)
    try:
        if unfenced():
            with _connections().connection() as db, db.transaction():
                done = commit(db, ctx.dialect, city, term, ctx.worker_id, plan)
        else:
            with ctx.fenced_sync() as tx:
                done = commit(tx, ctx.dialect, city, term, ctx.worker_id, plan)
    except tenure.LeaseLost as exc:
        log.warning("dispatch %s term %d: stale commit refused: %s", city, term, exc)
        with _connections().connection() as db:
            record_refusal(db, city, term, ctx.worker_id, str(exc))
        raise
    log.info("dispatch %s term %d: committed %d assignments, %d deliveries done", city, term, *done)


def read(db: Connection, city: str) -> Snapshot:
    now = db_now(db, db.dialect)
    orders = db.fetchall(
        "SELECT id, delivery FROM demo_orders WHERE city = ? AND status = 'open' ORDER BY id LIMIT ?",
        (city, BATCH),
    )
    couriers = db.fetchall("SELECT id FROM demo_couriers WHERE city = ? AND status = 'free' ORDER BY id", (city,))
    due = db.fetchall(
        "SELECT id, order_id, courier_id FROM demo_assignments "
        "WHERE city = ? AND done_at IS NULL AND due_at <= ? ORDER BY id",
        (city, now),
    )
    return Snapshot(
        orders=[(int(i), float(d)) for i, d in orders],
        couriers=[int(c) for (c,) in couriers],
        due=[(int(a), int(o), int(c)) for a, o, c in due],
    )


def make_plan(snap: Snapshot) -> Plan:
    """Oldest orders first, to the free couriers in turn."""
    pairs = zip(snap.orders, snap.couriers, strict=False)
    return Plan(assign=[(order, courier, delivery) for (order, delivery), courier in pairs], complete=snap.due)


def commit(db: Statements, dialect: str, city: str, term: int, worker: str, plan: Plan) -> tuple[int, int]:
    """Write a plan; ``db`` is a fenced transaction (or, unfenced, a plain one)."""
    now = db_now(db, dialect)
    commit_id = uuid.uuid4().hex

    def q(text: str) -> str:  # fenced transactions speak the store's dialect: ? or %s
        return sql(text, dialect)

    if plan.complete:
        db.executemany(
            q("UPDATE demo_assignments SET done_at = due_at WHERE id = ?"), [(a,) for a, _, _ in plan.complete]
        )
        db.executemany(
            q("UPDATE demo_orders SET status = 'delivered' WHERE id = ?"), [(o,) for _, o, _ in plan.complete]
        )
        db.executemany(
            q("UPDATE demo_couriers SET status = 'free', order_id = NULL WHERE id = ?"),
            [(c,) for _, _, c in plan.complete],
        )
    if plan.assign:
        db.executemany(
            q(
                "INSERT INTO demo_assignments (order_id, courier_id, city, term, worker, commit_id, "
                "assigned_at, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            [(o, c, city, term, worker, commit_id, now, now + d) for o, c, d in plan.assign],
        )
        db.executemany(
            q("UPDATE demo_orders SET status = 'assigned', courier_id = ? WHERE id = ?"),
            [(c, o) for o, c, _ in plan.assign],
        )
        db.executemany(
            q("UPDATE demo_couriers SET status = 'busy', order_id = ? WHERE id = ?"),
            [(o, c) for o, c, _ in plan.assign],
        )
    db.execute(
        q(
            "INSERT INTO demo_dispatches (commit_id, city, term, worker, at, assigned, delivered)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        ),
        (commit_id, city, term, worker, now, len(plan.assign), len(plan.complete)),
    )
    return len(plan.assign), len(plan.complete)


def record_refusal(db: Connection, city: str, term: int, worker: str, reason: str) -> None:
    at = db_now(db, db.dialect)
    db.execute(
        "INSERT INTO demo_refusals (city, term, worker, at, reason) VALUES (?, ?, ?, ?, ?)",
        (city, term, worker, at, reason[:500]),
    )


# -- schema and the controller's writes ----------------------------------------------------

_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL", "end": ""},
    "postgresql": {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "float": "DOUBLE PRECISION", "end": ""},
    "mysql": {"id": "BIGINT AUTO_INCREMENT PRIMARY KEY", "float": "DOUBLE", "end": " ENGINE=InnoDB"},
}

TABLES = {
    "demo_cities": "name VARCHAR(64) PRIMARY KEY, couriers INTEGER NOT NULL",
    "demo_city_events": "id {id}, city VARCHAR(64) NOT NULL, event VARCHAR(16) NOT NULL, at {float} NOT NULL",
    "demo_couriers": (
        "id INTEGER PRIMARY KEY, city VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL, "
        "status VARCHAR(16) NOT NULL, order_id INTEGER"
    ),
    "demo_orders": (
        "id INTEGER PRIMARY KEY, city VARCHAR(64) NOT NULL, created_at {float} NOT NULL, "
        "delivery {float} NOT NULL, status VARCHAR(16) NOT NULL, courier_id INTEGER"
    ),
    "demo_assignments": (
        "id {id}, order_id INTEGER NOT NULL, courier_id INTEGER NOT NULL, city VARCHAR(64) NOT NULL, "
        "term BIGINT NOT NULL, worker VARCHAR(200) NOT NULL, commit_id VARCHAR(32) NOT NULL, "
        "assigned_at {float} NOT NULL, due_at {float} NOT NULL, done_at {float}"
    ),
    "demo_dispatches": (
        "id {id}, commit_id VARCHAR(32) NOT NULL, city VARCHAR(64) NOT NULL, term BIGINT NOT NULL, "
        "worker VARCHAR(200) NOT NULL, at {float} NOT NULL, assigned INTEGER NOT NULL, delivered INTEGER NOT NULL"
    ),
    "demo_refusals": (
        "id {id}, city VARCHAR(64) NOT NULL, term BIGINT NOT NULL, worker VARCHAR(200) NOT NULL, "
        "at {float} NOT NULL, reason VARCHAR(500) NOT NULL"
    ),
    "demo_marks": "name VARCHAR(16) PRIMARY KEY, at {float} NOT NULL",
}
INDEXES = [
    "CREATE INDEX demo_orders_open ON demo_orders (city, status)",
    "CREATE INDEX demo_assignments_city ON demo_assignments (city, done_at)",
]


_LIST_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    "mysql": "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
}


def create_schema(db: Connection) -> None:
    """Drop the demo's tables if a previous demo left them, and create them empty."""
    types = _TYPES[db.dialect]
    existing = {str(name) for (name,) in db.fetchall(_LIST_TABLES[db.dialect])}
    for name in TABLES:
        if name in existing:
            db.execute(f"DROP TABLE {name}")
    for name, columns in TABLES.items():
        db.execute(f"CREATE TABLE {name} ({columns.format(**types)}){types['end']}")
    for index in INDEXES:
        db.execute(index)


def open_city(db: Connection, city: str, couriers: Sequence[tuple[int, str]]) -> None:
    """A new city and its couriers (all free)."""
    with db.transaction():
        db.execute("INSERT INTO demo_cities (name, couriers) VALUES (?, ?)", (city, len(couriers)))
        db.executemany(
            "INSERT INTO demo_couriers (id, city, name, status) VALUES (?, ?, ?, 'free')",
            [(cid, city, name) for cid, name in couriers],
        )
        city_event(db, city, "opened")


def city_event(db: Connection, city: str, event: str) -> None:
    at = db_now(db, db.dialect)
    db.execute("INSERT INTO demo_city_events (city, event, at) VALUES (?, ?, ?)", (city, event, at))


def add_order(db: Connection, order_id: int, city: str, delivery: float) -> None:
    at = db_now(db, db.dialect)
    db.execute(
        "INSERT INTO demo_orders (id, city, created_at, delivery, status) VALUES (?, ?, ?, ?, 'open')",
        (order_id, city, at, delivery),
    )


def mark(db: Connection, name: str) -> float:
    """Record a moment of the demo (``start``, ``end``) on the database's clock."""
    at = db_now(db, db.dialect)
    db.execute("INSERT INTO demo_marks (name, at) VALUES (?, ?)", (name, at))
    return at
