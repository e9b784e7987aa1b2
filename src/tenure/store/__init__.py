"""Stores: the databases tenure runs on, all behind one contract (:class:`Store`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tenure.errors import InvalidStoreURL
from tenure.inputs import quote
from tenure.store.base import SCHEMA_VERSION, FencedTransaction, Store
from tenure.store.urls import shown

__all__ = ["SCHEMA_VERSION", "FencedTransaction", "Store", "dialect_of", "make_store"]

#: The dialect of each store URL scheme.
SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def dialect_of(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``mysql``: the dialect of the store a URL names, from
    its scheme alone. Raises :class:`InvalidStoreURL`."""
    if not isinstance(url, str):
        raise InvalidStoreURL(f"store URL must be a string, got {type(url).__name__}")
    if not url.strip():
        raise InvalidStoreURL("store URL is empty")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise InvalidStoreURL(f"store URL {shown(url)} does not parse: {exc}") from exc
    if scheme not in SCHEMES:
        raise InvalidStoreURL(
            f"store URL {shown(url)} has unknown scheme {quote(scheme) if scheme else '(none)'}; "
            "use sqlite:///path.db, postgresql://host/db or mysql://host/db"
        )
    return SCHEMES[scheme]


def make_store(url: str) -> Store:
    """Build the store a URL names, without connecting. Raises :class:`InvalidStoreURL`."""
    dialect = dialect_of(url)
    if "#" in url:
        # A URL ends at '#' (a fragment follows): a SQLite file name was cut there and
        # another file opened, and a password was cut in two, its rest shown in clear.
        at = url.index("#") + 1
        if dialect == "sqlite":
            raise InvalidStoreURL(
                f"sqlite URL {quote(url)} holds '#' (character {at}), where a URL ends: it would name "
                "another file; a sqlite URL cannot name a file with '#' (rename it, or link to it)"
            )
        raise InvalidStoreURL(
            f"{dialect} store URL holds '#' (character {at}), where a URL ends, so the rest would be lost; "
            "percent-encode it as %23 (in a password, say)"
        )
    if dialect == "sqlite":
        from tenure.store.sqlite import SQLiteStore

        return SQLiteStore(url)  # a file name may be any bytes: the system's encoding handles them
    try:
        url.encode()
    except UnicodeEncodeError as exc:
        # Bytes that are not UTF-8 in the command line or the environment arrive as lone
        # surrogates, which the drivers cannot send (they raised UnicodeEncodeError).
        raise InvalidStoreURL(
            f"store URL {shown(url)} holds bytes that are not UTF-8 text (character {exc.start + 1}); "
            "percent-encode them"
        ) from None
    if dialect == "postgresql":
        from tenure.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(url)
    try:
        from tenure.store.mysql import MySQLStore
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "asyncmy":
            raise
        scheme = urlsplit(url).scheme
        raise InvalidStoreURL(f"the {scheme} store needs the asyncmy driver: pip install 'tenure[mysql]'") from exc
    return MySQLStore(url)
