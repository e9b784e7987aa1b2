"""`make demo` until the courier demo lands: three workers share six cities on the
embedded store, one is killed with SIGKILL, its cities move with higher terms, the rest
stop gracefully, and a check proves no greeting was accepted from a stale term.

    python examples/run_example.py [--seconds 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CITIES = ["barcelona", "lisbon", "milano", "paris", "porto", "valencia"]
ROOT = Path(__file__).resolve().parent.parent
# Short leases so that the failover is visible within the demo's few seconds.
WORKER_ENV = {
    "TENURE_LEASE_TTL": "3",
    "TENURE_HEARTBEAT": "0.5",
    "TENURE_POLL": "0.5",
    "TENURE_TRUST_MARGIN": "0.5",
}
WORKER_CODE = """
import asyncio, os, sys
import tenure
from tenure import logs
from examples.quickstart import app
logs.configure()
asyncio.run(app.run_worker(settings=tenure.Settings.from_env(os.environ, worker_id=sys.argv[1])))
"""


def start_worker(url: str, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **WORKER_ENV, "PYTHONPATH": str(ROOT), "TENURE_STORE": url}
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE, name], env=env, stderr=log, stdout=log)


def owners(db: Path) -> dict[str, tuple[str | None, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, owner, term FROM tenure_tasks ORDER BY key").fetchall()
    return {key: (owner, term) for key, owner, term in rows}


def show(db: Path, note: str) -> None:
    print(f"\n-- {note}")
    for city, (owner, term) in owners(db).items():
        print(f"   {city:<10} owner={owner or '-':<4} term={term}")


async def add_cities(url: str) -> None:
    os.environ["TENURE_STORE"] = url
    from examples.quickstart import app

    async with app:
        for city in CITIES:
            await app.add_task("greet", city)


def check(db: Path) -> bool:
    """Terms of accepted greetings never go back per city, and no two workers share a term."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT city, term, at FROM greetings ORDER BY city, at").fetchall()
    ok = True
    last: dict[str, int] = {}
    for city, term, _ in rows:
        if term < last.get(city, 0):
            print(f"   VIOLATION: {city} accepted term {term} after {last[city]}")
            ok = False
        last[city] = max(term, last.get(city, 0))
    print(f"\n{len(rows)} greetings accepted; terms per city never went back: {'yes' if ok else 'NO'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=24.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        url = f"sqlite:///{db}"
        asyncio.run(add_cities(url))
        workers = {name: start_worker(url, name, Path(tmp)) for name in ("w1", "w2", "w3")}
        try:
            third = args.seconds / 3
            time.sleep(third)
            show(db, "three workers share six cities")
            victim = max(workers, key=lambda w: sum(1 for o, _ in owners(db).values() if o == w))
            workers[victim].send_signal(signal.SIGKILL)
            print(f"\n** SIGKILL {victim}: its cities move once its lease (3 s) expires")
            time.sleep(third)
            show(db, f"after {victim} died: its cities run elsewhere, at higher terms")
            time.sleep(third)
        finally:
            for proc in workers.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name, proc in workers.items():
                code = proc.wait(timeout=30)
                print(f"   {name} exited with {code}")
        show(db, "after SIGTERM: every city released")
        return 0 if check(db) else 1


if __name__ == "__main__":
    sys.exit(main())
