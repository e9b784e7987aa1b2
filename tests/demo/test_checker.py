"""The demo's checker on hand-made histories: a clean one passes, and each invariant
fails on a history that breaks it (and only that one)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tenure.demo.checker import Assignment, Dispatch, History, RunStart, Timing, Verdict, check, service_windows

T0 = 1_000.0
TIMING = Timing(period=1.0, lease_ttl=3.0, poll=0.5)  # bound 6.5 s


class Builder:
    """A history of dispatch commits, runs and assignments, in commit order."""

    def __init__(self) -> None:
        self.dispatches: list[Dispatch] = []
        self.assignments: list[Assignment] = []
        self.runs: list[RunStart] = []

    def commit(self, city: str, term: int, worker: str, at: float, *assign: tuple[int, int, float | None]) -> str:
        """A dispatch commit at T0 + ``at``, with (order, courier, seconds to deliver or None) assignments."""
        commit_id = f"c{len(self.dispatches) + 1}"
        self.dispatches.append(
            Dispatch(id=len(self.dispatches) + 1, commit_id=commit_id, city=city, term=term, worker=worker, at=T0 + at)
        )
        self.runs.append(RunStart(city=city, term=term, worker=worker, started_at=T0 + at - 0.3))
        for order, courier, takes in assign:
            self.assignments.append(
                Assignment(
                    id=len(self.assignments) + 1,
                    order_id=order,
                    courier_id=courier,
                    city=city,
                    term=term,
                    worker=worker,
                    commit_id=commit_id,
                    assigned_at=T0 + at,
                    done_at=None if takes is None else T0 + at + takes,
                )
            )
        return commit_id

    def every_second(self, city: str, term: int, worker: str, start: float, end: float) -> None:
        at = start
        while at <= end:
            self.commit(city, term, worker, at)
            at += 1.0

    def history(self, *, end: float = 20.0, **changes: Any) -> History:
        h = History(
            timing=TIMING,
            start=T0,
            end=T0 + end,
            dispatches=self.dispatches,
            assignments=self.assignments,
            runs=self.runs,
            city_events=[("paris", "opened", T0 - 5), ("lisbon", "opened", T0 - 5)],
            orders=10,
            delivered=3,
            couriers=6,
        )
        return dataclasses.replace(h, **changes)


def clean() -> Builder:
    """Two cities; paris fails over from w1 (term 3) to w2 (term 7) with a 5 s gap."""
    b = Builder()
    b.every_second("lisbon", 4, "w2", 0.5, 19.5)
    b.commit("paris", 3, "w1", 0.2, (1, 10, 2.0), (2, 11, None))
    b.commit("paris", 3, "w1", 1.2)
    b.commit("paris", 3, "w1", 2.2, (3, 12, 1.0))
    b.commit("paris", 3, "w1", 3.2, (4, 10, 3.0))  # courier 10 again, after order 1 (done at 2.2)
    b.every_second("paris", 7, "w2", 8.2, 19.2)  # after w1 died at ~3.5
    return b


def failed(v: Verdict) -> list[str]:
    return [c.name for c in v.checks if not c.ok]


def test_clean_history_passes() -> None:
    v = check(clean().history())
    assert v.ok, v.lines()
    assert v.lines()[0] == "verdict: PASS (4 of 4 checks hold)"
    text = "\n".join(v.lines())
    assert "4 assigned" in text
    assert "1 changes of owner" in text
    assert "longest wait between dispatches 5.00s (paris, 3.2s into the run), bound 6.50s" in text


def test_an_order_assigned_twice_fails_only_that_check() -> None:
    b = clean()
    b.commit("paris", 7, "w2", 19.7, (2, 13, 1.0))  # order 2 again, to another (free) courier
    v = check(b.history())
    assert failed(v) == ["no order assigned twice"]
    assert "order 2 assigned 2 times" in "\n".join(v.lines())


def test_a_courier_holding_two_orders_fails_only_that_check() -> None:
    b = clean()
    b.commit("lisbon", 4, "w2", 19.8, (9, 11, 1.0))  # courier 11 still carries order 2 (open-ended)
    v = check(b.history(end=21.0))
    assert failed(v) == ["no courier held two orders at once"]
    assert "courier 11 got order 9" in "\n".join(v.lines())
    # Overlapping closed intervals are caught too.
    b = clean()
    b.commit("paris", 7, "w2", 9.7, (8, 12, 1.0))  # courier 12: order 3 ran from 2.2 to 3.2: free again
    b.commit("paris", 7, "w2", 10.1, (9, 12, 1.0))  # but order 8 runs until 10.7
    assert failed(check(b.history())) == ["no courier held two orders at once"]


def test_a_commit_from_an_older_term_after_a_newer_one_fails() -> None:
    b = clean()
    b.commit("paris", 3, "w1", 19.6)  # w1 woke up and wrote with its old term
    v = check(b.history())
    assert failed(v) == ["every stale commit was refused"]
    assert "paris: commit by w1 at term 3 accepted at 19.60s, after term 7 (by w2) had committed" in "\n".join(
        v.lines(max_problems=10)
    )


def test_a_stale_commit_before_the_new_owner_commits_is_caught_by_its_runs() -> None:
    """Terms still rise in commit order, but w2 had started running term 7 when w1 wrote."""
    b = Builder()
    b.every_second("lisbon", 4, "w2", 0.5, 19.5)
    b.every_second("paris", 3, "w1", 0.2, 3.2)
    b.runs.append(RunStart(city="paris", term=7, worker="w2", started_at=T0 + 6.9))
    b.commit("paris", 3, "w1", 7.5)  # after term 7 started running, before its first commit
    b.every_second("paris", 7, "w2", 8.2, 19.2)
    v = check(b.history())
    assert failed(v) == ["every stale commit was refused"]
    assert "paris: commit by w1 at term 3 accepted 0.60s after term 7 had started running" in "\n".join(v.lines())
    # Within the slack for the workers' estimates of the database clock: not a violation.
    i = b.runs.index(RunStart(city="paris", term=7, worker="w2", started_at=T0 + 6.9))
    b.runs[i] = dataclasses.replace(b.runs[i], started_at=T0 + 7.3)
    assert check(b.history()).ok


def test_one_term_used_by_two_workers_fails() -> None:
    b = clean()
    b.runs.append(RunStart(city="lisbon", term=4, worker="w3", started_at=T0 + 12.0))
    v = check(b.history())
    assert failed(v) == ["every stale commit was refused"]
    assert "lisbon: term 4 used by 2 workers: w2, w3" in "\n".join(v.lines())


def test_an_assignment_without_its_dispatch_commit_fails() -> None:
    b = clean()
    a = b.assignments[0]
    b.assignments[0] = dataclasses.replace(a, commit_id="nowhere")
    assert failed(check(b.history())) == ["every stale commit was refused"]


def test_a_city_left_undispatched_beyond_the_bound_fails() -> None:
    b = Builder()
    b.every_second("lisbon", 4, "w2", 0.5, 19.5)
    b.every_second("paris", 3, "w1", 0.2, 3.2)
    b.every_second("paris", 7, "w2", 10.2, 19.2)  # 7 s without a dispatch
    v = check(b.history())
    assert failed(v) == ["every enabled city kept being dispatched within the failover bound"]
    assert "paris: no dispatch for 7.00s, from 3.2s to 10.2s into the run (bound 6.50s)" in "\n".join(v.lines())


def test_the_bound_counts_only_while_a_city_is_enabled() -> None:
    b = Builder()
    b.every_second("lisbon", 4, "w2", 0.5, 19.5)
    b.every_second("paris", 3, "w1", 0.2, 3.2)
    b.every_second("paris", 9, "w2", 14.2, 19.2)
    events = [
        ("lisbon", "opened", T0 - 5),
        ("paris", "opened", T0 - 5),
        ("paris", "disabled", T0 + 3.5),
        ("paris", "enabled", T0 + 13.0),
    ]
    assert check(b.history(city_events=events)).ok
    # Closed for good: the time after it was closed does not count either...
    assert check(b.history(city_events=events[:3])).ok
    # ...but a city never dispatched while enabled does.
    events = [*events, ("madrid", "opened", T0 + 10.0)]
    v = check(b.history(city_events=events))
    assert failed(v) == ["every enabled city kept being dispatched within the failover bound"]
    assert "madrid: no dispatch for 10.00s" in "\n".join(v.lines())


def test_service_windows() -> None:
    h = Builder().history(
        city_events=[
            ("a", "opened", T0 - 1),
            ("a", "disabled", T0 + 2),
            ("a", "enabled", T0 + 5),
            ("b", "opened", T0 + 3),
            ("b", "disabled", T0 + 4),
            ("c", "opened", T0 + 25),  # after the end
        ],
        end=10.0,
    )
    assert service_windows(h) == {"a": [(T0, T0 + 2), (T0 + 5, T0 + 10)], "b": [(T0 + 3, T0 + 4)], "c": []}


@pytest.mark.parametrize("refusals", [0, 1, 3])
def test_refusals_are_counted(refusals: int) -> None:
    reasons = ["worker 'w1' cannot vouch for its lease on dispatch/paris", "worker 'w1' no longer owns dispatch/paris"]
    h = clean().history(refusals=[("paris", 3, "w1", reasons[i % 2]) for i in range(refusals)])
    text = "\n".join(check(h).lines())
    assert f"terms never went back; {refusals} stale commit{'' if refusals == 1 else 's'} refused" in text
