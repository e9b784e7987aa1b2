"""What tenure says about the store: JSON shapes and figures derived from rows.

Pure functions over snapshots the store returned (no I/O here), shared by the CLI's
``--json`` output and the HTTP API, so scripts can switch between the two; times are
epoch seconds on the database's clock and durations are seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tenure.desired import CHANGES, SyncResult
from tenure.models import Freed, Outcome, Pause, Run, Task, WorkerInfo
from tenure.schedule import Cron, Every, Unreadable, next_slot
from tenure.store.rows import run_params

#: Task states the API filters on and counts (``enabled``/``disabled`` and ``owned``/``unowned`` overlap).
STATES = ("enabled", "disabled", "owned", "unowned")
#: Outcomes listed as failures.
FAILURES = (Outcome.ERROR.value, Outcome.TIMEOUT.value, Outcome.LEASE_LOST.value)


@dataclass(frozen=True)
class Roster:
    """Every worker's membership row, live or expired, as of the database's clock ``now``."""

    now: float
    workers: Sequence[WorkerInfo]

    @property
    def live(self) -> set[str]:
        return {w.id for w in self.workers if w.expires_at > self.now}

    def owned(self, task: Task) -> bool:
        """Owned means: by a worker whose lease is live."""
        return task.owner is not None and task.owner in self.live

    @property
    def runnable_kinds(self) -> set[str]:
        """The kinds some live, non-draining worker runs (one that can take a task now)."""
        return {k for w in self.workers if w.expires_at > self.now and not w.draining for k in w.kinds}


def unrunnable(tasks: Iterable[Task], roster: Roster) -> dict[str, int]:
    """Enabled tasks that no live worker can run (no live, non-draining worker runs their
    kind), counted by kind: they wait until a worker with the kind joins."""
    runnable = roster.runnable_kinds
    counts: dict[str, int] = {}
    for t in tasks:
        if t.enabled and t.kind not in runnable:
            counts[t.kind] = counts.get(t.kind, 0) + 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Status:
    """The store at a glance (:meth:`tenure.App.status`)."""

    #: The store's URL, password hidden.
    store: str
    roster: Roster
    #: Tasks counted by state: ``total`` and each of :data:`STATES`.
    tasks: dict[str, int]
    #: The latest runs that failed (:data:`FAILURES`), newest first.
    recent_failures: Sequence[Run]
    #: Pauses in force: the whole store's first, then by kind.
    pauses: Sequence[Pause] = ()
    #: Enabled tasks no live worker can run, counted by kind (:func:`unrunnable`).
    unrunnable: dict[str, int] = field(default_factory=dict)


def status_json(status: Status) -> dict[str, Any]:
    """``tenure status --json`` and the core of ``GET /api/status``."""
    now = status.roster.now
    return {
        "store": status.store,
        "now": now,
        "workers": [worker_json(w, now) for w in status.roster.workers],
        "tasks": status.tasks,
        "recent_failures": [run_json(r) for r in status.recent_failures],
        "paused": [pause_json(p) for p in status.pauses],
        "unrunnable": status.unrunnable,
    }


def pause_json(pause: Pause) -> dict[str, Any]:
    """A pause: ``kind`` (null: every kind), ``since`` (database clock), ``by``, ``cancel``."""
    return {"kind": pause.kind, "since": pause.since, "by": pause.by, "cancel": pause.cancel}


def sync_json(result: SyncResult) -> dict[str, Any]:
    """What a sync did (or would do): the counts, and with ``dry_run`` the keys of each change."""
    body: dict[str, Any] = {"kind": result.kind, **result.counts(), "dry_run": result.dry_run}
    if result.dry_run:
        body["diff"] = {name: list(getattr(result, name)) for name in CHANGES}
    return body


def in_state(task: Task, state: str, roster: Roster) -> bool:
    """Whether ``task`` is in ``state`` (one of :data:`STATES`)."""
    if state == "enabled":
        return task.enabled
    if state == "disabled":
        return not task.enabled
    if state == "owned":
        return roster.owned(task)
    return not roster.owned(task)


def state_counts(tasks: Sequence[Task], roster: Roster) -> dict[str, int]:
    return {"total": len(tasks)} | {s: sum(in_state(t, s, roster) for t in tasks) for s in STATES}


def due_slot(task: Task) -> float | None:
    """The slot after the last one started, i.e. the run the task owes now or next.

    None while disabled or before its first run. Last slots reach the store with the run
    records, once per poll of the worker, so a healthy task can look up to a poll late.
    """
    if not task.enabled or task.last_slot is None or isinstance(task.schedule, Unreadable):
        return None
    return next_slot(task.schedule, task.kind, task.key, task.last_slot)


def task_json(task: Task, roster: Roster, last_run: Run | None = None) -> dict[str, Any]:
    """A task with its owner's liveness, its next slot, how overdue it is and its last run."""
    due = due_slot(task)
    upcoming: float | None = None
    schedule = task.schedule
    if task.enabled and not isinstance(schedule, Unreadable):
        upcoming = due if due is not None and due > roster.now else None
        if upcoming is None:
            upcoming = next_slot(schedule, task.kind, task.key, max(roster.now, task.last_slot or roster.now))
    return {
        "kind": task.kind,
        "key": task.key,
        # An unreadable schedule shows what its row holds, as stored.
        "every": schedule.seconds if isinstance(schedule, Every) else getattr(schedule, "every", None),
        "cron": schedule.expr if isinstance(schedule, Cron) else getattr(schedule, "cron", None),
        "schedule": task.schedule.describe(),
        "params": task.params,
        "enabled": task.enabled,
        "owner": task.owner,
        "owned": roster.owned(task),
        "term": task.term,
        "last_slot": task.last_slot,
        "next_slot": upcoming,
        "overdue": max(0.0, roster.now - due) if due is not None else None,
        "last_run": run_json(last_run) if last_run is not None else None,
        "trigger_at": task.trigger_at,
        "freed_at": task.freed_at,
        "freed_how": task.freed_how.value,
        "version": task.version,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }


def run_json(run: Run) -> dict[str, Any]:
    """A run as the CLI and the HTTP API show it: its id, the fields a store records
    (:func:`~tenure.store.rows.run_params`), how long it took and how late it started."""
    return {
        "id": run.id,
        **run_params(run),
        "duration": run.ended_at - run.started_at,
        "lag": max(0.0, run.started_at - run.scheduled_at),
    }


def over_capacity(w: WorkerInfo, now: float) -> bool:
    """Whether a live worker said, at its last renewal, that due runs wait for a place
    under its concurrency cap."""
    return w.expires_at > now and w.load is not None and w.load.over_capacity


def worker_json(w: WorkerInfo, now: float) -> dict[str, Any]:
    """A worker's membership row. Its load is as published with its last renewal
    (``heartbeat_at``): ``runs_waiting``, ``oldest_waiting`` (seconds) and
    ``concurrency`` are null until it publishes one; ``over_capacity`` is true while it is
    live and runs wait."""
    load = w.load
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "live": w.expires_at > now,
        "draining": w.draining,
        "kinds": list(w.kinds),
        "tasks_held": w.tasks_held,
        "started_at": w.started_at,
        "heartbeat_at": w.heartbeat_at,
        "expires_at": w.expires_at,
        "age": now - w.started_at,
        "lease_left": max(0.0, w.expires_at - now),
        "over_capacity": over_capacity(w, now),
        "runs_waiting": load.waiting if load is not None else None,
        "oldest_waiting": load.oldest_waiting if load is not None else None,
        "concurrency": load.concurrency if load is not None else None,
    }


def last_runs(runs: Iterable[Run]) -> dict[tuple[str, str], Run]:
    """The latest run of each task among ``runs`` (by start time)."""
    latest: dict[tuple[str, str], Run] = {}
    for r in runs:
        k = (r.kind, r.key)
        if k not in latest or r.started_at > latest[k].started_at:
            latest[k] = r
    return latest


def failovers(runs: Sequence[Run], tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Changes of term seen in ``runs`` (a window of recent run records), newest first.

    For each task, its runs in start order; wherever the term differs from the previous
    run's, the task changed owner in between: one event, timed at the first run under the
    new term. ``how`` (``expired``: a failover; ``released``: a handoff) is known only for
    the latest change of a task still at that term, from its row's ``freed_how``; older
    changes in the window say ``null``. A term lower than the one before it is flagged
    ``backwards``: the store lost writes (see the README on durability).

    Cheap and honest: one read of recent runs, no history table. What it cannot see: a
    change of owner with no recorded run on one side of it (a task that moved twice
    within one period, or whose dead owner's last records were never flushed, is still
    seen, as one change between the runs that were recorded).
    """
    by_task: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by_task.setdefault((r.kind, r.key), []).append(r)
    rows = {(t.kind, t.key): t for t in tasks}
    events: list[dict[str, Any]] = []
    for k, task_runs in by_task.items():
        task_runs.sort(key=lambda r: (r.started_at, r.id or 0))
        changes = [(a, b) for a, b in pairwise(task_runs) if a.term != b.term]
        for i, (before, after) in enumerate(changes):
            row = rows.get(k)
            latest = i == len(changes) - 1
            how = None
            if latest and row is not None and row.term == after.term and row.freed_how is not Freed.NEW:
                how = row.freed_how.value
            events.append(
                {
                    "kind": after.kind,
                    "key": after.key,
                    "at": after.started_at,
                    "freed_at": row.freed_at if how is not None and row is not None else None,
                    "from_worker": before.worker,
                    "to_worker": after.worker,
                    "from_term": before.term,
                    "to_term": after.term,
                    "how": how,
                    "backwards": after.term < before.term,
                }
            )
    events.sort(key=lambda e: e["at"], reverse=True)
    return events
