"""Schedules: when a task's runs are due. Pure functions, no I/O, no clock reads.

All times are seconds since the Unix epoch on the *database's* clock. Slots form a
fixed grid that every owner computes the same way, which is what lets a task keep its
period across owners without a write per run:

- ``Every(p)``: slots at ``phase + n * p``, where the phase is a stable hash of the task's
  kind and key, so ten thousand tasks every second spread over the second instead of
  all firing at its start.
- ``Cron(expr)``: the slots of a five-field cron expression, in UTC.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cronsim import CronSim, CronSimError

from tenure.errors import InvalidSchedule
from tenure.inputs import ECHO_LIMIT, cut, is_number, quote

#: Shortest period accepted; below this the per-run overhead dominates any work.
MIN_PERIOD = 0.01
#: Longest period accepted (a little over a year); longer ones want cron.
MAX_PERIOD = 366 * 86400.0


class Misfire(StrEnum):
    """What to do with slots missed while nobody could run the task (failover, overload).

    ``skip`` (default) runs the most recent missed slot once, then keeps the grid;
    ``catch_up`` runs every missed slot, one after another.
    """

    SKIP = "skip"
    CATCH_UP = "catch_up"


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed-rate schedule: one run every ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        s = self.seconds
        if not is_number(s):
            raise InvalidSchedule(f"period must be a number of seconds, got {quote(s)}")
        # Compared as given: an int of any size never goes through float() (which overflows).
        if not s > 0 or s == math.inf:  # NaN fails `s > 0`
            raise InvalidSchedule(f"period must be a positive number of seconds, got {quote(s)}")
        if s < MIN_PERIOD:
            raise InvalidSchedule(f"period of {quote(s)} seconds is shorter than the minimum, {MIN_PERIOD}")
        if s > MAX_PERIOD:
            raise InvalidSchedule(
                f"period of {quote(s)} seconds is longer than the maximum, {MAX_PERIOD:.0f}; use cron"
            )

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron schedule: five fields (minute hour day-of-month month day-of-week), UTC."""

    expr: str

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str):
            raise InvalidSchedule(f"cron expression must be a string, got {type(self.expr).__name__}")
        if not self.expr.strip():
            raise InvalidSchedule("cron expression is empty")
        if len(self.expr) > 200:
            raise InvalidSchedule("cron expression is longer than 200 characters")
        # One space between fields: a newline or a tab in a stored expression split the
        # rows of `tasks list`, and a sync of the same schedule written plainly saw a change.
        object.__setattr__(self, "expr", " ".join(self.expr.split()))
        if not (self.expr.isascii() and self.expr.isprintable()):
            raise InvalidSchedule(
                f"cron expression {quote(self.expr)} may hold only printable ASCII characters and spaces"
            )
        if len(self.expr.split()) != 5:
            raise InvalidSchedule(
                f"cron expression {quote(self.expr)} must have five fields (minute hour day-of-month month day-of-week)"
            )
        try:
            next(CronSim(self.expr, datetime(2000, 1, 1, tzinfo=UTC)))
        except (CronSimError, StopIteration, ValueError) as exc:
            raise InvalidSchedule(
                f"cron expression {quote(self.expr)} does not parse: {cut(str(exc), ECHO_LIMIT)}"
            ) from exc

    def describe(self) -> str:
        return f"cron {self.expr}"


Schedule = Every | Cron


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The schedule of a task row that tenure cannot read: columns written into the table
    by hand (a cron that does not parse, a period out of range), never by tenure, which
    checks every schedule it writes. Shown as stored, with why; never run: the worker
    that holds such a task leaves it alone until the row is repaired (added again, or
    synced) or removed."""

    every: float | None
    cron: str | None
    why: str

    def describe(self) -> str:
        stored = f"every {self.every!r}" if self.every is not None else f"cron {quote(self.cron)}"
        return f"unreadable ({stored}: {self.why})"


#: A task's schedule as its row holds it: one tenure can run, or one it cannot read.
StoredSchedule = Every | Cron | Unreadable


def make_schedule(*, every: float | None = None, cron: str | None = None) -> Schedule:
    """Build a schedule from exactly one of ``every`` (seconds) or ``cron`` (expression)."""
    if every is not None and cron is not None:
        raise InvalidSchedule("give either every= or cron=, not both")
    if every is not None:
        return Every(every)
    if cron is not None:
        return Cron(cron)
    raise InvalidSchedule("a schedule needs every= (seconds) or cron= (expression)")


def phase(kind: str, key: str, period: float) -> float:
    """The task's stable offset within its period, in ``[0, period)``."""
    h = zlib.crc32(f"{kind}\x00{key}".encode())
    return (h / 2**32) * period


def next_slot(schedule: Schedule, kind: str, key: str, after: float) -> float:
    """The first slot strictly later than ``after``."""
    if isinstance(schedule, Every):
        p = schedule.seconds
        ph = phase(kind, key, p)
        # Slots are always computed as ph + n * p (never as a neighbour +/- p, which can
        # differ in the last bit), so a slot fed back in is recognised as itself. The
        # division may round either way, so settle the index against that exact grid.
        n = math.floor((after - ph) / p) + 1
        while ph + n * p <= after:
            n += 1
        while ph + (n - 1) * p > after:
            n -= 1
        return ph + n * p
    start = datetime.fromtimestamp(after, UTC)
    for dt in CronSim(schedule.expr, start):
        ts = dt.timestamp()
        if ts > after:
            return ts
    raise InvalidSchedule(f"cron expression {schedule.expr!r} has no future slot")  # pragma: no cover


def latest_slot(schedule: Schedule, kind: str, key: str, at_or_before: float) -> float:
    """The last slot at or before ``at_or_before``."""
    if isinstance(schedule, Every):
        p = schedule.seconds
        ph = phase(kind, key, p)
        n = math.floor((at_or_before - ph) / p)  # settled against the exact grid, as above
        while ph + n * p > at_or_before:
            n -= 1
        while ph + (n + 1) * p <= at_or_before:
            n += 1
        return ph + n * p
    # CronSim walking backwards yields times strictly before its start, so start a second
    # later: a slot exactly at `at_or_before` is then found (cron slots are whole minutes).
    start = datetime.fromtimestamp(at_or_before + 1, UTC)
    for dt in CronSim(schedule.expr, start, reverse=True):
        ts = dt.timestamp()
        if ts <= at_or_before:
            return ts
    raise InvalidSchedule(f"cron expression {schedule.expr!r} has no past slot")  # pragma: no cover


def count_slots(schedule: Schedule, kind: str, key: str, first: float, last: float) -> int:
    """How many slots lie in ``[first, last]``, both slots of the schedule (0 if last < first)."""
    if last < first:
        return 0
    if isinstance(schedule, Every):
        return round((last - first) / schedule.seconds) + 1
    count, slot = 1, first
    while (slot := next_slot(schedule, kind, key, slot)) <= last:
        count += 1
    return count


def slot_before(schedule: Schedule, kind: str, key: str, slot: float) -> float:
    """The slot before ``slot`` (a slot of the schedule)."""
    # Half a period back for every=, a second back for cron (whole minutes): well clear of
    # the float noise of the grid, and never past the slot before.
    step = schedule.seconds / 2 if isinstance(schedule, Every) else 1.0
    return latest_slot(schedule, kind, key, slot - step)


def first_slot(
    schedule: Schedule,
    kind: str,
    key: str,
    *,
    now: float,
    done_before: float | None,
    misfire: Misfire,
) -> float:
    """The first slot a (new) owner should run.

    ``done_before`` is the latest time that may already have been run by somebody else:
    the last recorded slot, or the previous owner's lease expiry. Slots at or before it
    are never run again, which is what keeps a period from running twice across owners.
    Missed slots after it are run once (``skip``: only the latest) or all (``catch_up``).
    """
    if done_before is None:
        return next_slot(schedule, kind, key, now)
    first = next_slot(schedule, kind, key, done_before)
    if first > now or misfire is Misfire.CATCH_UP:
        return first
    return latest_slot(schedule, kind, key, now)
