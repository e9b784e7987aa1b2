"""The README's recipe for fencing another system with ctx.token really refuses stale writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from examples.token_fencing import CREATE, write_plan


def test_target_keeps_highest_token_and_refuses_lower(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "target.db")
    conn.execute(CREATE)
    assert write_plan(conn, "barcelona", 7, "plan from term 7")
    assert write_plan(conn, "barcelona", 9, "plan from term 9")
    assert not write_plan(conn, "barcelona", 8, "late plan from term 8")
    assert write_plan(conn, "barcelona", 9, "second plan from term 9")
    assert write_plan(conn, "lisbon", 3, "another city is fenced on its own")
    rows = dict(conn.execute("SELECT city, token || ':' || plan FROM city_plans").fetchall())
    assert rows == {"barcelona": "9:second plan from term 9", "lisbon": "3:another city is fenced on its own"}
