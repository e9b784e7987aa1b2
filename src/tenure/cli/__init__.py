"""The ``tenure`` command line: migrate the store, run a worker, and administer tasks.

::

    tenure [--store URL] migrate
    tenure [--store URL] worker APP [--ttl S] [--heartbeat S] [--poll S] [--grace S] [--id NAME]
                                    [--http HOST:PORT] [--protect-reads] [--log-format human|json]
    tenure [--store URL] tasks add KIND KEY [--every S | --cron EXPR] [--params JSON] [--disabled]
    tenure [--store URL] tasks sync KIND FILE|- [--remove-missing] [--dry-run] [--allow-empty] [--json]
    tenure [--store URL] tasks list [--kind K] [--owner WORKER] [--state STATE] [--json]
    tenure [--store URL] tasks show KIND KEY [--json]
    tenure [--store URL] tasks enable|disable|trigger|remove KIND KEY   (disable also takes --cancel)
    tenure [--store URL] runs [--kind K] [--key KEY] [--worker W] [--outcome O] [--limit N] [--json]
    tenure [--store URL] status [--json]
    tenure [--store URL] workers list [--json]
    tenure [--store URL] workers drain WORKER
    tenure [--store URL] kinds pause KIND [--cancel] | kinds resume KIND
    tenure [--store URL] pause [--cancel] | resume
    tenure [--store URL] dashboard [--host H] [--port P] [--protect-reads] [--log-format human|json]
    tenure demo [--store URL] [--workers N] [--cities N] [--duration S] [--seed N] [--chaos | --no-chaos]

The store is ``--store URL`` (accepted before or after the command), else the
``TENURE_STORE`` environment variable, else ``sqlite:///tenure.db``. Only ``migrate``
(and a worker starting on the embedded store) creates a store; the other commands
refuse a SQLite file that does not exist rather than leave an empty one behind.

Output: human tables by default; ``--json`` prints JSON for scripts, with stable field
names, times as epoch seconds (floats, on the database's clock) and durations in
seconds. Lists are JSON arrays of objects; ``tasks show`` and ``status`` print one object.

Exit status:

- ``0`` success;
- ``1`` failure: no such task or worker, a task that already exists, a store that does
  not answer or has no schema yet, a worker that cannot start;
- ``2`` usage error: a missing or unknown argument, and also any malformed value,
  whether argparse refuses it (``--every abc``, ``--limit x``) or tenure does
  (:class:`tenure.errors.InvalidInput`: ``--every -1``, ``--limit 0``, a cron
  expression or ``--params`` that does not parse, an unknown kind, an odd key, a store
  URL that does not parse, settings that contradict each other, a bad line of the
  file ``tasks sync`` reads, named by its number).

Every user mistake prints one line, ``tenure: error: ...``, on stderr, and never a
traceback. Nothing is changed by a command that fails.

The package: :mod:`~tenure.cli.parser` (the grammar; ``tenure worker``'s setting flags
are its ``WORKER_SETTING_FLAGS``), :mod:`~tenure.cli.commands` (what each command does,
always through :class:`tenure.App`), :mod:`~tenure.cli.render` (tables and JSON),
:mod:`~tenure.cli.sync_input` (the JSON lines of ``tasks sync``) and
:mod:`~tenure.cli.failures` (the line and exit status of a command that failed).
Settings are resolved by :mod:`tenure.config`, flags first.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from tenure.errors import TenureError

from . import failures
from .commands import COMMANDS, CommandFailed, load_app, worker_settings
from .parser import ParserExit, UsageError, build_parser

__all__ = ["CommandFailed", "build_parser", "load_app", "main", "worker_settings"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # psycopg's pool logs each failed connection attempt; with no logging configured
    # (admin commands) Python would print them on stderr before tenure's one-line error.
    # Workers and the dashboard configure logging, and still see them there.
    driver_log = logging.getLogger("psycopg")
    if not any(isinstance(h, logging.NullHandler) for h in driver_log.handlers):
        driver_log.addHandler(logging.NullHandler())
    try:
        args = build_parser().parse_args(argv)
    except ParserExit as exc:
        return exc.status
    except UsageError as exc:
        failures.error_line(str(exc))
        return 2
    try:
        return COMMANDS[args.command](args)
    except (TenureError, KeyboardInterrupt) as exc:
        status = failures.report(exc)
        assert status is not None
        return status
    except BrokenPipeError:
        # The reader went away (`tenure runs | head`): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
