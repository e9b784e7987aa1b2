"""Fair share per kind, as each worker computes it from the same cluster view: for every
kind, the shares of the workers that run it add up to its enabled tasks and differ by at
most one, and no worker takes a share of a kind it does not run."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from tenure.models import ClusterView
from tenure.worker.owned import Shared
from tenure.worker.rebalancer import Rebalancer

KINDS = ["billing", "dispatch", "report", "sync"]


def rebalancer(worker_id: str, kinds: frozenset[str]) -> Rebalancer:
    """A rebalancer with only what the share computation reads (its id, its kinds, and
    whether it is draining or stopping): nothing else is called."""
    unused = cast(Any, None)
    shared = Shared(
        store=unused,
        settings=unused,
        worker_id=worker_id,
        life=cast(Any, SimpleNamespace(stopping=False)),
        log=unused,
        kinds=dict.fromkeys(kinds, unused),
    )
    lease = cast(Any, SimpleNamespace(draining=False))
    return Rebalancer(shared, lease=lease, timers=unused, recorder=unused, executor=unused)


@given(
    workers=st.dictionaries(
        st.sampled_from([f"w{i}" for i in range(7)]), st.frozensets(st.sampled_from(KINDS)), min_size=1
    ),
    tasks=st.dictionaries(st.sampled_from(KINDS), st.integers(min_value=1, max_value=50)),
)
def test_shares_of_each_kind_add_up_over_the_workers_that_run_it(
    workers: dict[str, frozenset[str]], tasks: dict[str, int]
) -> None:
    view = ClusterView(
        changes=0,
        live_workers=sorted(workers),
        enabled_tasks=sum(tasks.values()),
        worker_kinds=workers,
        enabled_by_kind=tasks,
    )
    shares = {w: rebalancer(w, kinds).kind_shares(view) for w, kinds in workers.items()}
    for w, kinds in workers.items():
        assert set(shares[w]) == kinds, "a share of a kind the worker does not run"
    for kind in KINDS:
        runners = [w for w, kinds in workers.items() if kind in kinds]
        if not runners:
            continue
        of_kind = [shares[w][kind] for w in runners]
        assert sum(of_kind) == tasks.get(kind, 0)
        assert max(of_kind) - min(of_kind) <= 1


def test_the_remainders_of_small_kinds_do_not_all_land_on_one_worker() -> None:
    workers = {w: frozenset(KINDS) for w in ("w1", "w2", "w3")}
    tasks = dict.fromkeys(KINDS, 1)  # one task of each kind: a remainder of 1 each
    view = ClusterView(
        changes=0, live_workers=sorted(workers), enabled_tasks=4, worker_kinds=workers, enabled_by_kind=tasks
    )
    totals = {w: sum(rebalancer(w, kinds).kind_shares(view).values()) for w, kinds in workers.items()}
    assert sum(totals.values()) == 4
    assert max(totals.values()) < 4, totals


@given(
    workers=st.dictionaries(
        st.sampled_from([f"w{i}" for i in range(7)]), st.frozensets(st.sampled_from(KINDS), min_size=1), min_size=1
    ),
    tasks=st.integers(min_value=0, max_value=500),
)
def test_workers_claiming_together_start_at_stretches_of_their_own(
    workers: dict[str, frozenset[str]], tasks: int
) -> None:
    """Each runner of a kind starts its claims (a hint to the store) at its own stretch of
    the kind's tasks, one after another in id order, so that workers started together
    each take their share from a different place."""
    view = ClusterView(
        changes=0,
        live_workers=sorted(workers),
        enabled_tasks=tasks * len(KINDS),
        worker_kinds=workers,
        enabled_by_kind=dict.fromkeys(KINDS, tasks),
    )
    for kind in KINDS:
        runners = [w for w in sorted(workers) if kind in workers[w]]
        if not runners:
            continue
        starts = [rebalancer(w, workers[w]).claim_start(view, kind) for w in runners]
        step = tasks // len(runners)
        assert starts == [i * step for i in range(len(runners))]
        assert all(start + step <= tasks for start in starts)  # each stretch inside the kind's tasks


def test_a_worker_not_yet_in_the_view_starts_at_its_place_among_the_runners() -> None:
    view = ClusterView(
        changes=0,
        live_workers=["w1", "w3"],
        enabled_tasks=30,
        worker_kinds={"w1": frozenset({"dispatch"}), "w3": frozenset({"dispatch"})},
        enabled_by_kind={"dispatch": 30},
    )
    assert rebalancer("w2", frozenset({"dispatch"})).claim_start(view, "dispatch") == 10
    assert rebalancer("w4", frozenset({"dispatch"})).claim_start(view, "dispatch") == 20
