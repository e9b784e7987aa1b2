"""Desired state inside a store: the plan of a sync, the same for every store.

A store reads the kind's task rows in its sync transaction, :func:`plan_sync` compares
them with the desired tasks, and the store applies the plan with one batch statement per
kind of change (:func:`batches` keeps each statement's payload bounded).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tenure.desired import DesiredTask, SyncResult
from tenure.store.rows import schedule_columns

#: Most bytes of keys and parameters one batch statement carries (MySQL's packets are
#: 16 MB by default on MariaDB; one statement per change kind whatever the size).
BATCH_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredTask:
    """What a sync compares of a stored task."""

    key: str
    every: float | None
    cron: str | None
    params: str
    enabled: bool


def stored_task(row: Sequence[Any]) -> StoredTask:
    """A row of ``key, every, cron, params, enabled``."""
    key, every, cron, params, enabled = row
    params_text = bytes(params).decode() if isinstance(params, bytes | bytearray | memoryview) else str(params)
    return StoredTask(
        key=key, every=None if every is None else float(every), cron=cron, params=params_text, enabled=bool(enabled)
    )


@dataclass(frozen=True)
class SyncPlan:
    """What a sync does: ``add`` and ``update`` carry the desired tasks (under the key the
    row is stored by), ``disable`` and ``remove`` the keys of absent tasks."""

    kind: str
    add: list[DesiredTask]
    update: list[DesiredTask]
    disable: list[str]
    remove: list[str]
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.add or self.update or self.disable or self.remove)

    def result(self, *, dry_run: bool) -> SyncResult:
        return SyncResult(
            kind=self.kind,
            added=tuple(d.key for d in self.add),
            updated=tuple(d.key for d in self.update),
            disabled=tuple(self.disable),
            removed=tuple(self.remove),
            unchanged=self.unchanged,
            dry_run=dry_run,
        )


def plan_sync(
    kind: str, stored: Iterable[StoredTask], desired: Sequence[DesiredTask], *, remove_missing: bool
) -> SyncPlan:
    """Compare the kind's stored tasks with the desired ones.

    A desired task finds its row by key; a row stored under another spelling of the same
    key (before keys were normalised to NFC) is that task too, and keeps its spelling. A
    row differs if its schedule, parameters (as stored text) or enabled flag differ.
    Absent rows are removed with ``remove_missing``, else disabled if they are enabled.
    Every list is in key order.
    """
    rows = {s.key: s for s in stored}
    other_spellings = {unicodedata.normalize("NFC", k): k for k in rows if not unicodedata.is_normalized("NFC", k)}
    add: list[DesiredTask] = []
    update: list[DesiredTask] = []
    unchanged = 0
    for d in desired:
        row = rows.pop(d.key, None)
        if row is None and d.key in other_spellings:
            row = rows.pop(other_spellings[d.key], None)
        if row is None:
            add.append(d)
        elif (
            (row.every, row.cron) != schedule_columns(d.schedule)
            or row.params != d.params_json
            or (row.enabled != d.enabled)
        ):
            update.append(DesiredTask(key=row.key, schedule=d.schedule, params_json=d.params_json, enabled=d.enabled))
        else:
            unchanged += 1
    absent = sorted(rows.values(), key=lambda s: s.key)
    if remove_missing:
        remove, disable = [s.key for s in absent], []
    else:
        remove, disable = [], [s.key for s in absent if s.enabled]
        unchanged += sum(not s.enabled for s in absent)
    return SyncPlan(
        kind=kind,
        add=sorted(add, key=lambda d: d.key),
        update=sorted(update, key=lambda d: d.key),
        disable=disable,
        remove=remove,
        unchanged=unchanged,
    )


def desired_columns(d: DesiredTask) -> tuple[str, float | None, str | None, str, bool]:
    """(key, every, cron, params, enabled): a desired task as the columns a store writes."""
    every, cron = schedule_columns(d.schedule)
    return d.key, every, cron, d.params_json, d.enabled


def batches(items: Sequence[T], size: Callable[[T], int]) -> Iterator[Sequence[T]]:
    """``items`` in consecutive batches of at most about :data:`BATCH_BYTES` (as ``size``
    measures an item), each holding at least one item; none if ``items`` is empty."""
    start, total = 0, 0
    for i, item in enumerate(items):
        n = size(item) + 16  # a little for the framing of each item
        if i > start and total + n > BATCH_BYTES:
            yield items[start:i]
            start, total = i, 0
        total += n
    if start < len(items):
        yield items[start:]


def task_size(d: DesiredTask) -> int:
    """Roughly how many bytes a desired task takes in a batch statement."""
    return len(d.key) + len(d.params_json) + 32
