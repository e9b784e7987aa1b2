"""Child processes and waiting: the test's handle on one worker process, and waits on a
condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .events import read_events


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, *, within: float, poll: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(poll)


def wait_until(check: Callable[[], bool], what: str, *, within: float, poll: float = 0.1) -> None:
    """:func:`wait_for` for plain code: poll ``check`` (blocking) until it holds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(poll)


class WorkerProc:
    """The test's handle on one worker process: its signals, exit, log and events."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path, events: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log
        self.events_path = events
        #: When the test stopped it on purpose (time.time()), by signal name: a worker
        #: with none that dies fails the waits of :class:`support.cluster.WorkerCluster`.
        self.signalled: dict[str, float] = {}

    @classmethod
    def spawn(
        cls, name: str, argv: Sequence[str], *, log: Path, events: Path, env: dict[str, str] | None = None
    ) -> WorkerProc:
        """Start ``argv`` with its output appended to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env} if env else None,
            )
        return cls(name, proc, log, events)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def mark_signalled(self, sig: signal.Signals = signal.SIGKILL) -> float:
        """Note that the test ends this worker on purpose (by ``sig``); return when."""
        at = time.time()
        self.signalled[sig.name] = at
        return at

    def send(self, sig: signal.Signals) -> float:
        """Send ``sig`` and return the time it was sent."""
        at = self.mark_signalled(sig)
        os.kill(self.pid, sig)
        return at

    def kill(self) -> None:
        """SIGKILL on purpose (also ends a stopped process); :meth:`wait_exit` or the
        fixture reaps it."""
        self.mark_signalled()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait_exit(self, within: float = 20.0) -> tuple[int, float]:
        """Wait for the process to end; return its exit code and when the test saw it end.
        One that does not end in time writes its stacks to its log (see support.child)."""
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGUSR1)  # its threads' stacks,
                    os.kill(self.pid, signal.SIGUSR2)  # and its asyncio tasks'
                await asyncio.sleep(0.3)
                raise AssertionError(self.explain(f"did not exit within {within} s"))
            await asyncio.sleep(0.005)
        return code, time.time()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, ev: str | None = None) -> list[dict[str, Any]]:
        """The worker's side-channel events, in order (``ev``: only that kind of event)."""
        return read_events(self.events_path, ev)

    def in_fenced_tx(self) -> bool:
        """True if the worker's handler noted ``inserted`` for a run and not yet how that
        run's fenced transaction ended (a handler that holds it open after the insert)."""
        open_runs: set[tuple[Any, ...]] = set()
        for e in self.events():
            run = (e.get("kind"), e.get("key"), e.get("term"), e.get("slot"))
            if e["ev"] == "inserted":
                open_runs.add(run)
            elif e["ev"] in ("committed", "failed", "refused", "cancelled"):
                open_runs.discard(run)
        return bool(open_runs)

    def explain(self, what: str) -> str:
        return f"worker {self.name} (pid {self.pid}): {what}\n--- its log (tail) ---\n{self.log()[-4000:]}"
