"""``tenure demo``: the controller that sets the scene, runs it, and calls the checker.

1. Prepares the store: tenure's schema, the domain's tables (dropped and created again),
   the first cities with their couriers, one ``dispatch`` task per city. A store holding
   tasks other than an earlier demo's, or live workers, is refused.
2. Starts the worker processes and waits until every city has been dispatched once.
3. For ``duration`` seconds: places orders (seeded arrivals), lets the chaos monkey do its
   seeded faults, and shows what happens.
4. Stops every worker (SIGTERM), reads the history back and prints the checker's verdict.
   The exit status is 0 if every check holds, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tenure.app import App
from tenure.demo import checker, domain
from tenure.demo.chaos import Fault, Monkey, schedule
from tenure.demo.db import Connection
from tenure.demo.processes import WorkerProcesses
from tenure.demo.view import CityRow, Frame, View, WorkerRow
from tenure.errors import InvalidInput, TenureError
from tenure.inputs import quote
from tenure.models import Freed, Task
from tenure.store import make_store

CITY_NAMES = [
    "barcelona", "lisbon", "milano", "paris", "porto", "valencia", "lyon", "madrid", "napoli", "berlin",
    "wien", "praha", "gent", "sevilla", "bologna", "krakow", "dublin", "zagreb", "torino", "bilbao",
]  # fmt: skip
COURIERS_PER_CITY = 3
#: Orders per second per city, on average (exponential gaps).
ORDER_RATE = 0.4
#: Seconds a delivery takes, drawn uniformly.
DELIVERY = (2.0, 6.0)
#: How often the view reads the database.
REFRESH = 0.5
#: The last seconds of a run have no new fault, so that it ends calm.
QUIET = 8.0
#: Longest the cluster may take to start and dispatch every city once.
WARM_UP = 60.0


class DemoError(TenureError):
    """The demo could not run (exit status 1)."""


@dataclass(frozen=True, kw_only=True)
class Options:
    """What ``tenure demo`` was asked for. Raises :class:`InvalidInput` on nonsense."""

    store: str | None = None
    workers: int = 3
    cities: int = 6
    duration: float = 60.0
    seed: int = 7
    chaos: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 16:
            raise InvalidInput(f"--workers must be from 1 to 16, got {quote(self.workers)}")
        if not 1 <= self.cities <= len(CITY_NAMES) - 4:
            raise InvalidInput(f"--cities must be from 1 to {len(CITY_NAMES) - 4}, got {quote(self.cities)}")
        if not (math.isfinite(self.duration) and 10 <= self.duration <= 3600):
            raise InvalidInput(f"--duration must be from 10 to 3600 seconds, got {self.duration:g}")


def run(options: Options, *, console: Console | None = None) -> int:
    """Run the demo; return the exit status (0: the checker's verdict is a pass)."""
    if console is None:
        console = Console(highlight=False) if Console().is_terminal else Console(highlight=False, width=160)
    demo = Demo(options, console)
    try:
        return asyncio.run(demo.main())
    except asyncio.CancelledError:
        if demo.stopped_by is None:
            raise
        return 128 + demo.stopped_by  # as if the signal had ended it, its workers reaped


class Demo:
    def __init__(self, options: Options, console: Console) -> None:
        self.o = options
        self.console = console
        if options.store is not None:
            make_store(options.store)  # a URL that does not parse is refused before anything is made
        self.folder = Path(tempfile.mkdtemp(prefix="tenure-demo-"))
        self.url = options.store or f"sqlite:///{self.folder / 'demo.db'}"
        self.admin = App(self.url)
        # The controller adds dispatch tasks, so its App must know the kind (it never runs it).
        self.admin.task("dispatch", every=domain.PERIOD, timeout=2.0)(domain.dispatch)
        self.processes = WorkerProcesses(self.url, self.folder, domain.SETTINGS)
        self.orders_rng = random.Random(f"tenure-demo-orders-{options.seed}")
        self.next_order: dict[str, float] = {}
        self.order_id = 0
        self.courier_id = 0
        self.enabled: dict[str, bool] = {}
        self.t0 = time.monotonic()
        self.owners: dict[str, tuple[str, int]] = {}
        self.refusals_seen = 0
        self.refused = 0
        self.view: View | None = None
        self.monkey: Monkey | None = None
        #: The signal that stopped the demo early (SIGTERM, SIGHUP), if one did.
        self.stopped_by: int | None = None
        self._db: Connection | None = None

    @property
    def db(self) -> Connection:
        assert self._db is not None
        return self._db

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str, kind: str = "info") -> None:
        if self.view is not None:
            self.view.event(self.elapsed(), text, kind)

    # -- the run --------------------------------------------------------------------------

    async def main(self) -> int:
        # SIGTERM or SIGHUP (a `timeout`, a `kill`, a closed terminal) ended Python at once,
        # and the demo's worker processes ran on, a stopped one frozen for good: cancel
        # instead, so that the clean-up below reaps them, as it does on Ctrl-C.
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        assert me is not None
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop_on, sig, me)
        try:
            await self._prepare()
            unfenced = " FENCING OFF (TENURE_DEMO_UNFENCED): the checker should fail." if domain.unfenced() else ""
            s = domain.SETTINGS
            title = (
                f"tenure demo: {self.o.workers} workers, {self.o.cities} cities, {self.o.duration:g}s, "
                f"chaos {'on' if self.o.chaos else 'off'} (seed {self.o.seed}); store {self.admin.display_url}; "
                f"lease TTL {s.lease_ttl:g}s, heartbeat {s.heartbeat:g}s, poll {s.poll:g}s, "
                f"dispatch every {domain.PERIOD:g}s.{unfenced}"
            )
            with View(self.console, title=title) as view:
                self.view = view
                await self._warm_up()
                await self._play()
                await self._stop()
                await self._refresh()
            self.view = None
            return await self._verdict()
        finally:
            if self.monkey is not None:
                await self.monkey.stop()
            self.processes.close()
            if not self.processes.workers and self.o.store is not None:
                shutil.rmtree(self.folder, ignore_errors=True)  # refused before it began: leave nothing
            if self._db is not None:
                self._db.close()
            await self.admin.close()

    def _stop_on(self, sig: int, main: asyncio.Task[int]) -> None:
        self.stopped_by = sig
        main.cancel()

    async def _prepare(self) -> None:
        await self.admin.open(migrate=True)
        where = self.admin.display_url
        tasks = await self.admin.list_tasks()
        foreign = [t for t in tasks if not (t.kind == "dispatch" and t.params.get("demo") is True)]
        if foreign:
            names = ", ".join(f"{t.kind}/{t.key}" for t in foreign[:3])
            raise DemoError(
                f"the store {where} holds tasks that are not the demo's ({names}…); "
                "give the demo an empty database with --store"
            )
        live = sorted((await self.admin.roster()).live)
        if live:
            raise DemoError(f"workers are running on {where} ({', '.join(live)}); stop them first")
        for t in tasks:  # an earlier demo's
            await self.admin.remove(t.kind, t.key)
        self._db = Connection(self.url)
        domain.create_schema(self.db)
        domain.mark(self.db, "setup")
        for city in CITY_NAMES[: self.o.cities]:
            await self._open_city(city)

    async def _open_city(self, city: str) -> None:
        couriers = []
        for n in range(1, COURIERS_PER_CITY + 1):
            self.courier_id += 1
            couriers.append((self.courier_id, f"{city}-{n}"))
        domain.open_city(self.db, city, couriers)
        await self.admin.add_task("dispatch", city, params={"demo": True})
        self.enabled[city] = True
        self.next_order[city] = self.elapsed() + self.orders_rng.expovariate(ORDER_RATE)

    async def _warm_up(self) -> None:
        self.t0 = time.monotonic()
        for _ in range(self.o.workers):
            self.processes.start()
        self.say(f"started {self.o.workers} workers; waiting until every city has been dispatched once")
        deadline = time.monotonic() + WARM_UP
        while True:
            rows = self.db.fetchall("SELECT DISTINCT city FROM demo_dispatches")
            if len(rows) >= len(self.enabled):
                break
            for w in self.processes.workers.values():
                if not w.alive():
                    raise DemoError(f"worker {w.name} exited with {w.proc.returncode}; see {w.log_path}")
            if time.monotonic() > deadline:
                raise DemoError(f"the workers did not dispatch every city within {WARM_UP:g}s; see {self.folder}")
            await asyncio.sleep(0.1)
        domain.mark(self.db, "start")
        took = self.elapsed()
        self.t0 = time.monotonic()
        for city in self.next_order:
            self.next_order[city] = self.orders_rng.expovariate(ORDER_RATE)
        await self._refresh()
        self.say(f"every city was dispatched once after {took:.1f}s; the clock starts, orders start arriving")

    async def _play(self) -> None:
        faults: list[Fault] = schedule(self.o.seed, self.o.duration, quiet=QUIET) if self.o.chaos else []
        self.monkey = Monkey(
            self.processes,
            seed=self.o.seed,
            lease_ttl=domain.SETTINGS.lease_ttl,
            say=self.say,
            owned=self._owned,
            city_fault=self._city_fault,
            last_start=self.t0 + self.o.duration - QUIET,
        )
        next_refresh = 0.0
        while (t := self.elapsed()) < self.o.duration:
            self._place_orders(t)
            while faults and faults[0].at <= t:
                self.monkey.start(faults.pop(0))
            if t >= next_refresh:
                await self._refresh()
                next_refresh = t + REFRESH
            await asyncio.sleep(0.1)
        await self.monkey.stop()

    async def _stop(self) -> None:
        domain.mark(self.db, "end")
        self.say("time is up: SIGTERM to every worker (they hand their cities back and exit)")
        codes = await self.processes.stop_all(grace=domain.SETTINGS.grace + 5.0)
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            self.say(f"workers that did not exit cleanly: {bad}", "warning")

    async def _verdict(self) -> int:
        timing = checker.Timing(period=domain.PERIOD, lease_ttl=domain.SETTINGS.lease_ttl, poll=domain.SETTINGS.poll)
        history = await checker.load(self.url, timing)
        verdict = checker.check(history)
        self.console.print()
        for i, line in enumerate(verdict.lines()):
            style = ("bold green" if verdict.ok else "bold red") if i == 0 else ("red" if "FAILED" in line else "")
            self.console.print(Text(line, style=style), soft_wrap=True)
        kept = "The workers' logs are" if self.o.store else "The database and the workers' logs are"
        self.console.print(Text(f"\n{kept} kept in {self.folder}; look around with", style="dim"), soft_wrap=True)
        where = self.admin.display_url  # a password stays hidden
        self.console.print(Text(f"  tenure --store {where} runs --key {CITY_NAMES[0]}", style="dim"), soft_wrap=True)
        return 0 if verdict.ok else 1

    # -- orders and city faults -------------------------------------------------------------

    def _place_orders(self, t: float) -> None:
        for city, at in self.next_order.items():
            if not self.enabled[city]:
                continue
            while at <= t:
                self.order_id += 1
                domain.add_order(self.db, self.order_id, city, round(self.orders_rng.uniform(*DELIVERY), 2))
                at += self.orders_rng.expovariate(ORDER_RATE)
            self.next_order[city] = at

    async def _owned(self, worker: str) -> list[str]:
        return [t.key for t in await self.admin.list_tasks(kind="dispatch", owner=worker)]

    async def _city_fault(self, kind: str, rng: random.Random) -> None:
        on = sorted(c for c, e in self.enabled.items() if e)
        off = sorted(c for c, e in self.enabled.items() if not e)
        fresh = [c for c in CITY_NAMES if c not in self.enabled]
        if kind == "enable_city" and not off:
            kind = "disable_city"
        if kind == "disable_city" and len(on) <= 2:
            kind = "open_city"
        if kind == "open_city" and fresh:
            city = fresh[0]
            await self._open_city(city)
            self.say(f"city opened: {city}, {COURIERS_PER_CITY} couriers (tenure tasks add dispatch {city})", "city")
        elif kind == "disable_city":
            city = on[rng.randrange(len(on))]
            domain.city_event(self.db, city, "disabled")  # its service window ends before tenure hears of it
            await self.admin.disable("dispatch", city)
            self.enabled[city] = False
            self.say(f"city closed: {city} (tenure tasks disable dispatch {city}); its owner lets it go", "city")
        elif kind == "enable_city":
            city = off[rng.randrange(len(off))]
            await self.admin.enable("dispatch", city)
            domain.city_event(self.db, city, "enabled")
            self.enabled[city] = True
            self.next_order[city] = self.elapsed() + self.orders_rng.expovariate(ORDER_RATE)
            self.say(f"city back in service: {city} (tenure tasks enable dispatch {city})", "city")

    # -- what the view shows ------------------------------------------------------------------

    async def _refresh(self) -> None:
        tasks = {t.key: t for t in await self.admin.list_tasks(kind="dispatch")}
        roster = await self.admin.roster()
        leases = {w.id: w.expires_at > roster.now for w in roster.workers}
        self._note_takeovers(tasks)
        for r in self.db.fetchall(
            "SELECT id, city, term, worker, reason FROM demo_refusals WHERE id > ? ORDER BY id", (self.refusals_seen,)
        ):
            rid, city, term, worker, reason = r
            self.refusals_seen = max(self.refusals_seen, int(rid))
            self.refused += 1
            self.say(f"REFUSED: {worker}'s stale commit for {city} at term {term} (LeaseLost: {reason})", "refused")
        for w in self.processes.workers.values():
            if w.state == "running" and not w.alive():
                w.state = "exited"
                self.say(f"{w.name} exited on its own with status {w.proc.returncode}; see {w.log_path}", "warning")
        if self.view is None:
            return
        orders = _counts(self.db.fetchall("SELECT city, status, COUNT(*) FROM demo_orders GROUP BY city, status"))
        free = dict(self.db.fetchall("SELECT city, COUNT(*) FROM demo_couriers WHERE status = 'free' GROUP BY city"))
        couriers = dict(self.db.fetchall("SELECT city, COUNT(*) FROM demo_couriers GROUP BY city"))
        last = {c: (float(at), int(n)) for c, at, n in self.db.fetchall(
            "SELECT city, MAX(at), COUNT(*) FROM demo_dispatches GROUP BY city"
        )}  # fmt: skip
        cities = []
        for city in self.enabled:
            t = tasks.get(city)
            cities.append(
                CityRow(
                    name=city,
                    enabled=self.enabled[city],
                    owner=t.owner if t else None,
                    owner_live=bool(t and t.owner and leases.get(t.owner)),
                    term=t.term if t else 0,
                    waiting=orders.get((city, "open"), 0),
                    en_route=orders.get((city, "assigned"), 0),
                    delivered=orders.get((city, "delivered"), 0),
                    free=int(free.get(city, 0)),
                    couriers=int(couriers.get(city, 0)),
                    since_dispatch=roster.now - last[city][0] if city in last else None,
                )
            )
        held: dict[str, int] = {}
        for t in tasks.values():
            if t.owner:
                held[t.owner] = held.get(t.owner, 0) + 1
        workers = [
            WorkerRow(
                name=w.name,
                pid=w.pid,
                state=w.state,
                lease="live" if leases.get(w.name) else ("expired" if w.name in leases else "-"),
                cities=held.get(w.name, 0),
            )
            for w in self.processes.workers.values()
            if w.state != "killed" or w.name in leases
        ]
        self.view.show(
            Frame(
                elapsed=min(self.elapsed(), self.o.duration),
                duration=self.o.duration,
                cities=cities,
                workers=workers,
                orders=sum(orders.values()),
                assigned=orders.get_total("assigned") + orders.get_total("delivered"),
                delivered=orders.get_total("delivered"),
                commits=sum(n for _, n in last.values()),
                refused=self.refused,
                faults=self.monkey.faults if self.monkey else 0,
            )
        )

    def _note_takeovers(self, tasks: dict[str, Task]) -> None:
        """Say when a city's term rose: who took it, from whom, and how it was freed."""
        for city, t in tasks.items():
            before = self.owners.get(city)
            if t.owner is not None:
                self.owners[city] = (t.owner, t.term)
            if before is None or t.owner is None or before[1] == t.term:
                continue
            prev_owner, prev_term = before
            if t.freed_how is Freed.EXPIRED:
                how = f"after {prev_owner}'s lease expired"
            else:
                how = f"handed over by {prev_owner}" if prev_owner != t.owner else "after letting it go"
            self.say(f"{city}: {t.owner} owns it at term {t.term} (was term {prev_term}), {how}", "takeover")


class _Counts(dict[tuple[str, str], int]):
    def get_total(self, status: str) -> int:
        return sum(n for (_, s), n in self.items() if s == status)


def _counts(rows: Sequence[tuple[Any, ...]]) -> _Counts:
    out = _Counts()
    for city, status, n in rows:
        out[(str(city), str(status))] = int(n)
    return out
