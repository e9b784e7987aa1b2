"""Turning database rows into value objects, the same way for every store."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, cast

from tenure.errors import InvalidSchedule
from tenure.inputs import ECHO_LIMIT, cut
from tenure.models import (
    ClusterView,
    Freed,
    KindInfo,
    Outcome,
    Run,
    SlotDone,
    Task,
    WorkerInfo,
    WorkerLoad,
    decode_stored_params,
)
from tenure.schedule import Cron, Every, Schedule, StoredSchedule, Unreadable

#: Columns every store selects for a task, in this order.
TASK_COLUMNS = (
    "kind, key, every, cron, params, enabled, owner, term, last_slot, freed_at, freed_how, "
    "trigger_at, version, created_at, updated_at"
)


def schedule_columns(schedule: StoredSchedule) -> tuple[float | None, str | None]:
    """(every, cron) column values for a schedule (an unreadable one: as stored)."""
    if isinstance(schedule, Unreadable):
        return schedule.every, schedule.cron
    if isinstance(schedule, Every):
        return float(schedule.seconds), None
    return None, schedule.expr


def schedule_from_columns(every: float | None, cron: str | None) -> Schedule:
    if every is not None:
        return Every(float(every))
    assert cron is not None, "a task row has neither every nor cron"
    return Cron(cron)


def stored_schedule(every: object, cron: object) -> StoredSchedule:
    """The schedule a task row holds; never raises: one that tenure's checks refuse (the
    row was written by hand) is :class:`~tenure.schedule.Unreadable`, so that every view
    can still show the row and no worker stops on it."""
    try:
        if every is not None:
            return Every(float(cast(Any, every)))
        if isinstance(cron, str):
            return Cron(cron)
        raise InvalidSchedule("the row has neither every nor cron")
    except (InvalidSchedule, TypeError, ValueError, OverflowError) as exc:
        shown_every = every if isinstance(every, float | int) and not isinstance(every, bool) else None
        return Unreadable(
            every=None if shown_every is None else float(shown_every),
            cron=cron if isinstance(cron, str) else None,
            why=cut(str(exc), ECHO_LIMIT),
        )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


#: How a column's value becomes a field of a value object, by the field's declared type
#: (an optional field's None stays None): the drivers differ, SQLite returning ints for
#: booleans and MySQL Decimals for numbers.
_CONVERT: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "bool": bool, "Outcome": Outcome}


def fields_reader(cls: type, columns: str) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """What reads a row of ``columns`` (a select list, in order) into fields of ``cls``:
    each column named as a field is converted to the field's declared type; any other is
    passed on as it is, for the caller to make a field of."""
    declared = {f.name: str(f.type) for f in fields(cls)}
    plan: list[tuple[str, Callable[[Any], Any] | None, bool]] = []
    for column in columns.split(","):
        name = column.strip()
        kind = declared.get(name, "")
        plan.append((name, _CONVERT.get(kind.removesuffix(" | None")), kind.endswith(" | None")))

    def read(row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: value if convert is None or (value is None and optional) else convert(value)
            for (name, convert, optional), value in zip(plan, row, strict=True)
        }

    return read


# Task rows are read by hand, not by a fields_reader: a claim reads thousands at once,
# between turns of the event loop, and the reader costs a third more per row.
def task_from_row(row: Sequence[Any]) -> Task:
    (kind, key, every, cron, params, enabled, owner, term, last_slot, freed_at, freed_how,
     trigger_at, version, created_at, updated_at) = row  # fmt: skip
    return Task(
        kind=kind,
        key=key,
        schedule=stored_schedule(every, cron),
        params=decode_stored_params(params),  # never raises: any stored text can be shown
        enabled=bool(enabled),
        owner=owner,
        term=int(term),
        last_slot=_opt_float(last_slot),
        freed_at=_opt_float(freed_at),
        freed_how=Freed(freed_how),
        trigger_at=_opt_float(trigger_at),
        version=int(version),
        created_at=float(created_at),
        updated_at=float(updated_at),
    )


def done_before(task: Task) -> float | None:
    """The latest time a previous owner of this (just claimed) task may have run a slot."""
    if task.freed_how is Freed.EXPIRED and task.freed_at is not None:
        return max(task.freed_at, task.last_slot or task.freed_at)
    return task.last_slot


def kind_from_row(row: Sequence[Any]) -> KindInfo:
    kind, every, cron, timeout = row
    schedule = None if every is None and cron is None else schedule_from_columns(every, cron)
    return KindInfo(kind=kind, schedule=schedule, timeout=_opt_float(timeout))


_worker_fields = fields_reader(
    WorkerInfo, "id, host, pid, started_at, heartbeat_at, expires_at, draining, tasks_held, kinds, waiting, oldest, cap"
)


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    read = _worker_fields(row)
    waiting, oldest, cap = read.pop("waiting"), read.pop("oldest"), read.pop("cap")
    load = None
    if waiting is not None and oldest is not None and cap is not None:
        load = WorkerLoad(waiting=int(waiting), oldest_waiting=float(oldest), concurrency=int(cap))
    return WorkerInfo(kinds=tuple(decode_worker_kinds(read.pop("kinds"))), load=load, **read)


def load_params(load: WorkerLoad | None) -> dict[str, Any]:
    """The ``renew_lease`` parameters that publish a worker's load (all NULL: none)."""
    if load is None:
        return {"runs_waiting": None, "oldest_waiting": None, "concurrency": None}
    return {"runs_waiting": load.waiting, "oldest_waiting": load.oldest_waiting, "concurrency": load.concurrency}


def encode_worker_kinds(kinds: Sequence[str]) -> str:
    """The ``kinds`` column of a membership row: a JSON array of names, sorted."""
    return json.dumps(sorted(set(kinds)))


def decode_worker_kinds(stored: str | None) -> list[str]:
    """The kinds a membership row publishes (none for a row from before schema version 4)."""
    if stored is None:
        return []
    return [str(k) for k in json.loads(stored)]


def cluster_view_from_rows(rows: Sequence[Sequence[Any]]) -> ClusterView:
    """A :class:`ClusterView` from the rows of the ``cluster_view`` query: one
    ``('changes', NULL, counter, NULL, NULL)``, one ``('kind', kind, enabled tasks, NULL,
    NULL)`` per kind with enabled tasks, one ``('worker', id, 0, kinds, started_at)`` per
    live, non-draining worker."""
    changes = 0
    by_kind: dict[str, int] = {}
    workers: dict[str, frozenset[str]] = {}
    newest: float | None = None
    for what, name, n, kinds, started_at in rows:
        if what == "changes":
            changes = int(n)
        elif what == "kind":
            by_kind[str(name)] = int(n)
        else:
            workers[str(name)] = frozenset(decode_worker_kinds(kinds))
            if started_at is not None and (newest is None or float(started_at) > newest):
                newest = float(started_at)
    return ClusterView(
        changes=changes,
        live_workers=sorted(workers),
        enabled_tasks=sum(by_kind.values()),
        worker_kinds=workers,
        enabled_by_kind=by_kind,
        newest_start=newest,
    )


class CountedTasks:
    """The enabled tasks' counts of the last ``cluster_view`` that counted them, with the
    change counter's version then (its value and a stamp the database gives each change),
    for a store whose ``cluster_view`` counts only when the version differs from the one
    passed (:meth:`args`). Every worker reads the view every poll; counting the enabled
    tasks each time made it O(tasks) per poll per worker (PostgreSQL 39-63 ms, MariaDB
    57 ms, at 100,000 tasks). A version without a stamp is never taken as counted."""

    def __init__(self) -> None:
        self._counted: tuple[int, str, list[Sequence[Any]]] | None = None

    def args(self) -> dict[str, Any]:
        """The version last counted, as the query's ``changes`` and ``stamp``."""
        counted = self._counted
        return {"changes": None, "stamp": None} if counted is None else {"changes": counted[0], "stamp": counted[1]}

    def view(self, rows: Sequence[Sequence[Any]]) -> ClusterView:
        """The view from a ``cluster_view`` query's rows, the counts kept ones if it did not
        count (the version is the one counted), else kept for the next."""
        head = next(r for r in rows if r[0] == "changes")
        stamp = head[1]
        version = (int(head[2]), str(stamp))
        counted = self._counted
        if counted is not None and version == counted[:2]:
            return cluster_view_from_rows([*rows, *counted[2]])
        self._counted = None if stamp is None else (*version, [r for r in rows if r[0] == "kind"])
        return cluster_view_from_rows(rows)


_run_fields = fields_reader(Run, "id, kind, key, worker, term, scheduled_at, started_at, ended_at, outcome, error")


def run_from_row(row: Sequence[Any]) -> Run:
    return Run(**_run_fields(row))


def merged_slots(slots: Sequence[SlotDone]) -> list[list[Any]]:
    """Slots as ``[kind, key, term, slot, clear_upto]`` rows, one per task and term, in key
    order (the order claims lock rows in): the latest slot of each, and the latest slot of a
    triggered run (or None), up to which trigger requests are answered. A batch naming a
    task twice (two runs of a short period in one flush) must advance it to the later
    slot, which a batch statement joining both rows would pick at random."""
    merged: dict[tuple[str, str, int], list[Any]] = {}
    for d in slots:
        entry = merged.setdefault((d.kind, d.key, d.term), [d.kind, d.key, d.term, d.slot, None])
        entry[3] = max(entry[3], d.slot)
        if d.triggered:
            entry[4] = d.slot if entry[4] is None else max(entry[4], d.slot)
    return [merged[k] for k in sorted(merged)]


def run_params(run: Run) -> dict[str, Any]:
    return {
        "kind": run.kind,
        "key": run.key,
        "worker": run.worker,
        "term": run.term,
        "scheduled_at": run.scheduled_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "outcome": run.outcome.value,
        "error": run.error,
    }
