"""The skeleton of a worker child program: a small tenure app run by ``App.run_worker``.

A child program (``tests/runtime/worker_child.py``, ``tests/store_faults/runner.py``,
``tests/faults/runner.py``) builds its :class:`tenure.App` and hands it to :func:`main`,
which gives every child the same command line::

    python CHILD.py STORE_URL --id NAME --events FILE
        [--ttl S] [--heartbeat S] [--poll S] [--grace S] [--trust-margin S] [--concurrency N]
        [the child's own flags]

(the flags :meth:`support.timing.Timing.argv` writes), the same side channel (its first
event, ``clock``, notes the process's wall and monotonic clocks, to show a libfaketime
prefix took effect), logging at INFO to stderr (the test's log file), and the same stack
dumps: SIGUSR1 writes every thread's stack, SIGUSR2 every asyncio task's, which the
harness asks for when a worker does not exit in time.

Child programs put ``tests/`` on ``sys.path`` to import this package.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import tenure
from tenure import Settings

from .events import Events
from .timing import Timing


def parse(
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, Events, Settings]:
    """The command line (see the module docstring; ``extra`` adds the child's own flags):
    the arguments, the events side channel and the worker's settings."""
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--id", required=True)
    parser.add_argument("--events", required=True)
    Timing.add_arguments(parser)
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    events = Events(Path(args.events), args.id)
    events.note("clock", wall=time.time(), monotonic=time.monotonic(), pid=os.getpid())
    settings = Timing.from_args(args).settings(args.id)
    return args, events, settings


def _dump_tasks() -> None:
    """Write every asyncio task's stack to the log (on SIGUSR2, like SIGUSR1 for threads)."""
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio tasks (SIGUSR2) ---", file=sys.stderr, flush=True)
    for t in tasks:
        t.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def _run(app: tenure.App, settings: Settings) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)
    await app.run_worker(settings=settings)


def main(
    build: Callable[[argparse.Namespace, Events], tenure.App],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the command line, build the app (``build(args, events)``) and run a worker
    until it stops; log its start and its end."""
    args, events, settings = parse(extra)
    # SIGUSR1 writes every thread's stack to the log: the test sends it to a worker that
    # does not exit in time, to show where it is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The default asctime (``2026-12-06 02:58:20,823``): the fault suite reads it back.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("child")
    app = build(args, events)
    log.info("pid %d starting as %s", os.getpid(), args.id)
    asyncio.run(_run(app, settings))
    log.info("run_worker returned; exiting 0")
