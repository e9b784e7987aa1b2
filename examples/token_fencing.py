"""Fencing writes to another system with ``ctx.token``.

A fenced transaction protects writes to the store's own database. For anything else
(another database, a cache, an API), hand over ``ctx.token`` and let the target keep the
highest token it has seen per key, refusing lower ones. In SQL, on SQLite or PostgreSQL:
"""

from __future__ import annotations

import sqlite3

CREATE = """
CREATE TABLE IF NOT EXISTS city_plans (
    city  TEXT PRIMARY KEY,
    token INTEGER NOT NULL,
    plan  TEXT NOT NULL
)
"""

# The WHERE on the conflict branch is the fence: an older token changes no row.
UPSERT = """
INSERT INTO city_plans (city, token, plan) VALUES (?, ?, ?)
ON CONFLICT (city) DO UPDATE SET token = excluded.token, plan = excluded.plan
WHERE excluded.token >= city_plans.token
"""


def write_plan(conn: sqlite3.Connection, city: str, token: int, plan: str) -> bool:
    """Store ``plan`` for ``city`` unless a newer owner (higher token) already wrote.

    Returns False when the write was refused as stale.
    """
    with conn:
        cur = conn.execute(UPSERT, (city, token, plan))
    return cur.rowcount == 1
