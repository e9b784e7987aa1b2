"""A worker whose clock is off by ten minutes behaves exactly like the others.

Skewed workers run under libfaketime (Debian's ``faketime`` package), preloaded with
``LD_PRELOAD`` so the worker keeps its process id (the ``faketime`` command forks):

- ``wall-10m`` / ``wall+10m``: the wall clock (``time.time()``) is off by ten minutes,
  the monotonic clock is left alone (``DONT_FAKE_MONOTONIC=1``);
- ``all-10m`` / ``all+10m``: both are faked: libfaketime's monotonic clock then reads
  something near the (skewed) epoch, billions of seconds away from the host's.

tenure reads no wall clock: lease decisions are the database's (``clock_timestamp()``,
``NOW(6)``), and a worker places its slots on the database's clock, estimated as its own
monotonic clock plus an offset measured at every renewal, so an arbitrary monotonic
origin is as good as any. The tests check what that promises, against plain workers on
the same store: a fair share of the tasks, runs on the same slot grid at the same time
(lag from slot to commit, on the database's clock), commits accepted, and a skewed
worker's lease that ends when the database says (killed, its tasks move within the
failover bound, not ten minutes late or at once).

SQLite has no server: each process computes the database's clock itself, from its own
wall clock, so a skewed process really does see a skewed database. The embedded store's
promise is "one host, one clock" (README); its test shows that limit and that fencing,
which compares owners and terms rather than times, still accepts nothing stale.
"""

from __future__ import annotations

import glob
import os
import statistics
import time

import pytest

from support.stores import STORE_KINDS
from tenure.schedule import Every, latest_slot

from .conftest import SERVER_KINDS
from .harness import FaultCluster, Timing, assert_fenced_history, kill_signal

pytestmark = pytest.mark.slow

PERIOD = 0.5
TOLERANCE = 0.5
TIMING = Timing(ttl=2.0, heartbeat=0.4, poll=0.3, trust_margin=0.5)
BOUND = TIMING.ttl + max(TIMING.poll, PERIOD) + TOLERANCE
SKEW = 600.0
#: Largest lag from a slot to its commit (database clock) that counts as "on time".
ON_TIME = 0.5
#: How far a skewed worker's median lag may be from the plain workers'.
SAME_LAG = 0.05

#: name -> (FAKETIME, fake the monotonic clock too?)
SKEWED = {
    "wall-10m": ("-10m", False),
    "wall+10m": ("+10m", False),
    "all-10m": ("-10m", True),
    "all+10m": ("+10m", True),
}


def libfaketime() -> str:
    """The multi-threaded libfaketime (a worker has threads), or fail/skip if missing."""
    found = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
        + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1")
        + glob.glob("/usr/local/lib/faketime/libfaketimeMT.so.1")
    )
    if found:
        return found[0]
    message = "libfaketime is not installed (apt-get install -y faketime)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must test clock skew")
    pytest.skip(f"NOT TESTED: clock skew: {message}")


def faketime_env(lib: str, offset: str, monotonic: bool) -> dict[str, str]:
    env = {"LD_PRELOAD": lib, "FAKETIME": offset}
    if not monotonic:
        env["DONT_FAKE_MONOTONIC"] = "1"
    return env


def assert_clock_skewed(c: FaultCluster, name: str, offset: str, monotonic: bool) -> None:
    """The worker's own clocks are the ones asked for (libfaketime really took effect)."""
    (clock,) = c.workers[name].events("clock")
    skew = SKEW if offset.startswith("+") else -SKEW
    wall_off = clock["wall"] - time.time()
    assert abs(wall_off - skew) < 60, f"{name}: wall clock off by {wall_off:.0f}s, expected {skew:.0f}s"
    mono_off = clock["monotonic"] - time.monotonic()
    if monotonic:
        assert abs(mono_off) > 3 * SKEW, f"{name}: monotonic clock not faked (off by {mono_off:.0f}s)"
    else:
        assert abs(mono_off) < 60, f"{name}: monotonic clock faked (off by {mono_off:.0f}s)"


@pytest.mark.parametrize("fault_cluster", SERVER_KINDS, indirect=True)
async def test_skewed_workers_share_fairly_run_on_the_grid_and_commit(fault_cluster: FaultCluster) -> None:
    lib = libfaketime()
    c = fault_cluster
    names = ["plain1", "plain2", *SKEWED]
    tasks = await c.add_tasks("tick", [f"city{i}" for i in range(2 * len(names))], every=PERIOD, params={})
    for name in names:
        offset, mono = SKEWED.get(name, ("", False))
        c.start(name, timing=TIMING, env=faketime_env(lib, offset, mono) if offset else None)

    counts = await c.wait_balanced(names)
    assert set(counts.values()) == {2}, f"not a fair share: {counts}"
    for name, (offset, mono) in SKEWED.items():
        assert_clock_skewed(c, name, offset, mono)

    # Watch a few periods of steady state: every task commits three more times.
    start_id = c.commits()[-1].id

    async def three_more() -> bool:
        done = [cm.task for cm in c.commits() if cm.id > start_id]
        return all(done.count(t) >= 3 for t in tasks)

    await c.wait_for(three_more, "every task to commit three more times", within=10)
    owners = {k: t.owner for k, t in (await c.tasks()).items()}
    assert {n: list(owners.values()).count(n) for n in names} == counts, "tasks moved in steady state"
    steady = [cm for cm in c.commits() if cm.id > start_id]

    # Same grid, same time: each slot is one of the task's grid slots, and its commit
    # follows it on the database's clock by the same short lag for every worker.
    lags: dict[str, list[float]] = {n: [] for n in names}
    for cm in steady:
        assert latest_slot(Every(PERIOD), cm.kind, cm.key, cm.slot) == cm.slot, f"slot off the grid: {cm}"
        lags[cm.worker].append(cm.at - cm.slot)
    medians = {n: round(statistics.median(v), 4) for n, v in lags.items()}
    worst = {n: round(max(v), 4) for n, v in lags.items()}
    print(f"{c.kind}: tasks held {counts}; lag slot->commit median {medians}, max {worst} (s)")
    for n, v in lags.items():
        assert min(v) > -0.02, f"{n} committed a run before its slot (database clock): {min(v):.3f}s"
        assert max(v) < ON_TIME, f"{n} ran late: lag up to {max(v):.3f}s"
    plain = statistics.median(lags["plain1"] + lags["plain2"])
    for n in SKEWED:
        assert abs(medians[n] - plain) < SAME_LAG, f"{n}: median lag {medians[n]}s vs plain workers' {plain:.4f}s"

    # Its commits are accepted: nothing refused at a term it holds.
    held = {(k, key, t.term) for (k, key), t in (await c.tasks()).items()}
    for n in SKEWED:
        refused = [e for e in c.workers[n].events("refused") if (e["kind"], e["key"], e["term"]) in held]
        assert not refused, f"{n}: commits refused at terms it holds: {refused}"

    # Its lease ends on the database's clock: killed, its tasks run elsewhere within the
    # failover bound (a lease written from a clock ten minutes fast would hold them ten
    # minutes; one ten minutes slow would never have held them).
    victim = "all+10m"
    held_by_victim = [k for k, o in owners.items() if o == victim]
    killed_at = c.db.now()
    kill_signal(c.workers[victim])

    async def moved() -> bool:
        return set(held_by_victim) <= {cm.task for cm in c.commits() if cm.at > killed_at and cm.worker != victim}

    await c.wait_for(moved, f"{victim}'s tasks to run elsewhere", within=BOUND + 10)
    firsts: dict[tuple[str, str], float] = {}
    for cm in c.commits():
        if cm.task in held_by_victim and cm.at > killed_at and cm.worker != victim:
            firsts.setdefault(cm.task, cm.at - killed_at)
    print(f"{c.kind}: {victim} killed; its tasks ran elsewhere after (s) {firsts}; bound {BOUND:.2f}")
    assert max(firsts.values()) <= BOUND, f"failover of a skewed worker took {firsts}"
    assert all(cm.at <= killed_at for cm in c.commits() if cm.worker == victim)

    await c.wait_balanced([n for n in names if n != victim])
    assert_fenced_history(c.commits(), PERIOD)


@pytest.mark.parametrize("fault_cluster", ["sqlite"] if "sqlite" in STORE_KINDS else [], indirect=True)
async def test_sqlite_one_host_one_clock_skew_is_seen_but_fencing_holds(fault_cluster: FaultCluster) -> None:
    """The documented limit of the embedded store, shown: a SQLite worker under a skewed
    clock writes its lease on that clock (SQLite's ``julianday('now')`` is the process's
    wall clock), so fair share and lease expiry no longer mean the same to every worker,
    which is why the embedded store promises only "one host, one clock". Fencing still
    accepts nothing stale: a fenced commit checks owner and term inside the transaction,
    and those are not times."""
    lib = libfaketime()
    c = fault_cluster
    names = ["plain", "wall+10m", "wall-10m"]
    tasks = await c.add_tasks("tick", [f"city{i}" for i in range(6)], every=PERIOD, params={})
    for name in names:
        offset, mono = SKEWED.get(name, ("", False))
        c.start(name, timing=TIMING, env=faketime_env(lib, offset, mono) if offset else None)

    async def joined() -> bool:
        return {w.id for w in await c.store.list_workers()} == set(names)

    await c.wait_for(joined, "every worker to join", within=15)
    for name in SKEWED.keys() & set(names):
        assert_clock_skewed(c, name, *SKEWED[name])

    # The limit: each lease is written on its own process's clock.
    host_now = time.time()
    leases = {w.id: round(w.heartbeat_at - host_now) for w in await c.store.list_workers()}
    print(f"sqlite: lease renewal times relative to the host's clock (s): {leases}")
    assert abs(leases["plain"]) < 5
    assert abs(leases["wall+10m"] - SKEW) < 60
    assert abs(leases["wall-10m"] + SKEW) < 60

    # Tasks keep running (by whoever believes it may), and what is accepted is fenced.
    start_id = max([cm.id for cm in c.commits()], default=0)

    async def each_ran_twice() -> bool:
        done = [cm.task for cm in c.commits() if cm.id > start_id]
        return all(done.count(t) >= 2 for t in tasks)

    await c.wait_for(each_ran_twice, "every task to commit twice", within=15)
    owners = {f"{k}/{key}": t.owner for (k, key), t in (await c.tasks()).items()}
    print(f"sqlite: owners with skewed clocks (fair share not promised): {owners}")
    assert_fenced_history(c.commits(), PERIOD)
