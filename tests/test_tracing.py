"""OpenTelemetry (``tenure[otel]``): a run is a span, the handler's spans and its fenced
commit nest under it, lost leases are events; without the package nothing is imported.
Checked with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tenure
from support.storeapi import add, register
from tenure import Context, tracing
from tenure.errors import LeaseLost
from tenure.store import make_store

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter of this process's tracer provider (set once: OpenTelemetry
    keeps the first provider set), emptied for each test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    tracing.provider_changed()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def ok_runs(exporter: InMemorySpanExporter) -> dict[Any, ReadableSpan]:
    """The latest run span of each kind that ended ok (runs cancelled as the worker stops
    at the test's end are left out)."""
    return {
        (s.attributes or {}).get("tenure.kind"): s
        for s in named(exporter, "tenure.run")
        if (s.attributes or {}).get("tenure.outcome") == "ok"
    }


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_runs_are_spans_with_the_handlers_spans_and_commits_under_them(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    app = tenure.App(url, settings=tenure.Settings(lease_ttl=2.0, heartbeat=0.5, poll=0.2, trust_margin=0.5))
    mine = trace.get_tracer("the-application")

    @app.task("async_kind", every=0.3)
    async def async_handler(ctx: Context) -> None:
        with mine.start_as_current_span("handler.async"):
            async with ctx.fenced() as tx:
                await tx.execute("INSERT INTO notes (note) VALUES (?)", (f"{ctx.key}@{ctx.token}",))

    @app.task("sync_kind", every=0.3)
    def sync_handler(ctx: Context) -> None:
        with mine.start_as_current_span("handler.sync"), ctx.fenced_sync() as tx:
            tx.execute("INSERT INTO notes (note) VALUES (?)", (f"{ctx.key}@{ctx.token}",))

    await app.open(migrate=True)
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute("CREATE TABLE notes (note TEXT)")
        raw.commit()
    await app.add_task("async_kind", "a")
    await app.add_task("sync_kind", "s")
    worker = asyncio.create_task(app.run_worker(handle_signals=False))
    try:
        async with asyncio.timeout(30):
            while True:
                if set(ok_runs(spans)) == {"async_kind", "sync_kind"}:
                    break
                await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    runs = ok_runs(spans)
    for kind, handler_span in (("async_kind", "handler.async"), ("sync_kind", "handler.sync")):
        run = runs[kind]
        attrs: dict[str, Any] = dict(run.attributes or {})
        assert attrs["tenure.outcome"] == "ok", attrs
        assert attrs["tenure.key"] == ("a" if kind == "async_kind" else "s")
        assert attrs["tenure.term"] >= 1
        assert isinstance(attrs["tenure.worker"], str)
        assert attrs["tenure.lag"] >= 0
        assert attrs["tenure.slot"] > 0
        assert attrs["tenure.triggered"] is False
        assert run.context is not None
        # The handler's own span (in a thread for the sync handler) is the run's child.
        (mine_span,) = [
            s for s in named(spans, handler_span) if s.context and s.context.trace_id == run.context.trace_id
        ]
        assert parent_of(mine_span) == run.context.span_id
        # The commit is a child of the span current in the handler (its own, here).
        assert mine_span.context is not None
        commits = [s for s in named(spans, "tenure.fenced_commit") if parent_of(s) == mine_span.context.span_id]
        assert commits, f"no fenced commit span under the {kind} run"
        assert (commits[0].attributes or {})["tenure.commit"] == "accepted"


async def test_refused_commits_and_lost_leases_are_recorded(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open(migrate=True)
    try:
        await register(store, "w1")
        await register(store, "w2")
        await add(store, "dispatch", "barcelona")
        (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
        ctx = Context(
            store=store, worker_id="w2", kind="dispatch", key="barcelona", params={}, token=claim.term, scheduled_at=1.0
        )
        run = tracing.start_run(
            kind="dispatch", key="barcelona", term=claim.term, worker="w2", slot=1.0, started=1.5, triggered=True
        )
        with pytest.raises(LeaseLost):  # w2 does not own the task: the database refuses
            async with ctx.fenced() as tx:
                await tx.execute("SELECT 1")
        ctx.cancel()
        with pytest.raises(LeaseLost):  # a cancelled run: refused before reaching the database
            async with ctx.fenced():
                pass
        tracing.end_run(run, outcome="lease_lost", error="lease lost", self_fenced=True)
    finally:
        await store.close()
    (run_span,) = named(spans, "tenure.run")
    assert run_span.context is not None
    assert (run_span.attributes or {})["tenure.outcome"] == "lease_lost"
    assert (run_span.attributes or {})["tenure.lag"] == 0.5
    assert [e.name for e in run_span.events] == ["tenure.self_fenced"]
    assert run_span.status.status_code is trace.StatusCode.ERROR
    commits = named(spans, "tenure.fenced_commit")
    assert len(commits) == 2
    for c in commits:
        assert parent_of(c) == run_span.context.span_id
        assert (c.attributes or {})["tenure.commit"] == "refused"
        assert [e.name for e in c.events] == ["tenure.lease_lost"]


def test_other_outcomes_become_events_and_statuses(spans: InMemorySpanExporter) -> None:
    for outcome, self_fenced, event in (
        ("lease_lost", False, ["tenure.lease_lost"]),
        ("cancelled", False, ["tenure.cancelled"]),
        ("timeout", False, []),
        ("ok", False, []),
    ):
        run = tracing.start_run(kind="k", key="x", term=1, worker="w", slot=1.0, started=1.0, triggered=False)
        tracing.end_run(run, outcome=outcome, error=None if outcome == "ok" else "why", self_fenced=self_fenced)
        (span,) = named(spans, "tenure.run")
        assert [e.name for e in span.events] == event, outcome
        expected = trace.StatusCode.UNSET if outcome == "ok" else trace.StatusCode.ERROR
        assert span.status.status_code is expected, outcome
        spans.clear()


def test_without_opentelemetry_nothing_is_imported_and_nothing_traced() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        import tenure
        from tenure import tracing
        import tenure.worker
        assert not tracing.enabled()
        assert tracing.start_run(kind="k", key="x", term=1, worker="w", slot=1.0, started=1.0, triggered=False) is None
        tracing.end_run(None, outcome="ok", error=None, self_fenced=False)
        assert tracing.start_commit(kind="k", key="x", term=1) is None
        tracing.end_commit(None, "accepted")
        loaded = [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None]
        assert loaded == [], loaded
        print("untraced")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untraced"
