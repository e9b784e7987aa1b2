"""Desired state: how long ``App.sync_tasks`` takes for a kind of N tasks, per store.

For each store in ``--stores`` (default: a temporary SQLite file, the local PostgreSQL
and the local MariaDB; each gets a scratch database, dropped afterwards) and each of
``--repeats`` rounds (a kind of its own per round), one App (the kinds registered in
code, as an application would) times, end to end (validation in Python included):

- ``new``: syncing N tasks into an empty kind (all added);
- ``no-op``: the same N again (nothing changes);
- ``update 10%``: N with a tenth of them given new parameters;
- ``disable 10%``: N minus a tenth (disabled);
- ``remove 10%``: the same list with ``remove_missing`` (the tenth removed);
- ``dry run``: a dry run of the first list (the diff only).

Targets (issue 15): syncing 10,000 new tasks in at most 2 s on PostgreSQL, a no-op
re-sync of 10,000 in at most 0.5 s. The figure per scenario is the median over the rounds.

    .venv/bin/python bench/sync.py [--tasks 10000] [--repeats 3] [--stores sqlite,postgresql://…,mysql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable
from typing import Any

import tenure
from common import Target, dialect_of, report, scenario_store

DEFAULT_STORES = "sqlite,postgresql://postgres@127.0.0.1:5432/postgres,mysql://root@127.0.0.1:3306/test"
NEW_TARGET_S, NOOP_TARGET_S = 2.0, 0.5
SCENARIOS = ("new", "no-op", "update 10%", "disable 10%", "remove 10%", "dry run")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000, help="tasks in the kind (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="rounds per store, a kind each (default %(default)s)")
    p.add_argument(
        "--stores",
        default=DEFAULT_STORES,
        help="comma-separated: 'sqlite' (a temporary file) or server URLs (a scratch database on each)",
    )
    p.add_argument("--json-only", action="store_true", help="print the JSON only, no table")
    return p


def desired_state(n: int, version: int = 0, *, changed_every: int = 0) -> dict[str, dict[str, Any]]:
    """N cities with a few parameters each; every ``changed_every``-th one at ``version``."""
    return {
        f"city-{i:06d}": {
            "zone": i % 17,
            "name": f"City {i}",
            "version": version if changed_every and i % changed_every == 0 else 0,
        }
        for i in range(n)
    }


async def timed(call: Awaitable[tenure.SyncResult]) -> tuple[float, dict[str, int]]:
    t = time.perf_counter()
    result = await call
    return time.perf_counter() - t, result.counts()


async def run_store(url: str, n: int, repeats: int) -> dict[str, Any]:
    app = tenure.App(url)
    kinds = [f"sync{r}" for r in range(repeats)]
    for kind in kinds:
        app.task(kind, every=60.0)(_never_called)
    if dialect_of(url) != "sqlite":
        await app.migrate()
    seconds: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    counts: dict[str, dict[str, int]] = {}
    async with app:
        for kind in kinds:
            full = desired_state(n)
            edited = desired_state(n, 1, changed_every=10)
            fewer = {k: v for i, (k, v) in enumerate(full.items()) if i % 10}
            kept = {k: edited[k] for k in fewer}
            steps: list[tuple[str, dict[str, dict[str, Any]], dict[str, bool]]] = [
                ("new", full, {}),
                ("no-op", full, {}),
                ("update 10%", edited, {}),
                ("disable 10%", kept, {}),
                ("remove 10%", kept, {"remove_missing": True}),
                ("dry run", full, {"dry_run": True}),
            ]
            for name, state, options in steps:
                took, counts[name] = await timed(app.sync_tasks(kind, state, **options))
                seconds[name].append(took)
                print(f"[sync] {dialect_of(url)} {kind} {name}: {took:.3f} s {counts[name]}", file=sys.stderr)
    return {
        "seconds_median": {s: round(statistics.median(v), 3) for s, v in seconds.items()},
        "seconds_min": {s: round(min(v), 3) for s, v in seconds.items()},
        "seconds_all": {s: [round(x, 3) for x in v] for s, v in seconds.items()},
        "counts_last_round": counts,
    }


def _never_called(ctx: tenure.Context) -> None:  # pragma: no cover - no worker runs here
    raise AssertionError("the bench runs no worker")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[Target], list[list[Any]]]:
    results: dict[str, Any] = {"tasks": args.tasks, "repeats": args.repeats, "stores": {}}
    for spec in [s.strip() for s in args.stores.split(",") if s.strip()]:
        url = None if spec == "sqlite" else spec
        with scenario_store(url, "sync") as store:
            name = store.dialect if store.dialect != "mysql" else "mariadb/mysql"
            results["stores"][name] = asyncio.run(run_store(store.url, args.tasks, args.repeats))
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table: list[list[Any]] = [["store", *(f"{s} s" for s in SCENARIOS)]]
    for name, res in results["stores"].items():
        table.append([name, *(res["seconds_median"][s] for s in SCENARIOS)])
    pg = results["stores"].get("postgresql")
    n = f"{args.tasks:,}"
    targets = [
        Target(
            f"sync {n} new tasks <= {NEW_TARGET_S:g} s on PostgreSQL",
            f"{pg['seconds_median']['new']} s" if pg else "not measured",
            pg["seconds_median"]["new"] <= NEW_TARGET_S if pg else None,
        ),
        Target(
            f"no-op re-sync of {n} <= {NOOP_TARGET_S:g} s on PostgreSQL",
            f"{pg['seconds_median']['no-op']} s" if pg else "not measured",
            pg["seconds_median"]["no-op"] <= NOOP_TARGET_S if pg else None,
        ),
    ]
    return results, targets, table


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    results, targets, table = run(args)
    report("sync", results, targets, table, notes=["median seconds of App.sync_tasks over the rounds"],
           json_only=args.json_only)  # fmt: skip


if __name__ == "__main__":
    main()
