"""A worker dies, pauses or stops: its tasks run elsewhere, in time, and it never commits stale.

Real worker processes on one store (of each kind under test), real signals. Bounds come
from the settings:

- A lease that nobody renews ends at most ``ttl`` after the last renewal, which came
  before the fault; survivors look at the next ``poll`` and claim; the claimed task's
  first run is at its next slot on the grid after the old lease's end (at most one
  ``period`` away) or, if that slot has passed, at the claim. So a task runs elsewhere
  within ``ttl + max(poll, period)`` of the fault, plus :data:`TOLERANCE`.
- A stopping worker releases its tasks before it exits, so the same holds with the
  ``ttl`` term gone: ``max(poll, period)`` after its exit, plus :data:`TOLERANCE`.

:data:`TOLERANCE` is scheduling slack on a busy two-core machine: process wake-ups, the
claim and commit transactions queueing on SQLite's single write lock, or on a server's
round trips.

"Runs elsewhere" is measured at the new owner's handler start (the ``started`` column of
its accepted commit), since the commit itself comes after the handler's own work.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tenure.models import Freed, Outcome, Task
from tenure.worker.rebalancer import SETTLE_MAX

from .harness import Cluster, Commit, TaskId, Timing, WorkerProc, assert_fenced_history, first_commit_after

pytestmark = pytest.mark.slow

TOLERANCE = 0.35
PERIOD = 0.25
TIMING = Timing(ttl=1.5, heartbeat=0.3, poll=0.25, trust_margin=0.3)
WORKERS = ["w1", "w2", "w3"]


def failover_bound(t: Timing, period: float) -> float:
    """Longest time from a worker's fault to its tasks' first run elsewhere (see module doc)."""
    return t.ttl + max(t.poll, period) + TOLERANCE


def takeovers(commits: list[Commit], held: dict[TaskId, int], *, after_id: int, victim: str) -> dict[TaskId, Commit]:
    """For each task the victim held, the first commit by somebody else after ``after_id``."""
    found = {}
    for task in held:
        c = first_commit_after(commits, task, after_id=after_id, not_by=victim)
        if c is not None:
            found[task] = c
    return found


async def assert_w2s_tasks_moved_after_its_death(
    cluster: Cluster, commits: list[Commit], held: dict[TaskId, int], killed_at: float
) -> dict[TaskId, Task]:
    """No commit of the killed w2 was accepted after its death, the history is fenced, and
    each task w2 held is now w1's or w3's, freed as expired. Returns the tasks."""
    late = [c for c in commits if c.worker == "w2" and c.at > killed_at]
    assert not late, f"commits from the dead worker after its death: {late}"
    assert_fenced_history(commits)
    tasks = await cluster.tasks()
    for task in held:
        assert tasks[task].owner in ("w1", "w3")
        assert tasks[task].freed_how is Freed.EXPIRED
    return tasks


async def test_sigkill_tasks_run_elsewhere_within_ttl_plus_poll(cluster: Cluster) -> None:
    await cluster.add_tasks("tick", [f"city{i}" for i in range(9)], every=PERIOD)
    await cluster.start_all(WORKERS, timing=TIMING)
    await cluster.wait_balanced(WORKERS)
    victim = cluster.workers["w2"]
    last_id = cluster.commits()[-1].id
    # Read before the kill: w2's liveness lock dies with it, so the others' next poll may
    # take its tasks at once, before the test could look.
    held = await cluster.owned_by("w2")
    assert len(held) == 3, held

    killed_at = victim.send(signal.SIGKILL)
    await victim.wait_exit()

    bound = failover_bound(TIMING, PERIOD)

    async def all_moved() -> bool:
        return len(takeovers(cluster.commits(), held, after_id=last_id, victim="w2")) == len(held)

    await cluster.wait_for(all_moved, "w2's tasks to run elsewhere", within=bound + 5)
    commits = cluster.commits()
    moved = takeovers(commits, held, after_id=last_id, victim="w2")
    delays = {f"{k}/{key}": round(c.started - killed_at, 3) for (k, key), c in moved.items()}
    print(f"SIGKILL -> first run elsewhere (s): {delays}; bound {bound:.2f}")
    assert max(delays.values()) <= bound, f"failover took longer than {bound:.2f}s: {delays}"
    for task, c in moved.items():
        assert c.term > held[task], f"{task} committed elsewhere at term {c.term}, not above {held[task]}"

    # Nothing of the dead worker's is accepted after its death, and history stays fenced.
    await assert_w2s_tasks_moved_after_its_death(cluster, commits, held, killed_at)


async def test_sigkill_tasks_move_long_before_the_ttl_as_the_lock_dies(cluster: Cluster) -> None:
    """Issue 17: a killed worker's liveness lock dies with its process, so survivors end
    its lease at their next poll instead of waiting out a TTL of 30 s."""
    timing = Timing(ttl=30.0, heartbeat=1.0, poll=0.25, trust_margin=0.3)
    await cluster.add_tasks("tick", [f"city{i}" for i in range(9)], every=PERIOD)
    await cluster.start_all(WORKERS, timing=timing)
    await cluster.wait_balanced(WORKERS)
    victim = cluster.workers["w2"]
    last_id = cluster.commits()[-1].id
    lease_end = next(w.expires_at for w in await cluster.store.list_workers() if w.id == "w2")
    held = await cluster.owned_by("w2")
    assert len(held) == 3, held

    killed_at = victim.send(signal.SIGKILL)
    await victim.wait_exit()

    async def all_moved() -> bool:
        return len(takeovers(cluster.commits(), held, after_id=last_id, victim="w2")) == len(held)

    # Waiting out the lease would take about 30 s; the lock makes it a poll or two.
    await cluster.wait_for(all_moved, "w2's tasks to run elsewhere before its lease ends", within=timing.ttl / 3)
    commits = cluster.commits()
    moved = takeovers(commits, held, after_id=last_id, victim="w2")
    delays = {f"{k}/{key}": round(c.started - killed_at, 3) for (k, key), c in moved.items()}
    print(f"SIGKILL (ttl 30 s) -> first run elsewhere (s): {delays}")
    for task, c in moved.items():
        assert c.term > held[task]
    tasks = await assert_w2s_tasks_moved_after_its_death(cluster, commits, held, killed_at)
    for task in held:
        freed_at = tasks[task].freed_at
        assert freed_at is not None
        assert freed_at < lease_end - timing.ttl / 2
    assert (await cluster.store.cluster_view()).live_workers == ["w1", "w3"]


async def test_sigstop_past_ttl_then_sigcont_late_commits_refused(cluster: Cluster) -> None:
    # Each run sleeps 0.3 s before its fenced commit, so the worker can be stopped with a
    # run in flight. The handler is "stubborn": when cancelled (the resumed worker fences
    # itself and cancels its runs) it still tries to commit, so a late commit attempt is
    # certain to happen, and must be refused.
    period, work = 0.5, 0.3
    await cluster.add_tasks(
        "tick", [f"city{i}" for i in range(6)], every=period, params={"work": work, "stubborn": True}
    )
    await cluster.start_all(WORKERS, timing=TIMING)
    await cluster.wait_balanced(WORKERS)
    victim = cluster.workers["w2"]

    def run_in_flight() -> bool:
        """w2's latest event is a run that started under 0.15 s ago: it is in its sleep."""
        evs = victim.events()
        return bool(evs) and evs[-1]["ev"] == "start" and evs[-1]["t"] > time.time() - 0.15

    last_id = cluster.commits()[-1].id
    stopped_at = await cluster.pause_outside_transaction(victim, ready=run_in_flight)
    held = await cluster.owned_by("w2")
    assert len(held) == 2, held
    outcomes = ("committed", "refused")
    done = {(e["key"], e["term"], e["slot"]) for e in victim.events() if e["ev"] in outcomes}
    in_flight = [
        e
        for e in victim.events("start")
        if held.get((e["kind"], e["key"])) == e["term"] and (e["key"], e["term"], e["slot"]) not in done
    ]
    assert in_flight, "w2 was stopped with no run in flight"

    bound = failover_bound(TIMING, period)

    async def all_moved() -> bool:
        return len(takeovers(cluster.commits(), held, after_id=last_id, victim="w2")) == len(held)

    await cluster.wait_for(all_moved, "w2's tasks to run elsewhere while it is stopped", within=bound + 5)
    moved = takeovers(cluster.commits(), held, after_id=last_id, victim="w2")
    delays = {key: round(c.started - stopped_at, 3) for (_, key), c in moved.items()}
    print(f"SIGSTOP -> first run elsewhere (s): {delays}; bound {bound:.2f}")
    assert max(delays.values()) <= bound, f"takeover took longer than {bound:.2f}s: {delays}"

    resumed_at = victim.send(signal.SIGCONT)
    assert resumed_at - stopped_at > TIMING.ttl, "w2 was not stopped for longer than its lease"

    # Every run in flight at the stop tries to commit after the resume, is refused
    # (LeaseLost), and is recorded as lease_lost.
    def settled() -> set[tuple[str, int, float]]:
        return {(e["key"], e["term"], e["slot"]) for e in victim.events() if e["ev"] in outcomes}

    async def in_flight_settled() -> bool:
        return all((e["key"], e["term"], e["slot"]) in settled() for e in in_flight)

    await cluster.wait_for(in_flight_settled, "w2's runs in flight to end after SIGCONT")

    async def recorded() -> bool:
        runs = await cluster.runs(worker="w2", outcome=Outcome.LEASE_LOST.value)
        have = {(r.key, r.term, r.scheduled_at) for r in runs}
        return all((e["key"], e["term"], e["slot"]) in have for e in in_flight)

    await cluster.wait_for(recorded, "w2's lost runs to be recorded as lease_lost")

    # Liveness returns: w2 rejoins, gets a share again, and commits at new terms.
    async def w2_commits_again() -> bool:
        return any(c.worker == "w2" and c.at > resumed_at for c in cluster.commits())

    await cluster.wait_for(w2_commits_again, "w2 to rejoin and commit at a new term")

    commits = cluster.commits()
    ends = {(e["key"], e["term"], e["slot"]): e for e in victim.events() if e["ev"] in outcomes}
    for e in in_flight:
        ident = (e["key"], e["term"], e["slot"])
        assert ends[ident]["ev"] == "refused", f"in-flight run {ident} was not refused: {ends[ident]}"
        assert ends[ident]["t"] > resumed_at
        assert not [c for c in commits if (c.key, c.term, c.slot) == ident], f"stale commit of {ident}"
    stale_terms = set(held.values())
    late = [c for c in commits if c.worker == "w2" and c.at > stopped_at and c.term in stale_terms]
    assert not late, f"w2 committed at a stale term after its lease ended: {late}"
    for c in commits:  # what it commits after rejoining is at terms newer than the takeover's
        if c.worker == "w2" and c.at > stopped_at and c.task in moved:
            assert c.term > moved[c.task].term, f"w2 committed {c} at or below the takeover term"
    # It started no run at a stale term once resumed: it fenced itself until it rejoined.
    restarted = [e for e in victim.events("start") if e["t"] > resumed_at and e["term"] in stale_terms]
    assert not restarted, f"w2 started runs at stale terms after SIGCONT: {restarted}"
    assert_fenced_history(commits)


async def test_sigterm_exits_zero_and_tasks_move_within_a_poll(cluster: Cluster) -> None:
    # A TTL well above poll + period, so a takeover that waited for the lease to run out
    # (instead of the release) could not pass.
    # Runs take 0.15 s before committing, and the signal is sent while one is in flight:
    # the grace period (1 s) must let it finish and commit, not hand its task over under it.
    timing = Timing(ttl=2.0, heartbeat=0.4, poll=0.25, trust_margin=0.3)
    await cluster.add_tasks("tick", [f"city{i}" for i in range(9)], every=PERIOD, params={"work": 0.15})
    await cluster.start_all(WORKERS, timing=timing)
    await cluster.wait_balanced(WORKERS)
    victim = cluster.workers["w2"]
    held = await cluster.owned_by("w2")
    last_id = cluster.commits()[-1].id

    async def run_in_flight() -> bool:
        evs = victim.events()
        return bool(evs) and evs[-1]["ev"] == "start" and evs[-1]["t"] > time.time() - 0.05

    await cluster.wait_for(run_in_flight, "w2 to start a run")
    sent_at = victim.send(signal.SIGTERM)
    code, exited_at = await victim.wait_exit(within=5.0)
    assert code == 0, victim.explain(f"exit code {code} after SIGTERM")
    ended = {(e["key"], e["slot"]): e for e in victim.events() if e["ev"] in ("committed", "refused")}
    in_flight = [
        (e["key"], e["slot"])
        for e in victim.events("start")
        if e["t"] <= sent_at and ((e["key"], e["slot"]) not in ended or ended[e["key"], e["slot"]]["t"] > sent_at)
    ]
    assert in_flight, "no run was in flight at SIGTERM"
    for run in in_flight:
        assert run in ended, f"run {run}, in flight at SIGTERM, never ended"
        assert ended[run]["ev"] == "committed", f"run {run}, in flight at SIGTERM, ended: {ended[run]}"

    bound = max(timing.poll, PERIOD) + TOLERANCE
    assert bound < timing.ttl

    async def all_moved() -> bool:
        return len(takeovers(cluster.commits(), held, after_id=last_id, victim="w2")) == len(held)

    await cluster.wait_for(all_moved, "w2's tasks to run elsewhere", within=10)
    moved = takeovers(cluster.commits(), held, after_id=last_id, victim="w2")
    delays = {key: round(c.started - exited_at, 3) for (_, key), c in moved.items()}
    print(
        f"SIGTERM: exited {exited_at - sent_at:.3f}s after the signal; "
        f"exit -> first run elsewhere (s): {delays}; bound {bound:.2f}"
    )
    assert max(delays.values()) <= bound, f"handoff took longer than {bound:.2f}s: {delays}"

    tasks = await cluster.tasks()
    for task in held:
        assert tasks[task].owner in ("w1", "w3")
        assert tasks[task].freed_how is Freed.RELEASED, f"{task} was not released: {tasks[task]}"
    assert "w2" not in {w.id for w in await cluster.store.list_workers()}, "w2 left its membership row"
    assert_fenced_history(cluster.commits())


async def _w1_holds_every_task(cluster: Cluster, timing: Timing, *, within: float) -> tuple[WorkerProc, list[str]]:
    """Four tasks, and w1 started alone and holding them all (within ``within`` seconds)."""
    names = [f"city{i}" for i in range(4)]
    await cluster.add_tasks("tick", names, every=PERIOD)
    w1 = cluster.start("w1", timing=timing)
    await cluster.wait_joined(w1)

    async def w1_holds_all() -> bool:
        return len(await cluster.owned_by("w1")) == len(names)

    await cluster.wait_for(w1_holds_all, "w1 to claim every task", within=within)
    return w1, names


async def _w1_still_holds_all(
    cluster: Cluster, newcomers: list[str], names: list[str], settle: float
) -> dict[TaskId, int]:
    """Wait until the ``newcomers`` (joined) are ``settle`` seconds past their last join,
    their settle polls done; w1 must still hold every task. Returns w1's tasks and terms."""
    joined_at = max(w.started_at for w in await cluster.store.list_workers() if w.id in newcomers)

    async def settled() -> bool:
        return cluster.db.now() > joined_at + settle

    await cluster.wait_for(settled, f"the settle window of {', '.join(newcomers)} to end", within=settle + 5)
    held = await cluster.owned_by("w1")
    assert len(held) == len(names), f"w1 gave tasks away before its next poll: {held}"
    return held


async def test_released_tasks_move_before_any_poll_could_take_them(cluster: Cluster) -> None:
    """Issue 17 item 3: a stopping worker's release wakes the others (NOTIFY on PostgreSQL,
    the wake file on SQLite, ``KILL QUERY`` of their waits on MySQL/MariaDB), so its tasks
    move long before anyone polls.

    Polls are a minute apart. w1 joins alone and claims every task at the end of its settle
    window; w2 joins after that, polls as a newcomer (at its join and once more at the end
    of its settle window, at most SETTLE_MAX later: nothing to claim, w1 holds them all and
    does not poll again for a minute), and would next poll a minute later. So every task w2
    holds within seconds of w1's SIGTERM was claimed because the release woke it."""
    timing = Timing(ttl=3.0, heartbeat=0.5, poll=60.0, trust_margin=0.3)
    settle = SETTLE_MAX + 1.5  # w2's settle poll, and slack for a busy machine
    w1, names = await _w1_holds_every_task(cluster, timing, within=settle + 5)
    w2 = cluster.start("w2", timing=timing)
    await cluster.wait_joined(w2)
    held = await _w1_still_holds_all(cluster, ["w2"], names, settle)

    w1.send(signal.SIGTERM)
    code, exited_at = await w1.wait_exit(within=10.0)
    assert code == 0, w1.explain(f"exit code {code} after SIGTERM")

    async def w2_holds_all() -> bool:
        return len(await cluster.owned_by("w2")) == len(names)

    # Far inside w2's poll interval: only a wake-up can have made it claim.
    await cluster.wait_for(w2_holds_all, "w2 to claim w1's released tasks", within=timing.poll / 6)
    print(f"handoff without a poll: all owned by w2 {time.time() - exited_at:.3f}s after w1 exited (upper bound)")
    tasks = await cluster.tasks()
    for task, term in held.items():
        assert tasks[task].freed_how is Freed.RELEASED, f"{task} was not released: {tasks[task]}"
        assert tasks[task].term > term
    assert (await cluster.store.cluster_view()).live_workers == ["w2"]


async def test_a_crash_wakes_the_watching_worker_and_its_claim_wakes_the_rest(cluster: Cluster) -> None:
    """Issue 17: workers watch each other's liveness locks (a ring), so a killed worker's
    tasks move long before anyone polls, and long before its lease would end.

    Polls are a minute apart and the lease two minutes. w1 joins alone and claims every
    task; w2 and w3 join together and poll at the end of their settle window (nothing to
    claim: w1 holds every task and does not poll again for a minute), where each sees all
    three and starts watching the next id round the ring: w2 watches w3, w3 watches w1.
    So when w1 is killed, only w3's watch can make w3 claim within seconds; and only the
    claim's wake-up (it ended w1's lease, which freed tasks) can make w2 claim its share."""
    timing = Timing(ttl=120.0, heartbeat=0.5, poll=60.0, trust_margin=0.3)
    # A newcomer polls at its join and SETTLE_MAX after the newest member's registration
    # (database clock), however late it noticed that member: its last settle poll comes
    # SETTLE_MAX after the last join; then a minute. Twice that, and slack for a busy
    # machine, before the kill: a settle poll that came after it would claim for its own
    # reasons, and the test would pass without the watch.
    settle = 2 * SETTLE_MAX + 1.5
    w1, names = await _w1_holds_every_task(cluster, timing, within=settle + 5)
    w2 = cluster.start("w2", timing=timing)
    w3 = cluster.start("w3", timing=timing)
    await cluster.wait_joined(w2)
    await cluster.wait_joined(w3)
    held = await _w1_still_holds_all(cluster, ["w2", "w3"], names, settle)
    last_id = cluster.commits()[-1].id

    killed_at = w1.send(signal.SIGKILL)
    await w1.wait_exit()

    async def shared_out() -> bool:
        tasks = await cluster.tasks()
        owners = Counter(tasks[t].owner for t in held)
        return owners == Counter({"w2": 2, "w3": 2})

    # Far inside every survivor's poll interval and w1's lease: only the watch, and the
    # wake-up of the claim it caused, can have moved them.
    await cluster.wait_for(shared_out, "w1's tasks to be shared by w2 and w3", within=timing.poll / 6)
    print(f"SIGKILL -> all owned elsewhere without a poll: {time.time() - killed_at:.3f}s (upper bound)")

    async def all_ran() -> bool:
        return len(takeovers(cluster.commits(), held, after_id=last_id, victim="w1")) == len(held)

    await cluster.wait_for(all_ran, "w1's tasks to run elsewhere", within=timing.poll / 6)
    tasks = await cluster.tasks()
    for task, term in held.items():
        assert tasks[task].freed_how is Freed.EXPIRED, f"{task} was not taken from a dead owner: {tasks[task]}"
        assert tasks[task].term > term
    late = [c for c in cluster.commits() if c.worker == "w1" and c.at > killed_at]
    assert not late, f"commits from the dead worker after its death: {late}"
    assert_fenced_history(cluster.commits())
    assert (await cluster.store.cluster_view()).live_workers == ["w2", "w3"]
