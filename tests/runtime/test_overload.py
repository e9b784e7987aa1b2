"""Overload (issue 12 item 1): a worker runs at most ``concurrency`` runs at once; due runs
past the cap wait, coalesce under the misfire policy and start oldest due first, so that
every key keeps running; a run's timeout counts from its start; the worker says it is
over capacity. Real worker processes; counts and order, never timings."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

from tenure.models import Outcome, Run

from .harness import Cluster, Timing, WorkerProc

#: Seconds each run's handler works (``tick``'s ``work``): well inside its 1 s timeout,
#: but more than the worker can give every key each period under the caps below.
WORK = 0.6


def handler_spans(w: WorkerProc) -> list[tuple[str, str]]:
    """The worker's handler starts and ends, in the order its event file has them (one
    process, one lock: the order they happened in)."""
    out = []
    for e in w.events():
        if e["ev"] == "start":
            out.append(("start", e["key"]))
        elif e["ev"] in ("committed", "refused"):
            out.append(("end", e["key"]))
    return out


def most_at_once(spans: list[tuple[str, str]]) -> int:
    running, peak = 0, 0
    for what, _ in spans:
        running += 1 if what == "start" else -1
        peak = max(peak, running)
    return peak


async def overloaded(cluster: Cluster, concurrency: int, *, within: float) -> tuple[WorkerProc, list[str]]:
    """Six keys of ``WORK`` seconds every second on one worker with ``concurrency``, more
    than it can run: returns the worker and the keys once every key committed three times."""
    keys = [f"k{i}" for i in range(6)]
    await cluster.add_tasks("tick", keys, every=1.0, params={"work": WORK})
    (w,) = await cluster.start_all(["w1"], timing=Timing(concurrency=concurrency))

    async def every_key_ran_thrice() -> bool:
        commits = cluster.commits()
        return all(sum(1 for c in commits if c.key == k) >= 3 for k in keys)

    await cluster.wait_for(every_key_ran_thrice, "every key to commit three times", within=within)
    return w, keys


async def test_the_cap_holds_every_key_runs_and_waiting_runs_coalesce(cluster: Cluster) -> None:
    w, _ = await overloaded(cluster, 2, within=40)

    async def said_so() -> bool:
        return "over capacity:" in w.log()

    await cluster.wait_for(said_so, "the worker to log that it is over capacity", within=20)
    assert most_at_once(handler_spans(w)) == 2, "more runs than the cap at once (or never two)"
    runs = await cluster.runs(kind="tick")
    outcomes: dict[Any, int] = {}
    for r in runs:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    # A timeout counted from the slot would cancel the runs that waited.
    assert Outcome.TIMEOUT not in outcomes, outcomes
    assert any(r.outcome is Outcome.SKIPPED and "capacity" in (r.error or "") for r in runs), outcomes
    assert w.log().count("over capacity:") <= 3, "the overload is logged per run, not per interval"
    # Lease upkeep does not starve behind the run queue (issue 12 item 2).
    assert "self-fencing" not in w.log(), w.explain("fenced itself while over capacity")


async def test_waiting_runs_start_oldest_due_first(cluster: Cluster) -> None:
    keys = ["a", "b", "c"]
    await cluster.add_tasks("tick", keys, every=1.0, params={"work": WORK / 1.2})
    (w,) = await cluster.start_all(["w1"], timing=Timing(concurrency=1))

    def starts() -> list[str]:
        return [k for what, k in handler_spans(w) if what == "start"]

    async def enough() -> bool:
        return len(starts()) >= 18

    await cluster.wait_for(enough, "eighteen runs", within=40)
    seq = starts()[6:18]  # past the start-up, while the worker is saturated
    assert most_at_once(handler_spans(w)) == 1
    # Oldest due first: every key waits its turn; none runs twice while another waits.
    windows = [seq[i : i + 3] for i in range(len(seq) - 2)]
    assert all(len(set(win)) == 3 for win in windows), seq


def tenure_status(cluster: Cluster) -> tuple[dict[str, Any], str]:
    """``tenure status --json`` and ``tenure status``, run as an operator would."""

    def run(*flags: str) -> str:
        argv = [sys.executable, "-m", "tenure.cli", "--store", cluster.url, "status", *flags]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return json.loads(run("--json")), run()


async def test_status_says_a_worker_is_over_capacity_while_it_is(cluster: Cluster) -> None:
    keys = [f"k{i}" for i in range(6)]
    await cluster.add_tasks("tick", keys, every=1.0, params={"work": WORK})
    await cluster.start_all(["w1"], timing=Timing(concurrency=2))

    async def load_published(over: bool) -> bool:
        (info,) = [i for i in await cluster.store.list_workers() if i.id == "w1"]
        return info.load is not None and info.load.over_capacity is over

    await cluster.wait_for(lambda: load_published(True), "w1 to publish that it is over capacity", within=30)
    status, human = tenure_status(cluster)
    (shown,) = status["workers"]
    assert shown["over_capacity"] is True, shown
    assert shown["runs_waiting"] >= 1
    assert shown["concurrency"] == 2
    assert shown["oldest_waiting"] >= 0
    assert "over capacity: w1 (" in human, human

    # Four keys fewer: two runs of 0.6 s a second fit under a cap of two.
    for key in keys[2:]:
        await cluster.store.set_enabled("tick", key, False)

    # The runs of the disabled keys end first, so a renewal or two may still report a
    # place waited for: wait until what `tenure status` shows says it keeps up.
    async def status_keeps_up() -> bool:
        status, human = tenure_status(cluster)
        (shown,) = status["workers"]
        return (shown["over_capacity"], shown["runs_waiting"], shown["oldest_waiting"]) == (
            False,
            0,
            0.0,
        ) and "over capacity" not in human

    await cluster.wait_for(lambda: load_published(False), "w1 to publish that it keeps up", within=30)
    await cluster.wait_for(status_keeps_up, "tenure status to say w1 keeps up", within=30)


#: How a record of several slots skipped in a row says how many (see the run recorder).
STREAK = re.compile(r"\((\d+) slots in a row, the last (\S+)\)$")


def slots_accounted(runs: list[Run]) -> tuple[int, float, float]:
    """How many slots ``runs`` of one task account for (a run: one; a skipped record: the
    count it gives), and the first and last of them."""
    count, first, last = 0, float("inf"), float("-inf")
    for r in runs:
        m = STREAK.search(r.error or "") if r.outcome is Outcome.SKIPPED else None
        n, end = (int(m[1]), datetime.fromisoformat(m[2]).timestamp()) if m else (1, r.scheduled_at)
        count += n
        first, last = min(first, r.scheduled_at), max(last, end)
    return count, first, last


async def test_slots_skipped_in_a_row_are_one_record_that_counts_them(cluster: Cluster) -> None:
    # Six keys of 0.6 s under a cap of one: each key waits about 3.6 s for its turn, so
    # most of its slots are skipped, several in a row.
    w, keys = await overloaded(cluster, 1, within=60)
    w.send(signal.SIGTERM)
    code, _ = await w.wait_exit(within=20)
    assert code == 0, w.explain(f"exit {code}")
    runs = await cluster.runs(kind="tick")  # all flushed on the way out
    skipped = [r for r in runs if r.outcome is Outcome.SKIPPED]
    assert any(STREAK.search(r.error or "") for r in skipped), skipped
    for key in keys:
        mine = sorted((r for r in runs if r.key == key), key=lambda r: r.scheduled_at)
        # A streak ends when the task runs again: never two skipped records in a row.
        kinds = [r.outcome is Outcome.SKIPPED for r in mine]
        assert not any(a and b for a, b in itertools.pairwise(kinds)), mine
        # Every slot from the first to the last is accounted for, once: run or skipped.
        count, first, last = slots_accounted(mine)
        assert count == round(last - first) + 1, (key, count, first, last, mine)


async def test_slots_passed_while_a_run_goes_on_are_counted_when_it_ends(cluster: Cluster) -> None:
    # A synchronous handler sleeping 2.6 s in its thread, every 1 s: the run lasts past
    # its 0.5-s timeout until the thread ends (the next run waits for it), so two or three
    # slots pass while it goes on. The task is not armed meanwhile; when the run ends, the
    # slots it passed are one skipped record that counts them, and the task goes on.
    await cluster.add_tasks("nap", ["n1"], every=1.0, params={"sleep": 2.6})
    (w,) = await cluster.start_all(["w1"], scenario="faults")

    async def ran_thrice() -> bool:
        return sum(1 for e in w.events() if e["ev"] == "start" and e["kind"] == "nap") >= 3

    await cluster.wait_for(ran_thrice, "the sleeping task to start three runs", within=30)
    w.send(signal.SIGTERM)
    code, _ = await w.wait_exit(within=20)
    assert code == 0, w.explain(f"exit {code}")
    mine = sorted(await cluster.runs(kind="nap"), key=lambda r: r.scheduled_at)
    skipped = [r for r in mine if r.outcome is Outcome.SKIPPED]
    assert skipped, mine
    assert all((r.error or "").startswith("previous run still in progress") for r in skipped), skipped
    assert any(STREAK.search(r.error or "") for r in skipped), skipped
    kinds = [r.outcome is Outcome.SKIPPED for r in mine]
    assert not any(a and b for a, b in itertools.pairwise(kinds)), mine
    count, first, last = slots_accounted(mine)
    assert count == round(last - first) + 1, (count, first, last, mine)
