"""A newcomer's settle window runs from the newest member's registration on the database's
clock (``ClusterView.newest_start``), not from when this worker noticed that member: a
worker that sees the last member a poll late claims with the others, a window after that
registration, instead of a poll after them (issue 15: 40 workers started at once)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from tenure.models import ClusterView
from tenure.worker.owned import Shared
from tenure.worker.rebalancer import SETTLE_MAX, Rebalancer

POLL = 1.0
WINDOW = min(POLL, SETTLE_MAX)


class Clock:
    """The database's clock as the worker estimates it (``LeaseKeeper.db_time``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def db_time(self) -> float:
        return self.now


def rebalancer(clock: Clock) -> Rebalancer:
    """A rebalancer with only what ``_settling`` reads: the poll and the database's clock."""
    unused = cast(Any, None)
    settings = cast(Any, SimpleNamespace(poll=POLL))
    shared = Shared(store=unused, settings=settings, worker_id="w2", life=unused, log=unused)
    return Rebalancer(shared, lease=cast(Any, clock), timers=unused, recorder=unused, executor=unused)


def view(members: list[str], newest_start: float | None) -> ClusterView:
    return ClusterView(changes=0, live_workers=members, enabled_tasks=0, newest_start=newest_start)


def test_a_member_noticed_late_shortens_the_wait_to_what_is_left_of_its_window() -> None:
    clock = Clock(100.0 + 0.9 * WINDOW)  # the last member registered at 100.0, seen only now
    r = rebalancer(clock)
    assert r._settling(view(["w1", "w2", "w3"], 100.0), now=5.0)
    assert r._poll_in == pytest.approx(0.1 * WINDOW)  # not a whole window from now
    clock.now = 100.0 + WINDOW
    assert not r._settling(view(["w1", "w2", "w3"], 100.0), now=5.0 + 0.1 * WINDOW)


def test_a_member_registering_meanwhile_starts_the_window_again_from_its_registration() -> None:
    clock = Clock(100.2)
    r = rebalancer(clock)
    assert r._settling(view(["w1", "w2"], 100.0), now=5.0)
    assert r._poll_in == pytest.approx(WINDOW - 0.2)
    clock.now = 100.0 + WINDOW  # w3 registered just before this poll
    assert r._settling(view(["w1", "w2", "w3"], 100.0 + WINDOW - 0.05), now=6.0)
    assert r._poll_in == pytest.approx(WINDOW - 0.05)
    clock.now = 100.0 + 2 * WINDOW
    assert not r._settling(view(["w1", "w2", "w3"], 100.0 + WINDOW - 0.05), now=7.0)


def test_once_settled_a_worker_no_longer_waits_for_newcomers() -> None:
    clock = Clock(200.0)
    r = rebalancer(clock)
    assert not r._settling(view(["w1", "w2"], 100.0), now=5.0)  # everyone registered long ago
    assert not r._settling(view(["w1", "w2", "w3"], 199.99), now=6.0)


def test_a_registration_ahead_of_the_estimated_clock_waits_one_window_at_most() -> None:
    r = rebalancer(Clock(100.0))
    assert r._settling(view(["w1", "w2"], 105.0), now=5.0)
    assert r._poll_in == pytest.approx(WINDOW)


def test_without_registration_times_the_window_runs_from_when_the_membership_grew() -> None:
    clock = Clock(100.0)
    r = rebalancer(clock)
    assert r._settling(view(["w1", "w2"], None), now=5.0)
    assert r._poll_in == pytest.approx(WINDOW)
    assert r._settling(view(["w1", "w2", "w3"], None), now=5.5)  # grew: from now on
    assert r._poll_in == pytest.approx(WINDOW)
    assert not r._settling(view(["w1", "w2", "w3"], None), now=5.5 + WINDOW)
