"""Each invariant of the fault checker fails on a hand-made history that violates it,
and holds on a clean one."""

from __future__ import annotations

from support.history import (
    Attempt,
    Decision,
    check,
    decisions_complete,
    liveness_gaps,
    no_commit_after_lease_lost,
    one_worker_per_term,
    stale_refusals,
    terms_monotonic,
)


def a(seq: int, worker: str, term: int, at: float, *, accepted: bool = True, key: str = "k") -> Attempt:
    return Attempt(seq=seq, worker=worker, kind="job", key=key, term=term, slot=at, accepted=accepted, at=at)


def decided(attempts: list[Attempt]) -> list[Decision]:
    return [Decision(worker=x.worker, kind=x.kind, key=x.key, term=x.term, slot=x.slot) for x in attempts if x.accepted]


CLEAN = [a(1, "w1", 1, 10.0), a(2, "w1", 1, 11.0), a(3, "w2", 2, 13.5), a(-1, "w1", 1, 14.0, accepted=False)]


def test_clean_history_passes() -> None:
    r = check(CLEAN, decided(CLEAN), windows={("job", "k"): [(10.0, 15.0)]}, limit=3.0)
    assert r.ok, r.violations
    assert (r.attempts, r.accepted, r.refused, r.stale_refused) == (4, 3, 1, 1)
    assert r.worst_gap == 2.5


def test_term_going_back_fails() -> None:
    h = [a(1, "w1", 2, 10.0), a(2, "w2", 1, 11.0)]
    assert terms_monotonic(h)
    assert not check(h, decided(h)).ok


def test_two_workers_at_one_term_fails() -> None:
    h = [a(1, "w1", 3, 10.0), a(2, "w2", 3, 11.0)]
    assert one_worker_per_term(h)
    assert terms_monotonic(h) == []  # caught by its own invariant only
    assert not check(h, decided(h)).ok


def test_commit_after_lease_lost_fails() -> None:
    # Commit order (ids) looks fine, but by the database clock w1 committed at term 1
    # after w2 had committed at term 2: w1's lease was lost by then.
    h = [a(1, "w1", 1, 12.0), a(2, "w2", 2, 11.0)]
    assert terms_monotonic(h) == []
    assert one_worker_per_term(h) == []
    assert no_commit_after_lease_lost(h)
    assert not check(h, decided(h)).ok


def test_liveness_gap_fails() -> None:
    h = [a(1, "w1", 1, 10.0), a(2, "w2", 2, 20.0)]
    bad, worst = liveness_gaps(h, {("job", "k"): [(9.0, 21.0)]}, 5.0)
    assert bad
    assert worst == 10.0
    # A task with no commit at all in its window fails too.
    bad, worst = liveness_gaps([], {("job", "other"): [(0.0, 6.0)]}, 5.0)
    assert bad
    assert worst == 6.0
    # Gaps outside the windows (disabled, or during a fault) do not count.
    assert liveness_gaps(h, {("job", "k"): [(9.0, 12.0), (19.0, 21.0)]}, 5.0)[0] == []


def test_missing_decision_fails() -> None:
    h = [a(1, "w1", 1, 10.0), a(2, "w1", 1, 11.0)]
    assert decisions_complete(h, decided(h)[:1])
    assert not check(h, decided(h)[:1]).ok


def test_stale_refusals_counts_only_superseded_terms() -> None:
    h = [a(1, "w1", 1, 10.0), a(-1, "w1", 1, 12.0, accepted=False), a(-1, "w2", 1, 9.0, accepted=False, key="x")]
    assert [x.worker for x in stale_refusals(h)] == []
    h.append(a(2, "w2", 2, 11.0))
    assert [x.worker for x in stale_refusals(h)] == ["w1"]
