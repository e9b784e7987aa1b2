"""Misbehaving handlers do not stop the others: hung, raising and blocking handlers on one
worker; and an async handler that blocks the event loop is named by the watchdog and, if
it blocks past the lease, loses its tasks safely."""

from __future__ import annotations

import itertools
import re
import signal
import statistics
import time

import pytest

from tenure.models import Outcome, Run

from .harness import Cluster, Timing, assert_fenced_history, first_commit_after

pytestmark = pytest.mark.slow

#: Scheduling slack on a busy two-core machine.
TOLERANCE = 0.35
#: Largest lag (start minus slot) allowed for a healthy task sharing a worker with bad ones.
MAX_LAG = 0.1


def slots_are_consecutive(runs: list[Run], period: float) -> bool:
    slots = sorted(r.scheduled_at for r in runs)
    return all(abs((b - a) - period) < 1e-6 for a, b in itertools.pairwise(slots))


async def test_hung_raising_and_blocking_sync_handlers_do_not_stop_the_others(cluster: Cluster) -> None:
    steady_every = 0.25
    await cluster.add_tasks("tick", ["steady"], every=steady_every)
    await cluster.add_tasks("hang", ["h"], every=1.0)  # never returns; timeout 0.5 s
    await cluster.add_tasks("boom", ["b"], every=0.5)  # raises every time
    await cluster.add_tasks("nap", ["n"], every=1.0, params={"sleep": 1.6})  # sync; timeout 0.5 s
    (solo,) = await cluster.start_all(["solo"], scenario="faults", timing=Timing())

    async def enough_runs() -> bool:
        runs = await cluster.runs()
        count = {
            (kind, outcome): sum(1 for r in runs if r.kind == kind and r.outcome is outcome)
            for kind, outcome in [
                ("hang", Outcome.TIMEOUT),
                ("boom", Outcome.ERROR),
                ("nap", Outcome.TIMEOUT),
                ("nap", Outcome.SKIPPED),
                ("tick", Outcome.OK),
            ]
        }
        return (
            count["hang", Outcome.TIMEOUT] >= 3
            and count["boom", Outcome.ERROR] >= 6
            and count["nap", Outcome.TIMEOUT] >= 2
            and count["nap", Outcome.SKIPPED] >= 2
            and count["tick", Outcome.OK] >= 16
        )

    await cluster.wait_for(enough_runs, "each kind of handler to run several times", within=20)
    solo.send(signal.SIGTERM)
    code, _ = await solo.wait_exit(within=10)
    assert code == 0, solo.explain(f"exit {code}")
    runs = await cluster.runs()  # all flushed on the way out
    by_kind: dict[str, list[Run]] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r)

    # The healthy task ran every slot, on time, while the others hung, raised and slept.
    # The last may be cut by the stop.
    steady = [r for r in by_kind["tick"] if r.outcome not in (Outcome.LEASE_LOST, Outcome.CANCELLED)]
    assert all(r.outcome is Outcome.OK for r in steady), steady
    assert slots_are_consecutive(steady, steady_every), "the healthy task missed slots"
    lags = [r.started_at - r.scheduled_at for r in steady]
    commits = [c for c in cluster.commits() if c.kind == "tick"]
    commit_lags = [c.started - c.slot for c in commits]
    print(
        f"healthy task: {len(steady)} runs, lag median {statistics.median(lags) * 1000:.1f} ms, "
        f"max {max(lags) * 1000:.1f} ms (handler-side max {max(commit_lags) * 1000:.1f} ms)"
    )
    assert max(lags) <= MAX_LAG, f"healthy task ran late: {sorted(lags)[-5:]}"
    assert max(commit_lags) <= MAX_LAG
    assert min(commit_lags) >= -0.02, "a run started before its slot"
    assert len(commits) >= len(steady) - 1

    # The hung handler is cancelled at its timeout, every period, and keeps its schedule.
    hang = by_kind["hang"]
    assert all(r.outcome is Outcome.TIMEOUT for r in hang[:-1]), hang
    assert slots_are_consecutive(hang, 1.0)
    for r in hang[:-1]:
        assert 0.5 <= r.ended_at - r.started_at <= 0.5 + TOLERANCE, r
    assert solo.events("cancelled"), "the hung handler never saw its cancellation"

    # The raising handler is recorded as an error each time, and its schedule continues.
    boom = by_kind["boom"]
    assert all(r.outcome is Outcome.ERROR for r in boom), boom
    assert all(r.error is not None and "RuntimeError: boom in b" in r.error for r in boom)
    assert slots_are_consecutive(boom, 0.5)

    # The sync handler runs in a worker thread; past its timeout it is told to stop, and
    # the slots that come while its thread still sleeps are skipped (never overlapped).
    nap = by_kind["nap"]
    threads = {e["thread"] for e in solo.events("start") if e["kind"] == "nap"}
    assert threads
    assert all(t.startswith("tenure-sync") for t in threads), threads
    # (cancelled: the run the worker's stop cut short)
    assert {r.outcome for r in nap} <= {Outcome.TIMEOUT, Outcome.SKIPPED, Outcome.CANCELLED}, nap
    for r in nap:
        if r.outcome is Outcome.SKIPPED:
            assert r.error == "previous run still in progress"
    starts = sorted(e["t"] for e in solo.events("start") if e["kind"] == "nap")
    assert all(b - a >= 1.6 for a, b in itertools.pairwise(starts)), "two nap runs overlapped"

    # None of this blocked the event loop.
    assert "event loop blocked" not in solo.log()


async def test_handler_blocking_the_event_loop_is_named_and_loses_its_lease_safely(cluster: Cluster) -> None:
    timing = Timing(ttl=2.0, heartbeat=0.4, poll=0.25, trust_margin=0.4)
    await cluster.add_tasks("block", ["b1"], every=1.0)
    await cluster.add_tasks("tick", [f"t{i}" for i in range(4)], every=0.5)
    await cluster.start_all(["wa", "wb"], scenario="blocker", timing=timing)
    await cluster.wait_balanced(["wa", "wb"])
    owner = (await cluster.tasks())["block", "b1"].owner
    assert owner is not None
    other_name = "wb" if owner == "wa" else "wa"
    blocker = cluster.workers[owner]  # whoever runs b1 is the one that blocks
    held = await cluster.owned_by(owner)
    order = cluster.control / "block-b1"

    def named_by_watchdog() -> list[str]:
        return [ln for ln in blocker.log().splitlines() if "event loop blocked" in ln]

    # A short block (well inside the lease): reported, naming the task; nothing else happens.
    order.write_text("0.8")

    async def short_block_reported() -> bool:
        blocks = blocker.events("blocking")
        return (
            bool(blocks)
            and bool(named_by_watchdog())
            and any(e["key"] == "b1" and e["t"] > blocks[0]["t"] for e in blocker.events("committed"))
        )

    await cluster.wait_for(short_block_reported, "the watchdog to report the short block")
    (line,) = named_by_watchdog()
    assert re.search(r"handler of block/b1 \(term \d+\)", line), line
    assert "worker_child.py" in line, line
    assert await cluster.owned_by(owner) == held, "a block inside the lease cost the worker its tasks"

    # A long block (past the lease): the other worker takes all its tasks; what the
    # blocked worker tries to commit afterwards is refused.
    last_id = cluster.commits()[-1].id
    order.write_text("4.0")

    async def blocking() -> bool:
        return bool(blocker.events("blocking")[1:])

    await cluster.wait_for(blocking, "the long block to start")
    blocked = blocker.events("blocking")[1]
    blocked_at = blocked["t"]

    async def all_moved() -> bool:
        commits = cluster.commits()
        return all(first_commit_after(commits, k, after_id=last_id, not_by=owner) for k in held)

    bound = timing.ttl + max(timing.poll, 1.0) + TOLERANCE  # as for a failover: periods 0.5 and 1 s
    await cluster.wait_for(all_moved, f"{other_name} to take {owner}'s tasks", within=bound + 5)
    commits = cluster.commits()
    delays = {
        k[1]: round(c.started - blocked_at, 3)
        for k in held
        if (c := first_commit_after(commits, k, after_id=last_id, not_by=owner)) is not None
    }
    print(f"event loop blocked -> tasks run elsewhere (s): {delays}; bound {bound:.2f}")
    assert max(delays.values()) <= bound, delays

    async def late_commit_refused() -> bool:
        return any(e["key"] == "b1" and e["term"] == blocked["term"] for e in blocker.events("refused"))

    await cluster.wait_for(late_commit_refused, "the blocked handler's late commit to be refused")
    (unblocked,) = [e for e in blocker.events("unblocked") if e["t"] > blocked_at]
    assert unblocked["lease_trusted"] is False, "the worker still trusted its lease after blocking past it"
    assert len(named_by_watchdog()) >= 2
    assert "handler of block/b1" in named_by_watchdog()[1]

    # Liveness returns: the blocked worker rejoins, and every task (b1 too) runs at a new term.
    async def b1_again() -> bool:
        return any(c.key == "b1" and c.term > blocked["term"] for c in cluster.commits())

    await cluster.wait_for(b1_again, "b1 to run again at a new term")
    await cluster.wait_balanced(["wa", "wb"])

    commits = cluster.commits()
    stale = set(held.values())
    late = [c for c in commits if c.worker == owner and c.at > blocked_at and c.term in stale]
    assert not late, f"{owner} committed at a stale term after blocking past its lease: {late}"
    lost = await cluster.runs(worker=owner, outcome=Outcome.LEASE_LOST.value)
    assert any(r.key == "b1" and r.term == blocked["term"] for r in lost), lost
    assert_fenced_history(commits)


async def test_sync_handler_stuck_in_its_fenced_transaction_past_its_timeout_stalls_nobody(cluster: Cluster) -> None:
    """Its thread cannot be stopped, but at its timeout its transaction is rolled back
    from the event loop: on SQLite it held the store's only write lock, and every
    worker's renewals and commits would wait behind it until their leases ran out."""
    timing = Timing()
    ticks = [f"t{i}" for i in range(4)]
    await cluster.add_tasks("tick", ticks, every=0.25)
    await cluster.add_tasks("stuck", ["s"], every=1.0, params={"hold": 3 * timing.ttl})
    await cluster.start_all(["w1", "w2"], scenario="stuck", timing=timing)

    def inside() -> list[dict[str, object]]:
        return [e for w in cluster.workers.values() for e in w.events("inside")]

    async def stuck_inside() -> bool:
        return bool(inside())

    await cluster.wait_for(stuck_inside, "a stuck run to hold its fenced transaction")
    since = time.time()

    async def everyone_live() -> bool:
        return await cluster.live_workers() == {"w1", "w2"}

    # Past the run's timeout and well past a lease: nobody waits for the stuck thread.
    await cluster.holds(everyone_live, "both workers holding live leases", seconds=2 * timing.ttl)

    async def ticks_committed() -> bool:
        late = {c.key for c in cluster.commits() if c.kind == "tick" and c.at > since + timing.ttl}
        return late == set(ticks)

    await cluster.wait_for(ticks_committed, "every tick task to commit while the stuck thread sleeps", within=5)
    first = inside()[0]

    async def stuck_refused() -> bool:
        return any(e["slot"] == first["slot"] for w in cluster.workers.values() for e in w.events("refused"))

    await cluster.wait_for(stuck_refused, "the stuck run to be refused once its thread wakes", within=10 * timing.ttl)
    stale = [c for c in cluster.commits() if c.kind == "stuck" and c.slot == first["slot"]]
    assert not stale, f"the stuck run past its timeout committed: {stale}"

    async def recorded_timeout() -> bool:
        timeouts = await cluster.runs(kind="stuck", outcome=Outcome.TIMEOUT.value)
        return any(r.scheduled_at == first["slot"] for r in timeouts)

    await cluster.wait_for(recorded_timeout, "the stuck run to be recorded as timed out")
