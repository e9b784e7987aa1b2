"""The chaos monkey: seeded faults at seeded moments.

Faults:

- ``pause``: SIGSTOP a worker in the middle of a dispatch (between its reads and its
  commit, outside any transaction), for longer than its lease, then SIGCONT. Its cities
  move to other workers meanwhile; when it wakes up it tries to commit the plan it made
  as the old owner, and that stale commit must be refused.
- ``kill``: SIGKILL a worker and start a new one. Its cities move once its lease expires.
- ``open_city``, ``disable_city``, ``enable_city``: the domain's "city created", "city
  closed" and "city back in service", done with tenure's admin API while running.

The first fault of a run is always a pause and the second a kill, so that even a short
run shows a refused stale commit and a failover; later ones are drawn from the seed.
Worker faults happen one at a time, each followed by the time to heal (see
:meth:`Monkey._worker_fault`). Moments, victims and cities come from the seed; how the
processes interleave does not.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from tenure.demo.processes import WorkerProc, WorkerProcesses

#: Longest the monkey waits for a worker to be caught mid-dispatch, outside a transaction.
AIM_WITHIN = 8.0


@dataclass(frozen=True)
class Fault:
    at: float  # seconds into the run
    kind: str


def schedule(seed: int, duration: float, *, quiet: float = 8.0, first: float = 4.0) -> list[Fault]:
    """The faults of a run: a pause and a kill first, then a seeded mix, every 5-9 s, none
    in the last ``quiet`` seconds (a pause lasts a while, and the end should be calm)."""
    rng = random.Random(f"tenure-demo-chaos-{seed}")
    faults: list[Fault] = []
    at = first + rng.uniform(0.0, 1.0)
    kinds = ["pause", "kill"]
    while at < duration - quiet:
        if not kinds:
            kinds = ["pause", "kill", "open_city", "disable_city", "enable_city", "kill"]
            rng.shuffle(kinds)
        faults.append(Fault(round(at, 2), kinds.pop(0)))
        at += rng.uniform(5.0, 9.0)
    return faults


class Monkey:
    """Carries out faults on the demo's worker processes; reports each one through ``say``.

    ``owned(worker)`` tells which cities a worker owns now; ``cities`` does the city
    faults (it knows the domain and tenure's admin API).
    """

    def __init__(
        self,
        processes: WorkerProcesses,
        *,
        seed: int,
        lease_ttl: float,
        say: Callable[[str, str], None],
        owned: Callable[[str], Awaitable[list[str]]],
        city_fault: Callable[[str, random.Random], Coroutine[Any, Any, None]],
        last_start: float = float("inf"),
    ) -> None:
        self.processes = processes
        self.rng = random.Random(f"tenure-demo-victims-{seed}")
        self.lease_ttl = lease_ttl
        self.say = say
        self.owned = owned
        self.city_fault = city_fault
        #: No worker fault starts after this moment (monotonic clock): the end stays calm.
        self.last_start = last_start
        self.pausing: WorkerProc | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()
        self.faults = 0
        self.stopping = False

    def start(self, fault: Fault) -> None:
        """Begin a fault; it goes on in the background."""
        if fault.kind in ("pause", "kill"):
            coro = self._worker_fault(fault.kind)
        else:
            coro = self.city_fault(fault.kind, self.rng)
            self.faults += 1
        t = asyncio.create_task(coro, name=f"demo-{fault.kind}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _worker_fault(self, kind: str) -> None:
        """One worker fault at a time, each followed by the time to heal (the dead lease
        expires, the cities move). The failover bound is a bound for one failure: with two
        at once, a dead worker whose lease still runs keeps its share of the cluster
        reserved, and a city freed by the other failure may wait for that lease too."""
        async with self._one_at_a_time:
            if time.monotonic() > self.last_start:
                return
            if kind == "pause" and len(self.processes.running()) < 2:
                kind = "kill"  # never pause the last running worker
            if kind == "pause":
                if await self._pause():
                    self.faults += 1
                    await asyncio.sleep(2.0)  # its cities have moved already; it rejoins at once
            elif await self._kill():
                self.faults += 1
                await asyncio.sleep(self.lease_ttl + 1.0)  # until the dead lease expires

    async def stop(self) -> None:
        """Cancel faults in progress and wake a paused worker."""
        self.stopping = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pausing is not None:
            self.processes.resume(self.pausing)
            self.pausing = None

    async def _victim(self) -> tuple[WorkerProc, list[str]] | None:
        candidates = [w for w in self.processes.running() if w is not self.pausing]
        holding = []
        for w in candidates:
            cities = await self.owned(w.name)
            if cities:
                holding.append((w, cities))
        if holding:
            return holding[self.rng.randrange(len(holding))]
        return (candidates[self.rng.randrange(len(candidates))], []) if candidates else None

    async def _kill(self) -> bool:
        picked = await self._victim()
        if picked is None:
            return False
        w, cities = picked
        await self.processes.kill(w)
        new = self.processes.start()
        held = f" (held {', '.join(cities)})" if cities else ""
        self.say(
            f"SIGKILL {w.name}{held}; started {new.name}. Its cities move when its lease expires",
            "kill",
        )
        return True

    async def _pause(self) -> bool:
        picked = await self._victim()
        if picked is None:
            return False
        w, cities = picked
        self.pausing = w
        length = self.lease_ttl + self.rng.uniform(2.5, 3.5)
        try:
            mid = await self._stop_mid_dispatch(w)
            if mid is None:
                self.say(f"{w.name} was never outside a transaction long enough to pause it; pause skipped", "pause")
                return False
            held = f" (holds {', '.join(cities)})" if cities else ""
            where = (
                f" in the middle of dispatching {', '.join(f'{c} at term {t}' for c, t in sorted(mid.items()))}"
                if mid
                else ""
            )
            self.say(
                f"SIGSTOP {w.name}{where}{held}, for {length:.1f}s: longer than its {self.lease_ttl:g}s lease", "pause"
            )
            await asyncio.sleep(length)
        finally:
            self.processes.resume(w)
            self.pausing = None
        if not self.stopping:
            self.say(f"SIGCONT {w.name}: it wakes up as a stale owner; its commits must be refused", "pause")
        return True

    async def _stop_mid_dispatch(self, w: WorkerProc) -> dict[str, int] | None:
        """SIGSTOP ``w`` while it is between reading and committing a dispatch and holds no
        transaction open; after AIM_WITHIN seconds, settle for any moment outside a
        transaction. Returns the dispatches it was caught in the middle of, or None if it
        found no moment to stop it (then it is left running)."""
        deadline = time.monotonic() + AIM_WITHIN
        while True:
            w.read_log()
            aimed = time.monotonic() < deadline
            if w.planning or not aimed:
                self.processes.pause(w)
                await asyncio.sleep(0.05)  # let the signal land and the log settle
                w.read_log()
                caught = dict(w.planning)
                if (caught or not aimed) and await asyncio.to_thread(self.processes.no_open_transaction):
                    return caught
                self.processes.resume(w)
            if time.monotonic() > deadline + AIM_WITHIN:
                return None  # never outside a transaction: better no pause than a stuck store
            await asyncio.sleep(0.02)
