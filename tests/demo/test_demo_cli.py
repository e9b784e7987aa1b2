"""``tenure demo``'s command line: usage errors and stores it refuses (no process started)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

import tenure
from tenure import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be from 1 to 16, got 0"),
        (["--cities", "99"], "--cities must be from 1 to 16, got 99"),
        (["--duration", "5"], "--duration must be from 10 to 3600 seconds, got 5"),
        (["--duration", "nan"], "--duration must be from 10 to 3600 seconds, got nan"),
        (["--workers", "two"], "expected a whole number, got 'two'"),
        (["--store", " "], "--store is empty"),
        (["--store", "redis://x"], "unknown scheme 'redis'"),
    ],
)
def test_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["demo", *args]) == 2
    assert list(tmp_path.iterdir()) == [], "a refused demo left a folder behind"
    err = capsys.readouterr().err
    assert err.startswith("tenure: error: "), err
    assert message in err, err
    assert err.count("\n") == 1


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--store", "--workers", "--cities", "--duration", "--seed", "--chaos", "--no-chaos"):
        assert option in out


def test_demo_refuses_a_store_that_holds_other_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    async def add_foreign_task() -> None:
        app = tenure.App(url)
        app.task("billing", every=60.0)(lambda ctx: None)
        async with app:
            await app.add_task("billing", "acme")

    asyncio.run(add_foreign_task())
    assert cli.main(["demo", "--store", url, "--duration", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tenure: error: the store {url} holds tasks"), err
    assert "billing/acme" in err, err
    assert err.count("\n") == 1
    assert list(scratch.iterdir()) == [], "a refused demo left a folder behind"
