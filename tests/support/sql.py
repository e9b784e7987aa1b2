"""SQL text per store dialect (``Store.dialect``, ``ctx.dialect``) for the tables tests
write beside tenure's own: the database's clock, the driver's placeholder, column types."""

from __future__ import annotations

#: The database's clock, epoch seconds, inside a statement (PostgreSQL: the statement's
#: time, not the transaction's).
DB_NOW = {
    "sqlite": "(julianday('now') - 2440587.5) * 86400.0",
    "postgresql": "extract(epoch from clock_timestamp())",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
}

#: Parameter placeholder of each dialect's driver.
MARK = {"sqlite": "?", "postgresql": "%s", "mysql": "%s"}

#: Column types for :func:`create_table`: ``{id}`` an auto-numbered primary key, ``{text}``
#: a short string (MariaDB cannot index TEXT without a length), ``{real}`` a double, and
#: the table's suffix. ``key`` is a reserved word on MariaDB: tests name it ``tkey``.
_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "text": "TEXT", "real": "REAL", "engine": ""},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "text": "TEXT", "real": "DOUBLE PRECISION", "engine": ""},
    "mysql": {
        "id": "BIGINT AUTO_INCREMENT PRIMARY KEY",
        "text": "VARCHAR(255)",
        "real": "DOUBLE",
        "engine": " ENGINE=InnoDB",
    },
}


def create_table(dialect: str, name: str, columns: str) -> str:
    """``CREATE TABLE name (columns)`` with ``{id}``, ``{text}`` and ``{real}`` in
    ``columns`` replaced by the dialect's types."""
    types = _TYPES[dialect]
    return f"CREATE TABLE {name} ({columns.format(**types)}){types['engine']}"


def insert(dialect: str, table: str, columns: list[str], *, now: str | None = None) -> str:
    """``INSERT INTO table (columns[, now]) VALUES (placeholders[, database clock])``: one
    placeholder per column, and the column ``now`` (if given) set to :data:`DB_NOW`."""
    names = [*columns, *([now] if now else [])]
    values = [MARK[dialect]] * len(columns) + ([DB_NOW[dialect]] if now else [])
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)})"
