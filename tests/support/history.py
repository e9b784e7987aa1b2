"""The fenced-history checker: pure functions over the commits a workload recorded.

:func:`assert_fenced_history` states safety over a list of accepted :class:`Commit`
rows (what the runtime and store-fault workloads write in their fenced transactions).

The fault suite's fuller history is what its handlers recorded themselves, independently
of tenure's own tables (see ``tests/faults/runner.py``):

- every *accepted* commit attempt, as a row of ``fault_attempts`` written inside the
  fenced transaction (so it exists if and only if the database accepted the commit),
  with the database's clock at the time of the write;
- every *refused* attempt (:class:`tenure.LeaseLost`, or a run cancelled inside its
  fenced transaction), from the worker's JSON-lines events file;
- the ``fault_decisions`` rows, the workload's "business" writes, inside the same
  fenced transaction.

Invariants (issue 7), each a function returning a list of violations (empty: holds):

- :func:`terms_monotonic`: per task, accepted terms never decrease in commit order;
- :func:`one_worker_per_term`: no two workers have accepted commits at the same term;
- :func:`no_commit_after_lease_lost`: an accepted commit at term T must happen while T
  was the task's current term, i.e. not after (by the database clock) a commit at a term
  T' > T was accepted;
- :func:`liveness_gaps`: every enabled task has an accepted commit in every window of
  ``period + bound`` inside the intervals where it was enabled and no fault was active;
- :func:`decisions_complete`: every accepted attempt has its decision row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tenure.schedule import Every, latest_slot

TaskId = tuple[str, str]


@dataclass(frozen=True, kw_only=True)
class Commit:
    """One accepted fenced commit of a workload: the row its handler wrote inside the
    fenced transaction (so it exists if and only if the database accepted the commit).
    ``at`` is the database's clock inside the transaction."""

    id: int
    kind: str
    key: str
    term: int
    worker: str
    slot: float
    at: float

    @property
    def task(self) -> TaskId:
        return (self.kind, self.key)


def assert_fenced_history(commits: Sequence[Commit], period: float | None = None) -> None:
    """Safety over the whole history of accepted commits: for each task, in commit order,
    terms never go back, each term belongs to one worker only, and no slot is committed
    twice; with ``period``, every slot also lies on the task's grid of that period."""
    by_task: dict[TaskId, list[Commit]] = {}
    for c in commits:
        by_task.setdefault(c.task, []).append(c)
    for task, cs in by_task.items():
        for prev, cur in itertools.pairwise(cs):
            assert cur.term >= prev.term, f"STALE COMMIT ACCEPTED: {task}: term went back from {prev} to {cur}"
        owner_of_term: dict[int, str] = {}
        for c in cs:
            assert owner_of_term.setdefault(c.term, c.worker) == c.worker, (
                f"STALE COMMIT ACCEPTED: {task}: term {c.term} committed by {owner_of_term[c.term]} and {c.worker}"
            )
            if period is not None:
                assert latest_slot(Every(period), c.kind, c.key, c.slot) == c.slot, f"{task}: slot off the grid: {c}"
        slots = [c.slot for c in cs]
        assert len(slots) == len(set(slots)), f"{task}: a slot was committed twice: {sorted(slots)}"


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One commit attempt. ``seq`` orders accepted attempts in commit order (the row id;
    per task the fence serializes commits, so id order is commit order). ``at`` is the
    database clock (accepted) or the worker's clock (refused, informational only)."""

    seq: int
    worker: str
    kind: str
    key: str
    term: int
    slot: float
    accepted: bool
    at: float
    reason: str = ""

    @property
    def task(self) -> TaskId:
        return (self.kind, self.key)

    @property
    def ident(self) -> tuple[str, str, str, int, float]:
        return (self.worker, self.kind, self.key, self.term, self.slot)


@dataclass(frozen=True, kw_only=True)
class Decision:
    worker: str
    kind: str
    key: str
    term: int
    slot: float

    @property
    def ident(self) -> tuple[str, str, str, int, float]:
        return (self.worker, self.kind, self.key, self.term, self.slot)


@dataclass(kw_only=True)
class Report:
    attempts: int = 0
    accepted: int = 0
    refused: int = 0
    stale_refused: int = 0
    violations: list[str] = field(default_factory=list)
    worst_gap: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations


def _accepted_by_task(attempts: Iterable[Attempt]) -> dict[TaskId, list[Attempt]]:
    out: dict[TaskId, list[Attempt]] = {}
    for a in sorted((a for a in attempts if a.accepted), key=lambda a: a.seq):
        out.setdefault(a.task, []).append(a)
    return out


def terms_monotonic(attempts: Iterable[Attempt]) -> list[str]:
    bad = []
    for task, cs in _accepted_by_task(attempts).items():
        for prev, cur in itertools.pairwise(cs):
            if cur.term < prev.term:
                bad.append(f"{task}: term went back from {prev.term} ({prev.worker}) to {cur.term} ({cur.worker})")
    return bad


def one_worker_per_term(attempts: Iterable[Attempt]) -> list[str]:
    bad = []
    for task, cs in _accepted_by_task(attempts).items():
        owner: dict[int, str] = {}
        for c in cs:
            first = owner.setdefault(c.term, c.worker)
            if first != c.worker:
                bad.append(f"{task}: term {c.term} accepted from both {first} and {c.worker}")
    return bad


def no_commit_after_lease_lost(attempts: Iterable[Attempt]) -> list[str]:
    """By the database clock: no accepted commit at T after one at T' > T was accepted."""
    bad = []
    for task, cs in _accepted_by_task(attempts).items():
        for c in cs:
            newer = [o for o in cs if o.term > c.term and o.at < c.at]
            if newer:
                o = min(newer, key=lambda o: o.at)
                bad.append(
                    f"{task}: {c.worker} committed at term {c.term} (t={c.at:.3f}) after its lease was lost: "
                    f"{o.worker} had committed at term {o.term} (t={o.at:.3f})"
                )
    return bad


def liveness_gaps(
    attempts: Iterable[Attempt], windows: Mapping[TaskId, Sequence[tuple[float, float]]], limit: float
) -> tuple[list[str], float]:
    """For each task and each (start, end) window (database clock) in which it was
    enabled and no fault was active, the longest stretch without an accepted commit
    must not exceed ``limit`` (period + failover bound). Returns violations and the
    worst gap seen."""
    bad = []
    worst = 0.0
    by_task = _accepted_by_task(attempts)
    for task, spans in windows.items():
        times = sorted(a.at for a in by_task.get(task, []))
        for start, end in spans:
            points = [start, *(t for t in times if start < t < end), end]
            gap = max(b - a for a, b in itertools.pairwise(points))
            worst = max(worst, gap)
            if gap > limit:
                bad.append(f"{task}: no commit for {gap:.3f}s in window [{start:.3f}, {end:.3f}] (limit {limit:.3f}s)")
    return bad, worst


def decisions_complete(attempts: Iterable[Attempt], decisions: Iterable[Decision]) -> list[str]:
    have = {d.ident for d in decisions}
    return [f"accepted attempt without its decision: {a.ident}" for a in attempts if a.accepted and a.ident not in have]


def stale_refusals(attempts: Iterable[Attempt]) -> list[Attempt]:
    """Refused attempts at a term lower than the latest term accepted for their task:
    stale commits that really happened and were refused."""
    attempts = list(attempts)
    latest: dict[TaskId, int] = {}
    for a in attempts:
        if a.accepted:
            latest[a.task] = max(latest.get(a.task, 0), a.term)
    return [a for a in attempts if not a.accepted and a.term < latest.get(a.task, 0)]


def check(
    attempts: Sequence[Attempt],
    decisions: Sequence[Decision],
    *,
    windows: Mapping[TaskId, Sequence[tuple[float, float]]] | None = None,
    limit: float = 0.0,
) -> Report:
    r = Report(attempts=len(attempts), accepted=sum(a.accepted for a in attempts))
    r.refused = r.attempts - r.accepted
    r.stale_refused = len(stale_refusals(attempts))
    r.violations += terms_monotonic(attempts)
    r.violations += one_worker_per_term(attempts)
    r.violations += no_commit_after_lease_lost(attempts)
    r.violations += decisions_complete(attempts, decisions)
    if windows:
        bad, r.worst_gap = liveness_gaps(attempts, windows, limit)
        r.violations += bad
    return r
