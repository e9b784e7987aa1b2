"""The JSON API's reads, over the seeded store, and their refusals of malformed queries."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

import tenure
from tenure.models import WorkerLoad
from tenure.web import create_app
from tenure.web.asgi import host_of

from .conftest import Seeded


def assert_error(response: httpx.Response, status: int, code: str, needle: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err = response.json()["error"]
    assert err["code"] == code, err
    assert needle in err["message"], err
    return dict(err)


def task_path(kind: str, key: str) -> str:
    return f"/api/tasks/{quote(kind, safe='')}/{quote(key, safe='')}"


async def test_status(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.get("/api/status")
    assert r.status_code == 200
    status = r.json()
    assert status["store"] == seeded.url
    assert status["actions"] is True
    assert status["served_by"] is None
    assert status["tasks"] == {"total": 4, "enabled": 3, "disabled": 1, "owned": 3, "unowned": 1}
    workers = {w["id"]: w for w in status["workers"]}
    assert workers["w-live"]["live"] is True
    assert workers["w-live"]["tasks_held"] == 3
    assert workers["w-live"]["host"] == "host-a"
    assert workers["w-live"]["pid"] == 4242
    assert 0 < workers["w-live"]["lease_left"] <= 60
    assert workers["w-gone"]["live"] is False
    assert workers["w-gone"]["lease_left"] == 0
    assert (workers["w-live"]["kinds"], workers["w-gone"]["kinds"]) == (["dispatch", "report"], ["dispatch"])
    assert status["unrunnable"] == {}
    (failure,) = status["recent_failures"]
    assert failure["key"] == "lisbon"
    assert failure["outcome"] == "error"
    assert failure["error"] == "RuntimeError: <b>boom</b>"


async def test_tasks_with_owner_term_and_last_run(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.get("/api/tasks")
    assert r.status_code == 200
    tasks = {(t["kind"], t["key"]): t for t in r.json()}
    assert list(tasks) == sorted(tasks)
    assert set(tasks) == {
        ("dispatch", "barcelona"),
        ("dispatch", "lisbon"),
        ("dispatch", "Saint-Étienne/nord"),
        ("report", "daily"),
    }
    lisbon = tasks["dispatch", "lisbon"]
    assert lisbon["owner"] == "w-live"
    assert lisbon["owned"] is True
    assert lisbon["term"] == seeded.terms["lisbon"]
    assert lisbon["every"] == 2.5
    assert lisbon["schedule"] == "every 2.5s"
    assert lisbon["params"] == {"zone": "west"}
    assert lisbon["last_run"]["outcome"] == "error"
    assert lisbon["last_run"]["lag"] == pytest.approx(0.25)
    assert lisbon["next_slot"] is not None
    daily = tasks["report", "daily"]
    assert daily["cron"] == "0 6 * * *"
    assert daily["enabled"] is False
    assert daily["owner"] is None
    assert daily["next_slot"] is None
    assert daily["overdue"] is None
    assert daily["last_run"] is None
    moved = tasks["dispatch", seeded.moved]
    assert moved["freed_how"] == "expired"
    assert moved["last_run"]["worker"] == "w-live"


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("kind=report", ["daily"]),
        ("kind=dispatch&state=owned", ["Saint-Étienne/nord", "barcelona", "lisbon"]),
        ("state=disabled", ["daily"]),
        ("state=unowned", ["daily"]),
        ("state=enabled&kind=report", []),
        ("owner=w-live", ["Saint-Étienne/nord", "barcelona", "lisbon"]),
        ("owner=w-gone", []),
        ("owner=", ["Saint-Étienne/nord", "barcelona", "daily", "lisbon"]),  # empty means no filter
    ],
)
async def test_tasks_filters(http: httpx.AsyncClient, query: str, keys: list[str]) -> None:
    r = await http.get(f"/api/tasks?{query}")
    assert r.status_code == 200, r.text
    assert sorted(t["key"] for t in r.json()) == keys


@pytest.mark.parametrize(
    ("path", "code", "needle"),
    [
        ("/api/tasks?state=sleepy", "invalid_input", "state 'sleepy'"),
        ("/api/tasks?kind=no%20spaces", "invalid_kind", "kind 'no spaces'"),
        ("/api/tasks?colour=red", "invalid_input", "unknown query parameter 'colour'"),
        ("/api/tasks?kind=a&kind=b", "invalid_input", "more than once"),
        ("/api/status?verbose=1", "invalid_input", "unknown query parameter 'verbose'"),
        ("/api/runs?limit=0", "invalid_input", "limit"),
        ("/api/runs?limit=ten", "invalid_input", "limit must be a whole number"),
        ("/api/runs?limit=100000", "invalid_input", "limit"),
        ("/api/runs?outcome=fine", "invalid_input", "outcome 'fine'"),
        ("/api/runs?key=%20padded", "invalid_key", "whitespace"),
        ("/api/failovers?runs=-1", "invalid_input", "runs"),
        ("/api/failovers?runs=99999", "invalid_input", "runs"),
        ("/api/tasks/bad%20kind/x", "invalid_kind", "bad kind"),
    ],
)
async def test_malformed_reads_are_400(http: httpx.AsyncClient, path: str, code: str, needle: str) -> None:
    assert_error(await http.get(path), 400, code, needle)


async def test_one_task_with_its_runs(http: httpx.AsyncClient, seeded: Seeded) -> None:
    # The moved task has a slash and an accent in its key; it shows the runs of both
    # owners, most recent first.
    r = await http.get(task_path("dispatch", "Saint-Étienne/nord"))
    assert r.status_code == 200, r.text
    task = r.json()
    assert (task["kind"], task["key"]) == ("dispatch", "Saint-Étienne/nord")
    assert task["term"] == seeded.terms["Saint-Étienne/nord"]
    assert task["every"] == 10
    assert [run["worker"] for run in task["runs"]] == ["w-live"] * 2 + ["w-gone"] * 3
    assert task["last_run"] == task["runs"][0]
    assert task["freed_how"] == "expired"


async def test_unknown_task_is_404(http: httpx.AsyncClient) -> None:
    assert_error(await http.get(task_path("dispatch", "atlantis")), 404, "task_not_found", "dispatch/atlantis")


async def test_runs_filters(http: httpx.AsyncClient, seeded: Seeded) -> None:
    everything = (await http.get("/api/runs?limit=100")).json()
    assert len(everything) == 3 + 3 * 2 + 1
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True)  # most recently recorded first
    assert {r["worker"] for r in (await http.get("/api/runs?worker=w-gone")).json()} == {"w-gone"}
    assert len((await http.get("/api/runs?worker=w-gone")).json()) == 3
    errors = (await http.get("/api/runs?outcome=error")).json()
    assert [(r["key"], r["error"]) for r in errors] == [("lisbon", "RuntimeError: <b>boom</b>")]
    lisbon = (await http.get("/api/runs?kind=dispatch&key=lisbon")).json()
    assert {r["key"] for r in lisbon} == {"lisbon"}
    assert len((await http.get("/api/runs?limit=2")).json()) == 2
    assert (await http.get("/api/runs?worker=nobody")).json() == []
    run = everything[0]
    assert set(run) == {
        "id", "kind", "key", "worker", "term", "scheduled_at", "started_at", "ended_at", "duration", "lag",
        "outcome", "error",
    }  # fmt: skip


async def test_workers(http: httpx.AsyncClient) -> None:
    workers = (await http.get("/api/workers")).json()
    assert [w["id"] for w in workers] == ["w-gone", "w-live"]
    assert [w["live"] for w in workers] == [False, True]
    assert workers[1]["draining"] is False


async def test_status_and_workers_show_a_worker_over_capacity(http: httpx.AsyncClient, seeded: Seeded) -> None:
    """The load a worker published with its last renewal, in the fields of ``--json``."""
    fields = ("over_capacity", "runs_waiting", "oldest_waiting", "concurrency")

    async def shown(path: str) -> dict[str, list[Any]]:
        body = (await http.get(path)).json()
        workers = body["workers"] if path == "/api/status" else body
        return {w["id"]: [w[f] for f in fields] for w in workers}

    for path in ("/api/status", "/api/workers"):
        assert await shown(path) == {"w-gone": [False, None, None, None], "w-live": [False, None, None, None]}
    await seeded.admin.store.renew_lease("w-live", 60, WorkerLoad(waiting=340, oldest_waiting=2.1, concurrency=100))
    for path in ("/api/status", "/api/workers"):
        assert (await shown(path))["w-live"] == [True, 340, 2.1, 100]
    await seeded.admin.store.renew_lease("w-live", 60, WorkerLoad(waiting=0, oldest_waiting=0.0, concurrency=100))
    assert (await shown("/api/status"))["w-live"] == [False, 0, 0.0, 100]


async def test_failovers_show_the_change_of_owner(http: httpx.AsyncClient, seeded: Seeded) -> None:
    r = await http.get("/api/failovers")
    assert r.status_code == 200
    body = r.json()
    assert body["runs_examined"] == 10
    (event,) = body["events"]
    assert event["kind"] == "dispatch"
    assert event["key"] == seeded.moved
    assert (event["from_worker"], event["to_worker"]) == ("w-gone", "w-live")
    assert event["to_term"] == seeded.terms[seeded.moved]
    assert event["from_term"] < event["to_term"]
    assert event["how"] == "expired"
    assert event["backwards"] is False
    assert event["freed_at"] is not None
    # A window too short to hold runs on both sides of the change shows none.
    assert (await http.get("/api/failovers?runs=2")).json()["events"] == []


async def test_unknown_paths_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/api/nothing-here"), 404, "not_found", "/api/nothing-here")
    r = await http.put("/api/tasks")
    assert_error(r, 405, "method_not_allowed", "PUT")
    assert "POST" in r.headers["allow"]
    # A task's path takes GET and DELETE; actions are POSTs to its sub-paths.
    assert_error(await http.post(task_path("dispatch", "lisbon")), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8787", "localhost"),
        ("LocalHost", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8787", "::1"),
        ("[::1]", "::1"),
        ("evil.example:8787", "evil.example"),
        ("", ""),
    ],
)
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


async def test_a_loopback_server_answers_only_for_its_own_names(seeded: Seeded) -> None:
    """Against DNS rebinding: another site's name pointed at 127.0.0.1 gets nothing."""
    asgi = create_app(seeded.admin, tenure.Settings(), allowed_hosts=["localhost", "127.0.0.1", "::1"])
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8787") as http:
        assert (await http.get("/api/status")).status_code == 200
        assert (await http.get("/api/status", headers={"Host": "[::1]:8787"})).status_code == 200
        assert (await http.get("/", headers={"Host": "127.0.0.1"})).status_code == 200
        for evil in ("evil.example", "evil.example:8787", "localhost.evil.example"):
            r = await http.get("/api/tasks", headers={"Host": evil})
            assert_error(r, 400, "host_not_allowed", evil.split(":")[0])
