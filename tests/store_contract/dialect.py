"""Raw access to the database behind a store, for what the Store API cannot do on purpose
(forge a newer schema version, read a table the tests made): :mod:`support.rawdb`, one
class per dialect; :func:`raw_db` picks it from the store URL."""

from __future__ import annotations

from support.rawdb import PROBE_TABLE, RawDB, raw_db

__all__ = ["PROBE_TABLE", "RawDB", "raw_db"]
