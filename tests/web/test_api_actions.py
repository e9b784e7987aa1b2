"""The JSON API's actions: the token they need, what they change, and bad input changing nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import AUTH, TOKEN, ClientFactory, Seeded, unchanged
from .test_api_reads import assert_error, task_path

#: Every action, as (method, path, JSON body).
ACTIONS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/tasks", {"kind": "dispatch", "key": "porto"}),
    ("POST", "/api/tasks/dispatch/lisbon/disable", None),
    ("POST", "/api/tasks/report/daily/enable", None),
    ("POST", "/api/tasks/dispatch/lisbon/trigger", None),
    ("DELETE", "/api/tasks/dispatch/lisbon", None),
    ("POST", "/api/workers/w-live/drain", None),
    ("PUT", "/api/kinds/dispatch/tasks", {"tasks": [{"key": "porto"}]}),
    ("POST", "/api/tasks/dispatch/lisbon/disable", {"cancel": True}),
    ("POST", "/api/kinds/dispatch/pause", {"cancel": True}),
    ("POST", "/api/kinds/dispatch/resume", None),
    ("POST", "/api/pause", None),
    ("POST", "/api/resume", None),
]
ACTION_IDS = [f"{m} {p}" for m, p, _ in ACTIONS]


async def call(
    http: httpx.AsyncClient, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = None if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
    return await http.request(method, path, content=content, headers=headers or {})


@pytest.mark.parametrize(("method", "path", "body"), ACTIONS, ids=ACTION_IDS)
async def test_actions_without_a_token_are_401(
    http: httpx.AsyncClient, seeded: Seeded, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = await unchanged(seeded, lambda: call(http, method, path, body))
    assert_error(r, 401, "unauthorized", "Authorization: Bearer")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for header in ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}, {"Authorization": TOKEN}):
        r = await unchanged(seeded, lambda h=header: call(http, method, path, body, h))  # type: ignore[misc]
        assert_error(r, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ACTIONS, ids=ACTION_IDS)
async def test_actions_with_a_wrong_token_are_403(
    http: httpx.AsyncClient, seeded: Seeded, method: str, path: str, body: dict[str, Any] | None
) -> None:
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper()):
        r = await unchanged(seeded, lambda w=wrong: call(http, method, path, body, {"Authorization": f"Bearer {w}"}))  # type: ignore[misc]
        err = assert_error(r, 403, "forbidden", "does not match")
        assert wrong not in err["message"]


@pytest.mark.parametrize(("method", "path", "body"), ACTIONS, ids=ACTION_IDS)
async def test_actions_without_a_configured_token_are_refused(
    client_for: ClientFactory, seeded: Seeded, method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with client_for(token=None) as http:
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            r = await unchanged(seeded, lambda h=headers: call(http, method, path, body, h))  # type: ignore[misc]
            assert_error(r, 403, "no_admin_token", "TENURE_ADMIN_TOKEN")
        assert (await http.get("/api/status")).json()["actions"] is False


async def test_the_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/tasks/dispatch/lisbon/trigger", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200, r.text


# -- what the actions do ---------------------------------------------------------------------


async def test_add_a_task(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.post(
        "/api/tasks",
        json={"kind": "dispatch", "key": "porto", "every": 7.5, "params": {"zone": "sul"}, "enabled": False},
        headers=AUTH,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["key"], body["every"], body["enabled"]) == ("dispatch", "porto", 7.5, False)
    task = await seeded.admin.get_task("dispatch", "porto")
    assert task.params == {"zone": "sul"}
    assert task.enabled is False
    # The kind's default schedule applies when none is given; cron works too.
    r = await http.post("/api/tasks", json={"kind": "dispatch", "key": "faro"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["every"] == 5.0
    r = await http.post("/api/tasks", json={"kind": "report", "key": "weekly", "cron": "0 7 * * 1"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert (await seeded.admin.get_task("report", "weekly")).enabled is True
    listed = {t["key"] for t in (await http.get("/api/tasks")).json()}
    assert {"porto", "faro", "weekly"} <= listed


async def test_enable_disable_trigger_remove(http: httpx.AsyncClient, seeded: Seeded) -> None:
    admin = seeded.admin
    r = await http.post("/api/tasks/dispatch/lisbon/disable", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False
    assert (await admin.get_task("dispatch", "lisbon")).enabled is False
    r = await http.post("/api/tasks/dispatch/lisbon/enable", headers=AUTH)
    assert r.json()["enabled"] is True
    assert (await admin.get_task("dispatch", "lisbon")).enabled is True
    r = await http.post(task_path("dispatch", "Saint-Étienne/nord") + "/trigger", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["trigger_at"] is not None
    assert (await admin.get_task("dispatch", "Saint-Étienne/nord")).trigger_at is not None
    r = await http.delete(task_path("dispatch", "Saint-Étienne/nord"), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"removed": {"kind": "dispatch", "key": "Saint-Étienne/nord"}}
    assert [t.key for t in await admin.list_tasks(kind="dispatch")] == ["barcelona", "lisbon"]
    assert_error(await http.get(task_path("dispatch", "Saint-Étienne/nord")), 404, "task_not_found")


async def test_drain_a_worker(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.post("/api/workers/w-live/drain", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"worker": "w-live", "draining": True}
    workers = {w.id: w for w in await seeded.admin.store.list_workers()}
    assert workers["w-live"].draining is True
    assert workers["w-gone"].draining is False


async def test_pause_and_resume_a_kind_and_everything(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.post("/api/kinds/dispatch/pause", headers=AUTH)  # no body: cancel false
    assert r.status_code == 200, r.text
    paused = r.json()["paused"]
    assert paused["kind"] == "dispatch"
    assert paused["cancel"] is False
    assert paused["by"].startswith("http admin token from ")
    r = await call(http, "POST", "/api/pause", {"cancel": True}, AUTH)
    assert r.json()["paused"] | {"since": 0} == {"kind": None, "since": 0, "by": paused["by"], "cancel": True}
    status = (await http.get("/api/status")).json()
    assert [(p["kind"], p["cancel"]) for p in status["paused"]] == [(None, True), ("dispatch", False)]
    # Tasks, owners and terms are untouched.
    tasks = {(t.kind, t.key): (t.owner, t.term, t.enabled) for t in await seeded.admin.store.list_tasks()}
    r = await http.post("/api/kinds/dispatch/resume", headers=AUTH)
    assert r.json()["resumed"] == paused
    assert (await http.post("/api/kinds/dispatch/resume", headers=AUTH)).json() == {"resumed": None}
    assert (await http.post("/api/resume", headers=AUTH)).json()["resumed"]["kind"] is None
    assert (await http.get("/api/status")).json()["paused"] == []
    assert {(t.kind, t.key): (t.owner, t.term, t.enabled) for t in await seeded.admin.store.list_tasks()} == tasks


async def test_disable_with_cancel_frees_the_task(http: httpx.AsyncClient, seeded: Seeded) -> None:
    before = {t.key: t for t in await seeded.admin.store.list_tasks(kind="dispatch")}
    assert before["lisbon"].owner == "w-live"
    r = await call(http, "POST", "/api/tasks/dispatch/lisbon/disable", {"cancel": True}, AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["enabled"], body["owner"], body["term"]) == (False, None, before["lisbon"].term)
    # Without the flag, a disable leaves the owner to let go at its next poll.
    r = await call(http, "POST", "/api/tasks/dispatch/Saint-%C3%89tienne%2Fnord/disable", None, AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == "w-live"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "needle"),
    [
        ("/api/tasks/dispatch/lisbon/disable", {"cancel": "yes"}, 400, "invalid_input", "cancel must be true or false"),
        ("/api/tasks/dispatch/lisbon/disable", {"now": True}, 400, "invalid_input", "unknown field 'now'"),
        ("/api/tasks/dispatch/atlantis/disable", {"cancel": True}, 404, "task_not_found", "dispatch/atlantis"),
        ("/api/kinds/teleport/pause", None, 400, "unknown_kind", "unknown kind 'teleport'"),
        ("/api/kinds/teleport/resume", None, 400, "unknown_kind", "unknown kind 'teleport'"),
        ("/api/kinds/bad%20kind/pause", None, 400, "invalid_kind", "bad kind"),
        ("/api/kinds/dispatch/pause", {"cancel": "yes"}, 400, "invalid_input", "cancel must be true or false"),
        ("/api/pause", {"cancel": 1}, 400, "invalid_input", "cancel must be true or false"),
        ("/api/pause", {"cancel": True, "by": "me"}, 400, "invalid_input", "unknown field 'by'"),
        ("/api/pause", "[true]", 400, "invalid_input", "must be a JSON object"),
        ("/api/pause", "{", 400, "invalid_input", "not valid JSON"),
        ("/api/pause?kind=dispatch", None, 400, "invalid_input", "unknown query parameter"),
    ],
)
async def test_bad_pauses_change_nothing(
    http: httpx.AsyncClient, seeded: Seeded, path: str, body: Any, status: int, code: str, needle: str
) -> None:
    r = await unchanged(seeded, lambda: call(http, "POST", path, body, AUTH))
    assert_error(r, status, code, needle)


# -- bad input: a clear error, nothing changed --------------------------------------------------

BAD_ADDS: list[tuple[Any, int, str, str]] = [
    ({"kind": "dispatch", "key": "porto", "every": -1}, 400, "invalid_schedule", "positive"),
    ({"kind": "dispatch", "key": "porto", "every": 0}, 400, "invalid_schedule", "positive"),
    ({"kind": "dispatch", "key": "porto", "every": "5"}, 400, "invalid_input", "every must be a number"),
    ({"kind": "dispatch", "key": "porto", "every": True}, 400, "invalid_input", "every must be a number"),
    ({"kind": "dispatch", "key": "porto", "every": 1e308 * 10}, 400, "invalid_input", "Infinity"),
    ({"kind": "dispatch", "key": "porto", "cron": "every day"}, 400, "invalid_schedule", "five fields"),
    ({"kind": "dispatch", "key": "porto", "cron": "99 * * * *"}, 400, "invalid_schedule", "does not parse"),
    ({"kind": "dispatch", "key": "porto", "cron": 5}, 400, "invalid_input", "cron must be a string"),
    ({"kind": "dispatch", "key": "porto", "every": 5, "cron": "* * * * *"}, 400, "invalid_schedule", "not both"),
    ({"kind": "report", "key": "monthly"}, 400, "invalid_schedule", "no default schedule"),
    ({"kind": "dispatch", "key": "porto", "params": [1, 2]}, 400, "invalid_input", "params must be a JSON object"),
    ({"kind": "dispatch", "key": "porto", "params": "{}"}, 400, "invalid_input", "params must be a JSON object"),
    ({"kind": "dispatch", "key": "porto", "params": {"x": "y" * 70_000}}, 400, "invalid_params", "the limit is"),
    ({"kind": "dispatch", "key": "porto", "enabled": "yes"}, 400, "invalid_input", "enabled must be true or false"),
    ({"kind": "teleport", "key": "porto"}, 400, "unknown_kind", "unknown kind 'teleport'"),
    ({"kind": "bad kind", "key": "porto"}, 400, "invalid_kind", "bad kind"),
    ({"kind": "dispatch", "key": " porto"}, 400, "invalid_key", "whitespace"),
    ({"kind": "dispatch", "key": "por\u202eto"}, 400, "invalid_key", "invisible"),
    ({"kind": "dispatch", "key": ""}, 400, "invalid_key", "empty"),
    ({"kind": "dispatch", "key": 42}, 400, "invalid_key", "string"),
    ({"kind": "dispatch"}, 400, "invalid_input", "missing field 'key'"),
    ({"key": "porto"}, 400, "invalid_input", "missing field 'kind'"),
    ({"kind": "dispatch", "key": "porto", "colour": "red"}, 400, "invalid_input", "unknown field 'colour'"),
    ({"kind": "dispatch", "key": "lisbon"}, 409, "task_exists", "lisbon"),
    ('{"kind": "dispatch", "key": ', 400, "invalid_input", "not valid JSON"),
    ('{"kind": "dispatch", "key": "porto", "every": NaN}', 400, "invalid_input", "NaN"),
    ('["dispatch", "porto"]', 400, "invalid_input", "must be a JSON object"),
    ("", 400, "invalid_input", "empty"),
    ("x" * 2_000_000, 413, "too_large", "limit"),
]


@pytest.mark.parametrize(("body", "status", "code", "needle"), BAD_ADDS)
async def test_bad_adds_change_nothing(
    http: httpx.AsyncClient, seeded: Seeded, body: Any, status: int, code: str, needle: str
) -> None:
    r = await unchanged(seeded, lambda: call(http, "POST", "/api/tasks", body, AUTH))
    assert_error(r, status, code, needle)


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "needle"),
    [
        ("POST", "/api/tasks/dispatch/atlantis/enable", 404, "task_not_found", "dispatch/atlantis"),
        ("POST", "/api/tasks/dispatch/atlantis/disable", 404, "task_not_found", "dispatch/atlantis"),
        ("POST", "/api/tasks/dispatch/atlantis/trigger", 404, "task_not_found", "dispatch/atlantis"),
        ("DELETE", "/api/tasks/dispatch/atlantis", 404, "task_not_found", "dispatch/atlantis"),
        ("DELETE", "/api/tasks/teleport/lisbon", 404, "task_not_found", "teleport/lisbon"),
        ("POST", "/api/tasks/bad%20kind/lisbon/disable", 400, "invalid_kind", "bad kind"),
        ("DELETE", "/api/tasks/dispatch/%20lisbon", 400, "invalid_key", "whitespace"),
        ("POST", "/api/workers/w-nobody/drain", 404, "worker_not_found", "w-nobody"),
        ("POST", "/api/tasks/dispatch/lisbon/disable?now=1", 400, "invalid_input", "unknown query parameter"),
        ("POST", "/api/tasks/dispatch/lisbon/explode", 405, "method_not_allowed", "POST"),
    ],
)
async def test_bad_actions_change_nothing(
    http: httpx.AsyncClient, seeded: Seeded, method: str, path: str, status: int, code: str, needle: str
) -> None:
    r = await unchanged(seeded, lambda: call(http, method, path, headers=AUTH))
    assert_error(r, status, code, needle)


# -- protected reads -------------------------------------------------------------------------

READS = ["/api/status", "/api/tasks", "/api/tasks/dispatch/lisbon", "/api/runs", "/api/workers", "/api/failovers"]


async def test_reads_are_open_by_default(http: httpx.AsyncClient) -> None:
    for path in [*READS, "/metrics", "/"]:
        assert (await http.get(path)).status_code == 200, path


async def test_protected_reads_need_the_token(client_for: ClientFactory) -> None:
    async with client_for(protect_reads=True) as http:
        for path in [*READS, "/metrics"]:
            assert_error(await http.get(path), 401, "unauthorized", "reads need")
            assert_error(await http.get(path, headers={"Authorization": "Bearer nope"}), 403, "forbidden")
            assert (await http.get(path, headers=AUTH)).status_code == 200, path
        # The page holds no data: it is served, and asks for the token when the API wants one.
        assert (await http.get("/")).status_code == 200


async def test_protected_reads_without_a_configured_token_are_refused(client_for: ClientFactory) -> None:
    async with client_for(token=None, protect_reads=True) as http:
        for path in [*READS, "/metrics"]:
            assert_error(await http.get(path, headers=AUTH), 403, "no_admin_token", "TENURE_ADMIN_TOKEN")
