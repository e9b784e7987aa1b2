"""A TCP relay that delays what it forwards: ``delay ± jitter`` seconds, each way.

    python delay_proxy.py HOST:PORT --delay 0.05 --jitter 0.03 [--seed 1] [--spike 3]

Listens on a free loopback port, prints ``listening PORT`` on one line, and relays every
connection to HOST:PORT. Each chunk read is released ``delay + uniform(-jitter, +jitter)``
seconds after it arrived, but never before the chunk ahead of it in the same direction:
a TCP stream keeps its order, so jitter shows up as bursts and stalls, the way queueing
in a real network does it (and the way ``tc netem delay`` acts on one TCP flow). Why it
exists rather than netem or Toxiproxy: see ``network.py``.

SIGUSR1 starts a latency spike: for ``--spike`` seconds nothing is released, in either
direction, on any connection (a congested or flapping link); what was held then flows on
in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time


class Relay:
    def __init__(self, target: tuple[str, int], delay: float, jitter: float, seed: int) -> None:
        self.target = target
        self.delay = delay
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.stalled_until = 0.0

    def stall(self, seconds: float) -> None:
        self.stalled_until = time.monotonic() + seconds

    def hold(self) -> float:
        return max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))

    async def pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            try:
                while True:
                    due, chunk = await queue.get()
                    if not chunk:
                        break
                    while (wait := max(due, self.stalled_until) - time.monotonic()) > 0:  # noqa: ASYNC110
                        await asyncio.sleep(wait)  # a spike may begin while this chunk waits
                    dst.write(chunk)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            finally:
                # Closing this side ends the opposite pump's reads too, which closes ``src``.
                dst.close()

        sender = asyncio.create_task(release())
        last = 0.0
        try:
            while True:
                chunk = await src.read(65536)
                last = max(last, time.monotonic() + self.hold())
                queue.put_nowait((last, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        finally:
            dst.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer), return_exceptions=True)
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="HOST:PORT to relay to")
    p.add_argument("--delay", type=float, required=True)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spike", type=float, default=3.0, help="seconds a SIGUSR1 stalls all traffic")
    args = p.parse_args()
    host, _, port = args.target.rpartition(":")
    relay = Relay((host, int(port)), args.delay, args.jitter, args.seed)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, relay.stall, args.spike)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    sys.stdout.close()  # nothing else goes there; the parent stops reading
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
