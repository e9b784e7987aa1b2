"""Run records: append, list (most recent first, filtered), prune."""

from __future__ import annotations

import dataclasses

import pytest

from tenure.models import RUN_ERROR_LIMIT, Outcome, Run, SlotDone, storable_error
from tenure.store import Store, dialect_of

from .dialect import raw_db
from .helpers import add, register, task_of


def _run(kind: str, key: str, worker: str, outcome: Outcome, at: float, error: str | None = None) -> Run:
    return Run(
        kind=kind,
        key=key,
        worker=worker,
        term=7,
        scheduled_at=at,
        started_at=at + 0.001,
        ended_at=at + 0.5,
        outcome=outcome,
        error=error,
    )


def _bare(run: Run) -> Run:
    """A run as it went in, for comparing with what came back (which has an id)."""
    return dataclasses.replace(run, id=None)


async def test_record_and_list_runs_most_recent_first(store: Store) -> None:
    now = await store.now()
    first = [
        _run("dispatch", "barcelona", "w1", Outcome.OK, now - 30),
        _run("dispatch", "madrid", "w2", Outcome.ERROR, now - 20, error="ValueError: no couriers\nline 2"),
    ]
    second = [
        _run("billing", "barcelona", "w1", Outcome.TIMEOUT, now - 10),
        _run("dispatch", "barcelona", "w2", Outcome.LEASE_LOST, now - 5),
        _run("dispatch", "L'Aquila", "w1", Outcome.SKIPPED, now - 1),
    ]
    await store.record_runs(first, [])
    await store.record_runs(second, [])
    runs = await store.list_runs()
    assert [_bare(r) for r in runs] == list(reversed(first + second))
    ids = [r.id for r in runs if r.id is not None]
    assert len(ids) == len(runs)
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    assert runs[3].error == "ValueError: no couriers\nline 2"
    assert runs[3].outcome is Outcome.ERROR


async def test_list_runs_filters_and_limit(store: Store) -> None:
    now = await store.now()
    runs = [
        _run("dispatch", "barcelona", "w1", Outcome.OK, now - 6),
        _run("dispatch", "madrid", "w1", Outcome.ERROR, now - 5),
        _run("billing", "barcelona", "w2", Outcome.OK, now - 4),
        _run("dispatch", "barcelona", "w2", Outcome.ERROR, now - 3),
        _run("dispatch", "barcelona", "w1", Outcome.OK, now - 2),
    ]
    await store.record_runs(runs, [])

    async def keys(
        *,
        kind: str | None = None,
        key: str | None = None,
        worker: str | None = None,
        outcome: str | None = None,
        limit: int = 50,
    ) -> list[tuple[str, str, str, str]]:
        found = await store.list_runs(kind=kind, key=key, worker=worker, outcome=outcome, limit=limit)
        return [(r.kind, r.key, r.worker, r.outcome.value) for r in found]

    assert await keys(kind="dispatch") == [
        ("dispatch", "barcelona", "w1", "ok"),
        ("dispatch", "barcelona", "w2", "error"),
        ("dispatch", "madrid", "w1", "error"),
        ("dispatch", "barcelona", "w1", "ok"),
    ]
    assert await keys(key="barcelona") == [
        ("dispatch", "barcelona", "w1", "ok"),
        ("dispatch", "barcelona", "w2", "error"),
        ("billing", "barcelona", "w2", "ok"),
        ("dispatch", "barcelona", "w1", "ok"),
    ]
    assert await keys(worker="w2") == [
        ("dispatch", "barcelona", "w2", "error"),
        ("billing", "barcelona", "w2", "ok"),
    ]
    assert await keys(outcome="error") == [
        ("dispatch", "barcelona", "w2", "error"),
        ("dispatch", "madrid", "w1", "error"),
    ]
    assert await keys(kind="dispatch", key="barcelona", worker="w1", outcome="ok") == [
        ("dispatch", "barcelona", "w1", "ok"),
        ("dispatch", "barcelona", "w1", "ok"),
    ]
    assert await keys(kind="dispatch", limit=2) == [
        ("dispatch", "barcelona", "w1", "ok"),
        ("dispatch", "barcelona", "w2", "error"),
    ]
    assert await keys(limit=1) == [("dispatch", "barcelona", "w1", "ok")]
    assert await keys(kind="nope") == []
    assert await keys(outcome="timeout") == []
    assert len(await store.list_runs()) == 5


async def test_record_runs_advances_slots_guarded_by_term(store: Store) -> None:
    await add(store, "dispatch", "a")
    await add(store, "dispatch", "b")
    await register(store, "w1")
    claims = {c.task.key: c for c in await store.claim_tasks("w1", kinds=["dispatch"], limit=10)}
    ta, tb = claims["a"].term, claims["b"].term
    run = _run("dispatch", "a", "w1", Outcome.OK, 500.0)
    await store.record_runs(
        [run],
        [
            SlotDone(kind="dispatch", key="a", term=ta, slot=500.0),
            SlotDone(kind="dispatch", key="b", term=tb + 100, slot=500.0),  # not its term
        ],
    )
    assert (await task_of(store, "dispatch", "a")).last_slot == 500.0
    assert (await task_of(store, "dispatch", "b")).last_slot is None
    # Slots without runs, and never backwards.
    await store.record_runs([], [SlotDone(kind="dispatch", key="a", term=ta, slot=400.0)])
    assert (await task_of(store, "dispatch", "a")).last_slot == 500.0
    await store.record_runs([], [SlotDone(kind="dispatch", key="a", term=ta, slot=505.0)])
    assert (await task_of(store, "dispatch", "a")).last_slot == 505.0
    # Nothing at all is fine.
    await store.record_runs([], [])
    assert [_bare(r) for r in await store.list_runs()] == [run]


async def test_record_runs_of_removed_tasks_are_kept(store: Store) -> None:
    # Runs are history: they do not depend on the task still existing.
    now = await store.now()
    await store.record_runs([_run("dispatch", "gone", "w1", Outcome.OK, now)], [])
    (run,) = await store.list_runs(key="gone")
    assert run.kind == "dispatch"


async def test_prune_runs_by_end_time_on_the_database_clock(store: Store) -> None:
    now = await store.now()
    old = _run("dispatch", "a", "w1", Outcome.OK, now - 7200)  # ended ~2 h ago
    mid = _run("dispatch", "a", "w1", Outcome.OK, now - 1800)  # ~30 min ago
    new = _run("dispatch", "a", "w1", Outcome.OK, now - 1)
    await store.record_runs([old, mid, new], [])
    assert await store.prune_runs(older_than=3600) == 1
    assert [_bare(r) for r in await store.list_runs()] == [new, mid]
    assert await store.prune_runs(older_than=3600) == 0
    assert await store.prune_runs(older_than=600) == 1
    assert [_bare(r) for r in await store.list_runs()] == [new]


@pytest.mark.parametrize("outcome", list(Outcome))
async def test_every_outcome_round_trips(store: Store, outcome: Outcome) -> None:
    now = await store.now()
    run = _run("dispatch", "a", "w1", outcome, now)
    await store.record_runs([run], [])
    (back,) = await store.list_runs(outcome=outcome.value)
    assert _bare(back) == run


async def test_a_triggered_run_clears_the_triggers_it_answered(store: Store) -> None:
    await add(store, "dispatch", "a")
    await register(store, "w1")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    asked = (await store.trigger("dispatch", "a")).trigger_at
    assert asked is not None

    def done(slot: float, triggered: bool) -> SlotDone:
        return SlotDone(kind="dispatch", key="a", term=claim.term, slot=slot, triggered=triggered)

    # An ordinary run, or a triggered one for an earlier request, leaves the request.
    await store.record_runs([], [done(asked + 1, False)])
    assert (await task_of(store, "dispatch", "a")).trigger_at == asked
    await store.record_runs([], [done(asked - 1, True)])
    assert (await task_of(store, "dispatch", "a")).trigger_at == asked
    # A triggered run at or after the request answers it.
    await store.record_runs([], [done(asked, True)])
    assert (await task_of(store, "dispatch", "a")).trigger_at is None


async def test_a_slot_already_recorded_is_not_written_again(store: Store, store_url: str) -> None:
    # A fenced commit records its run's slot; the flush that follows must not write the
    # row again (an update to the same values still makes a new row version).
    if dialect_of(store_url) != "postgresql":
        pytest.skip("row versions are read from PostgreSQL's xmin")
    await add(store, "dispatch", "a")
    await register(store, "w1")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    raw = raw_db(store_url)

    def version() -> str:
        ((xmin,),) = raw.query("SELECT xmin::text FROM tenure_tasks WHERE kind = 'dispatch' AND key = 'a'")
        return str(xmin)

    def slot(at: float, triggered: bool = False) -> list[SlotDone]:
        return [SlotDone(kind="dispatch", key="a", term=claim.term, slot=at, triggered=triggered)]

    await store.record_runs([], slot(500.0))
    recorded = version()
    await store.record_runs([], slot(500.0))
    await store.record_runs([], slot(400.0))
    assert version() == recorded, "a slot update that changed nothing wrote the row"
    await store.record_runs([], slot(505.0))
    assert version() != recorded
    assert (await task_of(store, "dispatch", "a")).last_slot == 505.0
    raw.close()


async def test_slot_updates_stay_on_their_page(store: Store, store_url: str) -> None:
    # Schema version 7: tenure_tasks' pages keep room for the next version of their rows,
    # so that advancing a slot (an update of no indexed column) is a HOT update: the new
    # version on the row's own page, no index entry added. Filled to 100%, about half of
    # the updates moved to another page, rounds after rounds.
    if dialect_of(store_url) != "postgresql":
        pytest.skip("HOT updates and fillfactor are PostgreSQL's")
    raw = raw_db(store_url)
    ((options,),) = raw.query("SELECT reloptions FROM pg_class WHERE oid = 'tenure_tasks'::regclass")
    assert "fillfactor=70" in (options or [])
    await register(store, "w1")
    for i in range(300):
        await add(store, "dispatch", f"t{i:03d}")
    claims = await store.claim_tasks("w1", kinds=["dispatch"], limit=300)

    def pages() -> dict[str, str]:
        rows = raw.query("SELECT key, (ctid::text::point)[0]::text FROM tenure_tasks")
        return {str(key): str(page) for key, page in rows}

    moved = []
    for n in range(12):
        before = pages()
        await store.record_runs(
            [], [SlotDone(kind="dispatch", key=c.task.key, term=c.term, slot=1000.0 + n) for c in claims]
        )
        after = pages()
        moved.append(sum(before[k] != after[k] for k in before))
    raw.close()
    # The first rounds settle the rows on pages with room for them; then none moves.
    assert moved[-4:] == [0, 0, 0, 0], f"rows moved to another page, round by round: {moved}"


async def test_every_store_keeps_any_error_text_once_made_storable(store: Store) -> None:
    """A handler's exception is not ours to trust: a lone surrogate (a file name that is
    not UTF-8), a NUL and megabytes each made a store refuse the whole batch of run records
    (SQLite and PostgreSQL raised on the surrogate, PostgreSQL on the NUL, MariaDB past its
    packet limit). ``storable_error`` is what the worker records instead, on every store."""
    now = await store.now()
    texts = {
        "surrogate": "OSError: cannot open " + b"caf\xe9.csv".decode("utf-8", "surrogateescape"),
        "nul": "ValueError: a\x00b",
        "huge": "RuntimeError: " + "x" * 20_000_000,
    }
    runs = [
        _run("dispatch", key, "w1", Outcome.ERROR, now - i, error=storable_error(t))
        for i, (key, t) in enumerate(texts.items())
    ]
    await store.record_runs(runs, [])
    kept = {r.key: r.error for r in await store.list_runs(kind="dispatch")}
    assert kept["surrogate"] == "OSError: cannot open caf\\udce9.csv"
    assert kept["nul"] == "ValueError: a\\x00b"
    huge = kept["huge"]
    assert huge is not None
    assert len(huge) < RUN_ERROR_LIMIT + 100
    assert huge.startswith("RuntimeError: xxx")
    assert huge.endswith("more characters cut)"), huge[-60:]
