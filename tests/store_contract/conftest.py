"""Fixtures of the store contract suite, beside the ``store`` fixture every folder gets."""

from __future__ import annotations

import pytest

from tenure.store import Store

from .dialect import RawDB, raw_db


@pytest.fixture
def probe(store: Store, store_url: str) -> RawDB:
    """Raw access to the database behind ``store``, with a table for fenced transactions to
    write to (``insert_probe_sql``) and to read back behind the store's back (``probe_notes``)."""
    raw = raw_db(store_url)
    raw.create_probe_table()
    return raw
