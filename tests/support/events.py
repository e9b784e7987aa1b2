"""The side channel between a child program and its test: what the database cannot show
(a commit refused, a run cancelled, a moment reached) as one JSON object per line.

The child writes with :class:`Events` (each line in one unbuffered ``write()``, so it
survives SIGKILL); the test reads with :func:`read_events`, which ignores a last line
cut mid-write.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO, Any

from tenure import Context


class Events:
    """The child's side of the channel: ``{"ev": ..., "t": ..., "worker": ..., ...}``."""

    def __init__(self, path: Path, worker: str) -> None:
        self._out: IO[bytes] = path.open("ab", buffering=0)
        self._worker = worker
        self._lock = threading.Lock()

    def note(self, ev: str, ctx: Context | None = None, **extra: Any) -> None:
        """Write one event; with ``ctx``, the run's kind, key, term and slot too."""
        rec: dict[str, Any] = {"ev": ev, "t": time.time(), "worker": self._worker}
        if ctx is not None:
            rec.update(kind=ctx.kind, key=ctx.key, term=ctx.token, slot=ctx.scheduled_at)
        rec.update(extra)
        with self._lock:
            self._out.write((json.dumps(rec) + "\n").encode())


def read_events(path: Path, ev: str | None = None) -> list[dict[str, Any]]:
    """The events written to ``path`` so far, in order (``ev``: only that kind of event)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.endswith("}"):  # a line cut by SIGKILL mid-write is ignored
            rec = json.loads(line)
            if ev is None or rec["ev"] == ev:
                out.append(rec)
    return out
