"""Stopping a worker with real signals: a second SIGTERM forces the stop even in the
middle of the grace period, and what it cancels is recorded as cancelled, not as a lost
lease (issue 13, bugs a and j)."""

from __future__ import annotations

import signal

from tenure.models import Outcome

from .harness import Cluster, Timing

#: Far longer than the test may take: only a forced stop ends the worker in time.
LONG_GRACE = 120.0


async def test_a_second_sigterm_cancels_running_handlers_at_once(cluster: Cluster) -> None:
    await cluster.add_tasks("linger", ["a", "b"], every=1.0)
    (w,) = await cluster.start_all(["w1"], scenario="linger", timing=Timing(grace=LONG_GRACE))

    async def both_running() -> bool:
        return {e["key"] for e in w.events("start")} >= {"a", "b"}

    await cluster.wait_for(both_running, "both handlers to start")
    w.send(signal.SIGTERM)

    async def stopping() -> bool:
        return "stopping:" in w.log()

    await cluster.wait_for(stopping, "the worker to begin its graceful stop")
    assert w.alive(), w.explain("exited before its grace period was over")
    w.send(signal.SIGTERM)
    # Before the fix the second signal was noted but the worker sat out the grace period.
    code, _ = await w.wait_exit(within=LONG_GRACE / 4)
    assert code == 0, w.explain(f"exit code {code}")
    assert {e["key"] for e in w.events("cancelled")} == {"a", "b"}
    runs = await cluster.runs(kind="linger")
    assert sorted((r.key, r.outcome, r.error) for r in runs) == [
        ("a", Outcome.CANCELLED, "cancelled: worker stopping"),
        ("b", Outcome.CANCELLED, "cancelled: worker stopping"),
    ]
    assert not await cluster.owned_by("w1"), "the worker did not hand its tasks back"
