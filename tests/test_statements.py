"""The statement check of fenced transactions (:mod:`tenure.store.statements`): what it
refuses per dialect, and how it reads literals, identifiers and comments the way the
server does (a misreading in the other direction would let a COMMIT through)."""

from __future__ import annotations

import pytest

from tenure.errors import StatementRefused
from tenure.store.statements import check, sqlite_pragma_allowed

REFUSED = [
    # dialect, statement
    ("postgresql", "COMMIT"),
    ("postgresql", "  end;"),
    ("postgresql", "ROLLBACK AND CHAIN"),
    ("postgresql", "abort"),
    ("postgresql", "BEGIN ISOLATION LEVEL SERIALIZABLE"),
    ("postgresql", "START TRANSACTION"),
    ("postgresql", "SAVEPOINT s"),
    ("postgresql", "RELEASE s"),
    ("postgresql", "ROLLBACK TO SAVEPOINT s"),
    ("postgresql", "PREPARE TRANSACTION 'x'"),
    ("postgresql", "COMMIT PREPARED 'x'"),
    ("postgresql", "PREPARE q AS SELECT 1"),
    ("postgresql", "DEALLOCATE ALL"),
    ("postgresql", "SET lock_timeout = 0"),
    ("postgresql", "SET SESSION search_path = x"),
    ("postgresql", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    ("postgresql", "SET LOCAL idle_in_transaction_session_timeout = 0"),
    ("postgresql", 'set local "lock_timeout" to 0'),
    ("postgresql", "SET LOCAL transaction_timeout = 0"),
    ("postgresql", "RESET lock_timeout"),
    ("postgresql", "DISCARD ALL"),
    ("postgresql", "LISTEN x"),
    ("postgresql", "UNLISTEN *"),
    ("postgresql", "VACUUM t"),
    ("postgresql", "DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
    ("postgresql", "LOAD 'plugin'"),
    ("postgresql", "SELECT set_config('lock_timeout', '0', true)"),
    ("postgresql", "SELECT pg_catalog.\"set_config\"('a', 'b', false)"),
    ("postgresql", "(COMMIT)"),
    ("postgresql", "/* a /* nested */ comment */ COMMIT"),
    ("postgresql", "SELECT 'a\\'; COMMIT"),  # standard strings: the backslash is a character
    ("postgresql", "SELECT $$x$$; COMMIT"),
    ("postgresql", "SELECT 1; SELECT 2"),
    ("postgresql", "SELECT 1$$ $$; COMMIT"),  # a number, then a dollar quote
    ("mysql", "COMMIT"),
    ("mysql", "BEGIN"),
    ("mysql", "START TRANSACTION"),
    ("mysql", "XA START 'x'"),
    ("mysql", "SAVEPOINT s"),
    ("mysql", "TRUNCATE t"),
    ("mysql", "CREATE TABLE IF NOT EXISTS t (a INT)"),
    ("mysql", "CREATE TEMPORARY TABLE t (a INT)"),
    ("mysql", "DROP TABLE t"),
    ("mysql", "ALTER TABLE t ADD COLUMN b INT"),
    ("mysql", "RENAME TABLE a TO b"),
    ("mysql", "LOCK TABLES t WRITE"),
    ("mysql", "UNLOCK TABLES"),
    ("mysql", "SET autocommit = 1"),
    ("mysql", "SET @x = 1"),
    ("mysql", "CALL p()"),
    ("mysql", "LOAD DATA INFILE 'f' INTO TABLE t"),
    ("mysql", "GRANT ALL ON *.* TO x"),
    ("mysql", "HANDLER t OPEN"),
    ("mysql", "/*!COMMIT*/"),
    ("mysql", "/*!50000 COMMIT */"),
    ("mysql", "/*M!100100 TRUNCATE t */"),
    ("mysql", "SELECT 1 /*! ; COMMIT */"),
    ("mysql", "SELECT 1 --; COMMIT"),  # `--;` is not a comment on MySQL
    ("mysql", "SELECT 1; COMMIT"),
    ("sqlite", "COMMIT"),
    ("sqlite", "END TRANSACTION"),
    ("sqlite", "BEGIN IMMEDIATE"),
    ("sqlite", "ROLLBACK"),
    ("sqlite", "SAVEPOINT s"),
    ("sqlite", "RELEASE s"),
    ("sqlite", "ATTACH 'other.db' AS other"),
    ("sqlite", "DETACH other"),
    ("sqlite", "VACUUM"),
    ("sqlite", "PRAGMA foreign_keys = OFF"),
    ("sqlite", "PRAGMA main.journal_mode = DELETE"),
    ("sqlite", "pragma optimize"),
    ("sqlite", "PRAGMA wal_checkpoint(TRUNCATE)"),
    ("sqlite", "CREATE TEMP TABLE t (a)"),
    ("sqlite", "/* /* */ COMMIT */ SELECT 1"),  # SQLite comments do not nest
    ("sqlite", "SELECT 1; SELECT 2"),
]

ALLOWED = [
    ("postgresql", "INSERT INTO t VALUES ('COMMIT; ROLLBACK')"),
    ("postgresql", "SELECT E'\\'; COMMIT; --'"),  # an escape string: one literal
    ("postgresql", "SELECT $$; COMMIT$$"),
    ("postgresql", "SELECT $tag$ $$ ; COMMIT $tag$"),
    ("postgresql", 'SELECT 1 AS "COMMIT; x"'),
    ("postgresql", "SELECT 1 -- ; COMMIT"),
    ("postgresql", "/* /* */ COMMIT */ SELECT 1"),  # PostgreSQL comments nest
    ("postgresql", "SELECT 1;"),
    ("postgresql", "SELECT 1; -- done"),
    ("postgresql", "SELECT a$b FROM t WHERE x = $1"),
    ("postgresql", "SET LOCAL statement_timeout = '1s'"),
    ("postgresql", "SET LOCAL TIME ZONE 'UTC'"),
    ("postgresql", "SET CONSTRAINTS ALL DEFERRED"),
    ("postgresql", "CREATE TABLE t (a int)"),
    ("postgresql", "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x"),
    ("postgresql", "(SELECT 1) UNION (SELECT 2)"),
    ("postgresql", "CALL p()"),
    ("postgresql", "SELECT pg_advisory_xact_lock(1)"),
    ("mysql", "SELECT 'COMMIT; x'"),
    ("mysql", 'SELECT "a\\"; COMMIT"'),  # a backslash escapes the quote: one literal
    ("mysql", "SELECT 'a\\'; COMMIT'"),
    ("mysql", "SELECT `x;y` FROM t"),
    ("mysql", "SELECT 5--1"),
    ("mysql", "SELECT 1 -- ; COMMIT"),
    ("mysql", "SELECT 1 # ; COMMIT"),
    ("mysql", "SELECT 1 /* ; COMMIT */"),
    ("mysql", "SELECT /*+ MAX_EXECUTION_TIME(1000) */ 1"),
    ("mysql", "INSERT INTO t VALUES (1)"),
    ("mysql", "REPLACE INTO t VALUES (1)"),
    ("mysql", "UPDATE t SET a = 1"),
    ("mysql", "DELETE FROM t"),
    ("mysql", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("mysql", "VALUES ROW(1)"),
    ("mysql", "TABLE t"),
    ("mysql", "DO SLEEP(0)"),
    ("mysql", "(SELECT 1) UNION (SELECT 2)"),
    ("mysql", "SELECT @@autocommit"),
    ("sqlite", "SELECT 'COMMIT; ROLLBACK'"),
    ("sqlite", 'SELECT "a;b" FROM t'),
    ("sqlite", "SELECT [a;b] FROM t"),
    ("sqlite", "SELECT 'a\\'"),  # no backslash escapes in SQLite
    ("sqlite", "PRAGMA table_info(t)"),
    ("sqlite", "PRAGMA main.table_info(t)"),
    ("sqlite", "PRAGMA foreign_keys"),
    ("sqlite", "SELECT * FROM pragma_table_info('t')"),
    ("sqlite", "CREATE TABLE t (a)"),
]


@pytest.mark.parametrize(("dialect", "sql"), REFUSED)
def test_refused(dialect: str, sql: str) -> None:
    with pytest.raises(StatementRefused):
        check(sql, dialect)


@pytest.mark.parametrize(("dialect", "sql"), ALLOWED)
def test_allowed(dialect: str, sql: str) -> None:
    assert check(sql, dialect).touches_session is False


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgresql", "SELECT pg_advisory_lock(1)"),
        ("postgresql", "SELECT pg_try_advisory_lock_shared(1)"),
        ("postgresql", "CREATE TEMP TABLE x (a int)"),
        ("postgresql", "CREATE LOCAL TEMPORARY TABLE x (a int)"),
        ("postgresql", "SELECT 1 INTO TEMP x"),
        ("mysql", "SELECT @x := 1"),
        ("mysql", "SELECT a INTO @x FROM t"),
        ("mysql", "SELECT GET_LOCK('a', 1)"),
        ("mysql", "DO RELEASE_ALL_LOCKS()"),
    ],
)
def test_statements_that_leave_state_on_the_session(dialect: str, sql: str) -> None:
    assert check(sql, dialect).touches_session is True


def test_the_server_reading_of_backslashes_is_followed() -> None:
    # PostgreSQL with standard_conforming_strings off reads '\'' as a quote character.
    assert check("SELECT 'a\\'; COMMIT'", "postgresql", backslash_escapes=True)
    with pytest.raises(StatementRefused):
        check("SELECT 'a\\'; COMMIT", "postgresql", backslash_escapes=False)
    # MySQL with NO_BACKSLASH_ESCAPES reads 'a\' as a whole literal.
    with pytest.raises(StatementRefused):
        check("SELECT 'a\\'; COMMIT; -- '", "mysql", backslash_escapes=False)
    assert check("SELECT 'a\\'; COMMIT; -- '", "mysql", backslash_escapes=True)


@pytest.mark.parametrize("sql", ["", "  ", ";", "-- only a comment", "/* nothing */;"])
def test_an_empty_statement_is_refused(sql: str) -> None:
    with pytest.raises(StatementRefused, match="empty"):
        check(sql, "postgresql")


def test_the_error_names_the_statement_not_its_values() -> None:
    with pytest.raises(StatementRefused, match="TRUNCATE is refused") as info:
        check("TRUNCATE secret_table_name", "mysql")
    assert "secret_table_name" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "argument", "allowed"),
    [
        ("table_info", "t", True),
        ("foreign_keys", None, True),
        ("foreign_keys", "off", False),
        ("journal_mode", "delete", False),
        ("wal_checkpoint", None, False),
        ("optimize", None, False),
        ("integrity_check", "10", True),
    ],
)
def test_sqlite_pragmas(name: str, argument: str | None, allowed: bool) -> None:
    assert sqlite_pragma_allowed(name, argument) is allowed


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgresql", "INSERT INTO t VALUES ('%s')"),
        ("postgresql", "SELECT E'%s'"),
        ("postgresql", "SELECT $$%(name)s$$"),
        ("postgresql", 'SELECT 1 AS "%s"'),
        ("postgresql", "SELECT %s -- %s"),
        ("postgresql", "SELECT %s /* %b */"),
        ("postgresql", "SELECT '%%%s'"),  # a percent sign, then a placeholder
        ("mysql", "INSERT INTO t VALUES ('%s')"),
        ("mysql", 'INSERT INTO t VALUES ("%s")'),
        ("mysql", "SELECT `%s` FROM t"),
        ("mysql", "SELECT %s # %(x)s"),
    ],
)
def test_a_placeholder_inside_quotes_is_refused_when_parameters_come(dialect: str, sql: str) -> None:
    """The drivers substitute parameters into the text, inside quotes and comments too:
    the value would be read as SQL the check never saw."""
    with pytest.raises(StatementRefused, match="placeholder"):
        check(sql, dialect, with_params=True)
    check(sql, dialect)  # without parameters the text is sent as written


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgresql", "INSERT INTO t VALUES (%s, %(name)s, %b)"),
        ("postgresql", "SELECT '100%%s done', %s"),  # %% is a percent sign
        ("postgresql", "SELECT 'a%' LIKE %s"),
        ("mysql", "INSERT INTO t VALUES (%s, %(name)s)"),
        ("mysql", "SELECT 'a%%s' LIKE %s"),
        ("sqlite", "INSERT INTO t VALUES ('%s', ?)"),  # SQLite binds in the prepared statement
    ],
)
def test_placeholders_in_code_are_allowed(dialect: str, sql: str) -> None:
    check(sql, dialect, with_params=True)
