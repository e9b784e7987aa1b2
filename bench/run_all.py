"""Run every bench with modest defaults (about 8 minutes on 2 cores) and print one
combined JSON document, then each bench's table and every target, met or missed.

    .venv/bin/python bench/run_all.py [--store URL] [--only fenced,idle] [--json-only]

With a ``sqlite:///`` ``--store``, each scenario empties that store's tenure tables
first: point it at a scratch file. With a ``postgresql://`` or ``mysql://`` URL, each
scenario creates a scratch database ``tenure_bench_<name>_<random>`` on that server and
drops it afterwards. By default every scenario gets a fresh temporary SQLite file.

``--only load`` adds issue 12's real-load bench (``bench/load.py``, N = 1,000 and 3,000,
20-s windows, about 4 minutes); it is not in the default set because its application
table needs a PostgreSQL server (``bench/load.py --app-db``). Without ``--store`` it
runs tenure on a temporary SQLite file per scenario.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import coordination
import failover
import fenced
import idle
import load
import throughput
from common import command_line, machine, print_table, print_targets


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--store",
        default=None,
        help="sqlite:///path scratch store, or a postgresql:// or mysql:// server URL (a scratch "
        "database per scenario, dropped afterwards); default: temporary SQLite files",
    )
    p.add_argument("--json-only", action="store_true")
    p.add_argument(
        "--only", default="throughput,coordination,failover,fenced,idle", help="benches to run (default: %(default)s)"
    )
    args = p.parse_args(argv)
    common = ["--store", args.store] if args.store else []
    plan: dict[str, tuple[Any, list[str]]] = {
        "throughput": (throughput, ["--tasks", "1000,10000", "--workers", "2", "--duration", "20", "--warmup", "5"]),
        "coordination": (coordination, ["--tasks", "1000,10000", "--workers", "2", "--duration", "60"]),
        "failover": (failover, ["--tasks", "300", "--workers", "3", "--repeats", "3"]),
        "fenced": (fenced, ["--levels", "1000@1,2500@1,5000@1,5000@0.5", "--workers", "2", "--duration", "10"]),
        "idle": (idle, ["--tasks", "1000", "--workers", "2", "--duration", "30"]),
        "load": (
            load,
            ["--n", "1000,3000", "--duration", "20", "--warmup", "5", *([] if args.store else ["--store", "sqlite"])],
        ),
    }
    wanted = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in plan]
    if unknown:
        p.error(f"--only: unknown bench {', '.join(unknown)} (choose among {', '.join(plan)})")
    started = time.monotonic()
    sections: dict[str, Any] = {}
    outputs = []
    for name in wanted:
        module, bench_args = plan[name]
        argv_used = bench_args + common
        t = time.monotonic()
        res = module.run(module.parser().parse_args(argv_used))
        sections[name] = {
            "command": command_line(name, argv_used),
            "seconds": round(time.monotonic() - t, 1),
            "results": res.results,
            "targets": [x.as_json() for x in res.targets],
        }
        outputs.append((name, res))
    doc = {
        "bench": "all",
        "command": command_line("run_all", argv),
        "machine": machine(),
        "seconds": round(time.monotonic() - started, 1),
        **sections,
    }
    print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
    if args.json_only:
        return
    for name, res in outputs:
        print()
        print_table(name, res.table)
        for line in res.notes:
            print(f"  {line}")
    print()
    print("== targets")
    print_targets([t for _, res in outputs for t in res.targets])


if __name__ == "__main__":
    main()
