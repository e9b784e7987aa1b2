"""Bad input to every admin operation of the App gets a typed error naming the problem,
and leaves everything already stored exactly as it was."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from reprlib import Repr
from typing import Any

import pytest

import tenure
from store_contract.dialect import raw_db
from tenure.errors import (
    InvalidInput,
    InvalidKey,
    InvalidKind,
    InvalidParams,
    InvalidSchedule,
    InvalidStoreURL,
    StoreUnavailable,
    TaskExists,
    TaskNotFound,
    UnknownKind,
)
from tenure.models import KindInfo, Task

Snapshot = tuple[list[Task], list[KindInfo], list[tenure.Run]]

_repr = Repr()
_repr.maxstring = _repr.maxother = 40
_repr.maxlevel = 3


def short(value: object) -> str:
    """A bounded repr of a bad input, for failure messages."""
    return _repr.repr(value)


@pytest.fixture
async def seeded(app: tenure.App) -> tenure.App:
    """The app with two tasks already stored, which no bad input may touch."""
    await app.add_task("dispatch", "existing", params={"zone": 1, "name": "Zürich"})
    await app.add_task("dispatch", "dormant", cron="*/5 * * * *", enabled=False)
    await app.trigger("dispatch", "existing")
    return app


async def snapshot(app: tenure.App) -> Snapshot:
    return await app.list_tasks(), await app.store.list_kinds(), await app.list_runs()


async def assert_refused(
    app: tenure.App,
    what: str,
    call: Callable[[], Awaitable[object]],
    error: type[Exception],
    *fragments: str,
) -> None:
    """``call`` raises exactly ``error`` whose message holds ``fragments``; nothing changed."""
    before = await snapshot(app)
    assert before[0], "compare with pre-existing tasks, or 'unchanged' proves little"
    try:
        await call()
    except Exception as exc:
        # Not pytest.raises: a failure here must say which of many bad inputs it was.
        got = f"{what}: expected {error.__name__}, got {type(exc).__name__}: {exc}"
        assert type(exc) is error, got  # noqa: PT017
        message = str(exc)
        for fragment in fragments:
            assert fragment in message, f"{what}: {fragment!r} not in {message!r}"
    else:
        pytest.fail(f"{what}: accepted, expected {error.__name__}")
    assert await snapshot(app) == before, f"{what}: stored data changed"


# -- what is bad -------------------------------------------------------------------------

BAD_KINDS: list[tuple[Any, str]] = [
    ("", "''"),
    ("1dispatch", "'1dispatch'"),
    ("-dispatch", "'-dispatch'"),
    ("dis patch", "'dis patch'"),
    ("dispatch/x", "'dispatch/x'"),
    ("dispatch;drop", "'dispatch;drop'"),
    ("dispatch\n", "'dispatch\\n'"),
    ("dispätch", "'dispätch'"),
    ("d" * 65, "1-64 characters"),
    (5, "must be a string"),
    (None, "must be a string"),
]

BAD_KEYS: list[tuple[Any, str]] = [
    ("", "empty"),
    ("k" * 201, "limit is 200"),
    ("a\x00b", "control"),
    ("a\nb", "control"),
    ("a\rb", "control"),
    ("tab\there", "control"),
    ("\x1b[31mred", "control"),
    ("del\x7f", "control"),
    ("line\u2028sep", "control"),
    ("para\u2029sep", "control"),
    ("lone\ud800surrogate", "control"),
    ("private\ue000use", "control"),
    ("right\u202eto-left override", "invisible"),
    ("zero\u200bwidth", "invisible"),
    (" leading", "whitespace"),
    ("trailing ", "whitespace"),
    ("\u00a0nbsp", "whitespace"),
    ("ideographic\u3000", "whitespace"),
    (5, "must be a string"),
    (None, "must be a string"),
    (b"bytes", "must be a string"),
]

BAD_EVERY: list[Any] = [0, 0.0, -0.0, -1, -5.0, math.nan, math.inf, -math.inf, True, False, "5", 0.001, 1e12]

BAD_CRON: list[tuple[Any, str]] = [
    ("", "empty"),
    ("   ", "empty"),
    ("* * * *", "five fields"),
    ("* * * * * *", "five fields"),
    ("@hourly", "five fields"),
    ("a b c d e", "does not parse"),
    ("61 * * * *", "does not parse"),
    ("* 24 * * *", "does not parse"),
    ("0 0 30 2 *", "does not parse"),
    ("*/0 * * * *", "does not parse"),
    ("* * * * " + "1," * 100 + "1", "longer than 200"),
    (5, "must be a string"),
]

DEEP: dict[str, Any] = {}
_level = DEEP
for _ in range(100_000):
    _level["x"] = {}
    _level = _level["x"]

BAD_PARAMS: list[tuple[Any, str]] = [
    ({"blob": "x" * (64 * 1024)}, "limit is 65536"),
    ('{"blob": "' + "x" * (64 * 1024) + '"}', "limit is 65536"),
    ('{"blob": "' + "x" * (300 * 1024) + '"}', "limit of 65536"),
    ("{zone: 1}", "not valid JSON"),
    ("{'zone': 1}", "not valid JSON"),
    ('{"zone": 1', "not valid JSON"),
    ("", "not valid JSON"),
    ('{"a": NaN}', "NaN"),
    ('{"a": Infinity}', "Infinity"),
    ('{"a": -Infinity}', "Infinity"),
    ("[1, 2]", "JSON object"),
    ('"text"', "JSON object"),
    ("42", "JSON object"),
    ("null", "JSON object"),
    ("[" * 100_000, "not valid JSON"),
    ([1, 2], "JSON object"),
    ([("zone", 1)], "JSON object"),
    (42, "JSON object"),
    ({"a": math.nan}, "JSON"),
    ({"a": math.inf}, "JSON"),
    ({"a": {1, 2}}, "JSON"),
    ({"a": object()}, "JSON"),
    (DEEP, "JSON"),
]


# -- add_task ----------------------------------------------------------------------------


async def test_add_task_unknown_kind(seeded: tenure.App) -> None:
    await assert_refused(
        seeded, "kind billing", lambda: seeded.add_task("billing", "x"), UnknownKind, "'billing'", "dispatch"
    )
    await assert_refused(
        seeded,
        "kind billing with a schedule",
        lambda: seeded.add_task("billing", "x", every=5.0),
        UnknownKind,
        "unknown kind 'billing'",
    )


async def test_add_task_malformed_kind(seeded: tenure.App) -> None:
    for kind, fragment in BAD_KINDS:
        await assert_refused(
            seeded, f"kind {kind!r}", partial(seeded.add_task, kind, "x", every=5.0), InvalidKind, fragment
        )


async def test_add_task_bad_key(seeded: tenure.App) -> None:
    for key, fragment in BAD_KEYS:
        await assert_refused(
            seeded, f"key {key!r}", partial(seeded.add_task, "dispatch", key), InvalidKey, "key", fragment
        )


async def test_add_task_bad_interval(seeded: tenure.App) -> None:
    for every in BAD_EVERY:
        await assert_refused(
            seeded,
            f"every={every!r}",
            partial(seeded.add_task, "dispatch", "x", every=every),
            InvalidSchedule,
            "period",
        )


async def test_add_task_bad_cron(seeded: tenure.App) -> None:
    for cron, fragment in BAD_CRON:
        await assert_refused(
            seeded,
            f"cron={cron!r}",
            partial(seeded.add_task, "dispatch", "x", cron=cron),
            InvalidSchedule,
            "cron",
            fragment,
        )


async def test_add_task_both_every_and_cron(seeded: tenure.App) -> None:
    await assert_refused(
        seeded,
        "every and cron",
        lambda: seeded.add_task("dispatch", "x", every=5.0, cron="* * * * *"),
        InvalidSchedule,
        "not both",
    )


async def test_add_task_no_schedule_and_no_default(seeded: tenure.App) -> None:
    @seeded.task("adhoc")
    def adhoc(ctx: tenure.Context) -> None:
        raise AssertionError("not run here")

    await assert_refused(
        seeded,
        "no schedule",
        lambda: seeded.add_task("adhoc", "x"),
        InvalidSchedule,
        "'adhoc'",
        "no default schedule",
    )


async def test_add_task_bad_params(seeded: tenure.App) -> None:
    for params, fragment in BAD_PARAMS:
        await assert_refused(
            seeded,
            f"params {short(params)}",
            partial(seeded.add_task, "dispatch", "x", params=params),
            InvalidParams,
            "params",
            fragment,
        )


async def test_params_limit_follows_settings(store_url: str) -> None:
    app = tenure.App(store_url, settings=tenure.Settings(max_params_bytes=64))
    app.task("dispatch", every=5.0)(_handler)
    await app.open(migrate=True)
    try:
        await app.add_task("dispatch", "small", params={"a": "x" * 40})
        await assert_refused(
            app,
            "params of 68 bytes",
            lambda: app.add_task("dispatch", "big", params={"a": "x" * 60}),
            InvalidParams,
            "limit is 64",
        )
        assert [t.key for t in await app.list_tasks()] == ["small"]
    finally:
        await app.close()


async def test_add_task_enabled_not_a_bool(seeded: tenure.App) -> None:
    bad_enabled: list[Any] = [1, 0, "yes", None]
    for enabled in bad_enabled:
        await assert_refused(
            seeded,
            f"enabled={enabled!r}",
            partial(seeded.add_task, "dispatch", "x", enabled=enabled),
            InvalidInput,
            "enabled",
        )


async def test_add_existing_task(seeded: tenure.App) -> None:
    await assert_refused(
        seeded,
        "existing task",
        lambda: seeded.add_task("dispatch", "existing", every=1.0, params={"zone": 2}),
        TaskExists,
        "dispatch/existing",
    )


# -- operations on one task --------------------------------------------------------------


@pytest.mark.parametrize("op", ["get_task", "enable", "disable", "trigger", "remove"])
async def test_one_task_ops_bad_input(seeded: tenure.App, op: str) -> None:
    method: Callable[[Any, Any], Awaitable[object]] = getattr(seeded, op)

    def call(kind: Any, key: Any) -> Callable[[], Awaitable[object]]:
        return lambda: method(kind, key)

    for kind, fragment in BAD_KINDS:
        await assert_refused(seeded, f"{op} kind {kind!r}", call(kind, "existing"), InvalidKind, fragment)
    for key, fragment in BAD_KEYS:
        await assert_refused(seeded, f"{op} key {key!r}", call("dispatch", key), InvalidKey, fragment)
    for kind, key in [("billing", "existing"), ("dispatch", "madrid"), ("dispatch", "Existing")]:
        # Unknown kinds and keys; keys are exact (no case folding).
        await assert_refused(seeded, f"{op} {kind}/{key}", call(kind, key), TaskNotFound, f"{kind}/{key}")


# -- listing -----------------------------------------------------------------------------


async def test_list_tasks_malformed_kind(seeded: tenure.App) -> None:
    for kind, fragment in BAD_KINDS[:-1]:  # None means "every kind" here
        await assert_refused(seeded, f"kind {kind!r}", partial(seeded.list_tasks, kind=kind), InvalidKind, fragment)


async def test_list_tasks_unknown_kind_is_empty(seeded: tenure.App) -> None:
    # A well-formed kind that has no tasks is not an error for a filter: nothing matches.
    assert await seeded.list_tasks(kind="billing") == []
    assert [t.key for t in await seeded.list_tasks(kind="dispatch")] == ["dormant", "existing"]


async def test_list_runs_bad_input(seeded: tenure.App) -> None:
    for kind, fragment in BAD_KINDS[:-1]:  # None means "every kind" here
        await assert_refused(seeded, f"kind {kind!r}", partial(seeded.list_runs, kind=kind), InvalidKind, fragment)
    for key, fragment in BAD_KEYS[:-2]:  # so does None for keys (and bytes is like None below)
        await assert_refused(seeded, f"key {key!r}", partial(seeded.list_runs, key=key), InvalidKey, fragment)
    bad_limits: list[Any] = [0, -1, 10_001, True, 1.5, "10", None]
    for limit in bad_limits:
        await assert_refused(seeded, f"limit {limit!r}", partial(seeded.list_runs, limit=limit), InvalidInput, "limit")
    for outcome in ("meh", "OK", "", "ok "):
        await assert_refused(
            seeded,
            f"outcome {outcome!r}",
            partial(seeded.list_runs, outcome=outcome),
            InvalidInput,
            "outcome",
            "lease_lost",
        )


# -- the @app.task decorator -------------------------------------------------------------


async def _handler(ctx: tenure.Context) -> None:
    raise AssertionError("not run here")


DECORATOR_CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    *[({"kind": kind}, InvalidKind, fragment) for kind, fragment in BAD_KINDS],
    ({"kind": "dispatch"}, InvalidInput, "already registered"),
    *[({"kind": "new", "every": every}, InvalidSchedule, "period") for every in BAD_EVERY],
    *[({"kind": "new", "cron": cron}, InvalidSchedule, fragment) for cron, fragment in BAD_CRON],
    ({"kind": "new", "every": 5.0, "cron": "* * * * *"}, InvalidSchedule, "not both"),
    *[
        ({"kind": "new", "every": 5.0, "timeout": t}, InvalidSchedule, "timeout")
        for t in (0, -1, math.nan, math.inf, True, "4")
    ],
    ({"kind": "new", "every": 5.0, "misfire": "sometimes"}, InvalidSchedule, "misfire"),
    ({"kind": "new", "every": 5.0, "misfire": None}, InvalidSchedule, "misfire"),
]


async def test_task_decorator_bad_input(seeded: tenure.App) -> None:
    kinds_before = seeded.kinds
    for kwargs, error, fragment in DECORATOR_CASES:
        options = dict(kwargs)
        kind = options.pop("kind")

        async def register() -> None:
            seeded.task(kind, **options)(_handler)  # noqa: B023 - awaited within this iteration

        await assert_refused(seeded, f"@app.task({kwargs!r})", register, error, fragment)
        assert seeded.kinds == kinds_before
    assert list(seeded.kinds) == ["dispatch"]


async def test_task_decorator_refuses_a_non_callable(seeded: tenure.App) -> None:
    decorate = seeded.task("new", every=5.0)
    bad: Any = 42

    async def register() -> None:
        decorate(bad)

    await assert_refused(seeded, "handler 42", register, InvalidInput, "'new'", "not callable")
    assert list(seeded.kinds) == ["dispatch"]


# -- store URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nope://somewhere", "unknown scheme"),
        ("tenure.db", "unknown scheme"),
        ("sqlite://host/tenure.db", "host"),
        ("sqlite:///:memory:", "memory"),
        ("sqlite:///x.db?bogus=1", "bogus"),
        ("sqlite:///x.db?busy_timeout=soon", "not a number"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
        ("sqlite:///x.db?pool=0", "out of range"),
        ("http://[::1", "does not parse"),
    ],
)
def test_bad_store_url(url: str, fragment: str) -> None:
    with pytest.raises(InvalidStoreURL) as info:
        tenure.App(url)
    assert fragment in str(info.value)


async def test_store_that_cannot_open(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    app = tenure.App(f"sqlite:///{missing}/tenure.db")
    try:
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await app.add_task("dispatch", "x", every=5.0)
    finally:
        await app.close()
    assert not missing.exists()


# -- odd but valid keys ------------------------------------------------------------------

ODD_KEYS = [
    "L'Aquila",
    "x'); DROP TABLE tenure_tasks; --",
    'Robert"); DROP TABLE tenure_runs;--',
    "1' OR '1'='1",
    "%s %(key)s ? :key $1",
    "back\\slash\\",
    "'; DELETE FROM tenure_workers; SELECT '",
    "Frankfurt am Main",
    "São Paulo / Brasil",
    "東京",
    "🚚 depot",
    "k" * 200,
]


async def test_odd_keys_are_valid_and_stored_verbatim(seeded: tenure.App, store_url: str) -> None:
    before = await seeded.list_tasks()
    for i, key in enumerate(ODD_KEYS):
        task = await seeded.add_task("dispatch", key, params={"i": i, "name": key})
        assert task.key == key
    for i, key in enumerate(ODD_KEYS):
        task = await seeded.get_task("dispatch", key)
        assert (task.key, task.params) == (key, {"i": i, "name": key})
        assert (await seeded.disable("dispatch", key)).enabled is False
        assert (await seeded.enable("dispatch", key)).enabled is True
        assert (await seeded.trigger("dispatch", key)).trigger_at is not None
        assert await seeded.list_runs(kind="dispatch", key=key) == []
    listed = await seeded.list_tasks()
    assert sorted(t.key for t in listed) == sorted([*ODD_KEYS, "existing", "dormant"])
    # The tables all survived, with the rows that were there before.
    assert [t for t in listed if t.key in ("existing", "dormant")] == before
    assert [k.kind for k in await seeded.store.list_kinds()] == ["dispatch"]
    raw = raw_db(store_url)
    assert raw.count_rows("tenure_tasks") == len(ODD_KEYS) + 2
    assert raw.count_rows("tenure_runs") == 0
    assert raw.count_rows("tenure_workers") == 0
    for key in ODD_KEYS:
        await seeded.remove("dispatch", key)
    assert await seeded.list_tasks() == before
