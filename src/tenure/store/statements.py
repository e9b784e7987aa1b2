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

Everywhere, one statement per call. On PostgreSQL and MySQL, a statement sent with
parameters may not hold a placeholder inside a literal, a quoted name or a comment: the
drivers substitute parameters into the text client-side, there too, and the value would
be read as SQL this check never saw (``'%s'`` with a value holding ``); COMMIT; …``).

Some statements are let through but leave state on the session that outlives the
transaction (user variables and named locks on MySQL, session advisory locks on
PostgreSQL, temporary tables there): :attr:`Checked.touches_session` tells the store not
to reuse that connection.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import NamedTuple

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


@dataclass(frozen=True, slots=True)
class Checked:
    """What tenure needs to know of a statement it lets through."""

    #: The statement may leave state on the session beyond the transaction (user
    #: variables, session locks, temporary tables): the connection is not reused.
    touches_session: bool = False
    #: Its leading keyword, lower-cased (``""`` if it has none).
    lead: str = ""


class _Token(NamedTuple):
    kind: str  # "word" (unquoted, lower-cased), "ident" (quoted), "var" (MySQL @user), "punct"
    text: str


def check(sql: str, dialect: str, *, backslash_escapes: bool | None = None, with_params: bool = False) -> Checked:
    """Refuse (:class:`~tenure.errors.StatementRefused`) a statement that may not run in
    a fenced transaction of ``dialect``; otherwise say what the store must know of it.

    ``backslash_escapes``: whether the server reads a backslash in a plain string literal
    as an escape (MySQL without ``NO_BACKSLASH_ESCAPES``; PostgreSQL with
    ``standard_conforming_strings`` off). Defaults to each server's default.

    ``with_params``: parameters come with the statement. On PostgreSQL and MySQL the
    drivers then substitute them into the text client-side, placeholders inside quotes
    and comments too, where a value would be read as SQL the check never saw: such a
    statement is refused.
    """
    if backslash_escapes is None:
        backslash_escapes = dialect == "mysql"
    remembered = len(sql) <= _CACHED_UP_TO
    verdict = (_verdict if remembered else _uncached)(sql, dialect, backslash_escapes, with_params)
    if isinstance(verdict, str):
        raise StatementRefused(verdict)
    return verdict


#: Statements up to this length have their verdict remembered (4,096 of them at most).
_CACHED_UP_TO = 2000


def _uncached(sql: str, dialect: str, backslash_escapes: bool, with_params: bool = False) -> Checked | str:
    """:func:`check`'s answer, or the refusal's message."""
    try:
        return _check(sql, dialect, backslash_escapes, with_params)
    except StatementRefused as exc:
        return str(exc)


# Handlers send the same few statements again and again, and a scan costs tens of
# microseconds; a remembered verdict, a fraction of one.
_verdict = functools.lru_cache(maxsize=4096)(_uncached)


def _check(sql: str, dialect: str, backslash_escapes: bool, with_params: bool = False) -> Checked:
    scanned = _scan(sql, dialect, backslash_escapes)
    if with_params and any(t.kind == "quoted_placeholder" for s in scanned for t in s):
        raise StatementRefused(
            "a placeholder inside a quoted literal, quoted name or comment: the driver substitutes it there "
            "too, and the value would be read as SQL; write %s without quotes (%% for a percent sign)"
        )
    statements = [kept for s in scanned if (kept := [t for t in s if t.kind != "quoted_placeholder"])]
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


def _opening(tokens: list[_Token], refused: frozenset[str] = frozenset()) -> tuple[list[str], str]:
    """The statement's words (:func:`_words`) and the first of them (``""``: none); raises
    :class:`StatementRefused` if that one is in ``refused``: statements that would end or
    change tenure's transaction or its session."""
    words = _words(tokens)
    lead = words[0] if words else ""
    if lead in refused:
        raise _refuse(lead, _ENDS_OR_CHANGES)
    return words, lead


def _check_postgresql(tokens: list[_Token]) -> Checked:
    words, lead = _opening(tokens, _PG_REFUSED)
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
    _, lead = _opening(tokens)
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
    words, lead = _opening(tokens, _SQLITE_REFUSED)
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

# One regular expression per dialect finds the next token; the loop below decides what it
# means. Literals with escapes come in two spellings: without backslash escapes a quote is
# escaped by doubling it only. An unterminated literal or comment runs to the end (the
# server refuses the statement anyway).
_WORD = r"[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*"
_PLAIN = r"'(?:[^']|'')*'?"
_ESCAPED = r"'(?:[^'\\]|\\.|'')*'?"
#: What never matters, skipped in front of every token: spaces, numbers, and operators
#: that cannot start anything the scanner must see.
_SKIP = r"(?:\s+|\d[\w.]*|[,=<>+%!|&^~:?{}\]]|-(?!-))*+"  # possessive: never given back
_COMMON = [
    ("semi", r";"),
]
_TAIL = [
    ("word", _WORD),
    ("punct", r"."),
]


def _compile(parts: list[tuple[str, str]]) -> re.Pattern[str]:
    return re.compile(_SKIP + "(?:" + "|".join(f"(?P<{name}>{rx})" for name, rx in parts) + ")", re.DOTALL)


_PATTERNS = {
    ("postgresql", False): _compile(
        [
            *_COMMON,
            ("line", r"--[^\n]*"),
            ("block", r"/\*"),  # they nest: see _skip_nested_comment
            ("estring", r"[eE]" + _ESCAPED),
            ("string", _PLAIN),
            ("ident", r'"(?:[^"]|"")*"?'),
            ("dollar", r"\$(?P<tag>[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*|)\$(?:.*?\$(?P=tag)\$|.*\Z)"),
            *_TAIL,
        ]
    ),
    ("mysql", True): _compile(
        [
            *_COMMON,
            ("line", r"--(?=[\s\x00-\x1f]|\Z)[^\n]*|#[^\n]*"),  # `5--1` is 6: no comment
            ("exec", r"/\*M?!\d*"),  # /*! … */ and /*M! … */ are code
            ("block", r"/\*.*?(?:\*/|\Z)"),
            ("close", r"\*/"),
            ("string", _ESCAPED),
            ("dstring", r'"(?:[^"\\]|\\.|"")*"?'),  # a string: sessions never set ANSI_QUOTES
            ("ident", r"`(?:[^`]|``)*`?"),
            ("sysvar", r"@@"),
            ("var", r"@"),
            *_TAIL,
        ]
    ),
    ("sqlite", False): _compile(
        [
            *_COMMON,
            ("line", r"--[^\n]*"),
            ("block", r"/\*.*?(?:\*/|\Z)"),
            ("string", _PLAIN),
            ("ident", r'"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?'),
            *_TAIL,
        ]
    ),
}
# The other readings of backslashes: PostgreSQL with standard_conforming_strings off,
# MySQL with NO_BACKSLASH_ESCAPES.
_PATTERNS["postgresql", True] = re.compile(
    _PATTERNS["postgresql", False].pattern.replace(f"(?P<string>{_PLAIN})", f"(?P<string>{_ESCAPED})"), re.DOTALL
)
_PATTERNS["mysql", False] = re.compile(
    _PATTERNS["mysql", True]
    .pattern.replace(f"(?P<string>{_ESCAPED})", f"(?P<string>{_PLAIN})")
    .replace(r'(?P<dstring>"(?:[^"\\]|\\.|"")*"?)', r'(?P<dstring>"(?:[^"]|"")*"?)'),
    re.DOTALL,
)
_PATTERNS["sqlite", True] = _PATTERNS["sqlite", False]  # SQLite has no backslash escapes


#: Text the scanner skips (literals, quoted names, comments) in which a driver that
#: substitutes parameters client-side (psycopg, asyncmy: %s, %(name)s, psycopg's %b, %t)
#: would still see a placeholder; %% is a percent sign.
_QUOTED_KINDS = frozenset({"string", "estring", "dstring", "dollar", "ident", "line", "block"})
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[sbt]")


def _hides_placeholder(text: str) -> bool:
    return "%" in text and _PLACEHOLDER.search(text.replace("%%", "")) is not None


def _scan(sql: str, dialect: str, backslash_escapes: bool) -> list[list[_Token]]:
    """Tokens of each ``;``-separated statement, skipping everything that is not code.
    A skipped stretch that holds a placeholder leaves a ``quoted_placeholder`` token
    (PostgreSQL and MySQL, whose drivers substitute parameters into the text)."""
    pattern = _PATTERNS[dialect, backslash_escapes]
    substituted = dialect != "sqlite"
    statements: list[list[_Token]] = [[]]
    out = statements[0]
    n = len(sql)
    i = 0
    executable = 0  # MySQL: inside /*! … */, whose */ is not code
    while i < n:
        m = pattern.match(sql, i)
        if m is None:  # only skippable characters left
            break
        kind = m.lastgroup
        i = m.end()
        if kind == "block" and dialect == "postgresql":
            i = _skip_nested_comment(sql, m.start(kind))
        if substituted and kind in _QUOTED_KINDS and _hides_placeholder(sql[m.start(kind) : i]):
            out.append(_Token("quoted_placeholder", ""))
        if kind == "word":
            out.append(_Token("word", m.group(kind).lower()))
        elif kind == "semi":
            out = []
            statements.append(out)
        elif kind == "ident":
            text = m.group(kind)
            out.append(_Token("ident", text[1:-1] if len(text) > 1 else ""))
        elif kind == "exec":
            executable += 1
        elif kind == "close":
            if executable:
                executable -= 1
            else:  # not inside /*! */: two characters of code
                out.append(_Token("punct", "*"))
                out.append(_Token("punct", "/"))
        elif kind == "var":
            out.append(_Token("var", "@"))
        elif kind == "punct":
            out.append(_Token("punct", m.group(kind)))
        # space, line and block comments, literals, numbers, @@: nothing to keep
    return statements


def _skip_nested_comment(sql: str, i: int) -> int:
    """The index just past the PostgreSQL ``/* … */`` comment at ``i``: they nest."""
    n = len(sql)
    depth = 0
    j = i
    while j < n:
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return n
