"""The proof at the end of the demo: reads the history from the database and checks it.

Four checks, each on evidence the database kept, never on what a process says of itself:

1. **No order was assigned twice**: at most one assignment row per order.
2. **No courier held two orders at once**: a courier's deliveries, as intervals from
   assignment to completion (open until completed), never overlap.
3. **Every stale commit was refused**: per city, the dispatch commits accepted (in
   commit order) never go back to an older term; each term belongs to one worker (in
   commits and in tenure's run records alike); no commit at a term was accepted after a
   run at a newer term of the same city had started (a newer term exists only once the
   city has changed owner, so the older owner was stale by then); every assignment row
   belongs to an accepted dispatch commit of its term. The refusals the workers caught
   (``LeaseLost`` from ``ctx.fenced_sync()``) are counted.
4. **Every enabled city kept being dispatched within the failover bound**: while a city
   was in service, the longest time without an accepted dispatch commit stays within
   ``period + lease_ttl + max(period, poll) + margin``: the previous owner may stall up to
   one period after its last commit, its lease then runs for at most ``lease_ttl``, the
   next owner claims within ``poll`` and runs at the next slot of the grid (within a
   period); the margin covers planning and commit.

:func:`check` works on a :class:`History` (plain data, so tests build violating histories
by hand); :func:`load` reads one from a store.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tenure.app import App
from tenure.demo.db import Connection

#: Slack for comparing a commit's time with a run's start: runs are timed by the worker's
#: estimate of the database clock, good to a renewal's round trip.
CLOCK_SLACK = 0.25
#: Part of the failover bound for planning, the commit and scheduling jitter.
MARGIN = 1.5


@dataclass(frozen=True, kw_only=True)
class Dispatch:
    """An accepted dispatch commit (a ``demo_dispatches`` row); ``id`` follows commit order per city."""

    id: int
    commit_id: str
    city: str
    term: int
    worker: str
    at: float


@dataclass(frozen=True, kw_only=True)
class Assignment:
    id: int
    order_id: int
    courier_id: int
    city: str
    term: int
    worker: str
    commit_id: str
    assigned_at: float
    done_at: float | None


@dataclass(frozen=True, kw_only=True)
class RunStart:
    """A run of a city's dispatch as tenure recorded it."""

    city: str
    term: int
    worker: str
    started_at: float


@dataclass(frozen=True, kw_only=True)
class Timing:
    period: float
    lease_ttl: float
    poll: float
    margin: float = MARGIN

    @property
    def bound(self) -> float:
        return self.period + self.lease_ttl + max(self.period, self.poll) + self.margin

    def describe(self) -> str:
        return (
            f"period {self.period:g} + TTL {self.lease_ttl:g} + max(period, poll) "
            f"{max(self.period, self.poll):g} + margin {self.margin:g}"
        )


@dataclass(frozen=True, kw_only=True)
class History:
    """Everything the checks read."""

    timing: Timing
    #: When the demo's cluster was up (every first worker joined) and when it began stopping.
    start: float
    end: float
    dispatches: list[Dispatch]
    assignments: list[Assignment]
    runs: list[RunStart] = field(default_factory=list)
    #: (city, event, at): "opened", "disabled", "enabled".
    city_events: list[tuple[str, str, float]] = field(default_factory=list)
    #: (city, term, worker, reason) of each stale commit a worker saw refused.
    refusals: list[tuple[str, int, str, str]] = field(default_factory=list)
    orders: int = 0
    delivered: int = 0
    couriers: int = 0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    figures: str
    problems: list[str]


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def lines(self, *, max_problems: int = 5) -> list[str]:
        passed = sum(c.ok for c in self.checks)
        head = "PASS" if self.ok else "FAIL"
        out = [f"verdict: {head} ({passed} of {len(self.checks)} checks hold)"]
        for c in self.checks:
            out.append(f"  [{'ok' if c.ok else 'FAILED'}] {c.name}: {c.figures}")
            for problem in c.problems[:max_problems]:
                out.append(f"      - {problem}")
            if len(c.problems) > max_problems:
                out.append(f"      - … and {len(c.problems) - max_problems} more")
        return out


def check(h: History) -> Verdict:
    """Run the four checks."""
    return Verdict([_orders(h), _couriers(h), _stale(h), _liveness(h)])


# -- the checks ---------------------------------------------------------------------------


def _orders(h: History) -> Check:
    by_order: dict[int, list[Assignment]] = defaultdict(list)
    for a in h.assignments:
        by_order[a.order_id].append(a)
    problems = [
        f"order {o} assigned {len(rows)} times: "
        + ", ".join(f"courier {a.courier_id} by {a.worker} at term {a.term}" for a in rows)
        for o, rows in sorted(by_order.items())
        if len(rows) > 1
    ]
    waiting = h.orders - len(by_order)
    figures = (
        f"{h.orders} orders placed, {len(by_order)} assigned, {h.delivered} delivered, {max(0, waiting)} still waiting"
    )
    return Check("no order assigned twice", not problems, figures, problems)


def _couriers(h: History) -> Check:
    by_courier: dict[int, list[Assignment]] = defaultdict(list)
    for a in h.assignments:
        by_courier[a.courier_id].append(a)
    problems = []
    for courier, rows in sorted(by_courier.items()):
        rows.sort(key=lambda a: (a.assigned_at, a.id))
        for prev, nxt in itertools.pairwise(rows):
            if prev.done_at is None or nxt.assigned_at < prev.done_at:
                until = "still en route" if prev.done_at is None else f"busy until {prev.done_at - h.start:.2f}s"
                problems.append(
                    f"courier {courier} got order {nxt.order_id} (term {nxt.term}, {nxt.worker}) at "
                    f"{nxt.assigned_at - h.start:.2f}s while holding order {prev.order_id} (term {prev.term}, "
                    f"{prev.worker}), {until}"
                )
    busiest = max((len(r) for r in by_courier.values()), default=0)
    figures = (
        f"{len(h.assignments)} deliveries by {len(by_courier)} of {h.couriers} couriers, "
        f"up to {busiest} each, none overlapping"
        if not problems
        else f"{len(problems)} overlapping deliveries"
    )
    return Check("no courier held two orders at once", not problems, figures, problems)


def _stale(h: History) -> Check:
    problems: list[str] = []
    by_city: dict[str, list[Dispatch]] = defaultdict(list)
    for d in sorted(h.dispatches, key=lambda d: d.id):
        by_city[d.city].append(d)

    # Terms never go back in commit order.
    for city, commits in sorted(by_city.items()):
        high: Dispatch | None = None
        for d in commits:
            if high is not None and d.term < high.term:
                problems.append(
                    f"{city}: commit by {d.worker} at term {d.term} accepted at {d.at - h.start:.2f}s, after "
                    f"term {high.term} (by {high.worker}) had committed"
                )
            if high is None or d.term > high.term:
                high = d

    # One worker per term, in commits and run records.
    holders: dict[tuple[str, int], set[str]] = defaultdict(set)
    for city, term, worker in [(d.city, d.term, d.worker) for d in h.dispatches] + [
        (r.city, r.term, r.worker) for r in h.runs
    ]:
        holders[(city, term)].add(worker)
    for (city, term), workers in sorted(holders.items()):
        if len(workers) > 1:
            problems.append(f"{city}: term {term} used by {len(workers)} workers: {', '.join(sorted(workers))}")

    # No commit at a term after a newer term of the city had started running.
    first_run: dict[str, dict[int, float]] = defaultdict(dict)
    for r in h.runs:
        starts = first_run[r.city]
        starts[r.term] = min(r.started_at, starts.get(r.term, r.started_at))
    for city, commits in sorted(by_city.items()):
        starts = first_run.get(city, {})
        terms = sorted(starts)
        # earliest start of any term above terms[i], for each i
        later = [float("inf")] * (len(terms) + 1)
        for i in range(len(terms) - 1, -1, -1):
            later[i] = min(later[i + 1], starts[terms[i]])
        for d in commits:
            i = bisect.bisect_right(terms, d.term)
            if later[i] + CLOCK_SLACK < d.at:
                newer = min(t for t in terms[i:] if starts[t] == later[i])
                problems.append(
                    f"{city}: commit by {d.worker} at term {d.term} accepted {d.at - later[i]:.2f}s after "
                    f"term {newer} had started running"
                )

    # Every assignment was written by an accepted dispatch commit of its term.
    commits_by_id = {d.commit_id: d for d in h.dispatches}
    for a in h.assignments:
        written_by = commits_by_id.get(a.commit_id)
        if written_by is None or (written_by.city, written_by.term, written_by.worker) != (a.city, a.term, a.worker):
            problems.append(f"assignment of order {a.order_id} (term {a.term}) has no matching dispatch commit")

    city_terms = {(d.city, d.term) for d in h.dispatches}
    owners = len(city_terms) - len(by_city)
    refused = len(h.refusals)
    stale = f"{refused} stale commit{'' if refused == 1 else 's'} refused"
    figures = (
        f"{len(h.dispatches)} dispatch commits accepted over {len(city_terms)} terms "
        f"({owners} changes of owner), terms never went back; {stale}"
    )
    if problems:
        figures = f"{len(problems)} signs of stale commits accepted; {stale}"
    return Check("every stale commit was refused", not problems, figures, problems)


def service_windows(h: History) -> dict[str, list[tuple[float, float]]]:
    """Per city, the intervals in which it was enabled, within [start, end]."""
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    since: dict[str, float] = {}
    for city, event, at in sorted(h.city_events, key=lambda e: e[2]):
        if event in ("opened", "enabled"):
            since.setdefault(city, at)
        elif event == "disabled" and city in since:
            windows[city].append((since.pop(city), at))
    for city, at in since.items():
        windows[city].append((at, h.end))
    return {
        city: [(max(a, h.start), min(b, h.end)) for a, b in spans if min(b, h.end) > max(a, h.start)]
        for city, spans in windows.items()
    }


def _liveness(h: History) -> Check:
    bound = h.timing.bound
    commits: dict[str, list[float]] = defaultdict(list)
    for d in h.dispatches:
        commits[d.city].append(d.at)
    worst = (0.0, "-", 0.0)
    problems = []
    for city, spans in sorted(service_windows(h).items()):
        times = sorted(commits.get(city, []))
        for a, b in spans:
            inside = [t for t in times if a <= t <= b]
            for prev, nxt in _pairs([a, *inside, b]):
                gap = nxt - prev
                if gap > worst[0]:
                    worst = (gap, city, prev)
                if gap > bound:
                    problems.append(
                        f"{city}: no dispatch for {gap:.2f}s, from {prev - h.start:.1f}s to {nxt - h.start:.1f}s "
                        f"into the run (bound {bound:.2f}s)"
                    )
    gap, city, at = worst
    figures = (
        f"longest wait between dispatches {gap:.2f}s ({city}, {at - h.start:.1f}s into the run), "
        f"bound {bound:.2f}s = {h.timing.describe()}"
    )
    return Check("every enabled city kept being dispatched within the failover bound", not problems, figures, problems)


def _pairs(xs: list[float]) -> Iterable[tuple[float, float]]:
    return itertools.pairwise(xs)


# -- reading a history from the database ---------------------------------------------------


async def load(url: str, timing: Timing) -> History:
    """Read a finished demo's history from the store at ``url``."""
    with Connection(url) as db:
        marks = dict(db.fetchall("SELECT name, at FROM demo_marks"))
        dispatches = [
            Dispatch(id=int(i), commit_id=c, city=city, term=int(t), worker=w, at=float(at))
            for i, c, city, t, w, at in db.fetchall(
                "SELECT id, commit_id, city, term, worker, at FROM demo_dispatches ORDER BY id"
            )
        ]
        assignments = [
            Assignment(
                id=int(i),
                order_id=int(o),
                courier_id=int(c),
                city=city,
                term=int(t),
                worker=w,
                commit_id=cid,
                assigned_at=float(at),
                done_at=None if done is None else float(done),
            )
            for i, o, c, city, t, w, cid, at, done in db.fetchall(
                "SELECT id, order_id, courier_id, city, term, worker, commit_id, assigned_at, done_at "
                "FROM demo_assignments ORDER BY id"
            )
        ]
        events = [(c, e, float(at)) for c, e, at in db.fetchall("SELECT city, event, at FROM demo_city_events")]
        refusals = [
            (c, int(t), w, r) for c, t, w, r in db.fetchall("SELECT city, term, worker, reason FROM demo_refusals")
        ]
        (orders,) = db.fetchone("SELECT COUNT(*) FROM demo_orders") or (0,)
        (delivered,) = db.fetchone("SELECT COUNT(*) FROM demo_orders WHERE status = 'delivered'") or (0,)
        (couriers,) = db.fetchone("SELECT COUNT(*) FROM demo_couriers") or (0,)
    app = App(url)
    try:
        await app.open(migrate=False)
        runs = [
            RunStart(city=r.key, term=r.term, worker=r.worker, started_at=r.started_at)
            for r in await app.list_runs(kind="dispatch", limit=10_000)
            if r.started_at >= marks["setup"]  # not an earlier demo's, on a store used again
        ]
    finally:
        await app.close()
    return History(
        timing=timing,
        start=float(marks["start"]),
        end=float(marks["end"]),
        dispatches=dispatches,
        assignments=assignments,
        runs=runs,
        city_events=events,
        refusals=refusals,
        orders=int(orders),
        delivered=int(delivered),
        couriers=int(couriers),
    )
