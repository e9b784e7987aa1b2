"""A worker that leaves while a lease renewal is on its way does not fence itself.

When a deployment stops every worker at once, a renewal a worker sent just before its
``leave()`` can reach the store after ``leave()`` removed the worker's row, and the
store answers that the lease is gone. The worker then logged ``self-fencing: lease
lost`` at ERROR and counted a self-fence, on a graceful stop: noise in every deploy, and
a false alarm for anyone who alerts on self-fences.

The worker runs in this process on a real store of every kind; the store's
``renew_lease`` is held back until ``leave()`` has returned, so the renewal that loses
the race is not left to chance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import tenure
from tenure.worker.supervisor import Worker

#: A renewal is given most of the TTL (the worker holds no task), so the held one waits for
#: leave() however slowly the stop goes on a busy machine, rather than time out first.
SETTINGS = tenure.Settings(worker_id="w1", lease_ttl=10.0, heartbeat=0.4, poll=0.2, trust_margin=0.3, grace=0.5)


async def test_a_renewal_answered_after_leave_is_not_a_lost_lease(
    store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = tenure.App(store_url)

    @app.task("tick", every=3600.0)
    async def tick(ctx: tenure.Context) -> None:
        pass

    await app.open(migrate=True)
    store = app.store
    renew_lease, leave = store.renew_lease, store.leave
    hold = asyncio.Event()  # from now on, renewals wait for leave()
    held = asyncio.Event()  # a renewal is waiting
    left = asyncio.Event()
    answers: list[str] = []

    async def renew_after_leave(*args: Any, **kwargs: Any) -> Any:
        if hold.is_set():
            held.set()
            await left.wait()
            try:
                lease = await renew_lease(*args, **kwargs)
            except Exception as exc:
                answers.append(type(exc).__name__)
                raise
            answers.append("renewed")
            return lease
        return await renew_lease(*args, **kwargs)

    async def leave_and_say_so(*args: Any, **kwargs: Any) -> Any:
        freed = await leave(*args, **kwargs)
        left.set()
        return freed

    monkeypatch.setattr(store, "renew_lease", renew_after_leave)
    monkeypatch.setattr(store, "leave", leave_and_say_so)
    worker = Worker(store=store, kinds=app.kinds, settings=SETTINGS)
    caplog.set_level(logging.INFO, logger="tenure")
    running = asyncio.create_task(worker.run(handle_signals=False))
    try:
        deadline = time.monotonic() + 10.0
        while not worker.lease_trusted():
            assert time.monotonic() < deadline, "the worker did not join"
            await asyncio.sleep(0.05)
        hold.set()
        await asyncio.wait_for(held.wait(), 10.0)
        worker.request_stop()
        await asyncio.wait_for(running, 30.0)
    finally:
        if not running.done():
            running.cancel()
        await app.close()
    assert answers == ["LeaseLost"], "the held renewal did not reach the store after leave()"
    fenced = [r.getMessage() for r in caplog.records if "self-fencing" in r.getMessage()]
    assert fenced == [], f"a graceful stop logged a self-fence: {fenced}"
    assert worker.lease.fences == 0
    assert any("left the cluster" in r.getMessage() for r in caplog.records)
