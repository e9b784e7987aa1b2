"""Per-kind membership with real worker processes: a rolling deploy that adds a kind.

Three workers run ``tick``. One by one each is stopped (SIGTERM) and started again, under
the same id, as the new release that also runs ``report``; ``report`` tasks are added
while the deploy is under way. No ``report`` task is ever owned by a worker that does not
run ``report``, every one gets an owner and runs once a worker that runs it is live, and
each kind ends up shared fairly among the workers that run it (issue 15, item 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import pytest

from .harness import Cluster, Timing, WorkerProc, assert_fenced_history, fair_counts

pytestmark = pytest.mark.slow

TIMING = Timing(ttl=1.5, heartbeat=0.3, poll=0.25, trust_margin=0.3)
NAMES = ["w1", "w2", "w3"]


class OwnershipWatch:
    """Samples ownership all along the test: every owner of a ``report`` task must be a
    worker whose membership row publishes ``report``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples = 0
        self.report_owners: set[str] = set()
        self.violations: list[str] = []
        self._sampled = asyncio.Event()

    async def run(self) -> None:
        while True:
            # Tasks first, then workers: a worker never loses ``report`` in this test, so
            # an owner seen in the first read still publishes it in the second.
            tasks = await self.cluster.store.list_tasks(kind="report")
            kinds = {w.id: w.kinds for w in await self.cluster.store.list_workers()}
            for t in tasks:
                if t.owner is None:
                    continue
                self.report_owners.add(t.owner)
                if "report" not in kinds.get(t.owner, ()):
                    self.violations.append(f"{t.key} owned by {t.owner}, which runs {kinds.get(t.owner)}")
            self.samples += 1
            self._sampled.set()
            await asyncio.sleep(0.02)

    async def one_more_sample(self) -> None:
        """Wait for a whole sample that began after this call: the one in flight may have
        read the tasks before what the caller just saw."""
        for _ in range(2):  # the end of the one in flight, then the end of the next
            self._sampled.clear()
            await self._sampled.wait()


async def shared(cluster: Cluster, kind: str, runners: list[str]) -> dict[str, int] | None:
    """Each enabled task of ``kind`` owned by one of ``runners``, fairly (counts differ by at
    most one), and committed at its current term; the counts, else None."""
    tasks = [t for t in (await cluster.tasks()).values() if t.kind == kind]
    return fair_counts(tasks, runners, cluster.commits)


async def redeploy(cluster: Cluster, old: WorkerProc) -> tuple[WorkerProc, float]:
    """Stop ``old`` gracefully and start it again as the release that runs ``report``;
    return the new process and when it was started (host clock = database clock)."""
    old.send(signal.SIGTERM)
    code, _ = await old.wait_exit()
    assert code == 0, old.explain(f"exit code {code} after SIGTERM")
    new = cluster.start(old.name, scenario="report", timing=TIMING)
    started = time.time()
    await cluster.wait_joined(new)
    return new, started


async def test_rolling_deploy_that_adds_a_kind(cluster: Cluster) -> None:
    await cluster.add_tasks("tick", [f"shop{i}" for i in range(7)], every=0.5)
    workers = {w.name: w for w in await cluster.start_all(NAMES, timing=TIMING)}

    async def ticks_shared(runners: list[str]) -> bool:
        return await shared(cluster, "tick", runners) is not None

    await cluster.wait_for(lambda: ticks_shared(NAMES), "tick shared by the three workers")

    watch = OwnershipWatch(cluster)
    watcher = asyncio.create_task(watch.run())
    try:
        deployed: dict[str, float] = {}  # worker -> when its report-running release started

        # w1 first: it alone runs report, so the report tasks added now all go to it,
        # and it keeps its share of tick besides (fair share is per kind).
        workers["w1"], deployed["w1"] = await redeploy(cluster, workers["w1"])
        await cluster.add_tasks("report", [f"r{i}" for i in range(4)], every=0.5)

        async def only_w1_runs_report() -> bool:
            report = await shared(cluster, "report", ["w1"])
            return report == {"w1": 4} and await ticks_shared(NAMES)

        await cluster.wait_for(only_w1_runs_report, "report on w1 alone, tick still shared by three")

        # w2 next, with more report tasks added meanwhile: report spreads over w1 and w2.
        workers["w2"], deployed["w2"] = await redeploy(cluster, workers["w2"])
        await cluster.add_tasks("report", [f"r{i}" for i in range(4, 7)], every=0.5)

        async def report_on_two() -> bool:
            return await shared(cluster, "report", ["w1", "w2"]) is not None and await ticks_shared(NAMES)

        await cluster.wait_for(report_on_two, "report shared by w1 and w2")

        # Last, w3: every kind shared by all three.
        workers["w3"], deployed["w3"] = await redeploy(cluster, workers["w3"])

        async def all_shared() -> bool:
            return await shared(cluster, "report", NAMES) is not None and await ticks_shared(NAMES)

        await cluster.wait_for(all_shared, "report and tick shared by all three")
        report = await shared(cluster, "report", NAMES)
        assert report is not None
        assert sorted(report.values()) == [2, 2, 3], report
        # The wait above may see w3's report tasks before the watch has: stopping the watch
        # at once could leave w3 out of ``report_owners`` (seen in CI on MariaDB).
        await watch.one_more_sample()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    assert watch.samples > 10, "the ownership watch barely ran"
    assert watch.violations == [], watch.violations[:5]
    assert watch.report_owners == set(NAMES)
    # What the database accepted agrees: each report commit came from a worker's
    # report-running release, and the history is fenced.
    commits = cluster.commits()
    report_commits = [c for c in commits if c.kind == "report"]
    assert {c.key for c in report_commits} == {f"r{i}" for i in range(7)}
    early = [c for c in report_commits if c.started < deployed[c.worker]]
    assert early == [], early[:5]
    for r in await cluster.runs(kind="report"):
        assert r.started_at >= deployed[r.worker], r
    assert_fenced_history(commits)
