"""The database server itself goes down and comes back while workers run.

PostgreSQL: ``pg_ctlcluster --skip-systemctl-redirect VERSION NAME stop`` then ``start``
(the Debian cluster serving the store URL's port). MySQL/MariaDB: ``mariadb-admin
shutdown``, then ``start-stop-daemon --start --background --exec /usr/sbin/mariadbd``.

Three outages:

- ``short``: started again as soon as it has stopped. Leases may outlive the outage;
  whether a worker fenced itself depends on where its renewals fell.
- ``past-ttl``: kept down until every worker has fenced itself (its last confirmed renewal
  no longer vouches for its lease), then ``ttl + 1`` s more. Each worker's first attempt
  to rejoin, made as it fenced, has been waiting for a connection (for up to the store's
  5 s connect timeout) longer than ``ttl - trust_margin``: its answer comes too late to
  vouch for the new lease, which a worker holding nothing confirms afresh.
- ``many-ttls``: kept down five TTLs: a driver's reconnection backoff that doubles
  without a cap would by then wait seconds between attempts.

Whenever a worker fenced itself, its lease had expired before the server was back: a lease
ends at most ``ttl`` after the last renewal the server took, and the server takes none
once stopped (the servers run on this host: one clock).

Every time, the workers resume without anybody's help, every task runs within the
failover bound ``ttl + max(poll, period)`` (plus :data:`TOLERANCE`, scheduling slack) of
the server answering again, and nothing stale is accepted; after the long outages, no
commit carries a term from before them.

These restart a shared server: deselect them with ``-m "not server_restart"`` when other
test runs use the same server. The fixture starts the server again if a test fails with
it down.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import SERVER_KINDS
from .harness import FaultCluster, Timing, assert_fenced_history, recovery

pytestmark = [pytest.mark.slow, pytest.mark.server_restart]

PERIOD = 0.5
TOLERANCE = 0.5
TIMING = Timing(ttl=2.0, heartbeat=0.4, poll=0.3, trust_margin=0.5)
WORKERS = ["w1", "w2", "w3"]
BOUND = TIMING.ttl + max(TIMING.poll, PERIOD) + TOLERANCE
#: outage -> (seconds down after every worker fenced itself, seconds down after the stop)
OUTAGES = {
    "past-ttl": (TIMING.ttl + 1.0, TIMING.ttl + 0.1),
    "many-ttls": (0.0, 5 * TIMING.ttl),
}


@pytest.mark.parametrize("outage", ["short", *OUTAGES])
@pytest.mark.parametrize("fault_cluster", SERVER_KINDS, indirect=True)
async def test_server_restart_workers_resume_within_failover_bound(fault_cluster: FaultCluster, outage: str) -> None:
    c = fault_cluster
    tasks = await c.add_tasks("tick", [f"city{i}" for i in range(6)], every=PERIOD, params={})
    for n in WORKERS:
        c.start(n, timing=TIMING)
    await c.wait_balanced(WORKERS)
    terms_before = {k: t.term for k, t in (await c.tasks()).items()}
    marks = {n: c.log_lines(n) for n in WORKERS}

    stopping = time.monotonic()
    await asyncio.to_thread(c.db.stop_server)
    stopped = time.monotonic()

    def fenced() -> list[str]:
        return [n for n in WORKERS if c.log_has(n, "self-fencing", after_line=marks[n])]

    if outage in OUTAGES:
        after_fence, after_stop = OUTAGES[outage]

        async def all_fenced() -> bool:
            return len(fenced()) == len(WORKERS)

        await c.wait_for(all_fenced, "every worker to fence itself during the outage", within=TIMING.ttl + 5)
        all_fenced_at = time.monotonic()

        async def long_enough() -> bool:
            return time.monotonic() > max(all_fenced_at + after_fence, stopped + after_stop)

        await c.wait_for(long_enough, f"a {outage} outage", within=after_fence + after_stop + 1)
    fenced_during = fenced()

    starting = asyncio.create_task(asyncio.to_thread(c.db.start_server))
    back_at = await c.first_answer()  # the database clock at the restarted server's first answer
    down_for = time.monotonic() - stopping
    await starting

    await c.wait_all_commit_after(tasks, back_at, "every task to commit after the restart", within=BOUND + 20)
    commits = c.commits()
    rec = recovery(commits, tasks, back_at)
    slowest = max(rec.values())
    print(
        f"{c.kind}, {outage} outage: down {down_for:.2f}s; fenced during the outage: {fenced_during}; "
        f"recovery per task after the server answered again (s): {rec}; slowest {slowest:.3f}, bound {BOUND:.2f}"
    )
    assert slowest <= BOUND, f"tasks ran again only {slowest:.3f}s after the server was back: {rec}"
    assert_fenced_history(commits, PERIOD)
    if outage in OUTAGES:
        # Every lease expired during the outage: every commit after it is at a new term.
        for cm in commits:
            if cm.at > back_at:
                assert cm.term > terms_before[cm.task], f"STALE COMMIT ACCEPTED after the restart: {cm}"

    # And the cluster is whole again: every worker holds its share and commits.
    await c.wait_balanced(WORKERS)
