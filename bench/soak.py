"""Fault-injection soak: a seeded schedule of faults against real worker processes on each
store, checked at the end by the fault suite's history checker (tests/support/history.py).

    python bench/soak.py [--stores sqlite,postgresql,mariadb] [--seconds 600] [--seed 1] [--faults a,b]

Reuses the fault suite's harness and workload (tests/faults): three workers, six tasks
every 0.5 s and a ``victim`` task (blocking work, then a fenced transaction held open)
where pauses are aimed. Faults, drawn with the seed: SIGKILL of a random worker (a new
one replaces it), SIGSTOP past the TTL between runs, SIGSTOP mid-run (stale commit must be
refused), SIGSTOP inside an open fenced transaction (its commit must be refused), and a
join/leave (a worker joins, another one SIGTERMed). On PostgreSQL and MariaDB two of the
three workers are special (tests/faults/network.py): one runs in a network namespace of
its own, and ``partition`` cuts it off from the database for 2.5 to 5 s; one reaches the
database through a relay adding 100 ± 50 ms each way, and ``latency-spike`` stalls that
relay for 3 s. After each fault: the time until every task committed again (database
clock), against the failover bound. The history is checked once at the end, over the
whole soak.

Prints one JSON object (per fault and store: runs, commits attempted, stale commits
refused, safety violations, worst recovery vs bound) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from faults.harness import Faults
from faults.test_faults import BOUND, TIMING, pause_at, taken_over_or_stalled, wait_refused
from support.history import stale_refusals
from support.rawdb import raw_db
from support.stores import STORE_FACTORIES
from tenure.store import make_store

FAULTS = ["sigkill", "sigstop-between", "sigstop-mid-run", "sigstop-in-tx", "join-leave"]
#: Faults on a worker's network: servers only (an embedded SQLite store has no network).
NETWORK_FAULTS = ["partition", "latency-spike"]


class Soak:
    """The cluster under soak: plain workers, and on a server one worker in a network
    namespace of its own (``cut``, for partitions) and one behind a relay adding
    100 ± 50 ms each way (``slow``, for latency spikes). A special worker that is killed
    or leaves is replaced by one of the same sort."""

    def __init__(self, c: Faults, rng: random.Random, *, network: bool) -> None:
        self.c = c
        self.rng = rng
        self.n = 0
        self.tasks: list[tuple[str, str]] = []
        self.sort: dict[str, str] = {}
        self.net = c.isolated() if network else None
        self.relay = c.delayed(delay=0.1, jitter=0.05, spike=3.0, seed=rng.randrange(1 << 30)) if network else None

    def live(self) -> list[str]:
        return [n for n, w in self.c.workers.items() if w.alive() and not w.signalled]

    def spawn(self, sort: str = "plain") -> str:
        self.n += 1
        name = f"w{self.n}"
        if sort == "cut" and self.net is not None:
            self.c.start(name, timing=TIMING, prefix=self.net.prefix, url=self.net.url)
        elif sort == "slow" and self.relay is not None:
            self.c.start(name, timing=TIMING, url=self.relay.url)
        else:
            self.c.start(name, timing=TIMING)
        self.sort[name] = sort
        return name

    def replace_specials(self) -> None:
        live = {self.sort[n] for n in self.live()}
        for sort in ("cut", "slow") if self.net is not None else ():
            if sort not in live:
                self.spawn(sort)

    def of_sort(self, sort: str) -> str:
        return next(n for n in self.live() if self.sort[n] == sort)

    async def inject(self, fault: str) -> None:
        c = self.c
        victim = self.tasks[-1]
        if fault == "sigkill":
            name = self.rng.choice(self.live())
            c.workers[name].kill()
            self.spawn(self.sort[name])
        elif fault == "sigstop-between":
            name = self.rng.choice(self.live())
            c.stop(name)
            try:
                at = c.db.now()

                async def expired() -> bool:
                    return c.db.now() > at + TIMING.ttl + 1.0

                await c.wait_for(expired, "the stopped worker's lease to expire", within=30)
            finally:
                c.cont(name)
        elif fault in ("sigstop-mid-run", "sigstop-in-tx"):
            name, e = await pause_at(c, victim, "working" if fault == "sigstop-mid-run" else "inserted")
            try:
                await taken_over_or_stalled(c, victim, e["term"], c.db.now())
            finally:
                c.cont(name)
            await wait_refused(c, name, e)
        elif fault == "join-leave":
            self.spawn()
            leaving = c.workers[self.rng.choice(self.live()[:-1])]
            leaving.send(signal.SIGTERM)
        elif fault == "partition":
            assert self.net is not None
            name = self.of_sort("cut")
            self.net.cut()
            try:
                at = c.db.now()
                cut_for = self.rng.uniform(TIMING.ttl + 0.5, 2 * TIMING.ttl + 1.0)

                async def long_enough() -> bool:
                    return c.db.now() > at + cut_for

                await c.wait_for(long_enough, f"{name}'s partition to last {cut_for:.1f}s", within=30)
            finally:
                self.net.heal()
        elif fault == "latency-spike":
            assert self.relay is not None
            self.relay.spike()
            at = c.db.now()

            async def spike_over() -> bool:
                return c.db.now() > at + 3.0

            await c.wait_for(spike_over, "the latency spike to end", within=30)
        self.replace_specials()


async def soak(kind: str, seconds: float, seed: int, tmp: Path, only: list[str] | None = None) -> dict[str, Any]:
    rng = random.Random(f"{seed}/{kind}")
    with STORE_FACTORIES[kind](tmp) as base:
        url = f"{base}?synchronous=normal" if kind == "sqlite" else base
        store = make_store(url)
        await store.open(migrate=True)
        c = Faults(kind=kind, url=url, store=store, db=raw_db(url), tmp=tmp)
        network = kind != "sqlite"
        faults = [f for f in FAULTS + (NETWORK_FAULTS if network else []) if not only or f in only]
        stats: dict[str, dict[str, Any]] = {
            f: {"runs": 0, "attempts": 0, "stale_refused": 0, "worst_gap": 0.0, "worst_task": "", "stalls": 0}
            for f in faults
        }
        try:
            s = Soak(c, rng, network=network)
            c.create_tables()
            s.tasks = await c.add_jobs([f"k{i}" for i in range(6)], every=0.5)
            s.tasks += await c.add_jobs(["victim"], every=1.0, work=0.3, hold=0.3)
            for _ in range(3 if not network else 2):
                s.spawn()
            s.replace_specials()
            await c.wait_balanced(s.live(), within=60)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                fault = rng.choice(faults)
                before = c.attempts()
                await s.inject(fault)
                over = c.db.now()
                st = stats[fault]
                st["runs"] += 1
                try:
                    await c.wait_all_commit_after(s.tasks, over, f"every task to run after {fault}", within=60)
                except AssertionError:
                    # A liveness failure: recorded with what the cluster looked like, and
                    # the soak goes on (the next faults may shake it loose, or show more).
                    st["stalls"] += 1
                    await _diagnose(c, s.tasks, over)
                    continue
                slowest = max(_firsts(c, s.tasks, over), key=lambda a: a.at)
                gap = slowest.at - over
                after = c.attempts()
                stale_now = len(stale_refusals(after)) - len(stale_refusals(before))
                st["attempts"] += len(after) - len(before)
                st["stale_refused"] += stale_now
                if gap > st["worst_gap"]:
                    st["worst_gap"] = round(gap, 3)
                    st["worst_task"] = f"{slowest.key} on {slowest.worker} ({s.sort[slowest.worker]})"
                print(f"{kind} {fault}: every task committed again {gap:.2f}s after it ended", flush=True)
                pause = c.db.now() + rng.uniform(1.0, 3.0)

                async def rested() -> bool:
                    return c.db.now() > pause  # noqa: B023

                await c.wait_for(rested, "a rest between faults", within=30)
            report = c.check()
        finally:
            c.reap()
            await store.close()
            c.db.close()
    return {
        "store": kind, "seconds": seconds, "seed": seed, "bound": BOUND, "attempts": report.attempts,
        "accepted": report.accepted, "refused": report.refused, "stale_refused": report.stale_refused,
        "violations": report.violations, "faults": stats,
    }  # fmt: skip


async def _diagnose(c: Faults, tasks: list[tuple[str, str]], over: float) -> None:
    """What a stalled soak left behind, on stderr: the tasks that did not run, every
    task's row, the workers' leases, and each live worker's last log lines."""
    now = c.db.now()
    done = {a.task for a in c.attempts() if a.accepted and a.at > over}
    print(f"STALLED {now - over:.1f}s after the fault; not run since: {sorted(set(tasks) - done)}", file=sys.stderr)
    for t in (await c.tasks()).values():
        print(f"  task {t}", file=sys.stderr)
    for w in await c.store.list_workers():
        print(f"  lease {w} (expires in {w.expires_at - now:.2f}s)", file=sys.stderr)
    for name, proc in c.workers.items():
        if proc.alive():
            print(f"--- {name} ---\n" + "\n".join(proc.log().splitlines()[-40:]), file=sys.stderr)


def _firsts(c: Faults, tasks: list[tuple[str, str]], after: float) -> list[Any]:
    first: dict[tuple[str, str], Any] = {}
    for a in sorted((a for a in c.attempts() if a.accepted and a.at > after), key=lambda a: a.at):
        first.setdefault(a.task, a)
    return [first[t] for t in tasks]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="sqlite,postgresql,mariadb")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", help="only these faults, comma-separated (to reproduce one)")
    args = p.parse_args()
    only = args.faults.split(",") if args.faults else None
    results = []
    for kind in args.stores.split(","):
        tmp = tempfile.mkdtemp(prefix=f"soak-{kind}-")
        try:
            results.append(asyncio.run(soak(kind, args.seconds, args.seed, Path(tmp), only)))
        except BaseException:
            print(f"soak on {kind} failed; worker logs and events kept in {tmp}", file=sys.stderr)
            raise
        shutil.rmtree(tmp)
        print(json.dumps(results[-1]), flush=True)  # each store's figures as soon as they exist
    head = f"{'fault':<18}{'store':<12}{'runs':>6}{'attempted':>11}{'stale refused':>15}{'violations':>12}"
    print(head + f"{'worst gap / bound (s)':>24}{'stalls':>8}")
    for r in results:
        for fault, st in r["faults"].items():
            print(
                f"{fault:<18}{r['store']:<12}{st['runs']:>6}{st['attempts']:>11}{st['stale_refused']:>15}"
                f"{len(r['violations']):>12}{st['worst_gap']:>14.3f} / {r['bound']:.2f}{st['stalls']:>8}"
            )


if __name__ == "__main__":
    main()
