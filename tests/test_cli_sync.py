"""``tenure tasks sync KIND FILE|-`` on every store: JSON lines in, one transaction, counts
out; a bad line is named by its number and nothing is applied."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tenure.cli.commands import MAX_LINE_BYTES
from tenure.cli.sync_input import read_lines
from tenure.errors import InvalidInput
from test_cli import CLI, assert_one_error_line, cli_on


@pytest.fixture
def cli(store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CLI:
    """The CLI on a migrated store of each kind, with kinds ``dispatch`` and ``report`` and
    two dispatch tasks, ``lisbon`` and ``porto``."""
    c = cli_on(store_url, capsys, monkeypatch, tmp_path)
    assert c("tasks", "add", "dispatch", "lisbon", "--params", '{"zone": "west"}').code == 0
    assert c("tasks", "add", "dispatch", "porto").code == 0
    return c


def write(tmp_path: Path, *lines: str | dict[str, object], name: str = "tasks.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


CITIES: list[str | dict[str, object]] = [
    {"key": "lisbon", "params": {"zone": "west"}},
    {"key": "faro", "every": 2.5},
    "",  # blank lines are skipped
    {"key": "São José", "params": {"n": 1}, "cron": "0 6 * * *"},
    {"key": "évora", "enabled": False},
]


#: What `tasks list` works out from the clock at the time it is asked, not what is stored.
CLOCK_FIELDS = ("next_slot", "overdue")


def tasks(cli: CLI) -> dict[str, dict[str, object]]:
    return {t["key"]: t for t in cli("tasks", "list", "--json", "--kind", "dispatch").json()}


def stored_rows(cli: CLI) -> dict[str, dict[str, object]]:
    """The tasks as stored: ``tasks`` without the fields read off the clock (an every-2.5s
    task's next slot moves on between two listings a few seconds apart)."""
    return {key: {k: v for k, v in t.items() if k not in CLOCK_FIELDS} for key, t in tasks(cli).items()}


def test_sync_a_file_then_again(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, *CITIES)
    first = cli("tasks", "sync", "dispatch", path, "--json")
    assert first.code == 0, first
    assert first.json() == {
        "kind": "dispatch", "added": 3, "updated": 0, "disabled": 1, "removed": 0, "unchanged": 1, "dry_run": False,
    }  # fmt: skip
    stored = tasks(cli)
    assert set(stored) == {"lisbon", "porto", "faro", "São José", "évora"}
    assert stored["porto"]["enabled"] is False
    assert stored["faro"]["every"] == 2.5
    assert stored["São José"]["cron"] == "0 6 * * *"
    assert stored["évora"]["enabled"] is False
    before = stored_rows(cli)
    again = cli("tasks", "sync", "dispatch", path)
    assert again.code == 0
    assert again.out == "synced kind dispatch: 0 added, 0 updated, 0 disabled, 0 removed, 5 unchanged\n"
    assert stored_rows(cli) == before


def test_sync_from_standard_input_removing_the_missing(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"key": "faro"}\n')))
    result = cli("tasks", "sync", "dispatch", "-", "--remove-missing", "--json")
    assert result.code == 0, result
    assert (result.json()["added"], result.json()["removed"]) == (1, 2)
    assert set(tasks(cli)) == {"faro"}


def test_dry_run_prints_the_diff_and_changes_nothing(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, {"key": "lisbon", "params": {"zone": "east"}}, {"key": "faro"})
    before = cli.snapshot()
    human = cli("tasks", "sync", "dispatch", path, "--dry-run")
    assert human.code == 0
    assert human.out.splitlines() == [
        "would add dispatch/faro",
        "would update dispatch/lisbon",
        "would disable dispatch/porto",
        "dry run of kind dispatch, nothing changed: would add 1, update 1, disable 1, remove 0; 0 unchanged",
    ]
    data = cli("tasks", "sync", "dispatch", path, "--dry-run", "--remove-missing", "--json").json()
    assert data["dry_run"] is True
    assert data["diff"] == {"added": ["faro"], "updated": ["lisbon"], "disabled": [], "removed": ["porto"]}
    assert cli.snapshot() == before


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "is not valid JSON"),
        ('["lisbon"]', "must be a JSON object with a key, got an array"),
        ('{"key": "x", "param": {}}', "unknown field 'param'"),
        ('{"params": {}}', "missing field 'key'"),
        ('{"key": 7}', "key must be a string, got the number 7"),
        ('{"key": "x", "params": [1]}', "params must be a JSON object, got an array"),
        ('{"key": "x", "every": "5"}', "every must be a number of seconds, got a string '5'"),
        ('{"key": "x", "every": true}', "every must be a number of seconds, got a boolean"),
        ('{"key": "x", "enabled": "no"}', "enabled must be true or false"),
        ('{"key": "x", "params": {"a": NaN}}', "NaN"),
        ('{"key": "soft\\u00adhyphen"}', "invisible"),
        ('{"key": " padded"}', "whitespace"),
        ('{"key": "x", "every": -1}', "period"),
        ('{"key": "x", "every": 5, "cron": "* * * * *"}', "not both"),
        ('{"key": "x", "cron": "61 * * * *"}', "cron"),
        ('{"key": "x", "params": ' + '{"a":' * 33 + "{}" + "}" * 33 + "}", "nest deeper than 32"),
        ('{"key": "lisbon"}', "already on line 1"),
        ('{"key": "Sa\\u0303o Jose\\u0301"}', "given twice"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_applied(cli: CLI, tmp_path: Path, line: str, needle: str) -> None:
    path = write(tmp_path, {"key": "lisbon"}, '{"key": "São José"}', {"key": "new"}, line, {"key": "newer"})
    err = cli.fails(2, "tasks", "sync", "dispatch", path, "--remove-missing")
    assert err.startswith("tenure: error: line 4"), err
    assert needle in err, err
    assert len(err) < 400


def test_lines_that_are_not_text_or_too_long(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"key": "faro"}\n{"key": "caf\xe9"}\n')
    assert "line 2 is not UTF-8 text" in cli.fails(2, "tasks", "sync", "dispatch", str(path))
    long = write(tmp_path, {"key": "faro"}, {"key": "big", "params": {"x": "\u2603" * 300_000}}, name="long.jsonl")
    err = cli.fails(2, "tasks", "sync", "dispatch", long)
    assert "line 2 is" in err
    assert "bytes long; the limit is" in err


class _EndlessLine(io.RawIOBase):
    """A stream of bytes that never ends a line, which refuses to be read past ``most``."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.read_so_far > self.most:
            raise AssertionError(f"read {self.read_so_far} bytes of one line")
        view = memoryview(buffer)
        view[:] = b"x" * len(view)
        self.read_so_far += len(view)
        return len(view)


def test_a_line_that_never_ends_is_refused_without_reading_it_whole() -> None:
    """A line was read whole before its length was checked: ``tasks sync K /dev/zero`` (or a
    file without newlines) took memory without bound."""
    raw = _EndlessLine(most=4 * MAX_LINE_BYTES)
    with pytest.raises(InvalidInput, match=f"line 1 is more than {MAX_LINE_BYTES} bytes long"):
        read_lines(io.BufferedReader(raw), max_line_bytes=MAX_LINE_BYTES)
    assert raw.read_so_far <= 2 * MAX_LINE_BYTES


def test_a_file_may_begin_with_a_byte_order_mark(cli: CLI, tmp_path: Path) -> None:
    """Some editors begin a UTF-8 file with U+FEFF: line 1 was 'not valid JSON: Unexpected
    UTF-8 BOM'. Only there: further on it is a character like any other."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"key": "faro"}\n{"key": "lagos"}\n')
    r = cli("tasks", "sync", "dispatch", str(path))
    assert (r.code, r.err) == (0, ""), r
    assert {"faro", "lagos"} <= set(tasks(cli))
    path.write_bytes(b'{"key": "faro"}\n\xef\xbb\xbf{"key": "lagos"}\n')
    assert "line 2 is not valid JSON" in cli.fails(2, "tasks", "sync", "dispatch", str(path))


def test_dev_zero_is_refused(cli: CLI) -> None:
    err = cli.fails(2, "tasks", "sync", "dispatch", "/dev/zero")
    assert "line 1 is more than" in err


def test_a_kind_without_default_schedule_needs_one_per_line(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, {"key": "daily", "cron": "0 6 * * *"}, {"key": "weekly"})
    err = cli.fails(2, "tasks", "sync", "report", path)
    assert "line 2" in err
    assert "no default schedule" in err
    assert cli("tasks", "sync", "report", write(tmp_path, {"key": "daily", "cron": "0 6 * * *"})).code == 0


def test_an_empty_file_needs_allow_empty(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, "", "")
    err = cli.fails(2, "tasks", "sync", "dispatch", path)
    assert "holds no tasks" in err
    assert "--allow-empty" in err
    assert "would remove every task" in cli.fails(2, "tasks", "sync", "dispatch", path, "--remove-missing")
    result = cli("tasks", "sync", "dispatch", path, "--allow-empty", "--json")
    assert result.json()["disabled"] == 2


def test_usage_errors_and_failures(cli: CLI, tmp_path: Path) -> None:
    path = write(tmp_path, {"key": "faro"})
    assert "unknown kind 'dispatcher'" in cli.fails(2, "tasks", "sync", "dispatcher", path)
    assert "is not valid" in cli.fails(2, "tasks", "sync", "bad kind", path)
    assert "cannot read" in cli.fails(2, "tasks", "sync", "dispatch", str(tmp_path / "nowhere.jsonl"))
    assert "cannot read" in cli.fails(2, "tasks", "sync", "dispatch", str(tmp_path))
    assert "--help" in cli.fails(2, "tasks", "sync", "dispatch")
    result = cli("--store", f"sqlite:///{tmp_path / 'missing.db'}", "tasks", "sync", "dispatch", path, store=False)
    assert result.code == 1
    assert_one_error_line(result.err)
    assert "tenure migrate" in result.err
    helped = cli("tasks", "sync", "--help")
    assert helped.code == 0
    for flag in ("--remove-missing", "--dry-run", "--json", "--allow-empty"):
        assert flag in helped.out
