"""Pause and resume across three real workers: paused work starts nowhere, keeps its
owners, stays paused through a failover and a restart of every worker, and resumes
without a burst; ``cancel`` cancels the runs in progress."""

from __future__ import annotations

import signal
import time

import pytest

import tenure

from .harness import Cluster, Timing, WorkerProc

pytestmark = pytest.mark.slow

TIMING = Timing(ttl=1.5, heartbeat=0.3, poll=0.25, trust_margin=0.3)
KEYS = [f"k{i}" for i in range(6)]


def saw(w: WorkerProc, line: str) -> bool:
    return line in w.log()


async def wait_seen(cluster: Cluster, workers: list[WorkerProc], line: str) -> float:
    """Wait until every one of ``workers`` logged ``line``; return when."""

    async def all_saw() -> bool:
        return all(saw(w, line) for w in workers)

    return await cluster.wait_for(all_saw, f"every worker to log {line!r}")


def starts_after(workers: list[WorkerProc], t: float) -> list[dict[str, object]]:
    return [e for w in workers for e in w.events("start") if float(e["t"]) > t]


async def test_a_paused_kind_stays_paused_through_failover_and_restarts(cluster: Cluster) -> None:
    workers = await cluster.start_all(["w1", "w2", "w3"], timing=TIMING)
    await cluster.add_tasks("tick", KEYS, every=0.5)
    await cluster.wait_balanced(["w1", "w2", "w3"])
    admin = tenure.App(cluster.url)
    await admin.open(migrate=False)
    try:
        paused = await admin.pause_kind("tick", by="test-operator")
        assert (paused.kind, paused.by, paused.cancel) == ("tick", "test-operator", False)
        seen = await wait_seen(cluster, workers, "kind tick paused by test-operator")
        owners = {k: (t.owner, t.term) for k, t in (await cluster.tasks()).items()}

        async def nothing_starts() -> bool:
            return not starts_after(list(cluster.workers.values()), seen)

        await cluster.holds(nothing_starts, "no run of the paused kind", seconds=2.0)
        # Owners and terms kept: a pause moves nothing.
        assert {k: (t.owner, t.term) for k, t in (await cluster.tasks()).items()} == owners

        # Failover: w3 dies, its tasks move to w1 and w2, who still start nothing.
        w3_tasks = set(await cluster.owned_by("w3"))
        assert w3_tasks
        workers[2].send(signal.SIGKILL)

        async def moved() -> bool:
            tasks = await cluster.tasks()
            return all(tasks[k].owner in ("w1", "w2") for k in w3_tasks)

        await cluster.wait_for(moved, "w3's tasks to move")
        await cluster.holds(nothing_starts, "no run after the failover", seconds=1.5)

        # Every worker restarts: the pause is in the store, not in their memory.
        for w in workers[:2]:
            w.send(signal.SIGTERM)
        for w in workers[:2]:
            code, _ = await w.wait_exit()
            assert code == 0
        fresh = await cluster.start_all(["w4", "w5", "w6"], timing=TIMING)
        await wait_seen(cluster, fresh, "kind tick paused by test-operator")

        async def all_owned() -> bool:
            return all(t.owner in ("w4", "w5", "w6") for t in (await cluster.tasks()).values())

        await cluster.wait_for(all_owned, "the new workers to own every task")
        await cluster.holds(nothing_starts, "no run after every worker restarted", seconds=1.5)
        status = await admin.status()
        assert [(p.kind, p.by) for p in status.pauses] == [("tick", "test-operator")]

        # Resume: every task runs again; with the skip policy, at most one run of a slot
        # missed during the pause, not one per missed slot.
        resumed_at = time.time()
        lifted = await admin.resume_kind("tick")
        assert lifted == paused

        async def all_ran_again() -> bool:
            return {(c.kind, c.key) for c in cluster.commits() if c.at > resumed_at} == {("tick", k) for k in KEYS}

        await cluster.wait_for(all_ran_again, "every task to run again after the resume")
        for key in KEYS:
            missed = [c for c in cluster.commits() if c.key == key and seen < c.slot < resumed_at]
            assert len(missed) <= 1, f"{key} ran {len(missed)} missed slots at once: {missed}"
        assert await admin.pauses() == []
    finally:
        await admin.close()


async def start_long_run(cluster: Cluster, admin: tenure.App, w1: WorkerProc, **params: object) -> None:
    """Add ``tick/long`` (every 120 s, so its timeout, the period, is far away; 60 s of
    work), wait until ``w1`` owns it, trigger it and wait until its run has started."""
    await cluster.add_tasks("tick", ["long"], every=120, params={"work": 60, **params})

    async def owned() -> bool:
        return ("tick", "long") in await cluster.owned_by(w1.name)

    await cluster.wait_for(owned, f"{w1.name} to own the task")
    await admin.trigger("tick", "long")

    async def long_started() -> bool:
        return bool(w1.events("start"))

    await cluster.wait_for(long_started, "the long run to start")


async def test_pause_with_cancel_cancels_runs_in_progress_and_a_store_pause_covers_every_kind(
    cluster: Cluster,
) -> None:
    (w1,) = await cluster.start_all(["w1"], timing=TIMING)
    admin = tenure.App(cluster.url)
    await admin.open(migrate=False)
    try:
        await start_long_run(cluster, admin, w1)
        await admin.pause(cancel=True, by="test-operator")  # every kind

        async def cancelled() -> bool:
            return bool(w1.events("cancelled")) and any(
                r.outcome == "cancelled" for r in await cluster.runs(kind="tick", key="long")
            )

        await cluster.wait_for(cancelled, "the run in progress to be cancelled")
        (run,) = [r for r in await cluster.runs(kind="tick", key="long") if r.outcome == "cancelled"]
        assert run.error is not None
        assert "paused by test-operator" in run.error
        assert not cluster.commits(), "a cancelled run committed"
        assert (await cluster.tasks())[("tick", "long")].owner == "w1"  # its owner kept it

        # Lifting the store's pause lets it run again.
        assert await admin.resume() is not None
        starts = len(w1.events("start"))
        await admin.trigger("tick", "long")

        async def runs_again() -> bool:
            return len(w1.events("start")) > starts

        await cluster.wait_for(runs_again, "the task to run again after the resume")
    finally:
        await admin.close()


async def test_disable_with_cancel_cancels_the_run_and_its_late_commit_is_refused(cluster: Cluster) -> None:
    (w1,) = await cluster.start_all(["w1"], timing=TIMING)
    admin = tenure.App(cluster.url)
    await admin.open(migrate=False)
    try:
        # A stubborn handler: it ignores its cancellation and tries to commit anyway.
        await start_long_run(cluster, admin, w1, stubborn=True)
        task = await admin.disable("tick", "long", cancel=True)
        assert (task.enabled, task.owner) == (False, None)

        async def cancelled_and_refused() -> bool:
            return (
                bool(w1.events("cancelled"))
                and bool(w1.events("refused"))
                and any(r.outcome == "cancelled" for r in await cluster.runs(kind="tick", key="long"))
            )

        await cluster.wait_for(cancelled_and_refused, "the run to be cancelled and its commit refused")
        (run,) = await cluster.runs(kind="tick", key="long")
        assert run.outcome == "cancelled"
        assert (run.error or "").startswith("cancelled: task disabled with cancel")
        assert not cluster.commits(), "the cancelled run's late commit was accepted"
        assert "cancelling the run in progress: task disabled with cancel" in w1.log()
    finally:
        await admin.close()
