"""A sync reaches the workers: an owner runs the task with its new parameters and
schedule, keeps it, and lets go of the tasks the sync disables."""

from __future__ import annotations

import time

import pytest

import tenure
from tenure import TaskSpec

from .harness import Cluster, Timing

pytestmark = pytest.mark.slow

TIMING = Timing(ttl=1.5, heartbeat=0.3, poll=0.25, trust_margin=0.3)


async def test_owners_pick_up_a_sync_and_let_go_of_what_it_disables(cluster: Cluster) -> None:
    (w1,) = await cluster.start_all(["w1"], timing=TIMING)
    admin = tenure.App(cluster.url)
    await admin.open(migrate=False)
    try:

        def started(key: str, params: dict[str, int], since: float = 0.0) -> bool:
            return any(e["key"] == key and e["params"] == params and e["t"] > since for e in w1.events("start"))

        async def both_ran() -> bool:
            return started("a", {"v": 1}) and started("b", {"v": 1})

        first = await admin.sync_tasks("tick", {"a": {"v": 1}, "b": {"v": 1}})
        assert first.added == ("a", "b")
        await cluster.wait_for(both_ran, "w1 to run a and b")
        term = (await cluster.owned_by("w1"))[("tick", "a")]

        synced_at = time.time()
        second = await admin.sync_tasks("tick", {"a": TaskSpec(params={"v": 2}, every=0.5)})
        assert (second.updated, second.disabled) == (("a",), ("b",))

        async def a_runs_as_synced() -> bool:
            return started("a", {"v": 2}, since=synced_at)

        async def b_let_go() -> bool:
            return ("tick", "b") not in await cluster.owned_by("w1")

        await cluster.wait_for(a_runs_as_synced, "a to run with its new params", within=5)
        await cluster.wait_for(b_let_go, "w1 to release the disabled task", within=5)
        assert (await cluster.owned_by("w1"))[("tick", "a")] == term, "a sync must not move a task"
        released = time.time()

        async def b_stays_idle() -> bool:
            return not any(e["key"] == "b" and e["t"] > released for e in w1.events("start"))

        await cluster.holds(b_stays_idle, "no run of the disabled task", seconds=1.5)
        # Meanwhile a ran on, every 0.5 s now: about three runs in those 1.5 s.
        later = [e for e in w1.events("start") if e["key"] == "a" and e["t"] > released]
        assert len(later) >= 2, later
    finally:
        await admin.close()
