"""The ``tenure`` command line, run in-process through ``main(argv)`` on a temporary SQLite store.

One test runs the installed console script as a subprocess, to check exit statuses end
to end. Every bad input is checked for its exit status, for a single ``tenure: error:``
line without a traceback, and for leaving the stored data as it was.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import tenure
from support.storeapi import publish_kinds, wait_past
from tenure.cli import load_app, main, worker_settings
from tenure.models import Outcome, Pause, Run, Task, WorkerInfo, WorkerLoad
from tenure.store import SCHEMA_VERSION

# -- helpers --------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class CLI:
    """Runs ``tenure`` in-process against one store, and reads that store directly."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def __call__(self, *argv: str, store: bool = True) -> Result:
        self.capsys.readouterr()  # drop anything printed before
        code = main(["--store", self.url, *argv] if store else list(argv))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def fails(self, code: int, *argv: str, store: bool = True) -> str:
        """Run a command that must fail with ``code`` and one error line; return the line."""
        before = self.snapshot()
        result = self(*argv, store=store)
        assert result.code == code, result
        assert_one_error_line(result.err)
        assert result.out == ""
        assert self.snapshot() == before, "a failed command changed the store"
        return result.err

    def snapshot(self) -> tuple[list[Task], list[WorkerInfo], list[Run], list[Pause]]:
        async def go(store: tenure.Store) -> tuple[list[Task], list[WorkerInfo], list[Run], list[Pause]]:
            return (
                await store.list_tasks(),
                await store.list_workers(),
                await store.list_runs(limit=1000),
                await store.list_pauses(),
            )

        return self.with_store(go)

    def with_store(self, fn: Callable[[tenure.Store], Awaitable[T]]) -> T:
        async def go() -> T:
            app = tenure.App(self.url)
            try:
                await app.open(migrate=False)
                return await fn(app.store)
            finally:
                await app.close()

        return asyncio.run(go())


def assert_one_error_line(err: str) -> None:
    assert err.startswith("tenure: error: "), err
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run in ``tmp_path`` with no store or setting from the environment: flags and defaults only."""
    monkeypatch.chdir(tmp_path)
    for name in ("TENURE_STORE", *tenure.config.ENV_NAMES.values()):
        monkeypatch.delenv(name, raising=False)


def cli_on(
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    report: bool = True,
    dispatch_timeout: float | None = None,
) -> CLI:
    """The CLI on the store at ``url``, isolated (:func:`isolate`), the store migrated and its
    kinds published (:func:`support.storeapi.publish_kinds`, ``report`` and ``dispatch_timeout`` as there)."""
    isolate(monkeypatch, tmp_path)
    asyncio.run(publish_kinds(url, report=report, dispatch_timeout=dispatch_timeout))
    return CLI(url, capsys)


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    isolate(monkeypatch, tmp_path)
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    """A migrated SQLite store with the kinds ``dispatch`` (every 5 s, timeout 4 s) and
    ``report`` (no default schedule) published."""
    return cli_on(f"sqlite:///{tmp_path / 'store.db'}", capsys, monkeypatch, tmp_path, dispatch_timeout=4.0)


@pytest.fixture
def cluster(cli: CLI) -> CLI:
    """Three tasks, a live worker owning the two enabled ones, an expired worker, and runs."""
    assert cli("tasks", "add", "dispatch", "barcelona").code == 0
    assert cli("tasks", "add", "dispatch", "lisbon", "--every", "2.5").code == 0
    assert cli("tasks", "add", "report", "daily", "--cron", "0 6 * * *", "--disabled").code == 0

    async def go(store: tenure.Store) -> None:
        gone = await store.register_worker(worker_id="w-gone", host="old-host", pid=7, ttl=0.5, kinds=["report"])
        await wait_past(store, gone.expires_at)  # on the database's clock, not a fixed sleep
        await store.register_worker(worker_id="w-live", host="host-a", pid=4242, ttl=60, kinds=["dispatch"])
        claims = await store.claim_tasks("w-live", kinds=["dispatch", "report"], limit=10)
        assert sorted(c.task.key for c in claims) == ["barcelona", "lisbon"]
        now = await store.now()
        outcomes = [Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT, Outcome.OK, Outcome.LEASE_LOST]
        runs = [
            Run(
                kind="dispatch",
                key="barcelona" if i % 2 == 0 else "lisbon",
                worker="w-live",
                term=claims[0].term,
                scheduled_at=now - 50 + i,
                started_at=now - 50 + i,
                ended_at=now - 49.5 + i,
                outcome=outcome,
                error="boom [bold]x[/bold]" if outcome is Outcome.ERROR else None,
            )
            for i, outcome in enumerate(outcomes)
        ]
        await store.record_runs(runs, [])

    cli.with_store(go)
    return cli


# -- migrate and the store ----------------------------------------------------------------


def test_migrate_reports_versions_before_and_after(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli = CLI(url, capsys)
    first = cli("migrate")
    assert first.code == 0
    assert f"from version 0 to {SCHEMA_VERSION}" in first.out
    again = cli("migrate")
    assert again.code == 0
    assert f"up to date at version {SCHEMA_VERSION}" in again.out
    assert cli("tasks", "list", "--json").json() == []


def test_commands_refuse_a_store_that_does_not_exist(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli = CLI(url, capsys)
    for argv in (["tasks", "list"], ["status"], ["runs"], ["workers", "list"], ["tasks", "show", "a", "b"]):
        result = cli(*argv)
        assert result.code == 1, argv
        assert_one_error_line(result.err)
        assert "tenure migrate" in result.err
    assert not Path(url.removeprefix("sqlite:///")).exists(), "a read must not create the store"


@pytest.mark.parametrize(
    ("store", "code"),
    [
        ("foo", 2),
        ("redis://127.0.0.1/0", 2),
        ("mysql://user@127.0.0.1:1/tenure", 1),  # a real store whose server does not answer
        ("postgresql://user@127.0.0.1:1/tenure", 1),
        ("sqlite://somehost/x.db", 2),
        ("sqlite:///x.db?pool=many", 2),
        ("sqlite:///no/such/folder/x.db", 1),
        ("", 2),
        ("sqlite:///", 2),
    ],
)
def test_bad_store_url(cli: CLI, store: str, code: int) -> None:
    for argv in (["tasks", "list"], ["migrate"], ["tasks", "add", "dispatch", "x"]):
        result = cli("--store", store, *argv, store=False)
        assert result.code == code, (argv, result)
        assert_one_error_line(result.err)


def test_store_from_option_after_the_command_and_from_environment(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("tasks", "add", "dispatch", "paris", store=False).code == 1  # ./tenure.db: none
    assert cli("tasks", "add", "dispatch", "paris", "--store", cli.url, store=False).code == 0
    assert [t["key"] for t in cli("tasks", "list", "--json", "--store", cli.url, store=False).json()] == ["paris"]
    monkeypatch.setenv("TENURE_STORE", cli.url)
    assert [t["key"] for t in cli("tasks", "list", "--json", store=False).json()] == ["paris"]
    # The option wins over the environment.
    assert cli("--store", "sqlite:///other.db", "tasks", "list", store=False).code == 1


# -- tasks --------------------------------------------------------------------------------


def test_tasks_add_and_show(cli: CLI) -> None:
    added = cli("tasks", "add", "dispatch", "barcelona")
    assert added.code == 0
    assert "dispatch/barcelona" in added.out
    assert "every 5s" in added.out

    shown = cli("tasks", "show", "dispatch", "barcelona", "--json").json()
    assert shown["kind"] == "dispatch"
    assert shown["key"] == "barcelona"
    assert shown["every"] == 5.0
    assert shown["cron"] is None
    assert shown["params"] == {}
    assert shown["enabled"] is True
    assert shown["owner"] is None
    assert shown["owned"] is False
    assert isinstance(shown["created_at"], float)
    assert isinstance(shown["next_slot"], float)

    assert cli("tasks", "add", "report", "weekly", "--cron", "0 6 * * 1", "--params", '{"to": ["ops"]}').code == 0
    assert cli("tasks", "add", "dispatch", "o'porto ü", "--every", "0.5", "--disabled").code == 0
    weekly = cli("tasks", "show", "report", "weekly", "--json").json()
    assert weekly["cron"] == "0 6 * * 1"
    assert weekly["every"] is None
    assert weekly["params"] == {"to": ["ops"]}
    porto = cli("tasks", "show", "dispatch", "o'porto ü", "--json").json()
    assert porto["every"] == 0.5
    assert porto["enabled"] is False
    assert porto["next_slot"] is None

    human = cli("tasks", "show", "report", "weekly")
    assert human.code == 0
    assert "cron 0 6 * * 1" in human.out
    assert '{"to": ["ops"]}' in human.out


def test_tasks_add_refuses_an_existing_task(cli: CLI) -> None:
    assert cli("tasks", "add", "dispatch", "barcelona", "--params", '{"a": 1}').code == 0
    err = cli.fails(1, "tasks", "add", "dispatch", "barcelona", "--every", "9")
    assert "already exists" in err
    assert cli("tasks", "show", "dispatch", "barcelona", "--json").json()["params"] == {"a": 1}


def test_tasks_add_unknown_kind(cli: CLI) -> None:
    err = cli.fails(2, "tasks", "add", "dispatcher", "barcelona", "--every", "5")
    assert "unknown kind 'dispatcher'" in err
    assert "dispatch, report" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--every", "abc"], "--every"),
        (["--every", "-1"], "period"),
        (["--every", "0"], "period"),
        (["--every", "nan"], "period"),
        (["--every", "1e12"], "period"),
        (["--cron", "not a cron"], "cron"),
        (["--cron", "* * *"], "five fields"),
        (["--cron", "61 * * * *"], "cron"),
        (["--every", "5", "--cron", "* * * * *"], "not allowed with"),
        (["--params", "{bad json"], "JSON"),
        (["--params", "[1, 2]"], "JSON object"),
        (["--params", '{"x": NaN}'], "NaN"),
        (["--params", json.dumps({"x": "y" * 70_000})], "limit"),
    ],
)
def test_tasks_add_malformed_values_are_usage_errors(cli: CLI, argv: list[str], needle: str) -> None:
    assert cli("tasks", "add", "dispatch", "barcelona", "--params", '{"keep": true}').code == 0
    err = cli.fails(2, "tasks", "add", "dispatch", "lisbon", *argv)
    assert needle in err
    err = cli.fails(2, "tasks", "add", "dispatch", "barcelona", *argv)  # an existing one too


def test_tasks_add_needs_a_schedule_when_the_kind_has_none(cli: CLI) -> None:
    err = cli.fails(2, "tasks", "add", "report", "daily")
    assert "no default schedule" in err


@pytest.mark.parametrize(
    ("kind", "key"),
    [("bad kind", "x"), ("dispatch", " padded"), ("dispatch", "k" * 201), ("dispatch", "tab\there")],
)
def test_tasks_add_refuses_odd_names(cli: CLI, kind: str, key: str) -> None:
    cli.fails(2, "tasks", "add", kind, key, "--every", "5")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["tasks"],
        ["tasks", "add"],
        ["tasks", "add", "dispatch"],
        ["tasks", "show", "dispatch"],
        ["tasks", "enable"],
        ["tasks", "frobnicate", "a", "b"],
        ["tasks", "list", "--state", "sleepy"],
        ["tasks", "list", "--bogus"],
        ["runs", "--limit"],
        ["runs", "--limit", "ten"],
        ["runs", "--outcome", "meh"],
        ["workers"],
        ["workers", "drain"],
        ["worker"],
        ["nonsense"],
        ["--store"],
    ],
)
def test_missing_or_unknown_arguments_exit_2(cli: CLI, argv: list[str]) -> None:
    err = cli.fails(2, *argv)
    assert "--help" in err


def test_help_and_version_exit_0(cli: CLI) -> None:
    result = cli("--help")
    assert result.code == 0
    assert "tasks" in result.out
    assert result.err == ""
    result = cli("tasks", "add", "--help")
    assert result.code == 0
    assert "--every" in result.out
    assert "--cron" in result.out
    result = cli("--version")
    assert result.code == 0
    assert tenure.__version__ in result.out


def test_tasks_list(cluster: CLI) -> None:
    human = cluster("tasks", "list")
    assert human.code == 0
    for text in ("barcelona", "lisbon", "daily", "every 2.5s", "cron 0 6 * * *", "w-live"):
        assert text in human.out

    rows = cluster("tasks", "list", "--json").json()
    assert [(r["kind"], r["key"]) for r in rows] == [
        ("dispatch", "barcelona"),
        ("dispatch", "lisbon"),
        ("report", "daily"),
    ]
    assert set(rows[0]) >= {"kind", "key", "every", "cron", "params", "enabled", "owner", "owned", "term"}
    assert [r["owned"] for r in rows] == [True, True, False]
    assert rows[0]["term"] > 0
    assert rows[2]["term"] == 0

    def keys(*argv: str) -> list[str]:
        return [r["key"] for r in cluster("tasks", "list", "--json", *argv).json()]

    assert keys("--kind", "report") == ["daily"]
    assert keys("--kind", "nothing") == []
    assert keys("--owner", "w-live") == ["barcelona", "lisbon"]
    assert keys("--owner", "w-gone") == []
    assert keys("--state", "enabled") == ["barcelona", "lisbon"]
    assert keys("--state", "disabled") == ["daily"]
    assert keys("--state", "owned") == ["barcelona", "lisbon"]
    assert keys("--state", "unowned") == ["daily"]
    assert keys("--kind", "dispatch", "--state", "disabled") == []
    assert cluster("tasks", "list", "--kind", "nothing").out == "no tasks\n"
    cluster.fails(2, "tasks", "list", "--kind", "bad kind!")


def test_keys_are_shown_verbatim_not_as_markup(cli: CLI) -> None:
    assert cli("tasks", "add", "dispatch", "[bold]x[/bold]").code == 0
    assert "[bold]x[/bold]" in cli("tasks", "list").out
    assert "[bold]x[/bold]" in cli("tasks", "show", "dispatch", "[bold]x[/bold]").out


def test_tasks_enable_disable_trigger_remove(cli: CLI) -> None:
    assert cli("tasks", "add", "dispatch", "barcelona").code == 0

    def show() -> dict[str, Any]:
        shown: dict[str, Any] = cli("tasks", "show", "dispatch", "barcelona", "--json").json()
        return shown

    result = cli("tasks", "disable", "dispatch", "barcelona")
    assert result.code == 0
    assert "disabled task dispatch/barcelona" in result.out
    assert show()["enabled"] is False
    assert cli("tasks", "enable", "dispatch", "barcelona").code == 0
    assert show()["enabled"] is True
    assert show()["trigger_at"] is None
    result = cli("tasks", "trigger", "dispatch", "barcelona")
    assert result.code == 0
    assert result.out.strip() == "triggered task dispatch/barcelona"
    assert isinstance(show()["trigger_at"], float)
    # A trigger on a disabled task was accepted without a word; it waits for the enable.
    assert cli("tasks", "disable", "dispatch", "barcelona").code == 0
    result = cli("tasks", "trigger", "dispatch", "barcelona")
    assert result.code == 0
    assert "the task is disabled: the run waits until it is enabled" in result.out
    assert cli("tasks", "remove", "dispatch", "barcelona").code == 0
    assert cli("tasks", "list", "--json").json() == []


@pytest.mark.parametrize("action", ["show", "enable", "disable", "trigger", "remove"])
def test_unknown_task(cli: CLI, action: str) -> None:
    assert cli("tasks", "add", "dispatch", "barcelona").code == 0
    err = cli.fails(1, "tasks", action, "dispatch", "madrid")
    assert "no task dispatch/madrid" in err


# -- runs, workers, status ----------------------------------------------------------------


def test_runs(cluster: CLI) -> None:
    human = cluster("runs")
    assert human.code == 0
    assert "lease_lost" in human.out
    assert "boom [bold]x[/bold]" in human.out

    runs = cluster("runs", "--json").json()
    assert len(runs) == 5
    assert [r["outcome"] for r in runs] == ["lease_lost", "ok", "timeout", "error", "ok"]  # newest first
    first = runs[0]
    assert set(first) == {
        "id", "kind", "key", "worker", "term", "scheduled_at", "started_at", "ended_at",
        "duration", "lag", "outcome", "error",
    }  # fmt: skip
    assert first["duration"] == pytest.approx(0.5)
    assert isinstance(first["started_at"], float)

    def count(*argv: str) -> int:
        return len(cluster("runs", "--json", *argv).json())

    assert count("--key", "barcelona") == 3
    assert count("--kind", "dispatch", "--key", "lisbon") == 2
    assert count("--worker", "w-live") == 5
    assert count("--worker", "w-gone") == 0
    assert count("--outcome", "ok") == 2
    assert count("--limit", "2") == 2
    assert cluster("runs", "--worker", "nobody").out == "no runs\n"
    cluster.fails(2, "runs", "--limit", "0")
    cluster.fails(2, "runs", "--limit", "-3")
    cluster.fails(2, "runs", "--limit", "100000")


def test_workers_list_and_drain(cluster: CLI) -> None:
    human = cluster("workers", "list")
    assert human.code == 0
    assert "w-live" in human.out
    assert "host-a" in human.out
    assert "4242" in human.out
    assert "expired" in human.out

    workers = {w["id"]: w for w in cluster("workers", "list", "--json").json()}
    assert set(workers) == {"w-gone", "w-live"}
    live = workers["w-live"]
    assert live["live"] is True
    assert live["draining"] is False
    assert live["tasks_held"] == 2
    assert live["host"] == "host-a"
    assert live["pid"] == 4242
    assert 50 < live["lease_left"] <= 60
    assert live["age"] >= 0
    assert workers["w-gone"]["live"] is False
    assert workers["w-gone"]["lease_left"] == 0
    assert (live["kinds"], workers["w-gone"]["kinds"]) == (["dispatch"], ["report"])
    (live_line,) = [line for line in human.out.splitlines() if "w-live" in line]
    assert "dispatch" in live_line

    result = cluster("workers", "drain", "w-live")
    assert result.code == 0
    assert "w-live" in result.out
    assert {w["id"]: w["draining"] for w in cluster("workers", "list", "--json").json()} == {
        "w-gone": False,
        "w-live": True,
    }
    err = cluster.fails(1, "workers", "drain", "w-nobody")
    assert "no worker 'w-nobody'" in err


def test_workers_list_empty(cli: CLI) -> None:
    assert cli("workers", "list").out == "no workers\n"
    assert cli("workers", "list", "--json").json() == []


def test_status(cluster: CLI) -> None:
    status = cluster("status", "--json").json()
    assert status["store"] == cluster.url
    assert isinstance(status["now"], float)
    assert status["tasks"] == {"total": 3, "enabled": 2, "disabled": 1, "owned": 2, "unowned": 1}
    workers = {w["id"]: w for w in status["workers"]}
    assert workers["w-live"]["tasks_held"] == 2
    assert workers["w-live"]["live"] is True
    assert workers["w-gone"]["live"] is False
    assert {"host", "pid", "age", "lease_left", "tasks_held"} <= set(workers["w-live"])
    assert [r["outcome"] for r in status["recent_failures"]] == ["lease_lost", "timeout", "error"]

    human = cluster("status")
    assert human.code == 0
    assert "1 live, 1 expired" in human.out
    assert "3 total, 2 enabled, 1 disabled, 2 owned, 1 unowned" in human.out
    assert "host-a" in human.out
    assert "recent failures" in human.out
    assert "timeout" in human.out
    assert status["unrunnable"] == {}
    assert "unrunnable" not in human.out


def test_status_names_the_tasks_no_live_worker_can_run(cluster: CLI) -> None:
    """Only the expired w-gone ran ``report``: an enabled report task has nowhere to go."""
    assert cluster("tasks", "enable", "report", "daily").code == 0
    assert cluster("tasks", "add", "report", "weekly", "--cron", "0 7 * * 1").code == 0
    status = cluster("status", "--json").json()
    assert status["unrunnable"] == {"report": 2}
    assert "unrunnable: 2 report (no live worker runs their kind)" in cluster("status").out
    # A draining worker takes no task: its kinds count as unrunnable too.
    assert cluster("workers", "drain", "w-live").code == 0
    assert cluster("status", "--json").json()["unrunnable"] == {"dispatch": 2, "report": 2}


def test_status_and_workers_list_say_which_worker_is_over_capacity(cluster: CLI) -> None:
    """A worker's load is what it published with its last renewal: nothing yet (``-``),
    keeping up (``ok``), or over capacity with the runs waiting and the oldest's age."""

    def publish(load: WorkerLoad) -> None:
        async def go(store: tenure.Store) -> None:
            await store.renew_lease("w-live", 60, load)

        cluster.with_store(go)

    def live_line(out: str) -> str:
        (line,) = [line for line in out.splitlines() if "w-live" in line and "host-a" in line]
        return line

    before = {w["id"]: w for w in cluster("workers", "list", "--json").json()}["w-live"]
    assert (before["over_capacity"], before["runs_waiting"], before["oldest_waiting"]) == (False, None, None)
    assert "LOAD" in cluster("workers", "list").out

    publish(WorkerLoad(waiting=340, oldest_waiting=2.1, concurrency=100))
    for command in (("status",), ("workers", "list")):
        assert "over capacity: 340 waiting, oldest 2.1s (cap 100)" in live_line(cluster(*command).out), command
    assert "over capacity: w-live (340 waiting, oldest 2.1s)" in cluster("status").out.splitlines()
    status = cluster("status", "--json").json()
    listed = cluster("workers", "list", "--json").json()
    for workers in (status["workers"], listed):
        w = {w["id"]: w for w in workers}
        load = ("over_capacity", "runs_waiting", "oldest_waiting", "concurrency")
        assert [w["w-live"][k] for k in load] == [True, 340, 2.1, 100]
        # The expired worker is over capacity in no way: it published nothing and is gone.
        assert (w["w-gone"]["over_capacity"], w["w-gone"]["runs_waiting"]) == (False, None)

    publish(WorkerLoad(waiting=0, oldest_waiting=0.0, concurrency=100))
    human = cluster("status").out
    assert "over capacity" not in human
    assert live_line(human).endswith(" ok")
    w = {w["id"]: w for w in cluster("status", "--json").json()["workers"]}["w-live"]
    assert (w["over_capacity"], w["runs_waiting"], w["oldest_waiting"], w["concurrency"]) == (False, 0, 0.0, 100)


def test_status_of_an_empty_store(cli: CLI) -> None:
    status = cli("status", "--json").json()
    assert status["workers"] == []
    assert status["recent_failures"] == []
    assert status["tasks"]["total"] == 0
    assert "recent failures: none" in cli("status").out


# -- worker -------------------------------------------------------------------------------


@pytest.fixture
def app_module(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A module in the current folder defining ``app``, a tenure.App with its own settings."""
    name = f"cliapp_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "import tenure\n"
        f"app = tenure.App({url!r}, settings=tenure.Settings(lease_ttl=30.0, heartbeat=3.0, grace=7.0))\n"
        "not_an_app = 42\n"
        "@app.task('dispatch', every=5.0)\n"
        "async def dispatch(ctx: tenure.Context) -> None:\n"
        "    pass\n"
    )
    importlib.invalidate_caches()
    saved_path = list(sys.path)
    yield name
    sys.path[:] = saved_path
    sys.modules.pop(name, None)


def test_worker_runs_the_app_with_merged_settings(
    app_module: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tenure.Settings] = []

    async def fake_run_worker(
        self: tenure.App, *, settings: tenure.Settings | None = None, handle_signals: bool = True
    ) -> None:
        assert settings is not None
        seen.append(settings)

    monkeypatch.setattr(tenure.App, "run_worker", fake_run_worker)
    monkeypatch.setenv("TENURE_POLL", "0.5")
    monkeypatch.setenv("TENURE_GRACE", "2")
    cli = CLI("unused", capsys)
    monkeypatch.setenv("TENURE_CONCURRENCY", "7")
    monkeypatch.setenv("TENURE_TIMER_GRID", "0.5")
    result = cli(
        "worker",
        *(f"{app_module}:app", "--grace", "4", "--concurrency", "12", "--timer-grid", "0.05", "--id", "w-one"),
        store=False,
    )
    assert result.code == 0, result
    (settings,) = seen
    assert settings.concurrency == 12  # the flag's, over the environment's
    assert settings.timer_grid == 0.05
    assert settings.lease_ttl == 30.0
    assert settings.heartbeat == 3.0
    assert settings.poll == 0.5  # the environment's
    assert settings.grace == 4.0
    assert settings.worker_id == "w-one"


def test_worker_settings_precedence(app_module: str) -> None:
    app = load_app(f"{app_module}:app")
    env = {"TENURE_LEASE_TTL": "20", "TENURE_HEARTBEAT": ""}
    settings = worker_settings(app, env, lease_ttl=None, heartbeat=2.0, poll=None)
    assert settings.lease_ttl == 20.0
    assert settings.heartbeat == 2.0
    assert settings.grace == 7.0


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["nocolon"], 2, "module:attribute"),
        ([":app"], 2, "module:attribute"),
        (["no_such_module_xyz:app"], 1, "no module named 'no_such_module_xyz'"),
        (["{module}:missing"], 1, "no attribute 'missing'"),
        (["{module}:not_an_app"], 1, "not a tenure.App"),
        (["{module}:app", "--ttl", "abc"], 2, "--ttl"),
        (["{module}:app", "--ttl", "-5"], 2, "lease_ttl"),
        (["{module}:app", "--heartbeat", "20"], 2, "heartbeat"),
        (["{module}:app", "--id", " "], 2, "worker_id"),
        (["{module}:app", "--concurrency", "0"], 2, "concurrency"),
        (["{module}:app", "--concurrency", "2.5"], 2, "--concurrency"),
        (["{module}:app", "--timer-grid", "0"], 2, "timer_grid"),
        (["{module}:app", "--timer-grid", "soon"], 2, "--timer-grid"),
        (["{module}:app", "--http", "localhost"], 2, "HOST:PORT"),
        (["{module}:app", "--http", "localhost:99999"], 2, "HOST:PORT"),
        (["{module}:app", "--store", "sqlite:///elsewhere.db"], 2, "differs"),
    ],
)
def test_worker_that_cannot_start(
    app_module: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
    needle: str,
) -> None:
    async def must_not_run(self: tenure.App, **kwargs: Any) -> None:  # pragma: no cover
        raise AssertionError("the worker must not start")

    monkeypatch.setattr(tenure.App, "run_worker", must_not_run)
    monkeypatch.setenv("TENURE_LEASE_TTL", "10")
    cli = CLI("unused", capsys)
    result = cli("worker", *[a.format(module=app_module) for a in argv], store=False)
    assert result.code == code, result
    assert_one_error_line(result.err)
    assert needle in result.err


# -- the installed console script ---------------------------------------------------------


def run_console_script(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``tenure`` console script in ``cwd``, its output captured, with no
    ``TENURE_*`` variable from this environment but those in ``env``."""
    script = Path(sys.executable).parent / "tenure"
    assert script.exists(), "the tenure console script is not installed in this environment"
    return subprocess.run(
        [str(script), *argv],
        env={k: v for k, v in os.environ.items() if not k.startswith("TENURE_")} | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_exit_statuses(url: str, tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return run_console_script(*argv, cwd=tmp_path, env={"TENURE_STORE": url})

    started = time.monotonic()
    migrated = run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"from version 0 to {SCHEMA_VERSION}" in migrated.stdout

    missing = run("tasks", "show", "dispatch", "nowhere")
    assert missing.returncode == 1
    assert_one_error_line(missing.stderr)

    usage = run("tasks", "add")
    assert usage.returncode == 2
    assert_one_error_line(usage.stderr)

    bad_store = run("--store", "sqlite://host/x.db", "status")
    assert bad_store.returncode == 2
    assert_one_error_line(bad_store.stderr)

    listed = run("tasks", "list", "--json")
    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []
    assert time.monotonic() - started < 30
