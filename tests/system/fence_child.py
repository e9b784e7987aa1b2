"""A stand-in worker for the system tests: one OS process, one store, driven over pipes.

Run as ``python fence_child.py STORE_URL WORKER_ID``. It opens the store (without
migrating: the test did that), prints ``{"ready": true, "pid": ...}``, then reads one
JSON command per line on stdin and answers each with one JSON line on stdout:

- ``register {ttl}`` / ``renew {ttl}``: join the cluster / extend the lease.
- ``heartbeat {ttl, every}``: renew in the background, as a worker would, until the lease
  is lost (``status`` tells how it went).
- ``claim {kinds, limit, ack?}``: one ``claim_tasks`` call. With ``ack``, a
  ``{"started": ...}`` line is printed just before the call, so the test knows the
  claim is in flight.
- ``claim_all {kinds, limit, barrier?}``: claim repeatedly until a call returns
  nothing. With ``barrier``, first answer ``{"armed": true}`` and wait for a ``go`` line.
- ``release``: release every task this process holds; ``leave``: leave the cluster.
- ``write {kind, key, term, n, rows, slot?}``: one fenced transaction inserting ``rows``
  rows into ``decisions`` (numbered from ``n``), then committing. ``write_held {n}``:
  one such transaction (of one row) for every task this process holds.
- ``open {kind, key, term, n, slot?}``: a fenced transaction that inserts one row,
  answers ``{"in_tx": true}`` and stays open until the next command: ``commit`` (leave
  the block normally) or ``abort`` (raise inside it). Then answers how it ended.
- ``give_up {kind, key, term, n, after}``: a fenced ``write`` cancelled after ``after``
  seconds if it has not finished (as a run past its timeout is); prints
  ``{"cancelling": true}`` when it cancels, then answers once the attempt has ended.
- ``status``, ``exit``.

Failures come back as ``{"ok": false, "error": "<exception class>", ...}``; for fenced
transactions ``stage`` says whether the refusal came at the start (``begin``: the fence
is checked with the body's first statement, which did not run) or at the end
(``commit``, after the body wrote its rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

from tenure.errors import LeaseLost, StoreError, TenureError
from tenure.models import SlotDone
from tenure.store import Store, make_store

JSON = dict[str, Any]


class _Abort(Exception):
    """Raised inside an open fenced transaction to abandon it."""


class Child:
    def __init__(self, store: Store, worker_id: str, commands: asyncio.StreamReader) -> None:
        self.store = store
        self.worker_id = worker_id
        self.commands = commands
        #: (kind, key) -> term of every task this process believes it holds.
        self.held: dict[tuple[str, str], int] = {}
        self.heartbeat: asyncio.Task[None] | None = None
        self.heartbeat_state = "off"
        self.renewals = 0
        self.renewal_errors = 0

    async def next_command(self) -> JSON | None:
        line = await self.commands.readline()
        if not line:
            return None
        cmd = json.loads(line)
        assert isinstance(cmd, dict)
        return cmd

    # -- membership -------------------------------------------------------------------

    async def op_register(self, cmd: JSON) -> JSON:
        lease = await self.store.register_worker(
            worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid(), ttl=cmd["ttl"]
        )
        self.held.clear()  # a worker coming back starts with nothing
        return {"expires_at": lease.expires_at, "db_now": lease.db_now}

    async def op_renew(self, cmd: JSON) -> JSON:
        lease = await self.store.renew_lease(self.worker_id, cmd["ttl"])
        return {"expires_at": lease.expires_at, "db_now": lease.db_now}

    async def op_heartbeat(self, cmd: JSON) -> JSON:
        ttl, every = float(cmd["ttl"]), float(cmd["every"])

        async def beat() -> None:
            while True:
                try:
                    await self.store.renew_lease(self.worker_id, ttl)
                except LeaseLost:
                    self.heartbeat_state = "lost"
                    return
                except StoreError:  # busy or briefly gone: try again, as a worker would
                    self.renewal_errors += 1
                else:
                    self.renewals += 1
                await asyncio.sleep(every)

        self.heartbeat_state = "running"
        self.heartbeat = asyncio.create_task(beat())
        return {}

    async def op_leave(self, cmd: JSON) -> JSON:
        freed = await self.store.leave(self.worker_id, [])
        self.held.clear()
        return {"freed": freed}

    async def op_status(self, cmd: JSON) -> JSON:
        held = [[k, key, t] for (k, key), t in sorted(self.held.items())]
        return {
            "heartbeat": self.heartbeat_state,
            "renewals": self.renewals,
            "renewal_errors": self.renewal_errors,
            "held": held,
        }

    # -- ownership --------------------------------------------------------------------

    async def _claim(self, cmd: JSON) -> list[list[Any]]:
        claims = await self.store.claim_tasks(self.worker_id, kinds=cmd["kinds"], limit=cmd["limit"])
        for c in claims:
            self.held[(c.task.kind, c.task.key)] = c.term
        return [[c.task.kind, c.task.key, c.term] for c in claims]

    async def op_claim(self, cmd: JSON) -> JSON:
        t_start = time.time()
        if cmd.get("ack"):
            emit({"started": True, "t": t_start})
        claims = await self._claim(cmd)
        return {"claims": claims, "t_start": t_start, "t_end": time.time()}

    async def op_claim_all(self, cmd: JSON) -> JSON:
        if cmd.get("barrier"):  # say so, then wait for "go": all racers start together
            emit({"armed": True})
            go = await self.next_command()
            if go is None or go["op"] != "go":
                raise RuntimeError(f"a racer expects go, got {go!r}")
        claims: list[list[Any]] = []
        while got := await self._claim(cmd):
            claims += got
        return {"claims": claims}

    async def op_release(self, cmd: JSON) -> JSON:
        now = await self.store.now()
        slots = [SlotDone(kind=k, key=key, term=t, slot=now) for (k, key), t in self.held.items()]
        released = await self.store.release_tasks(self.worker_id, slots)
        self.held.clear()
        return {"released": released}

    # -- fenced transactions ----------------------------------------------------------

    async def op_write(self, cmd: JSON) -> JSON:
        stage = "begin"
        try:
            async with self._fenced(cmd) as tx:
                for i in range(cmd.get("rows", 1)):
                    await tx.execute(
                        "INSERT INTO decisions (task, term, writer, n) VALUES (?, ?, ?, ?)",
                        (cmd["key"], cmd["term"], self.worker_id, cmd["n"] + i),
                    )
                    stage = "commit"  # the first statement carried the fence check, and passed
        except LeaseLost as exc:
            return {"ok": False, "error": "LeaseLost", "stage": stage, "msg": str(exc)}
        return {"t": time.time()}

    async def op_write_held(self, cmd: JSON) -> JSON:
        """One fenced transaction per task held, each writing one row numbered ``n``."""
        written: list[list[Any]] = []
        refused: list[list[Any]] = []
        for (kind, key), term in sorted(self.held.items()):
            reply = await self.op_write({"kind": kind, "key": key, "term": term, "n": cmd["n"]})
            (refused if reply.get("ok") is False else written).append([kind, key, term])
        return {"written": written, "refused": refused}

    async def op_open(self, cmd: JSON) -> JSON:
        stage = "begin"
        t_commit = None
        try:
            async with self._fenced(cmd) as tx:
                await tx.execute(
                    "INSERT INTO decisions (task, term, writer, n) VALUES (?, ?, ?, ?)",
                    (cmd["key"], cmd["term"], self.worker_id, cmd["n"]),
                )
                stage = "commit"  # the first statement carried the fence check, and passed
                emit({"in_tx": True, "t": time.time()})
                follow = await self.next_command()
                if follow is None or follow["op"] not in ("commit", "abort"):
                    raise RuntimeError(f"an open transaction expects commit or abort, got {follow!r}")
                if follow["op"] == "abort":
                    raise _Abort
                t_commit = time.time()  # leaving the block now commits
        except LeaseLost as exc:
            return {"ok": False, "error": "LeaseLost", "stage": stage, "msg": str(exc), "t_commit": t_commit}
        except _Abort:
            return {"ok": False, "error": "aborted", "stage": stage}
        return {"t_commit": t_commit, "t_done": time.time()}

    async def op_give_up(self, cmd: JSON) -> JSON:
        """A fenced ``write`` cancelled after ``after`` seconds if still unfinished, as a
        run past its timeout is. Prints ``{"cancelling": true}`` as it cancels."""
        attempt = asyncio.create_task(self.op_write(cmd))

        def cancel() -> None:
            if not attempt.done():
                emit({"cancelling": True})
                attempt.cancel()

        timer = asyncio.get_running_loop().call_later(cmd["after"], cancel)
        try:
            return {"gave_up": False, **await attempt}
        except asyncio.CancelledError:
            return {"gave_up": True}
        finally:
            timer.cancel()

    def _fenced(self, cmd: JSON) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.store.fenced(
            worker_id=self.worker_id, kind=cmd["kind"], key=cmd["key"], term=cmd["term"], slot=cmd.get("slot")
        )

    # -- loop -------------------------------------------------------------------------

    async def serve(self) -> None:
        while (cmd := await self.next_command()) is not None:
            if cmd["op"] == "exit":
                break
            handler = getattr(self, "op_" + cmd["op"], None)
            if handler is None:
                emit({"ok": False, "error": "unknown op", "msg": cmd["op"]})
                continue
            try:
                reply = await handler(cmd)
            except TenureError as exc:
                reply = {"ok": False, "error": type(exc).__name__, "msg": str(exc)}
            except Exception as exc:
                reply = {"ok": False, "error": "crash", "msg": repr(exc), "tb": traceback.format_exc()}
            emit({"ok": True, **reply})
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat


def emit(message: JSON) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main(url: str, worker_id: str) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    store = make_store(url)
    await store.open(migrate=False)
    try:
        emit({"ready": True, "pid": os.getpid()})
        await Child(store, worker_id, commands).serve()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
