"""A worker whose lease it no longer trusts still hands over what it should, and claims
nothing (issue 12: overload must not leave a late worker sitting on its surplus).

The worker's parts run in this process on a real store of every kind, without its lease
keeper: the lease's trust lapses exactly as when a renewal is late, the moment between a
renewal that was not confirmed in time and the keeper's self-fence. Polls are driven one
at a time so that each step is observed.
"""

from __future__ import annotations

import asyncio
import time

import tenure
from tenure.store import make_store
from tenure.worker.supervisor import Worker

TASKS = 8
#: Trusted for lease_ttl - trust_margin = 1.5 s after the join; the lease itself lasts 4 s.
SETTINGS = tenure.Settings(worker_id="w1", lease_ttl=4.0, heartbeat=1.0, poll=0.2, trust_margin=2.5)


async def owned_by(app: tenure.App, worker: str) -> int:
    return len(await app.list_tasks(owner=worker))


async def test_an_untrusted_worker_releases_its_surplus_and_claims_nothing(store_url: str) -> None:
    app = tenure.App(store_url)

    @app.task("tick", every=3600.0)
    async def tick(ctx: tenure.Context) -> None:  # never started: the executor is not opened
        pass

    await app.open(migrate=True)
    other = make_store(store_url)
    await other.open(migrate=False)
    worker = Worker(store=app.store, kinds=app.kinds, settings=SETTINGS)
    try:
        await app.sync_tasks("tick", {f"k{i}": None for i in range(TASKS)})
        assert await worker.lease.join()
        # A newcomer claims once the membership it sees has stopped growing for a poll.
        settled = time.monotonic() + 10 * SETTINGS.poll
        while await owned_by(app, "w1") < TASKS and time.monotonic() < settled:
            await worker.rebalancer._poll_once()
            await asyncio.sleep(SETTINGS.poll / 4)
        assert await owned_by(app, "w1") == TASKS, "alone and trusted, it claims every task"

        # A second worker of the kind joins: half of w1's tasks are now surplus.
        await other.register_worker(worker_id="w2", host="elsewhere", pid=1, ttl=60.0, kinds=["tick"])
        deadline = time.monotonic() + 10.0
        while worker.lease_trusted():  # nobody renews: the trust lapses as if a renewal were late
            assert time.monotonic() < deadline, "the lease was still trusted long past its TTL"
            await asyncio.sleep(0.05)
        await worker.rebalancer._poll_once()
        # Before the fix an untrusted poll did nothing: w1 sat on all eight until it fenced.
        assert await owned_by(app, "w1") == TASKS // 2, "the untrusted worker kept its surplus"
        assert sum(t.owner is None for t in await app.list_tasks()) == TASKS // 2, "released, not lost"

        # The other worker leaves: w1's share is every task again, but it may not claim.
        await other.leave("w2", [])
        await worker.rebalancer._poll_once()
        assert await owned_by(app, "w1") == TASKS // 2, "an untrusted worker claimed tasks"
    finally:
        worker.rebalancer.forget_all()
        worker.executor.close()
        await other.close()
        await app.close()
