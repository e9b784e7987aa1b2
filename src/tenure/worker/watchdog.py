"""The watchdog: a thread that notices when the event loop stops turning, and names what
holds it (a task handler, or tenure's own code). It lives as long as the worker's run."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

from tenure import metrics
from tenure.context import Context
from tenure.kinds import TaskKind
from tenure.worker.owned import log


def blocker_describer(kinds: Mapping[str, TaskKind]) -> Callable[[FrameType | None], str]:
    """A function naming the handler whose code is on the loop thread's stack, if any."""
    handlers = {kind.handler.__code__: name for name, kind in kinds.items() if hasattr(kind.handler, "__code__")}

    def describe(frame: FrameType | None) -> str:
        while frame is not None:
            kind = handlers.get(frame.f_code)
            if kind is not None:
                ctx = frame.f_locals.get("ctx")
                key = f"/{ctx.key} (term {ctx.token})" if isinstance(ctx, Context) else ""
                return f"handler of {kind}{key} at {frame.f_code.co_filename}:{frame.f_lineno}"
            frame = frame.f_back
        return "code outside any task handler"

    return describe


class LoopWatchdog:
    """A thread that notices when the event loop stops turning, and says who holds it.

    The loop ticks a timestamp every ``threshold / 4``; if the tick is older than
    ``threshold``, the thread logs a warning naming what the loop thread is running.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        describe: Callable[[FrameType | None], str],
        *,
        threshold: float,
    ) -> None:
        self._loop = loop
        self._describe = describe
        self._threshold = threshold
        self._tick_at = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="tenure-watchdog", daemon=True)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle:
            self._handle.cancel()

    def blocked(self) -> tuple[float, str | None]:
        """How long the loop has gone without turning, and (past the threshold) what the
        loop thread runs now. Meant for other threads: the loop itself always sees ~0."""
        stalled = max(0.0, time.monotonic() - self._tick_at)
        if stalled <= self._threshold:
            return stalled, None
        return stalled, self._describe(sys._current_frames().get(self._loop_thread))

    def _tick(self) -> None:
        self._tick_at = time.monotonic()
        self._handle = self._loop.call_later(self._threshold / 4, self._tick)

    def _watch(self) -> None:
        reported = 0.0
        while not self._stop.wait(self._threshold / 4):
            tick = self._tick_at
            stalled = time.monotonic() - tick
            if reported and tick != reported:
                log.warning("event loop ran again after being blocked for %.2fs", tick - reported)
                reported = 0.0
            if stalled > self._threshold and not reported:
                reported = tick
                metrics.LOOP_STALLS.inc()
                frame = sys._current_frames().get(self._loop_thread)
                log.warning(
                    "event loop blocked for %.2fs by %s; async handlers must not block (use a sync one)",
                    stalled,
                    self._describe(frame),
                )
