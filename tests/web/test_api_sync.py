"""``PUT /api/kinds/{kind}/tasks``: a kind's desired state over HTTP, refused whole (400,
naming the entry) when one task is bad."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import AUTH, Seeded, unchanged
from .test_api_reads import assert_error

PATH = "/api/kinds/dispatch/tasks"
MOVED = "Saint-Étienne/nord"


async def put(http: httpx.AsyncClient, body: Any, path: str = PATH) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return await http.put(path, content=content, headers=AUTH)


async def keys(seeded: Seeded, kind: str = "dispatch") -> dict[str, Any]:
    return {t.key: t for t in await seeded.admin.list_tasks(kind=kind)}


async def test_sync_adds_updates_and_disables(http: httpx.AsyncClient, seeded: Seeded) -> None:
    report = await seeded.admin.get_task("report", "daily")
    body = {
        "tasks": [{"key": "barcelona"}, {"key": "lisbon", "every": 2.5, "params": {"zone": "east"}}, {"key": "porto"}]
    }
    r = await put(http, body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "kind": "dispatch", "added": 1, "updated": 1, "disabled": 1, "removed": 0, "unchanged": 1, "dry_run": False,
    }  # fmt: skip
    tasks = await keys(seeded)
    assert tasks["lisbon"].params == {"zone": "east"}
    assert tasks["lisbon"].owner == "w-live", "a sync never moves a task"
    assert tasks[MOVED].enabled is False
    assert tasks["porto"].owner is None
    assert await seeded.admin.get_task("report", "daily") == report
    again = await put(http, body)
    assert again.json()["unchanged"] == 4  # three as listed, and the one already disabled


async def test_remove_missing_and_dry_run(http: httpx.AsyncClient, seeded: Seeded) -> None:
    before = await seeded.snapshot()
    body = {"tasks": [{"key": "porto", "cron": "*/5 * * * *"}], "remove_missing": True, "dry_run": True}
    r = await put(http, body)
    assert r.status_code == 200, r.text
    assert r.json()["diff"] == {
        "added": ["porto"],
        "updated": [],
        "disabled": [],
        "removed": [MOVED, "barcelona", "lisbon"],
    }
    assert await seeded.snapshot() == before
    r = await put(http, {**body, "dry_run": False})
    assert r.json()["removed"] == 3
    assert set(await keys(seeded)) == {"porto"}


@pytest.mark.parametrize(
    ("entry", "code", "needle"),
    [
        ({"key": "x", "param": {}}, "invalid_input", "unknown field 'param'"),
        ("lisbon", "invalid_input", "must be a JSON object"),
        ({"key": "x", "every": "5"}, "invalid_input", "every must be a number"),
        ({"key": "soft\u00adhyphen"}, "invalid_key", "invisible"),
        ({"key": "x", "every": 0}, "invalid_schedule", "period"),
        ({"key": "x", "params": {"big": "y" * 70_000}}, "invalid_params", "limit"),
        ({"key": "lisbon"}, "invalid_key", "already tasks[0]"),
        ({"key": "Sa\u0303o"}, "invalid_key", "given twice"),
    ],
)
async def test_a_bad_entry_is_named_and_nothing_is_applied(
    http: httpx.AsyncClient, seeded: Seeded, entry: Any, code: str, needle: str
) -> None:
    body = {"tasks": [{"key": "lisbon"}, {"key": "São"}, entry, {"key": "new"}], "remove_missing": True}
    r = await unchanged(seeded, lambda: put(http, body))
    err = assert_error(r, 400, code, needle)
    assert err["entry"] == 2
    assert err["message"].startswith("tasks[2]: "), err


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ("[]", "invalid_input", "must be a JSON object"),
        ({}, "invalid_input", "tasks must be a JSON array"),
        ({"tasks": {"key": "x"}}, "invalid_input", "tasks must be a JSON array"),
        ({"tasks": [], "dry": True}, "invalid_input", "unknown field 'dry'"),
        ({"tasks": [{"key": "x"}], "dry_run": "yes"}, "invalid_input", "dry_run must be true or false"),
        ({"tasks": []}, "invalid_input", "allow_empty"),
        ({"tasks": [], "remove_missing": True}, "invalid_input", "remove every one"),
    ],
)
async def test_bad_bodies_are_400(http: httpx.AsyncClient, seeded: Seeded, body: Any, code: str, needle: str) -> None:
    r = await unchanged(seeded, lambda: put(http, body))
    err = assert_error(r, 400, code, needle)
    assert "entry" not in err


async def test_unknown_kind_and_empty_state_allowed(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await unchanged(seeded, lambda: put(http, {"tasks": [{"key": "x"}]}, "/api/kinds/dispatcher/tasks"))
    assert_error(r, 400, "unknown_kind", "unknown kind 'dispatcher'")
    r = await unchanged(seeded, lambda: put(http, {"tasks": [{"key": "x"}]}, "/api/kinds/bad%20kind/tasks"))
    assert_error(r, 400, "invalid_kind")
    r = await put(http, {"tasks": [], "allow_empty": True})
    assert r.json()["disabled"] == 3
    r = await http.get(PATH)
    assert_error(r, 405, "method_not_allowed")
