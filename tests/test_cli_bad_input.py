"""Bad input to the ``tenure`` command line on every store (issue 16): exit 2 and one line
naming the problem, no traceback, the store unchanged; and whatever a task row holds can
be listed and shown."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from support.rawdb import raw_db
from tenure.cli.parser import build_parser
from tenure.models import STORED
from tenure.store import SCHEMA_VERSION, make_store
from test_cli import CLI, assert_one_error_line, cli_on, run_console_script


@pytest.fixture
def cli(store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CLI:
    """The CLI on a migrated store of each kind, with kind ``dispatch`` and one task, ``existing``."""
    c = cli_on(store_url, capsys, monkeypatch, tmp_path, report=False)
    assert c("tasks", "add", "dispatch", "existing", "--params", '{"keep": [1, {"me": true}]}').code == 0
    return c


def nested_text(levels: int) -> str:
    return '{"x":' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_deep_params_are_refused(cli: CLI) -> None:
    assert cli("tasks", "add", "dispatch", "deep32", "--params", nested_text(32)).code == 0
    assert cli("tasks", "show", "dispatch", "deep32", "--json").json()["params"] == json.loads(nested_text(32))
    for levels in (33, 964, 5000):
        err = cli.fails(2, "tasks", "add", "dispatch", f"deep{levels}", "--params", nested_text(levels))
        assert "nest deeper than 32 levels" in err


@pytest.mark.parametrize("levels", [964, 5000])
def test_stored_deep_params_are_listed_and_shown(cli: CLI, levels: int) -> None:
    text = nested_text(levels)
    raw_db(cli.url).set_task_params("dispatch", "existing", text)
    for argv in (["tasks", "list"], ["tasks", "show", "dispatch", "existing"], ["status"], ["runs"]):
        result = cli(*argv)
        assert (result.code, result.err) == (0, ""), result
        result = cli(*argv, "--json")
        assert (result.code, result.err) == (0, ""), result
    assert cli("tasks", "show", "dispatch", "existing", "--json").json()["params"][STORED] == text
    assert cli("tasks", "remove", "dispatch", "existing").code == 0


def test_huge_numbers_are_refused(cli: CLI) -> None:
    for argv in (
        ["tasks", "add", "dispatch", "x", "--every", "9" * 400],
        ["tasks", "add", "dispatch", "x", "--every", "1e400"],
        ["tasks", "add", "dispatch", "x", "--every", "-" + "9" * 5000],
        ["runs", "--limit", "9" * 400],
        ["runs", "--limit", "9" * 5000],
    ):
        err = cli.fails(2, *argv)
        assert len(err) < 300, err


DECOMPOSED, COMPOSED = "Sa\u0303o Jose\u0301", "São José"


def test_keys_are_normalised_and_look_alikes_refused(cli: CLI) -> None:
    assert cli("tasks", "add", "dispatch", DECOMPOSED).code == 0
    for spelling in (DECOMPOSED, COMPOSED):
        assert cli("tasks", "show", "dispatch", spelling, "--json").json()["key"] == COMPOSED
    assert "already exists" in cli.fails(1, "tasks", "add", "dispatch", COMPOSED)
    for key in ("soft\u00adhyphen", "lrm\u200emark", "\u3164filler"):
        assert "invisible" in cli.fails(2, "tasks", "add", "dispatch", key)
        assert "invisible" in cli.fails(2, "tasks", "show", "dispatch", key)
    assert "U+00AD" in cli.fails(2, "workers", "drain", "w\u00ad1")


@pytest.mark.parametrize(
    "query", ["idle_tx_timeout=0.0004", "lock_timeout=inf", "pool=0.5", "idle_tx_timeout=1e10", "pool=1&pool=2"]
)
def test_bad_store_url_options(cli: CLI, query: str) -> None:
    if cli.url.startswith("sqlite"):
        query = query.replace("idle_tx_timeout", "busy_timeout").replace("lock_timeout", "busy_timeout")
    err = cli.fails(2, "--store", f"{cli.url}?{query}", "tasks", "list", store=False)
    assert "URL option" in err


def test_long_input_is_named_not_echoed(cli: CLI) -> None:
    long = "k" * 12_000
    for argv in (
        ["tasks", "add", long, "x"],
        ["tasks", "add", "dispatch", long],
        ["tasks", "add", "dispatch", "x", "--cron", long],
        ["tasks", "add", "dispatch", "x", "--every", long],
        ["tasks", "show", "dispatch", long],
        ["tasks", "list", "--state", long],
        ["runs", "--outcome", long],
        ["runs", "--limit", long],
        ["tasks", "list", long],
        [long],
    ):
        err = cli.fails(2, *argv)
        assert len(err) < 400, err[:500]


@pytest.mark.parametrize(
    ("path", "code", "needle"),
    [
        ("d" * 300 + "/tenure.db", 1, "File name too long"),  # a folder's name past NAME_MAX
        ("a/" * 3000 + "tenure.db", 1, "File name too long"),  # the path past PATH_MAX
        ("b" * 240 + ".db", 2, "the limit is 229"),  # no room for the lock files beside it
    ],
)
@pytest.mark.parametrize("command", [["tasks", "list"], ["migrate"]])
def test_a_sqlite_path_too_long_is_one_line(cli: CLI, path: str, code: int, needle: str, command: list[str]) -> None:
    err = cli.fails(code, "--store", f"sqlite:///{path}", *command, store=False)
    assert needle in err
    assert len(err) < 400, err


def test_a_name_given_twice_is_refused(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's JSON keeps the last of two values: ``--params`` and sync lines naming a member
    twice were applied with the last one, silently."""
    err = cli.fails(2, "tasks", "add", "dispatch", "x", "--params", '{"limit": 1, "limit": 2}')
    assert "an object names 'limit' twice" in err
    line = b'{"key": "existing", "key": "other"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line)))
    err = cli.fails(2, "tasks", "sync", "dispatch", "-", "--remove-missing")
    assert "line 1" in err
    assert "an object names 'key' twice" in err


def test_a_store_url_with_bytes_not_utf8_is_one_line(cli: CLI) -> None:
    err = cli.fails(2, "--store", "postgresql://tenure@127.0.0.1/caf\udce9", "tasks", "list", store=False)
    assert "not UTF-8" in err


@pytest.mark.parametrize("host", ["\udcff", "a" * 300, "a..b"], ids=["not-utf8", "label-too-long", "empty-label"])
def test_a_host_name_that_cannot_be_encoded_is_one_line(cli: CLI, host: str) -> None:
    """getaddrinfo encodes host names with IDNA: what it cannot encode raised UnicodeError."""
    err = cli.fails(1, "dashboard", "--host", host, "--port", "0")
    assert "not a valid host name" in err
    assert len(err) < 400


@pytest.mark.parametrize("recorded", ["abc", "1e400", "-1", ""])
def test_a_schema_version_tenure_did_not_write_is_one_line(cli: CLI, recorded: str) -> None:
    """A tenure_meta row written by hand (or another program's table): int() raised a
    ValueError traceback on every command, and -1 let migrate run every migration again."""
    raw = raw_db(cli.url)
    mark = "?" if cli.url.startswith("sqlite") else "%s"
    raw.query(f"UPDATE tenure_meta SET value = {mark} WHERE name = 'schema_version'", (recorded,))
    for argv in (["migrate"], ["tasks", "list"], ["status"]):
        result = cli(*argv)
        assert result.code == 1, result
        assert_one_error_line(result.err)
        assert f"records schema version {recorded!r}, which is not a version tenure wrote" in result.err
    raw.query(f"UPDATE tenure_meta SET value = {mark} WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
    assert cli("tasks", "show", "dispatch", "existing").code == 0  # nothing was changed
    raw.close()


@pytest.mark.parametrize("address", ["[::1:8080", "::1:8080", "[::1]]:8080", "[[::1]]:8080"])
def test_an_http_address_whose_brackets_do_not_pair_is_refused(cli: CLI, address: str) -> None:
    """'[::1:80' was read as [::1]:80 (the brackets were stripped, not checked), and '::1:8080'
    as host ::1, port 8080, though it is also the address ::1:8080 without a port."""
    assert "[::1]:8080 for IPv6" in cli.fails(2, "worker", "webapp:app", "--http", address)
    assert build_parser().parse_args(["worker", "webapp:app", "--http", "[::1]:8080"]).http == ("::1", 8080)


def test_a_non_ascii_admin_token_is_refused_at_start(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENURE_ADMIN_TOKEN", "pässwörd-for-tests")
    err = cli.fails(2, "dashboard", "--port", "0")
    assert "admin_token" in err
    assert "TENURE_ADMIN_TOKEN" in err
    assert "pässwörd" not in err


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    """Run as a real process: under pytest its log capture would hide psycopg's warnings."""
    result = run_console_script(
        "--store", "postgresql://tenure@127.0.0.1:1/tenure?connect_timeout=0.5", "tasks", "list", cwd=tmp_path
    )
    assert result.returncode == 1, result
    assert_one_error_line(result.stderr)
    assert "cannot connect to PostgreSQL store" in result.stderr
    assert "Connection refused" in result.stderr  # the reason, not "pool initialization incomplete"


#: What each store says of a URL naming a database (or file) that does not exist.
MISSING_DATABASE = {
    "postgresql": 'database "tenure_missing_db" does not exist',
    "mysql": "Unknown database 'tenure_missing_db'",
    "sqlite": "no SQLite store at",
}


def test_a_missing_database_is_named(cli: CLI) -> None:
    """The server's reason (PostgreSQL's pool retried until its connect timeout and said
    only "pool initialization incomplete after 5.0 sec")."""
    dialect = make_store(cli.url).dialect
    url = urlunsplit(urlsplit(cli.url)._replace(path="/tenure_missing_db"))
    err = cli.fails(1, "--store", url, "tasks", "list", store=False)
    assert MISSING_DATABASE[dialect] in err


def test_pause_and_resume(cli: CLI) -> None:
    r = cli("kinds", "pause", "dispatch")
    assert r.code == 0, r
    assert r.out.startswith("paused kind dispatch (since ")
    assert "runs in progress end on their own" in r.out
    assert cli("pause", "--cancel").code == 0
    status = cli("status", "--json").json()
    assert [(p["kind"], p["cancel"]) for p in status["paused"]] == [(None, True), ("dispatch", False)]
    assert all(p["by"].startswith("cli ") for p in status["paused"])
    assert "paused: every kind since" in cli("status").out
    r = cli("resume")
    assert r.out.startswith("resumed every kind (paused since ")
    assert "still paused: kind dispatch since" in r.out
    assert cli("kinds", "resume", "dispatch").code == 0
    assert cli("kinds", "resume", "dispatch").out == "kind dispatch was not paused on its own\n"
    assert cli("status", "--json").json()["paused"] == []


#: User names the environment may hold (LOGNAME comes first for getpass).
ODD_USERS = ["u" * 300, "bad\tuser", "\udcff\udcfe", "new\nline"]


@pytest.mark.parametrize("user", ODD_USERS, ids=["long", "tab", "not-utf8", "newline"])
def test_the_pause_button_works_whatever_the_user_name(cli: CLI, monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    """The pause is signed ``cli user@host`` from the environment: an odd user name made
    ``tenure pause`` refuse ("by must be 1 to 200 printable characters")."""
    monkeypatch.setenv("LOGNAME", user)
    r = cli("kinds", "pause", "dispatch")
    assert (r.code, r.err) == (0, ""), r
    assert cli("pause", "--cancel").code == 0
    for p in cli("status", "--json").json()["paused"]:
        assert p["by"].startswith("cli ")
        assert p["by"].isprintable()
        assert len(p["by"]) <= 200
    assert cli("resume").code == 0
    assert cli("kinds", "resume", "dispatch").code == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["kinds", "pause", "teleport"], "unknown kind 'teleport'"),
        (["kinds", "resume", "teleport"], "unknown kind 'teleport'"),
        (["kinds", "pause", "bad kind"], "bad kind"),
        (["kinds", "pause"], "KIND"),
        (["kinds", "pause", "dispatch", "--cancel=yes"], "--cancel"),
        (["pause", "dispatch"], "unrecognized arguments"),
        (["resume", "--cancel"], "unrecognized arguments"),
    ],
)
def test_bad_pauses_change_nothing(cli: CLI, argv: list[str], needle: str) -> None:
    assert needle in cli.fails(2, *argv)


def test_disable_with_cancel(cli: CLI) -> None:
    r = cli("tasks", "disable", "dispatch", "existing", "--cancel")
    assert r.code == 0, r
    assert r.out == "disabled task dispatch/existing; its run in progress, if any, is cancelled and cannot commit\n"
    shown = cli("tasks", "show", "dispatch", "existing", "--json").json()
    assert (shown["enabled"], shown["owner"]) == (False, None)
    assert "--cancel" in cli.fails(2, "tasks", "enable", "dispatch", "existing", "--cancel")
    assert "dispatch/nowhere" in cli.fails(1, "tasks", "disable", "dispatch", "nowhere", "--cancel")
