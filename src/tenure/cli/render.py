"""How the ``tenure`` command prints: JSON for scripts, tables and lines for people.

Tables are laid out by rich: on a terminal they fit its width (the columns holding free
text fold); in a pipe or a file nothing is cut or folded and lines carry no trailing
blanks. Stored text (keys, errors) is always shown verbatim, never read as markup.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tenure.desired import CHANGES, SyncResult
from tenure.models import Pause, Run, Task, WorkerInfo
from tenure.schedule import Unreadable, next_slot
from tenure.snapshot import Roster, over_capacity

T = TypeVar("T")

#: Width tables are laid out at when the output is not a terminal: wide enough to cut nothing.
UNCUT_WIDTH = 10_000
#: Run errors are cut to their first line and this many characters in tables (--json has them whole).
ERROR_WIDTH = 60


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def show_listing(
    items: Sequence[T], what: str, *, as_json: bool, to_json: Callable[[T], object], table: Callable[[], Table]
) -> None:
    """A listing: with ``as_json`` a JSON array (``to_json`` of each item), else ``no <what>``
    for none, else the ``table``."""
    if as_json:
        print_json([to_json(item) for item in items])
    elif not items:
        print(f"no {what}")
    else:
        show(table())


def show(*items: str | Table) -> None:
    """Print lines (verbatim, no markup) and tables.

    On a terminal, tables fit its width; elsewhere (a pipe, a file) nothing is cut or
    folded, and lines carry no trailing blanks.
    """
    renderables = [Text(item) if isinstance(item, str) else item for item in items]
    if sys.stdout.isatty():
        console = Console(highlight=False)
        for renderable in renderables:
            console.print(renderable)
        return
    buffer = io.StringIO()
    console = Console(file=buffer, width=UNCUT_WIDTH, highlight=False, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    text = "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())
    encoding = sys.stdout.encoding or "utf-8"
    if not encoding.lower().replace("-", "").startswith("utf"):
        text = text.replace("─", "-").encode(encoding, "replace").decode(encoding)
    else:  # a lone surrogate in stored text (a run's error) must not end the command
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    sys.stdout.write(text)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: Sequence[str] = ()) -> Table:
    """A table: on a narrow terminal its ``wrap`` columns fold; the others stay whole."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        if column in wrap:
            t.add_column(column, overflow="fold", min_width=min(len(column), 10))
        else:
            t.add_column(column, no_wrap=True)
    for row in rows:
        # Text, not markup: keys and error messages are shown exactly as stored.
        t.add_row(*(Text(cell) for cell in row))
    return t


def fields_table(rows: Sequence[tuple[str, str]]) -> Table:
    """Name and value, one per line, no header: one object shown whole."""
    t = Table(box=box.SIMPLE, show_header=False, pad_edge=False, show_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for name, value in rows:
        t.add_row(name, Text(value))
    return t


# -- times ----------------------------------------------------------------------------------


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float) -> str:
    s = abs(seconds)
    if s < 10:
        text = f"{s:.1f}s"
    elif s < 120:
        text = f"{s:.0f}s"
    elif s < 7200:
        text = f"{s // 60:.0f}m{s % 60:02.0f}s"
    elif s < 172800:
        text = f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"
    else:
        text = f"{s // 86400:.0f}d{s % 86400 // 3600:02.0f}h"
    return text


def ago(now: float, t: float | None) -> str:
    if t is None:
        return "-"
    delta = now - t
    return f"{span(delta)} ago" if delta >= 0 else f"in {span(delta)}"


def when_ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{when(t)} UTC ({ago(now, t)})"


def pause_text(pause: Pause, now: float | None = None) -> str:
    """``kind dispatch since 2026-12-05 23:40:00 UTC (3m ago) by alice@host, cancelling``."""
    what = "every kind" if pause.kind is None else f"kind {pause.kind}"
    since = f"{when(pause.since)} UTC" if now is None else when_ago(pause.since, now)
    return f"{what} since {since} by {pause.by}" + (", cancelling runs" if pause.cancel else "")


# -- tasks, runs, workers -------------------------------------------------------------------


def upcoming_slot(task: Task, now: float) -> float | None:
    """The schedule's next slot after now (None while disabled)."""
    if not task.enabled or isinstance(task.schedule, Unreadable):
        return None
    return next_slot(task.schedule, task.kind, task.key, max(now, task.last_slot or now))


def owner_text(task: Task, roster: Roster) -> str:
    if task.owner is None:
        return "-"
    return task.owner if roster.owned(task) else f"{task.owner} (lease expired)"


def tasks_table(tasks: Sequence[Task], roster: Roster) -> Table:
    rows = [
        [
            t.kind,
            t.key,
            t.schedule.describe(),
            "yes" if t.enabled else "no",
            owner_text(t, roster),
            str(t.term),
            ago(roster.now, t.last_slot),
        ]
        for t in tasks
    ]
    columns = ["KIND", "KEY", "SCHEDULE", "ENABLED", "OWNER", "TERM", "LAST SLOT"]
    return table(columns, rows, wrap=("KIND", "KEY", "SCHEDULE", "OWNER"))


def task_fields(task: Task, roster: Roster) -> Table:
    now = roster.now
    return fields_table(
        [
            ("kind", task.kind),
            ("key", task.key),
            ("schedule", task.schedule.describe()),
            ("enabled", "yes" if task.enabled else "no"),
            ("owner", owner_text(task, roster)),
            ("term", str(task.term)),
            ("last slot", when_ago(task.last_slot, now)),
            ("next slot", when_ago(upcoming_slot(task, now), now)),
            ("triggered", ago(now, task.trigger_at) if task.trigger_at else "no"),
            ("params", json.dumps(task.params, sort_keys=True)),
            ("version", str(task.version)),
            ("created", f"{when(task.created_at)} UTC"),
            ("updated", f"{when(task.updated_at)} UTC"),
        ]
    )


def runs_table(runs: Sequence[Run], now: float) -> Table:
    return table(
        ["ID", "TASK", "WORKER", "TERM", "STARTED", "LATE", "TOOK", "OUTCOME", "ERROR"],
        [
            [
                str(r.id),
                f"{r.kind}/{r.key}",
                r.worker,
                str(r.term),
                ago(now, r.started_at),
                span(max(0.0, r.started_at - r.scheduled_at)),
                span(r.ended_at - r.started_at),
                r.outcome.value,
                first_line(r.error or "", ERROR_WIDTH),
            ]
            for r in runs
        ],
        wrap=("TASK", "WORKER", "ERROR"),
    )


def first_line(text: str, width: int) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > width or len(lines) > 1:
        return line[: width - 1] + "…"
    return line


def workers_table(workers: Sequence[WorkerInfo], now: float) -> Table:
    rows = []
    for w in workers:
        state = "expired" if w.expires_at <= now else "draining" if w.draining else "live"
        rows.append(
            [
                w.id,
                w.host,
                str(w.pid),
                state,
                span(now - w.started_at),
                span(w.expires_at - now) if w.expires_at > now else "-",
                str(w.tasks_held),
                ", ".join(w.kinds) or "-",
                load_text(w, now),
            ]
        )
    headers = ["ID", "HOST", "PID", "STATE", "AGE", "LEASE LEFT", "TASKS", "KINDS", "LOAD"]
    return table(headers, rows, wrap=("ID", "HOST", "KINDS", "LOAD"))


def load_text(w: WorkerInfo, now: float) -> str:
    """``over capacity: 340 waiting, oldest 2.1s (cap 100)``, ``ok``, or ``-`` (expired, or
    nothing published yet), as of the worker's last renewal."""
    if w.expires_at <= now or w.load is None:
        return "-"
    if not over_capacity(w, now):
        return "ok"
    load = w.load
    return f"over capacity: {load.waiting} waiting, oldest {span(load.oldest_waiting)} (cap {load.concurrency})"


def over_capacity_text(workers: Sequence[WorkerInfo], now: float) -> str | None:
    """``over capacity: w1 (340 waiting, oldest 2.1s), w2 (…)``; None if no live worker is."""
    listed = [
        f"{w.id} ({w.load.waiting} waiting, oldest {span(w.load.oldest_waiting)})"
        for w in workers
        if w.load is not None and over_capacity(w, now)
    ]
    return "over capacity: " + ", ".join(listed) if listed else None


def unrunnable_text(counts: dict[str, int]) -> str:
    """``unrunnable: 3 report, 1 billing (no live worker runs their kind)``."""
    listed = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return f"unrunnable: {listed} (no live worker runs their kind)"


def sync_lines(result: SyncResult) -> list[str]:
    """A sync in words: with ``dry_run``, each change it would make, then the counts."""
    verbs = {"added": "add", "updated": "update", "disabled": "disable", "removed": "remove"}
    counts = result.counts()
    if not result.dry_run:
        done = ", ".join(f"{counts[name]} {name}" for name in (*CHANGES, "unchanged"))
        return [f"synced kind {result.kind}: {done}"]
    lines = [f"would {verbs[name]} {result.kind}/{key}" for name in CHANGES for key in getattr(result, name)]
    would = ", ".join(f"{verbs[name]} {counts[name]}" for name in CHANGES)
    return [*lines, f"dry run of kind {result.kind}, nothing changed: would {would}; {result.unchanged} unchanged"]
