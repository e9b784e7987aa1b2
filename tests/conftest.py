"""Shared fixtures: a fresh store of every kind under test, and an App on it.

The stores under test, their scratch databases and ``TENURE_TEST_STORES`` are described in
``support/stores.py``; what else the folders share is in ``support/`` (see
``tests/README.md``). ``STORE_FACTORIES``, ``STORE_KINDS`` and ``require_store`` are
imported here for the fixtures, and for the benches that import them from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import tenure
from support.storeapi import opened
from support.stores import STORE_FACTORIES, STORE_KINDS, require_store, unavailable
from tenure.store import Store

__all__ = ["STORE_FACTORIES", "STORE_KINDS", "require_store"]


#: Seconds spent per test folder (setup, call and teardown), shown at the end of the run:
#: issue 7 asks the fault suite to stay under ten minutes for all three stores.
_seconds_by_folder: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    folder = report.nodeid.split("::")[0].rpartition("/")[0]
    _seconds_by_folder[folder] = _seconds_by_folder.get(folder, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for kind, why in unavailable().items():
        terminalreporter.write_sep("!", f"{kind.upper()} WAS NOT TESTED: server unreachable ({why})", red=True)
    if _seconds_by_folder:
        terminalreporter.write_sep("-", "seconds by test folder")
        for folder, seconds in sorted(_seconds_by_folder.items()):
            terminalreporter.write_line(f"{folder or '.':<24}{seconds:8.1f}")


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of each store kind."""
    require_store(request.param, tmp_path)
    with STORE_FACTORIES[request.param](tmp_path) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """The store at ``store_url``, opened with its schema created."""
    async with opened(store_url, migrate=True) as s:
        yield s


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[tenure.App]:
    """An opened App on ``store_url`` with one kind, ``dispatch`` (every 5 s)."""
    a = tenure.App(store_url)

    @a.task("dispatch", every=5.0)
    async def dispatch(ctx: tenure.Context) -> None:  # never run by these tests
        raise AssertionError("the dispatch handler was not expected to run")

    await a.open(migrate=True)
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Put the root logger back as it was: CLI commands run in-process (``tenure worker``,
    ``tenure dashboard``) configure logging, and a handler left behind would write to a
    capture stream closed after its test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
