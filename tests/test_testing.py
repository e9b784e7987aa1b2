"""tenure.testing: an application's handler run once against a real store, with a real
term and a fenced commit the database checks; a context from before a takeover cannot
commit. On every store, and on the default temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

import tenure
import tenure.testing
from support.rawdb import raw_db
from support.sql import MARK, create_table


def make_app(url: str | None = None) -> tenure.App:
    app = tenure.App(url or "sqlite:///unused.db")

    @app.task("dispatch", every=5.0)
    async def dispatch(ctx: tenure.Context) -> None:
        async with ctx.fenced() as tx:
            await tx.execute(
                f"INSERT INTO plans (city, term, zone) VALUES ({MARK[ctx.dialect]}, {MARK[ctx.dialect]}, "
                f"{MARK[ctx.dialect]})",
                (ctx.key, ctx.token, str(ctx.params.get("zone", ""))),
            )

    @app.task("report", every=60.0)
    def report(ctx: tenure.Context) -> None:
        with ctx.fenced_sync() as tx:
            tx.execute(
                f"INSERT INTO plans (city, term, zone) VALUES ({MARK[ctx.dialect]}, {MARK[ctx.dialect]}, 'sync')",
                (ctx.key, ctx.token),
            )

    return app


def plans(url: str) -> list[tuple[str, int, str]]:
    return [(str(c), int(t), str(z)) for c, t, z in raw_db(url).query("SELECT city, term, zone FROM plans ORDER BY id")]


def create_plans(url: str, dialect: str) -> None:
    raw_db(url).query(
        create_table(dialect, "plans", "id {id}, city {text} NOT NULL, term BIGINT NOT NULL, zone {text}")
    )


async def test_a_run_commits_through_the_fence_at_the_tasks_term(store_url: str) -> None:
    app = make_app()
    async with tenure.testing.HandlerTester(app, store_url=store_url) as t:
        create_plans(t.store_url, t.store.dialect)
        await t.run("dispatch", "barcelona", params={"zone": "west"})
        task = await t.store.get_task("dispatch", "barcelona")
        assert task is not None
        assert task.owner == "tenure-testing"
        assert task.term > 0
        assert plans(t.store_url) == [("barcelona", task.term, "west")]
        await t.run("dispatch", "barcelona")  # owned already: the same term, the stored params
        assert plans(t.store_url) == [("barcelona", task.term, "west")] * 2


async def test_a_context_from_before_a_takeover_cannot_commit(store_url: str) -> None:
    app = make_app()
    async with tenure.testing.HandlerTester(app, store_url=store_url) as t:
        create_plans(t.store_url, t.store.dialect)
        stale = await t.context("dispatch", "lisbon")
        term = await t.take_over("dispatch", "lisbon")
        assert term > stale.token
        with pytest.raises(tenure.LeaseLost):
            await app.kinds["dispatch"].handler(stale)  # type: ignore[misc]
        assert plans(t.store_url) == []
        with pytest.raises(RuntimeError, match="owned by"):
            await t.run("dispatch", "lisbon")


async def test_the_default_store_is_a_temporary_sqlite_file_and_sync_handlers_run_in_a_thread() -> None:
    app = make_app()
    async with tenure.testing.HandlerTester(app) as t:
        url = t.store_url
        assert url.startswith("sqlite:///")
        create_plans(url, "sqlite")
        await t.run("report", "daily")
        task = await t.store.get_task("report", "daily")
        assert task is not None
        assert plans(url) == [("daily", task.term, "sync")]
        with pytest.raises(KeyError):
            await t.run("unknown", "k")
    assert not Path(url.removeprefix("sqlite:///")).parent.exists(), "the temporary folder is left behind"
