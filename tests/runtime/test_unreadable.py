"""A task row whose schedule was written into the table by hand, so that tenure cannot
read it: every worker that reads it crashed ("the worker's rebalancer crashed; stopping
the worker"), and every view failed. Now the worker that claims it holds it unrun, says
so once, and runs everything else; views show it, marked unreadable."""

from __future__ import annotations

import httpx
import pytest

import tenure
from tenure.schedule import Unreadable
from tenure.web import create_app

from .harness import Cluster, Timing

pytestmark = pytest.mark.slow

TIMING = Timing(ttl=1.5, heartbeat=0.3, poll=0.25, trust_margin=0.3)
GOOD = [f"k{i}" for i in range(4)]
#: Written by hand after tenure added them (tenure refuses both schedules).
BAD = {"bad-every": "every = -5", "bad-cron": "every = NULL, cron = 'garbage'"}


async def test_a_schedule_tenure_cannot_read_stops_no_worker_and_shows_in_every_view(cluster: Cluster) -> None:
    await cluster.add_tasks("tick", GOOD, every=0.5)
    for period, (key, assignment) in zip((7, 9), BAD.items(), strict=True):
        await cluster.add_tasks("tick", [key], every=period)
        cluster.db.query(f"UPDATE tenure_tasks SET {assignment} WHERE every = {period}")
    workers = await cluster.start_all(["w1", "w2"], timing=TIMING)

    async def good_ones_run() -> bool:
        return {c.key for c in cluster.commits()} >= set(GOOD)

    await cluster.wait_for(good_ones_run, "every readable task to run")

    async def bad_ones_held_unrun() -> bool:
        tasks = await cluster.tasks()
        held = all(tasks[("tick", k)].owner in ("w1", "w2") for k in BAD)
        return held and not any(c.key in BAD for c in cluster.commits())

    await cluster.wait_for(bad_ones_held_unrun, "the unreadable tasks to be held")
    # Held, not released and claimed again: one error line per task, not one per poll.
    await cluster.holds(bad_ones_held_unrun, "the unreadable tasks held and never run", seconds=2.0)
    for shown in ("schedule unreadable (every -5.0: ", "schedule unreadable (cron 'garbage': "):
        said = [line for w in workers for line in w.log().splitlines() if shown in line]
        assert len(said) == 1, said
    assert all(w.proc.poll() is None for w in workers)

    admin = tenure.App(cluster.url)
    await admin.open(migrate=False)
    try:
        tasks = {t.key: t for t in await admin.list_tasks(kind="tick")}
        assert isinstance(tasks["bad-every"].schedule, Unreadable)
        assert tasks["bad-every"].schedule.every == -5
        assert isinstance(tasks["bad-cron"].schedule, Unreadable)
        assert tasks["bad-cron"].schedule.cron == "garbage"
        await admin.status()
        asgi = create_app(admin, tenure.Settings())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as http:
            listed = {t["key"]: t for t in (await http.get("/api/tasks")).json()}
            assert listed["bad-cron"]["cron"] == "garbage"
            assert listed["bad-cron"]["schedule"].startswith("unreadable (cron 'garbage': ")
            assert listed["bad-every"]["every"] == -5
            for path in ("/api/status", "/api/tasks/tick/bad-cron", "/api/failovers", "/"):
                assert (await http.get(path)).status_code == 200, path
            assert "tenure_store_up 1.0" in (await http.get("/metrics")).text

        # Repaired by a sync: the worker holding it runs it from its next slot.
        await admin.sync_tasks("tick", {k: tenure.TaskSpec(every=0.5) for k in [*GOOD, *BAD]})

        async def repaired_runs() -> bool:
            return {c.key for c in cluster.commits()} >= set(BAD)

        await cluster.wait_for(repaired_runs, "the repaired tasks to run")
    finally:
        await admin.close()
