"""Each task keeps its period across owners: through a graceful handoff (SIGTERM) and a
failover (SIGKILL), no two runs of a task fall within half a period, and no gap is longer
than a period plus the failover bound."""

from __future__ import annotations

import itertools
import signal

import pytest

from .harness import Cluster, Commit, TaskId, Timing, assert_fenced_history

pytestmark = pytest.mark.slow

PERIOD = 1.0
TIMING = Timing(ttl=2.0, heartbeat=0.4, poll=0.25, trust_margin=0.3)
#: Scheduling slack on a busy two-core machine (wake-ups, transactions queueing on the lock).
TOLERANCE = 0.35
#: A dead worker's lease ends within ttl of its death; survivors claim at their next poll.
FAILOVER_BOUND = TIMING.ttl + TIMING.poll + TOLERANCE
#: Runs never start before their slot (beyond clock-reading noise).
EARLY = 0.02


async def test_period_is_kept_across_handoff_and_failover(cluster: Cluster) -> None:
    keys = [f"city{i}" for i in range(6)]
    await cluster.add_tasks("tick", keys, every=PERIOD)
    await cluster.start_all(["w1", "w2", "w3"], timing=TIMING)
    await cluster.wait_balanced(["w1", "w2", "w3"])

    async def each_task_ran(times: int, *, after_id: int, by: set[str]) -> None:
        async def ran() -> bool:
            counts = dict.fromkeys(keys, 0)
            for c in cluster.commits():
                if c.id > after_id and c.worker in by:
                    counts[c.key] += 1
            return min(counts.values()) >= times

        await cluster.wait_for(ran, f"every task to run {times} more times on {sorted(by)}")

    # Graceful handoff of w1's tasks.
    handed = await cluster.owned_by("w1")
    mark = term_mark = cluster.commits()[-1].id
    cluster.workers["w1"].send(signal.SIGTERM)
    code, _ = await cluster.workers["w1"].wait_exit(within=5)
    assert code == 0
    await each_task_ran(2, after_id=mark, by={"w2", "w3"})

    # Failover of w2's tasks (which now include some of w1's).
    failed = await cluster.owned_by("w2")
    mark = kill_mark = cluster.commits()[-1].id
    cluster.workers["w2"].send(signal.SIGKILL)
    await cluster.workers["w2"].wait_exit()
    await each_task_ran(2, after_id=mark, by={"w3"})

    commits = cluster.commits()
    assert_fenced_history(commits)
    by_task: dict[TaskId, list[Commit]] = {}
    for c in commits:
        by_task.setdefault(c.task, []).append(c)
    worst_gap = 0.0
    handoffs: dict[TaskId, float] = {}
    failovers: dict[TaskId, float] = {}
    for task, cs in by_task.items():
        for prev, cur in itertools.pairwise(cs):
            slot_gap, start_gap = cur.slot - prev.slot, cur.started - prev.started
            worst_gap = max(worst_gap, start_gap)
            assert slot_gap >= PERIOD / 2, f"{task}: two runs' slots within half a period: {prev} {cur}"
            assert start_gap >= PERIOD / 2, f"{task}: two runs started within half a period: {prev} {cur}"
            assert start_gap <= PERIOD + FAILOVER_BOUND, f"{task}: gap {start_gap:.3f}s: {prev} {cur}"
            assert slot_gap <= PERIOD + FAILOVER_BOUND, f"{task}: slot gap {slot_gap:.3f}s: {prev} {cur}"
            # The schedule is a grid: slots of one task are whole periods apart.
            assert abs(slot_gap / PERIOD - round(slot_gap / PERIOD)) < 1e-6, f"{task}: off grid {prev} {cur}"
            if prev.worker != cur.worker and prev.worker == "w2" and cur.id > kill_mark:
                failovers[task] = start_gap  # within the failover bound, checked above
            else:
                # Same owner, a handoff, or a rebalance at start-up: every slot of the grid
                # runs (the new owner runs the very next one, late if need be), none is lost.
                assert abs(slot_gap - PERIOD) < 1e-6, f"{task}: a slot was lost: {prev} {cur}"
                if prev.worker == "w1" and cur.id > term_mark:
                    handoffs[task] = start_gap
        for c in cs:
            assert c.started >= c.slot - EARLY, f"{task}: run started before its slot: {c}"
    assert set(handoffs) == set(handed), f"handoffs seen {sorted(handoffs)}, expected {sorted(handed)}"
    assert set(failovers) == set(failed), f"failovers seen {sorted(failovers)}, expected {sorted(failed)}"
    print(
        f"gap between runs across the handoff (s): {sorted(round(g, 3) for g in handoffs.values())}; "
        f"across the failover: {sorted(round(g, 3) for g in failovers.values())}; "
        f"largest gap {worst_gap:.3f}s (bound {PERIOD + FAILOVER_BOUND:.2f}s)"
    )
