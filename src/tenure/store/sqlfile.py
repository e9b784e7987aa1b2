"""Loading a dialect's SQL: numbered migrations and a file of named queries."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(dialect: str, substitutions: dict[str, str]) -> dict[str, str]:
    """Read ``sql/<dialect>/queries.sql`` into {name: statement}.

    ``substitutions`` fill ``{placeholders}`` with constant SQL fragments (the clock
    expression, column lists), never with values: values are always bound parameters.
    """
    text = resources.files("tenure.store").joinpath("sql", dialect, "queries.sql").read_text()
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";").format(**substitutions)
    return queries


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    """The dialect's migrations as (version, script), in order. Files are ``NNNN_name.sql``."""
    folder = resources.files("tenure.store").joinpath("sql", dialect)
    found = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text()))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations for {dialect} are not numbered 1..n: {versions}")
    return found


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements, for drivers that run one at a time.

    Each statement ends with a `;` that ends a line (our scripts keep to that), or,
    between ``DELIMITER //`` and ``DELIMITER ;`` lines (the mysql client's convention,
    for routine bodies full of `;`), with ``//``. Lines starting with ``--`` are left out."""
    statements: list[str] = []
    delimiter = ";"
    lines: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("DELIMITER "):
            delimiter = stripped.split(None, 1)[1]
            continue
        if stripped.startswith("--") or (not stripped and not lines):
            continue
        if stripped.endswith(delimiter):
            lines.append(line.rstrip()[: -len(delimiter)])
            statements.append("\n".join(lines).strip())
            lines = []
        else:
            lines.append(line)
    if "\n".join(lines).strip():
        statements.append("\n".join(lines).strip())
    return [s for s in statements if s]
