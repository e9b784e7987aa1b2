"""Schedules: validation, the slot grid, and where a new owner starts."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tenure.errors import InvalidSchedule
from tenure.schedule import (
    MAX_PERIOD,
    MIN_PERIOD,
    Cron,
    Every,
    Misfire,
    Schedule,
    first_slot,
    latest_slot,
    make_schedule,
    next_slot,
    phase,
)

#: Around now, where float spacing is about 2.4e-7 s: rounding matters at this scale.
T0 = 1_700_000_000.0
PERIODS = [MIN_PERIOD, 0.03, 0.1, 0.3, 0.7, 1.0, 5.0, 7.3, 60.0, 3600.0, 86400.0]


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [MIN_PERIOD, 0.5, 1, 5, 5.0, 3600, MAX_PERIOD])
def test_every_accepts_positive_periods(seconds: float) -> None:
    assert Every(seconds).seconds == seconds


@pytest.mark.parametrize(
    ("seconds", "fragment"),
    [
        (0, "positive"),
        (0.0, "positive"),
        (-0.0, "positive"),
        (-1, "positive"),
        (math.nan, "positive"),
        (math.inf, "positive"),
        (-math.inf, "positive"),
        (True, "number"),
        (False, "number"),
        ("5", "number"),
        (None, "number"),
        ([5], "number"),
        (MIN_PERIOD / 2, "minimum"),
        (MAX_PERIOD * 2, "of 63244800.0 seconds is longer than the maximum"),
        (10**400, "of a whole number of about 401 digits seconds is longer"),
    ],
)
def test_every_refuses_bad_periods(seconds: Any, fragment: str) -> None:
    with pytest.raises(InvalidSchedule, match=fragment):
        Every(seconds)


@pytest.mark.parametrize("expr", ["* * * * *", "*/5 * * * *", "0 6 * * 1-5", "0 0 1 1 *", "0 0 29 2 *", "30 6 * * MON"])
def test_cron_accepts_five_fields(expr: str) -> None:
    assert Cron(expr).expr == expr


@pytest.mark.parametrize("expr", ["0 6\n* * *", "0\t6 * * *", "0  6 * *\v*", "0\u30006 * * *", " 0 6 * * * "])
def test_cron_keeps_one_space_between_fields(expr: str) -> None:
    """A newline, a tab or an ideographic space between fields was stored as given: it
    split the rows of ``tasks list``, and a sync of the schedule written plainly saw a
    change."""
    assert Cron(expr) == Cron("0 6 * * *")


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 6 * * MON\u200b", "printable ASCII"),
        ("0 6 * * ＭＯＮ", "printable ASCII"),
        ("0 6 * * \x00", "printable ASCII"),
        ("", "empty"),
        ("  \t ", "empty"),
        ("* * * *", "five fields"),
        ("* * * * * *", "five fields"),
        ("@daily", "five fields"),
        ("a b c d e", "does not parse"),
        ("60 * * * *", "does not parse"),
        ("* 24 * * *", "does not parse"),
        ("* * 0 * *", "does not parse"),
        ("* * * 13 *", "does not parse"),
        ("* * * * 8", "does not parse"),
        ("0 0 30 2 *", "does not parse"),  # never happens
        ("*/0 * * * *", "does not parse"),
        ("1-0 * * * *", "does not parse"),
        ("0 0 * * * " + "0," * 100, "longer than 200"),
        (5, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_cron_refuses_bad_expressions(expr: Any, fragment: str) -> None:
    with pytest.raises(InvalidSchedule, match=fragment):
        Cron(expr)


def test_describe() -> None:
    assert Every(5.0).describe() == "every 5s"
    assert Every(0.25).describe() == "every 0.25s"
    assert Cron("0 6 * * 1").describe() == "cron 0 6 * * 1"


def test_make_schedule() -> None:
    assert make_schedule(every=5.0) == Every(5.0)
    assert make_schedule(cron="* * * * *") == Cron("* * * * *")
    with pytest.raises(InvalidSchedule, match="not both"):
        make_schedule(every=5.0, cron="* * * * *")
    with pytest.raises(InvalidSchedule, match="every="):
        make_schedule()
    with pytest.raises(InvalidSchedule, match="positive"):
        make_schedule(every=0)
    with pytest.raises(InvalidSchedule, match="five fields"):
        make_schedule(cron="* *")


# -- phase -------------------------------------------------------------------------------


def test_phase_is_in_range_and_stable() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        p = rng.choice(PERIODS)
        key = f"city-{rng.randrange(10**6)}"
        ph = phase("dispatch", key, p)
        assert 0 <= ph < p
        assert phase("dispatch", key, p) == ph


def test_phase_does_not_depend_on_the_process() -> None:
    # Every worker, in every process and version, must compute the same grid: the value
    # comes from a fixed hash (crc32), not from Python's per-process hash().
    assert phase("dispatch", "barcelona", 1.0) == pytest.approx(0.5575705640949309)
    assert phase("dispatch", "barcelona", 10.0) == pytest.approx(5.575705640949309)


def test_phase_spreads_tasks_and_separates_kind_from_key() -> None:
    phases = [phase("dispatch", f"city-{i}", 1.0) for i in range(1000)]
    buckets = [0] * 10
    for ph in phases:
        buckets[int(ph * 10)] += 1
    assert min(buckets) > 50  # ~100 each if spread; all at 0 if not
    assert phase("ab", "c", 1.0) != phase("a", "bc", 1.0)
    assert phase("dispatch", "x", 1.0) != phase("billing", "x", 1.0)


# -- next_slot and latest_slot on the Every grid -----------------------------------------


def _on_grid(slot: float, kind: str, key: str, p: float) -> bool:
    n = (slot - phase(kind, key, p)) / p
    return abs(n - round(n)) < 1e-6 * max(1.0, 1 / p) + 1e-9 * abs(n)


def _random_points(seed: int, count: int) -> Iterator[tuple[float, str, float]]:
    """``count`` seeded (period, key, time) triples: a period of PERIODS, keys k0, k1, …, a
    time within about 116 days after T0."""
    rng = random.Random(seed)
    for i in range(count):
        p = rng.choice(PERIODS)
        yield p, f"k{i}", T0 + rng.random() * 1e7


def test_every_next_slot_is_strictly_after_and_within_one_period() -> None:
    for p, key, after in _random_points(11, 5000):
        slot = next_slot(Every(p), "dispatch", key, after)
        assert after < slot <= after + p + 1e-6
        assert _on_grid(slot, "dispatch", key, p)


def test_every_latest_slot_is_at_or_before_and_within_one_period() -> None:
    for p, key, at in _random_points(12, 5000):
        slot = latest_slot(Every(p), "dispatch", key, at)
        assert at - p - 1e-6 < slot <= at
        assert _on_grid(slot, "dispatch", key, p)
        # Nothing on the grid lies between them.
        assert next_slot(Every(p), "dispatch", key, slot) > at


def test_every_slots_fed_back_are_recognised_exactly() -> None:
    # A slot handed back (as last_slot, or the slot just run) must be that very slot: the
    # next one is a whole period later and the latest at-or-before it is itself. Float
    # rounding once made next_slot(slot) return the same slot one ulp later (a double run).
    for p, key, at in _random_points(13, 20000):
        E = Every(p)
        slot = next_slot(E, "dispatch", key, at)
        for probe in (slot, math.nextafter(slot, math.inf)):
            following = next_slot(E, "dispatch", key, probe)
            assert following - probe > p / 2, (p, key, probe, following)
        assert latest_slot(E, "dispatch", key, slot) == slot
        assert latest_slot(E, "dispatch", key, math.nextafter(slot, 0)) < slot - p / 2
        assert next_slot(E, "dispatch", key, math.nextafter(slot, 0)) == slot
        earlier = latest_slot(E, "dispatch", key, math.nextafter(slot, 0))
        assert next_slot(E, "dispatch", key, earlier) == slot


def test_every_successive_slots_are_one_period_apart() -> None:
    for p in PERIODS:
        E = Every(p)
        slot = next_slot(E, "dispatch", "barcelona", T0)
        for _ in range(200):
            following = next_slot(E, "dispatch", "barcelona", slot)
            assert following - slot == pytest.approx(p, abs=1e-6)
            slot = following


def test_every_grid_is_shared_by_all_owners() -> None:
    # Two owners computing from different moments land on the same slots.
    E = Every(5.0)
    a = next_slot(E, "dispatch", "barcelona", T0)
    b = next_slot(E, "dispatch", "barcelona", T0 - 4.9)
    assert a in (b, next_slot(E, "dispatch", "barcelona", b))
    assert latest_slot(E, "dispatch", "barcelona", a + 4.99) == a


# -- next_slot and latest_slot on cron ---------------------------------------------------


def test_cron_next_slot_strictly_after() -> None:
    every_minute = Cron("* * * * *")
    minute = ts(2024, 3, 1, 12, 30)
    assert next_slot(every_minute, "k", "x", minute) == minute + 60
    assert next_slot(every_minute, "k", "x", minute - 0.001) == minute
    assert next_slot(every_minute, "k", "x", minute + 0.5) == minute + 60
    hourly = Cron("0 * * * *")
    assert next_slot(hourly, "k", "x", minute) == ts(2024, 3, 1, 13, 0)
    # Across a year, and to the next leap day.
    assert next_slot(Cron("0 0 1 1 *"), "k", "x", ts(2024, 12, 31, 23, 59)) == ts(2025, 1, 1)
    assert next_slot(Cron("0 0 29 2 *"), "k", "x", ts(2025, 1, 1)) == ts(2028, 2, 29)


def test_cron_latest_slot_at_or_before() -> None:
    every_minute = Cron("* * * * *")
    minute = ts(2024, 3, 1, 12, 30)
    assert latest_slot(every_minute, "k", "x", minute) == minute  # a slot is at-or-before itself
    assert latest_slot(every_minute, "k", "x", minute + 59.9) == minute
    assert latest_slot(every_minute, "k", "x", minute - 0.001) == minute - 60
    weekdays = Cron("0 6 * * 1-5")
    saturday_noon = ts(2024, 3, 2, 12, 0)
    assert latest_slot(weekdays, "k", "x", saturday_noon) == ts(2024, 3, 1, 6, 0)
    assert latest_slot(weekdays, "k", "x", ts(2024, 3, 1, 6, 0)) == ts(2024, 3, 1, 6, 0)


def test_cron_slots_round_trip() -> None:
    rng = random.Random(5)
    for expr in ("* * * * *", "*/7 * * * *", "15 */3 * * *", "0 6 * * 1-5"):
        cron = Cron(expr)
        for _ in range(50):
            t = T0 + rng.random() * 1e7
            slot = next_slot(cron, "k", "x", t)
            assert slot > t
            assert latest_slot(cron, "k", "x", slot) == slot
            assert latest_slot(cron, "k", "x", t) <= t < slot
            assert next_slot(cron, "k", "x", latest_slot(cron, "k", "x", t)) == slot
            assert next_slot(cron, "k", "x", slot) > slot


# -- first_slot --------------------------------------------------------------------------

SCHEDULES: list[Schedule] = [Every(5.0), Every(0.3), Every(3600.0), Cron("* * * * *"), Cron("*/15 * * * *")]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe())
@pytest.mark.parametrize("misfire", list(Misfire))
def test_first_slot_without_history_is_the_next_slot(schedule: Schedule, misfire: Misfire) -> None:
    now = T0 + 12.345
    first = first_slot(schedule, "dispatch", "barcelona", now=now, done_before=None, misfire=misfire)
    assert first == next_slot(schedule, "dispatch", "barcelona", now)
    assert first > now


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe())
@pytest.mark.parametrize("misfire", list(Misfire))
def test_first_slot_continues_after_a_recent_slot(schedule: Schedule, misfire: Misfire) -> None:
    # The previous owner ran the latest slot: the new owner waits for the next one.
    now = T0 + 12.345
    last = latest_slot(schedule, "dispatch", "barcelona", now)
    first = first_slot(schedule, "dispatch", "barcelona", now=now, done_before=last, misfire=misfire)
    assert first == next_slot(schedule, "dispatch", "barcelona", now)
    assert first > now


#: What the first slot after missed slots is, by misfire policy (from the schedule, now and
#: the end of the last run): skip runs only the latest missed slot, catch-up starts at the
#: first missed one.
AFTER_MISSED: list[tuple[Misfire, Callable[[Schedule, float, float], float]]] = [
    (Misfire.SKIP, lambda schedule, now, done_before: latest_slot(schedule, "dispatch", "barcelona", now)),
    (Misfire.CATCH_UP, lambda schedule, now, done_before: next_slot(schedule, "dispatch", "barcelona", done_before)),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe())
@pytest.mark.parametrize(("misfire", "expected"), AFTER_MISSED, ids=[m.value for m, _ in AFTER_MISSED])
def test_first_slot_after_missed_slots_follows_the_misfire_policy(
    schedule: Schedule, misfire: Misfire, expected: Callable[[Schedule, float, float], float]
) -> None:
    now = T0 + 12.345
    long_ago = now - 10 * 3600 - 17
    first = first_slot(schedule, "dispatch", "barcelona", now=now, done_before=long_ago, misfire=misfire)
    assert first == expected(schedule, now, long_ago)
    assert long_ago < first <= now


@pytest.mark.parametrize("misfire", list(Misfire))
def test_first_slot_never_reruns_a_slot_at_or_before_done_before(misfire: Misfire) -> None:
    rng = random.Random(21)
    for i in range(3000):
        schedule: Schedule = Every(rng.choice(PERIODS)) if i % 10 else Cron("*/5 * * * *")
        key = f"k{i}"
        now = T0 + rng.random() * 1e6
        # A lease expiry (anywhere), or a slot the previous owner ran (exactly on the grid).
        done = now - rng.random() * 4 * 3600
        if i % 2:
            done = latest_slot(schedule, "dispatch", key, done)
        first = first_slot(schedule, "dispatch", key, now=now, done_before=done, misfire=misfire)
        assert first > done
        assert first == next_slot(schedule, "dispatch", key, done) or (
            misfire is Misfire.SKIP and first == latest_slot(schedule, "dispatch", key, now)
        )
        if first <= now:  # a missed slot runs now, and it is one that was really missed
            assert next_slot(schedule, "dispatch", key, done) <= first


def test_first_slot_when_now_is_exactly_the_last_run_slot() -> None:
    E = Every(5.0)
    slot = next_slot(E, "dispatch", "barcelona", T0)
    for misfire in Misfire:
        first = first_slot(E, "dispatch", "barcelona", now=slot, done_before=slot, misfire=misfire)
        assert first == next_slot(E, "dispatch", "barcelona", slot)
        assert first - slot == pytest.approx(5.0)


def test_first_slot_after_an_expired_lease() -> None:
    # done_before is the dead owner's lease expiry, off the grid: slots up to it may have
    # run; the first one after it is due.
    E = Every(5.0)
    s0 = next_slot(E, "dispatch", "barcelona", T0)
    expiry = s0 + 1.0  # s0 may have run before the owner died
    now = s0 + 3.0
    first = first_slot(E, "dispatch", "barcelona", now=now, done_before=expiry, misfire=Misfire.SKIP)
    assert first == pytest.approx(s0 + 5.0)
    # Taking over much later: with skip only the latest missed slot, with catch_up all of them.
    later = s0 + 31.0
    assert first_slot(E, "dispatch", "barcelona", now=later, done_before=expiry, misfire=Misfire.SKIP) == (
        pytest.approx(s0 + 30.0)
    )
    assert first_slot(E, "dispatch", "barcelona", now=later, done_before=expiry, misfire=Misfire.CATCH_UP) == (
        pytest.approx(s0 + 5.0)
    )
