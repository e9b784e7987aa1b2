"""Reading just enough of a handler's SQL to keep its fenced transaction tenure's.

A fenced transaction commits only through tenure, with the fence checked in the same
step. A statement that ends or changes the transaction (``COMMIT``, ``ROLLBACK``,
``BEGIN``, savepoints), or changes the session it runs on, would let writes past that
check, or leak into the next transaction on the pooled connection. :func:`check` refuses
such statements before they reach the database (:class:`~tenure.errors.StatementRefused`).

It is not a parser: it skips what is not code (string literals, quoted identifiers,
comments, PostgreSQL dollar quotes), treats MySQL executable comments (``/*! … */``,
``/*M! … */``) as the code they are, splits on ``;`` and looks at each statement's
leading keywords and the names it mentions. Where it could read text differently from
the server, it errs on the side of refusing. The stores also ask the database after
every statement whether the transaction is still open (the safety net).

What is refused, per dialect (see the README's Guarantees section):

- **PostgreSQL**: ``BEGIN``/``START``/``COMMIT``/``END``/``ROLLBACK``/``ABORT``,
  ``SAVEPOINT``/``RELEASE``, ``PREPARE`` (also ``PREPARE TRANSACTION``) and
  ``DEALLOCATE``, ``SET`` (all but ``SET CONSTRAINTS`` and ``SET LOCAL`` of a setting
  other than the timeouts tenure's guarantees rest on), ``RESET``, ``DISCARD``,
  ``LISTEN``/``UNLISTEN``, ``DECLARE`` (a cursor ``WITH HOLD`` outlives the
  transaction), ``LOAD``, ``VACUUM``, and any call of ``set_config``. Transactional DDL
  is allowed.
- **MySQL/MariaDB**: everything but ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``,
  ``REPLACE``, ``WITH``, ``VALUES``, ``TABLE`` and ``DO``. The statements that commit
  implicitly (DDL, ``TRUNCATE``, ``LOCK TABLES``, ``SET autocommit``…) are many and grow
  with each server release: an allowlist is the only list that stays true.
- **SQLite**: ``BEGIN``/``COMMIT``/``END``/``ROLLBACK``, ``SAVEPOINT``/``RELEASE``,
  ``ATTACH``/``DETACH``, ``VACUUM``, ``CREATE TEMP …``, and ``PRAGMA`` except reads
  (see :func:`sqlite_pragma_allowed`). SQLite's authorizer refuses the same again when
  the statement is prepared.

Everywhere, one statement per call.

Some statements are let through but leave state on the session that outlives the
transaction (user variables and named locks on MySQL, session advisory locks on
PostgreSQL, temporary tables there): :attr:`Checked.touches_session` tells the store not
to reuse that connection.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from tenure.errors import StatementRefused

#: Settings whose values bound how long a paused worker can hold a task (PostgreSQL).
GUARDED_SETTINGS = frozenset({"idle_in_transaction_session_timeout", "lock_timeout", "transaction_timeout"})

_PG_REFUSED = frozenset(
    {
        "abort", "begin", "commit", "deallocate", "declare", "discard", "end", "listen", "load", "prepare",
        "release", "reset", "rollback", "savepoint", "start", "unlisten", "vacuum",
    }
)  # fmt: skip
_PG_SESSION_LOCKS = frozenset(
    {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"}
)
_MYSQL_ALLOWED = ("select", "insert", "update", "delete", "replace", "with", "values", "table", "do")
_MYSQL_SESSION_LOCKS = frozenset({"get_lock", "release_lock", "release_all_locks"})
_SQLITE_REFUSED = frozenset(
    {"attach", "begin", "commit", "detach", "end", "release", "rollback", "savepoint", "vacuum"}
)
#: Pragmas that only read, even with an argument (``PRAGMA table_info(t)``).
_SQLITE_READ_PRAGMAS = frozenset(
    {
        "collation_list", "compile_options", "data_version", "database_list", "foreign_key_check",
        "foreign_key_list", "freelist_count", "function_list", "index_info", "index_list", "index_xinfo",
        "integrity_check", "module_list", "page_count", "pragma_list", "quick_check", "table_info",
        "table_list", "table_xinfo",
    }
)  # fmt: skip
#: Pragmas that act even without an argument.
_SQLITE_ACTING_PRAGMAS = frozenset({"incremental_vacuum", "optimize", "shrink_memory", "wal_checkpoint"})

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_MYSQL_EXECUTABLE = re.compile(r"/\*M?!\d*")


@dataclass(frozen=True, slots=True)
class Checked:
    """What tenure needs to know of a statement it lets through."""

    #: The statement may leave state on the session beyond the transaction (user
    #: variables, session locks, temporary tables): the connection is not reused.
    touches_session: bool = False
    #: Its leading keyword, lower-cased (``""`` if it has none).
    lead: str = ""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word" (unquoted, lower-cased), "ident" (quoted), "var" (MySQL @user), "punct"
    text: str


def check(sql: str, dialect: str, *, backslash_escapes: bool | None = None) -> Checked:
    """Refuse (:class:`~tenure.errors.StatementRefused`) a statement that may not run in
    a fenced transaction of ``dialect``; otherwise say what the store must know of it.

    ``backslash_escapes``: whether the server reads a backslash in a plain string literal
    as an escape (MySQL without ``NO_BACKSLASH_ESCAPES``; PostgreSQL with
    ``standard_conforming_strings`` off). Defaults to each server's default.
    """
    if backslash_escapes is None:
        backslash_escapes = dialect == "mysql"
    statements = [s for s in _scan(sql, dialect, backslash_escapes) if s]
    if not statements:
        raise StatementRefused("empty statement: nothing to run in the fenced transaction")
    if len(statements) > 1:
        raise StatementRefused(
            f"{len(statements)} statements in one call: a fenced transaction runs one statement per call"
        )
    (tokens,) = statements
    if dialect == "postgresql":
        return _check_postgresql(tokens)
    if dialect == "mysql":
        return _check_mysql(tokens)
    if dialect == "sqlite":
        return _check_sqlite(tokens)
    raise ValueError(f"unknown dialect {dialect!r}")


def sqlite_pragma_allowed(name: str, argument: str | None) -> bool:
    """May a fenced transaction run ``PRAGMA name[(argument)]`` on SQLite? Reads only:
    introspection pragmas, and any pragma queried without an argument unless it acts."""
    name = name.lower()
    if name in _SQLITE_READ_PRAGMAS:
        return True
    return argument is None and name not in _SQLITE_ACTING_PRAGMAS


# -- per dialect --------------------------------------------------------------------------


def _refuse(lead: str, why: str) -> StatementRefused:
    return StatementRefused(f"{lead.upper()} is refused inside a fenced transaction: {why}")


_ENDS_OR_CHANGES = "it would end or change tenure's transaction or its session (the block commits when it ends)"


def _check_postgresql(tokens: list[_Token]) -> Checked:
    words = _words(tokens)
    lead = words[0] if words else ""
    if lead in _PG_REFUSED:
        return _raise(_refuse(lead, _ENDS_OR_CHANGES))
    if lead == "set":
        scope = words[1] if len(words) > 1 else ""
        setting = _name_after(tokens, 2)
        if scope == "constraints" or (scope == "local" and setting not in GUARDED_SETTINGS and setting != ""):
            pass
        elif scope == "local":
            return _raise(
                _refuse(
                    "set local",
                    f"{setting} bounds how long a paused worker can hold a task, and is tenure's to set",
                )
            )
        else:
            return _raise(_refuse("set", "a session setting would outlive the transaction (use SET LOCAL)"))
    names = _names(tokens)
    if "set_config" in names:
        return _raise(_refuse("set_config()", "it changes settings tenure's guarantees rest on; use SET LOCAL"))
    temporary = lead == "create" and bool({"temp", "temporary"} & set(words[1:4]))
    touches = temporary or _select_into_temp(words) or bool(names & _PG_SESSION_LOCKS)
    return Checked(touches_session=touches, lead=lead)


def _check_mysql(tokens: list[_Token]) -> Checked:
    words = _words(tokens)
    lead = words[0] if words else ""
    if lead not in _MYSQL_ALLOWED:
        return _raise(
            _refuse(
                lead or "this statement",
                "on MySQL/MariaDB a fenced transaction runs only " + ", ".join(w.upper() for w in _MYSQL_ALLOWED)
                + " (so many other statements commit implicitly: DDL, TRUNCATE, LOCK TABLES, SET autocommit…)",
            )
        )  # fmt: skip
    names = _names(tokens)
    uses_variables = any(t.kind == "var" for t in tokens)
    return Checked(touches_session=uses_variables or bool(names & _MYSQL_SESSION_LOCKS), lead=lead)


def _check_sqlite(tokens: list[_Token]) -> Checked:
    words = _words(tokens)
    lead = words[0] if words else ""
    if lead in _SQLITE_REFUSED:
        return _raise(_refuse(lead, _ENDS_OR_CHANGES))
    if lead == "pragma":
        name, argument = _pragma(tokens)
        if not sqlite_pragma_allowed(name, argument):
            return _raise(_refuse(f"pragma {name}", "it changes the connection or the database, not just data"))
    if lead == "create" and {"temp", "temporary"} & set(words[1:3]):
        return _raise(_refuse("create temp", "a temporary object would outlive the transaction on its connection"))
    return Checked(lead=lead)


def _raise(exc: StatementRefused) -> Checked:
    raise exc


def _words(tokens: list[_Token]) -> list[str]:
    """Unquoted words, after any opening parentheses (``(SELECT …) UNION …``)."""
    start = 0
    while start < len(tokens) and tokens[start].text == "(":
        start += 1
    return [t.text for t in tokens[start:] if t.kind == "word"]


def _names(tokens: list[_Token]) -> frozenset[str]:
    return frozenset(t.text.lower() for t in tokens if t.kind in ("word", "ident"))


def _name_after(tokens: list[_Token], index: int) -> str:
    """The setting named by ``SET LOCAL <name>``: the index-th word or quoted name."""
    named = [t for t in tokens if t.kind in ("word", "ident")]
    return named[index].text.lower() if len(named) > index else ""


def _select_into_temp(words: list[str]) -> bool:
    return any(a == "into" and b in ("temp", "temporary") for a, b in itertools.pairwise(words))


def _pragma(tokens: list[_Token]) -> tuple[str, str | None]:
    """(name, argument) of ``PRAGMA [schema.]name [= value | (value)]``."""
    rest = tokens[1:]
    if len(rest) >= 3 and rest[1].text == ".":
        rest = rest[2:]
    if not rest:
        return "", None
    name = rest[0].text.lower()
    return name, ("?" if len(rest) > 1 else None)


# -- the scanner --------------------------------------------------------------------------


def _scan(sql: str, dialect: str, backslash_escapes: bool) -> list[list[_Token]]:
    """Tokens of each ``;``-separated statement, skipping everything that is not code."""
    statements: list[list[_Token]] = [[]]
    out = statements[0]
    n = len(sql)
    i = 0
    executable = 0  # MySQL: inside /*! … */, whose */ is not code
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif ch == ";":
            out = []
            statements.append(out)
            i += 1
        elif _line_comment(sql, i, dialect):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            opener = _MYSQL_EXECUTABLE.match(sql, i) if dialect == "mysql" else None
            if opener is not None:
                executable += 1
                i = opener.end()
            else:
                i = _skip_block_comment(sql, i, nested=dialect == "postgresql")
        elif executable and sql.startswith("*/", i):
            executable -= 1
            i += 2
        elif ch == "'":
            escapes = backslash_escapes or (dialect == "postgresql" and _prefixed_e(sql, i, out))
            i = _skip_quoted(sql, i, "'", escapes=escapes and dialect != "sqlite")
        elif ch == '"':
            if dialect == "mysql":  # a string (tenure's sessions never set ANSI_QUOTES)
                i = _skip_quoted(sql, i, '"', escapes=backslash_escapes)
            else:
                end = _skip_quoted(sql, i, '"', escapes=False)
                out.append(_Token("ident", sql[i + 1 : end - 1].replace('""', '"')))
                i = end
        elif ch == "`" and dialect in ("mysql", "sqlite"):
            end = _skip_quoted(sql, i, "`", escapes=False)
            out.append(_Token("ident", sql[i + 1 : end - 1].replace("``", "`")))
            i = end
        elif ch == "[" and dialect == "sqlite":
            end = sql.find("]", i + 1)
            end = n if end < 0 else end + 1
            out.append(_Token("ident", sql[i + 1 : end - 1]))
            i = end
        elif ch == "$" and dialect == "postgresql" and (tag := _DOLLAR_TAG.match(sql, i)) is not None:
            end = sql.find(tag.group(), tag.end())
            i = n if end < 0 else end + len(tag.group())
        elif ch == "@" and dialect == "mysql":
            if sql.startswith("@@", i):  # a system variable: reading one changes nothing
                i += 2
            else:
                out.append(_Token("var", "@"))
                i += 1
        elif _word_start(ch):
            j = i + 1
            while j < n and _word_part(sql[j]):
                j += 1
            out.append(_Token("word", sql[i:j].lower()))
            i = j
        elif ch.isdigit():
            j = i + 1
            while j < n and (_word_part(sql[j]) or sql[j] == "."):
                j += 1
            i = j
        else:
            out.append(_Token("punct", ch))
            i += 1
    return statements


def _line_comment(sql: str, i: int, dialect: str) -> bool:
    """Does a comment to the end of the line start at ``i``? On MySQL, ``--`` must be
    followed by a space or a control character (``5--1`` is 6) and ``#`` starts one too."""
    if dialect == "mysql":
        if sql.startswith("#", i):
            return True
        return sql.startswith("--", i) and (i + 2 >= len(sql) or sql[i + 2].isspace() or sql[i + 2] < " ")
    return sql.startswith("--", i)


def _word_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ch > "\x7f"


def _word_part(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ch > "\x7f"


def _prefixed_e(sql: str, i: int, out: list[_Token]) -> bool:
    """Is the quote at ``i`` the start of a PostgreSQL ``E'…'`` string (escapes on)?"""
    return bool(out) and out[-1] == _Token("word", "e") and i > 0 and sql[i - 1] in "eE"


def _skip_quoted(sql: str, i: int, quote: str, *, escapes: bool) -> int:
    """The index just past the quoted text starting at ``i`` (a doubled quote is one
    quote; with ``escapes``, a backslash escapes the next character). Unterminated: the
    rest of the text (the server will refuse it)."""
    n = len(sql)
    j = i + 1
    while j < n:
        c = sql[j]
        if escapes and c == "\\":
            j += 2
        elif c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


def _skip_block_comment(sql: str, i: int, *, nested: bool) -> int:
    """The index just past the ``/* … */`` comment at ``i`` (PostgreSQL nests them)."""
    n = len(sql)
    depth = 0
    j = i
    while j < n:
        if sql.startswith("/*", j):
            depth = depth + 1 if nested or depth == 0 else depth
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n
