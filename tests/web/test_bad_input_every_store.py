"""Bad input over HTTP on every store (issue 16): a JSON 400 naming the problem, the store
unchanged, and whatever a task row holds can be read back in every view (never a 500)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import tenure
from support.rawdb import raw_db
from support.sql import MARK
from tenure.models import STORED, UNREADABLE, Outcome, Run
from tenure.web import create_app

from .test_api_reads import assert_error, task_path

TOKEN = "s3cret-token-for-tests"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Every view that lists or counts tasks (the failovers one needs runs to show an event).
VIEWS = ["/api/tasks", "/api/status", "/api/failovers", "/api/runs", "/api/workers", "/metrics"]


@pytest.fixture
async def http(app: tenure.App) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the HTTP interface over ``app``'s store; a 500 is an answer, not an exception."""
    asgi = create_app(app, tenure.Settings(admin_token=TOKEN))
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def snapshot(app: tenure.App) -> tuple[list[tenure.Task], list[tenure.Run]]:
    return await app.list_tasks(), await app.list_runs()


async def post_task(http: httpx.AsyncClient, body: dict[str, Any] | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return await http.post("/api/tasks", content=content, headers=AUTH)


def nested_text(levels: int) -> str:
    return '{"x":' * (levels - 1) + "{}" + "}" * (levels - 1)


async def assert_views_answer(http: httpx.AsyncClient, *extra: str) -> None:
    for path in (*VIEWS, *extra):
        r = await http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        if path != "/metrics":
            r.json()


async def test_deep_params_are_a_400_and_change_nothing(http: httpx.AsyncClient, app: tenure.App) -> None:
    await app.add_task("dispatch", "existing", params={"keep": [1, {"me": True}]})
    ok = json.loads(nested_text(32))
    r = await post_task(http, {"kind": "dispatch", "key": "deep32", "params": ok})
    assert r.status_code == 201, r.text
    assert (await http.get(task_path("dispatch", "deep32"))).json()["params"] == ok
    before = await snapshot(app)
    for levels in (33, 964, 5000):
        body = f'{{"kind": "dispatch", "key": "deep{levels}", "params": {nested_text(levels)}}}'
        assert_error(await post_task(http, body), 400, "invalid_input", "params may nest at most 32 levels")
    # Deep anywhere else in the body is refused the same way, before decoding.
    assert_error(await post_task(http, '{"kind": ' + "[" * 5000 + "]" * 5000 + "}"), 400, "invalid_input")
    assert await snapshot(app) == before
    await assert_views_answer(http, task_path("dispatch", "existing"))


#: Params text a task row may hold (an older version, a direct write), and what shows.
STORED_TEXT: list[tuple[str, Any]] = [
    (nested_text(964), None),  # the depth that broke every view in issue 16
    (nested_text(5000), None),
    ("not json", None),
    ('{"a": NaN}', None),
    ('{"a": "lone \\ud800 surrogate"}', {"a": "lone \ud800 surrogate"}),
    (nested_text(40), json.loads(nested_text(40))),
]


@pytest.mark.parametrize(("text", "decoded"), STORED_TEXT, ids=[f"stored{i}" for i in range(len(STORED_TEXT))])
async def test_any_stored_params_show_in_every_view(
    http: httpx.AsyncClient, app: tenure.App, store_url: str, text: str, decoded: Any
) -> None:
    task = await app.add_task("dispatch", "odd")
    await app.add_task("dispatch", "plain", params={"n": 1})
    # Two runs under two terms, so /api/failovers has an event to show for the task.
    now = await app.store.now()
    runs = [
        Run(kind="dispatch", key="odd", worker=w, term=t, scheduled_at=at, started_at=at, ended_at=at + 1, outcome=o)
        for w, t, at, o in (("w1", 1, now - 20, Outcome.OK), ("w2", 2, now - 10, Outcome.ERROR))
    ]
    await app.store.record_runs(runs, [])
    raw_db(store_url).set_task_params(task.kind, task.key, text)

    await assert_views_answer(http, task_path("dispatch", "odd"), task_path("dispatch", "plain"))
    shown = (await http.get(task_path("dispatch", "odd"))).json()["params"]
    listed = {t["key"]: t["params"] for t in (await http.get("/api/tasks")).json()}
    assert listed["odd"] == shown
    assert listed["plain"] == {"n": 1}
    if decoded is None:
        assert shown[STORED] == text
        assert "the stored params" in shown[UNREADABLE]
    else:
        assert shown == decoded
    assert len((await http.get("/api/failovers")).json()["events"]) == 1
    # It can still be acted on.
    r = await http.post("/api/tasks/dispatch/odd/disable", headers=AUTH)
    assert r.status_code == 200, r.text
    assert (await http.delete(task_path("dispatch", "odd"), headers=AUTH)).status_code == 200


async def test_a_row_under_a_refused_spelling_can_be_removed(
    http: httpx.AsyncClient, app: tenure.App, store_url: str
) -> None:
    await app.add_task("dispatch", "legacy")
    raw_db(store_url).set_task_key("dispatch", "legacy", "soft\u00adhyphen")
    r = await http.get(task_path("dispatch", "soft\u00adhyphen"))
    assert r.status_code == 200, r.text
    assert r.json()["key"] == "soft\u00adhyphen"
    r = await http.delete(task_path("dispatch", "soft\u00adhyphen"), headers=AUTH)
    assert r.json() == {"removed": {"kind": "dispatch", "key": "soft\u00adhyphen"}}
    assert await app.list_tasks() == []


async def test_huge_numbers_are_a_400(http: httpx.AsyncClient, app: tenure.App) -> None:
    await app.add_task("dispatch", "existing")
    before = await snapshot(app)
    for every in ("9" * 400, "-" + "9" * 400, "1e400", "1" + "0" * 4000):
        body = f'{{"kind": "dispatch", "key": "x", "every": {every}}}'
        err = assert_error(await post_task(http, body), 400, "invalid_schedule", "period")
        assert len(err["message"]) < 300
    assert_error(
        await post_task(http, '{"kind": "dispatch", "key": "x", "every": 1' + "0" * 5000 + "}"), 400, "invalid_input"
    )
    for query in ("limit=" + "9" * 400, "limit=" + "9" * 5000, "limit=1e400", "limit=nan", "limit=inf", "limit=10001"):
        err = assert_error(await http.get(f"/api/runs?{query}"), 400, "invalid_input", "limit must be")
        assert len(err["message"]) < 300
    assert_error(await http.get("/api/failovers?runs=" + "9" * 400), 400, "invalid_input", "runs must be")
    huge_length = {**AUTH, "Content-Length": "9" * 5000}
    r = await http.post("/api/tasks", content=b"{}", headers=huge_length)
    assert r.status_code in (400, 413), r.text
    assert await snapshot(app) == before


DECOMPOSED, COMPOSED = "Sa\u0303o Jose\u0301", "São José"


async def test_keys_are_normalised_and_look_alikes_refused(http: httpx.AsyncClient, app: tenure.App) -> None:
    r = await post_task(http, {"kind": "dispatch", "key": DECOMPOSED, "params": {"n": 1}})
    assert r.status_code == 201, r.text
    assert r.json()["key"] == COMPOSED
    assert_error(await post_task(http, {"kind": "dispatch", "key": COMPOSED}), 409, "task_exists")
    for spelling in (DECOMPOSED, COMPOSED):
        r = await http.get(task_path("dispatch", spelling))
        assert (r.status_code, r.json()["key"]) == (200, COMPOSED)
    before = await snapshot(app)
    for key in ("soft\u00adhyphen", "lrm\u200emark", "\u3164filler", "latin\u200djoiner"):
        err = assert_error(await post_task(http, {"kind": "dispatch", "key": key}), 400, "invalid_key", "invisible")
        assert "U+" in err["message"]
        assert_error(await http.get(task_path("dispatch", key)), 400, "invalid_key", "invisible")
    assert await snapshot(app) == before
    r = await http.delete(task_path("dispatch", DECOMPOSED), headers=AUTH)
    assert r.json() == {"removed": {"kind": "dispatch", "key": COMPOSED}}


async def test_worker_ids_are_normalised_and_checked(http: httpx.AsyncClient, app: tenure.App) -> None:
    await app.store.register_worker(worker_id="wé", host="h", pid=1, ttl=30)
    r = await http.post("/api/workers/we\u0301/drain", headers=AUTH)
    assert r.json() == {"worker": "wé", "draining": True}
    assert_error(await http.post("/api/workers/w\u00ad1/drain", headers=AUTH), 400, "invalid_input", "U+00AD")
    assert_error(await http.get("/api/tasks?owner=w%E2%80%8E"), 400, "invalid_input", "owner")


async def test_long_input_is_named_not_echoed(http: httpx.AsyncClient, app: tenure.App) -> None:
    await app.add_task("dispatch", "existing")
    before = await snapshot(app)
    long = "k" * 12_000
    answers = [
        await post_task(http, {"kind": long, "key": "x"}),
        await post_task(http, {"kind": "dispatch", "key": long}),
        await post_task(http, {"kind": "dispatch", "key": "x", long: 1}),
        await post_task(http, {"kind": "dispatch", "key": "x", "every": long}),
        await post_task(http, {"kind": "dispatch", "key": "x", "cron": long}),
        await post_task(http, {"kind": "dispatch", "key": "x", "params": [long]}),
        await post_task(http, {"kind": "dispatch", "key": "x", "enabled": long}),
        await http.get(task_path(long, "x")),
        await http.get(f"/api/tasks?{long}=1"),
        await http.get(f"/api/tasks?state={long}"),
        await http.get(f"/api/runs?outcome={long}"),
        await http.get(f"/api/runs?limit={long}"),
        await http.get(f"/api/nothing/{long}"),
        await http.put(f"/api/tasks/dispatch/{long}", headers=AUTH),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text[:200]
        message = r.json()["error"]["message"]
        assert len(message) < 400, message[:500]
    assert await snapshot(app) == before


async def test_a_name_given_twice_in_a_body_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, app: tenure.App
) -> None:
    """Python's JSON keeps the last of two values, other parsers the first: a body naming a
    member twice was applied with the last one (a sync with two "tasks" could disable or
    remove a kind's tasks its author meant to keep)."""
    await app.add_task("dispatch", "existing", params={"keep": 1})
    before = await snapshot(app)
    for body in (
        '{"kind": "dispatch", "key": "a", "key": "b"}',
        '{"kind": "dispatch", "key": "a", "enabled": false, "enabled": true}',
        '{"kind": "dispatch", "key": "a", "params": {"limit": 1, "limit": 2}}',
        '{"kind": "dispatch", "key": "a", "params": {"deep": [{"x": 1, "x": 1}]}}',
    ):
        assert_error(await post_task(http, body), 400, "invalid_input", "twice")
    sync = '{"tasks": [{"key": "existing"}], "remove_missing": true, "tasks": []}'
    r = await http.put("/api/kinds/dispatch/tasks", content=sync, headers=AUTH)
    assert_error(r, 400, "invalid_input", "an object names 'tasks' twice")
    r = await http.post(
        f"{task_path('dispatch', 'existing')}/disable", content='{"cancel": false, "cancel": true}', headers=AUTH
    )
    assert_error(r, 400, "invalid_input", "'cancel' twice")
    assert await snapshot(app) == before


async def test_a_stored_schedule_tenure_cannot_read_leaves_metrics_answering(
    http: httpx.AsyncClient, app: tenure.App, store_url: str
) -> None:
    """A cron written into the table by hand: /metrics answered a plain-text 500 (alerting
    blind, this process's own metrics too), and the JSON views failed. The row now reads
    as an unreadable schedule: the store is up, and every view shows the row as such."""
    await app.add_task("dispatch", "hand-edited", cron="* * * * *")
    raw = raw_db(store_url)
    raw.query(f"UPDATE tenure_tasks SET cron = {MARK[raw.dialect]} WHERE cron IS NOT NULL", ("garbage",))
    raw.close()
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text[:300]
    assert "tenure_store_up 1.0" in r.text
    assert "tenure_runs_waiting" in r.text  # the process's own metrics are still there
    for path in ("/api/tasks", "/api/status"):
        r = await http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")
    assert "unreadable" in (await http.get("/api/tasks")).text
