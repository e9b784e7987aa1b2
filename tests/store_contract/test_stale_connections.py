"""Connections the server ended while they sat idle in the store's pool.

A database restart, a failover behind a proxy, ``pg_terminate_backend`` or ``KILL``, an
idle timeout of the server or of a proxy: each ends the pooled connections nobody is
using. The next caller must not be the one who finds out: a readiness probe that fails
once per dead connection after a restart takes a healthy worker out of service for as
many probes. The store drops such connections when it takes them from its pool and uses
a live one, so every call after the cut succeeds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tenure.store import Store

from .dialect import raw_db
from .helpers import add

_OTHER_SESSIONS = {
    "postgresql": "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mysql": "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()",
}


def _end_other_sessions(store_url: str) -> int:
    """End every session of the test's scratch database but the one asking; count them.

    Returns once the server lists none of them: ending one only sends it a signal, and
    its socket closes when the session has gone.
    """
    raw = raw_db(store_url)
    others = _OTHER_SESSIONS[raw.dialect]
    ids = [i for (i,) in raw.query(others)]
    for i in ids:
        if raw.dialect == "postgresql":
            raw.query("SELECT pg_terminate_backend(%s)", (i,))
        else:
            raw.query(f"KILL CONNECTION {int(i)}")
    deadline = time.monotonic() + 10
    while raw.query(others):
        assert time.monotonic() < deadline, "the server still lists the sessions it was told to end"
        time.sleep(0.01)
    return len(ids)


async def test_calls_after_the_server_ended_idle_pooled_connections_succeed(store: Store, store_url: str) -> None:
    if store.dialect == "sqlite":
        pytest.skip("an embedded SQLite store has no connections for a server to end")
    await add(store, "dispatch", "barcelona")
    # Several calls at once, so the pool holds several connections.
    await asyncio.gather(*(store.list_tasks() for _ in range(8)))
    ended = _end_other_sessions(store_url)
    assert ended >= 2, f"the store held {ended} connections; the test needs several"

    for _ in range(ended + 2):
        (task,) = await store.list_tasks()
        assert task.key == "barcelona"
    assert (await store.get_task("dispatch", "barcelona")) is not None
    await add(store, "dispatch", "lisbon")
    assert sorted(t.key for t in await store.list_tasks()) == ["barcelona", "lisbon"]
