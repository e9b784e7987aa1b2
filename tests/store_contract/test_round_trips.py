"""What a fenced transaction costs on the wire (issue 12, item 4), counted by a relay
between the store and its server: the fence check travels with the first statement, and
the final check travels with COMMIT, so that nothing of this process can come between
them. (SQLite has no wire: its final check and COMMIT run as one call on the
connection's thread, see test_fenced.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from tenure.errors import LeaseLost
from tenure.models import SlotDone
from tenure.store import Store, make_store

from .dialect import RawDB
from .helpers import add, register


class FlightCounter:
    """A TCP relay that counts round trips: runs of client bytes, each ended by bytes
    from the server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.flights = 0
        self._last_from_client = False
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for t in self._pumps:
            t.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst, from_client in ((reader, up_writer, True), (up_reader, writer, False)):
            t = asyncio.create_task(self._pump(src, dst, from_client))
            self._pumps.add(t)
            t.add_done_callback(self._pumps.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
        try:
            while chunk := await src.read(65536):
                if from_client and not self._last_from_client:
                    self.flights += 1
                self._last_from_client = from_client
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


@asynccontextmanager
async def through_relay(store_url: str) -> AsyncIterator[tuple[Store, FlightCounter]]:
    parts = urlsplit(store_url)
    relay = FlightCounter((parts.hostname or "127.0.0.1", parts.port or 0))
    port = await relay.start()
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    s = make_store(url + ("&" if "?" in url else "?") + "pool=1")
    await s.open(migrate=False)
    try:
        yield s, relay
    finally:
        await s.close()
        await relay.close()


async def test_a_fenced_transaction_costs_two_round_trips(store: Store, store_url: str, probe: RawDB) -> None:
    if probe.dialect == "sqlite":
        pytest.skip("SQLite has no server to make round trips to")
    await register(store, "w1")
    await add(store, "dispatch", "barcelona")
    (claim,) = await store.claim_tasks("w1", kinds=["dispatch"], limit=1)
    async with through_relay(store_url) as (s, relay):

        async def flights(statements: int, slot: float) -> int:
            async with s.fenced(worker_id="w1", kind="dispatch", key="barcelona", term=claim.term, slot=slot) as tx:
                await asyncio.sleep(0.05)  # anything the pool does on check-out is done by now
                before = relay.flights
                for i in range(statements):
                    await tx.execute(probe.insert_probe_sql, (f"{slot}-{i}",))
            return relay.flights - before

        await flights(1, 1.0)  # warm: connections made, statements known to the driver
        assert await flights(1, 2.0) == 2  # BEGIN+fence+statement, fence+COMMIT
        assert await flights(3, 3.0) == 4  # one more per further statement
        assert await flights(0, 4.0) == 1  # no statement: the fence and the slot, committed
        # A refused fence costs the same, and the statement behind it does not run.
        await store.leave("w1", [])
        with pytest.raises(LeaseLost):
            await flights(1, 5.0)
    assert (await store.get_task("dispatch", "barcelona")).last_slot == 4.0  # type: ignore[union-attr]
    assert "5.0-0" not in probe.probe_notes()


async def test_a_release_costs_the_same_round_trips_whatever_its_size(
    store: Store, store_url: str, probe: RawDB
) -> None:
    """Releasing many tasks is one batch, not a statement per task (500 releases took 42 s
    on a saturated server when each was a round trip)."""
    if probe.dialect == "sqlite":
        pytest.skip("SQLite has no server to make round trips to")
    await register(store, "w1")
    for i in range(50):
        await add(store, "dispatch", f"k{i:02d}")
    async with through_relay(store_url) as (s, relay):

        async def flights(n: int) -> int:
            claims = await s.claim_tasks("w1", kinds=["dispatch"], limit=n)
            assert len(claims) == n
            slots = [SlotDone(kind="dispatch", key=c.task.key, term=c.term, slot=10.0) for c in claims]
            await asyncio.sleep(0.05)  # anything the pool does on check-in is done by now
            before = relay.flights
            assert await s.release_tasks("w1", slots) == n
            return relay.flights - before

        await flights(1)  # warm: statements known to the driver
        assert await flights(50) == await flights(1)
