"""Store URL options (issue 16): every number is checked the same way on every store, a
refusal is one line naming the option, its range and its unit, and what is accepted is
what the server's sessions then carry (a timeout never reaches the server as 0 = off)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from support.rawdb import raw_db
from support.storeapi import add, register
from support.stores import STORE_FACTORIES, require_store
from tenure.errors import InvalidStoreURL
from tenure.store import make_store
from tenure.store.postgresql import parse_postgresql_url
from tenure.store.urls import hide_password

#: A URL of each store with a password (it must never show in a message); nothing listens.
BASES = {
    "postgresql": "postgresql://tenure:s3cret-pw@127.0.0.1:1/tenure",
    "mysql": "mysql://tenure:s3cret-pw@127.0.0.1:1/tenure",
    "sqlite": "sqlite:///never-created.db",
}

#: (store, query, what the message must say)
BAD_OPTIONS: list[tuple[str, str, str]] = [
    # What issue 16 found: timeouts that became 0 ms (= off), and tracebacks.
    ("postgresql", "idle_tx_timeout=0.0004", "idle_tx_timeout must be from 0.001 to 2147483.647 seconds, got 0.0004"),
    ("postgresql", "lock_timeout=0.0009", "lock_timeout must be from 0.001 to 2147483.647 seconds"),
    ("postgresql", "idle_tx_timeout=inf", "got inf"),
    ("postgresql", "lock_timeout=nan", "got nan"),
    ("postgresql", "pool=0.5", "pool must be a whole number of connections, got '0.5'"),
    ("postgresql", "idle_tx_timeout=1e10", "0 would turn it off"),
    ("postgresql", "pool=0", "pool must be from 1 to 1000 connections"),
    ("postgresql", "pool=1001", "from 1 to 1000"),
    ("postgresql", "pool=" + "9" * 5000, "pool must be from 1 to 1000 connections"),
    ("postgresql", "connect_timeout=-1", "connect_timeout must be from 0.001 to 3600 seconds"),
    ("postgresql", "connect_timeout=1e400", "got inf"),
    ("postgresql", "lock_timeout=", "lock_timeout must be a number of seconds, got ''"),
    ("postgresql", "lock_timeout=soon", "got 'soon'"),
    ("postgresql", "pool=2&pool=3", "pool is given more than once"),
    ("postgresql", "bogus=1", 'invalid URI query parameter: "bogus"'),
    ("mysql", "idle_tx_timeout=0.0004", "idle_tx_timeout must be from 0.001 to 31536000 seconds"),
    ("mysql", "lock_timeout=inf", "got inf"),
    ("mysql", "lock_timeout=31536001", "up to a year"),
    ("mysql", "pool=0.5", "pool must be a whole number of connections"),
    ("mysql", "connect_timeout=nan", "connect_timeout must be from 0.001 to 3600 seconds, got nan"),
    ("mysql", "pool=8&pool=9", "given more than once"),
    ("sqlite", "busy_timeout=0.0004", "busy_timeout must be from 0.001 to 600 seconds, got 0.0004"),
    ("sqlite", "busy_timeout=inf", "got inf"),
    ("sqlite", "busy_timeout=nan", "got nan"),
    ("sqlite", "pool=0.5", "pool must be a whole number of connections"),
    ("sqlite", "pool=65", "from 1 to 64"),
    ("sqlite", "busy_timeout=1&busy_timeout=2", "given more than once"),
    ("sqlite", "synchronous=full&synchronous=off", "given more than once"),
    # Issue 17: session-bound liveness, switched off behind a transaction-pooling proxy.
    ("postgresql", "liveness=pooled", "liveness must be session or lease, got 'pooled'"),
    ("postgresql", "liveness=lease&liveness=session", "liveness is given more than once"),
    ("mysql", "liveness=", "liveness must be session or lease, got ''"),
    ("sqlite", "liveness=off", "liveness must be session or lease"),
    # Issue 17: the PostgreSQL connection that watches another worker's lock.
    ("postgresql", "watch=no", "watch must be on or off, got 'no'"),
    ("postgresql", "watch=on&watch=off", "watch is given more than once"),
    ("mysql", "watch=off", "unknown"),
]


@pytest.mark.parametrize(("store", "query", "needle"), BAD_OPTIONS)
def test_bad_options_are_one_clear_line(store: str, query: str, needle: str) -> None:
    url = f"{BASES[store]}?{query}"
    with pytest.raises(InvalidStoreURL) as info:
        make_store(url)  # refused before any connection is tried
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert len(message) < 400
    assert "s3cret-pw" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tenure:s3cret-pw@/tenure",  # no host
        "postgresql://tenure:s3cret-pw@127.0.0.1/tenure?bogus=1",
        "postgres://tenure:s3cret-pw@[::1/tenure",
        "mysql://tenure:s3cret-pw@127.0.0.1/",  # no database
        "mysql://tenure:s3cret-pw@127.0.0.1:99999/tenure",
        "mariadb://tenure:s3cret-pw@/tenure",  # no host
    ],
)
def test_the_password_is_hidden_in_every_message(url: str) -> None:
    with pytest.raises(InvalidStoreURL) as info:
        make_store(url)
    assert "s3cret-pw" not in str(info.value)
    assert "tenure:***@" in str(info.value)


@pytest.mark.parametrize(
    ("store", "query"),
    [
        ("postgresql", "pool=1&idle_tx_timeout=0.001&lock_timeout=2147483.647&connect_timeout=3600"),
        ("postgresql", "pool=8.0&idle_tx_timeout=2e0"),
        ("mysql", "pool=1000&idle_tx_timeout=0.001&lock_timeout=31536000"),
        ("sqlite", "busy_timeout=0.001&pool=64&synchronous=NORMAL"),
        ("postgresql", "liveness=lease"),
        ("mysql", "liveness=LEASE"),
        ("sqlite", "liveness=session"),
        ("postgresql", "watch=OFF"),
        ("postgresql", "watch=on&liveness=lease"),
    ],
)
def test_the_limits_themselves_are_accepted(store: str, query: str) -> None:
    make_store(f"{BASES[store]}?{query}")


#: Options at their smallest, and how each store's session reports them (rounded as sent).
#: One statement each: it travels with BEGIN, so a 1 ms idle-in-transaction limit cannot
#: end the session between statements on a busy machine.
SMALLEST = {
    "sqlite": ("busy_timeout=0.001", ["PRAGMA busy_timeout"], [(1,)]),
    "postgresql": (
        "idle_tx_timeout=0.001&lock_timeout=0.0024",
        ["SELECT current_setting('idle_in_transaction_session_timeout'), current_setting('lock_timeout')"],
        [("1ms", "2ms")],
    ),
    "mysql": (
        "idle_tx_timeout=0.001&lock_timeout=0.001",
        ["SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout"],
        [(1, 1)],
    ),
}


class _ReadDone(Exception):
    """Ends the fenced block once the settings are read."""


async def test_the_smallest_timeouts_reach_the_server_switched_on(store_url: str) -> None:
    dialect = make_store(store_url).dialect
    query, statements, expected = SMALLEST[dialect]
    assert "?" not in store_url
    # The set-up runs on a store with the default limits: its transactions take several
    # round trips, which a 1 ms idle-in-transaction limit may cut on a busy machine.
    setup = make_store(store_url)
    await setup.open(migrate=True)
    store = make_store(f"{store_url}?{query}")
    try:
        await register(setup, "w1")
        await add(setup, "dispatch", "barcelona")
        (claim,) = await setup.claim_tasks("w1", kinds=["dispatch"], limit=1)
        await store.open(migrate=False)
        with contextlib.suppress(_ReadDone):
            async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                seen = [await tx.fetchone(sql) for sql in statements]
                # Roll back rather than commit: the commit would come after an idle gap
                # longer than the 1 ms limit being read, which ends the session.
                raise _ReadDone
    finally:
        await store.close()
        await setup.close()
    assert seen == expected


async def test_a_sqlite_file_name_leaves_room_for_the_files_beside_it(tmp_path: Path) -> None:
    """The longest name accepted still takes a worker's lock file (``<name>-live-<20 hex>``),
    which a name a few bytes longer could not: such a worker crashed with OSError."""
    longest = tmp_path / ("b" * 226 + ".db")  # 229 bytes
    store = make_store(f"sqlite:///{longest}")
    await store.open(migrate=True)
    try:
        async with store.hold_liveness("w1", check_every=0.2) as live:
            await live.ensure()
            assert live.token is not None
    finally:
        await store.close()
    with pytest.raises(InvalidStoreURL) as info:
        make_store(f"sqlite:///{tmp_path / ('é' * 113 + 'x.db')}")  # 230 bytes
    assert "names a file of 230 bytes; the limit is 229" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tenure:s3cret-pw@127.0.0.1/\udcff",
        "postgresql://tenure\udcff:s3cret-pw@127.0.0.1/tenure",
        "postgresql://tenure:s3cret-pw\udcff@127.0.0.1/tenure",
        "postgresql://tenure:s3cret-pw@127.0.0.1/tenure?sslrootcert=\udcff",
        "mysql://tenure:s3cret-pw@127.0.0.1/\udcff",
        "mysql://tenure:s3cret-pw@127.0.0.1/tenure?ssl_ca=\udcff",
    ],
)
def test_bytes_that_are_not_utf8_are_refused_by_the_server_stores(url: str) -> None:
    """Bytes that are not UTF-8 in the command line or the environment arrive as lone
    surrogates, which psycopg and asyncmy cannot encode: a traceback at connect."""
    with pytest.raises(InvalidStoreURL) as info:
        make_store(url)
    message = str(info.value)
    assert "holds bytes that are not UTF-8 text" in message
    assert "s3cret-pw" not in message
    message.encode()  # printable as it is


def test_a_sqlite_file_name_may_be_any_bytes() -> None:
    assert make_store("sqlite:///caf\udce9.db").dialect == "sqlite"  # the system's encoding handles it


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tenure@127.0.0.1/tenure?password=s3cret-pw",
        "postgresql://tenure@127.0.0.1/tenure?sslmode=require&sslpassword=s3cret-pw&bogus=1",
        "postgresql://tenure@127.0.0.1/tenure?PassWord=s3cret-pw&pool=0",
    ],
)
def test_a_password_given_as_a_url_option_is_hidden_too(url: str) -> None:
    """libpq takes ``password`` and ``sslpassword`` as query options: they were shown in
    clear in ``display_url`` (``tenure status``, ``/api/status``) and every error."""
    assert "s3cret-pw" not in hide_password(url)
    assert "=***" in hide_password(url)
    with pytest.raises(InvalidStoreURL) as info:
        make_store(url + "&bogus=1")
    assert "s3cret-pw" not in str(info.value)


def test_an_at_sign_in_a_postgresql_password_must_be_percent_encoded() -> None:
    """We split the user part at the last '@', libpq at the first: the driver's error then
    quoted the rest of the password as the host it could not resolve."""
    with pytest.raises(InvalidStoreURL, match="write it as %40") as info:
        make_store("postgresql://tenure:hun@ter2secret@127.0.0.1/tenure")
    assert "ter2secret" not in str(info.value)
    libpq, _ = parse_postgresql_url("postgresql://tenure:hun%40ter2secret@127.0.0.1/tenure")
    assert conninfo_to_dict(libpq)["password"] == "hun@ter2secret"  # noqa: S105 (a test URL's)


def test_a_unix_socket_url_reaches_libpq_whole() -> None:
    """``postgresql:///db?host=/run/postgresql`` (libpq's own form for a socket) was
    refused: rebuilding the URL dropped its empty host, which libpq does not parse."""
    libpq, _ = parse_postgresql_url("postgresql:///tenure?host=/var/run/postgresql&pool=2")
    params = conninfo_to_dict(libpq)
    assert params["host"] == "/var/run/postgresql"
    assert params["dbname"] == "tenure"


def test_libpq_parameters_keep_their_spaces() -> None:
    """The libpq URL was rebuilt with '+' for spaces, which libpq reads as plus signs:
    ``sslrootcert=/etc/my certs/root.crt`` named a file that does not exist."""
    libpq, _ = parse_postgresql_url(
        "postgresql://u@127.0.0.1/db?pool=2&sslrootcert=/etc/my%20certs/root.crt&options=-c%20search_path%3Dmine"
    )
    params = conninfo_to_dict(libpq)
    assert params["sslrootcert"] == "/etc/my certs/root.crt"
    assert params["options"] == "-c search_path=mine"


async def test_libpq_options_of_a_postgresql_url_are_kept_beside_tenures_limits(tmp_path: Path) -> None:
    """The connection keyword carrying tenure's session limits replaced the URL's own
    ``options``: ``-c search_path=mine`` was dropped and tenure's tables went to ``public``
    (two deployments separated by search_path shared one set of tables). Options come
    first and the limits last, so options cannot switch the limits off."""
    require_store("postgresql", tmp_path)
    with STORE_FACTORIES["postgresql"](tmp_path) as url:
        raw = raw_db(url)
        raw.query("CREATE SCHEMA mine")
        options = quote("-c search_path=mine -c lock_timeout=0 -c idle_in_transaction_session_timeout=0")
        store = make_store(f"{url}?options={options}")
        await store.open(migrate=True)
        try:
            await register(store, "w1")
            await add(store, "dispatch", "barcelona")
            (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
            with contextlib.suppress(_ReadDone):
                async with store.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term) as tx:
                    seen = await tx.fetchone(
                        "SELECT current_setting('search_path'), current_setting('lock_timeout'), "
                        "current_setting('idle_in_transaction_session_timeout')"
                    )
                    raise _ReadDone
        finally:
            await store.close()
        assert seen == ("mine", "5s", "2s")
        tables = "SELECT DISTINCT table_schema FROM information_schema.tables WHERE left(table_name, 7) = 'tenure_'"
        assert raw.query(tables) == [("mine",)]
        raw.close()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite:////tmp/reports#2.db", "it would name another file"),
        ("postgresql://tenure:pa#ss-s3cret@127.0.0.1/tenure", "percent-encode it as %23"),
        ("postgresql://tenure@127.0.0.1/tenure#x", "percent-encode it as %23"),
        ("mysql://root:pa#ss-s3cret@127.0.0.1/test", "percent-encode it as %23"),
    ],
)
def test_a_hash_sign_is_refused_by_name(url: str, needle: str) -> None:
    """A URL ends at '#': SQLite opened another file (``/tmp/reports``) without a word, a
    PostgreSQL password with '#' was shown in clear by ``display_url`` (``tenure status``,
    ``/api/status``), and MySQL's error quoted it as a port that was not a number."""
    with pytest.raises(InvalidStoreURL, match=needle) as info:
        make_store(url)
    assert "s3cret" not in str(info.value)
    at = url.index("#") + 1
    assert f"(character {at})" in str(info.value)
