"""The ``tenure`` command line's grammar: commands, flags and the types of their values.

Parsing only: each command's arguments end up in a namespace whose ``command`` names it
(``"tasks add"``); :mod:`tenure.cli.commands` runs it. argparse's own refusals become
:class:`UsageError` (exit status 2) instead of exiting the process.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from tenure import __version__
from tenure.config import DEFAULT_STORE, ENV_NAMES, LOG_FORMATS
from tenure.inputs import ECHO_LIMIT, clip, quote
from tenure.models import Outcome
from tenure.snapshot import STATES

PROG = "tenure"
#: A run of characters in an argparse message long enough to be an echoed argument.
_LONG_WORD = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")


class UsageError(Exception):
    """argparse refused the command line (exit status 2)."""


class ParserExit(Exception):
    """argparse wants to stop (``--help``, ``--version``) with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports instead of exiting, so main() returns a status."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it refuses (an unknown choice, leftover arguments) whole.
        message = _LONG_WORD.sub(lambda m: clip(m.group()), message)
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


# -- value types (range checks are the settings', schedules' and App's) ----------------------


def seconds(text: str) -> float:
    """A number of seconds."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {quote(text)}") from None


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {quote(text)}") from None


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address: [::1]:8080
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: which part is the port?
    if "[" in host or "]" in host:
        host = ""  # brackets that do not pair
    if not sep or not host or not _is_port(port):
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT (e.g. 127.0.0.1:8080, or [::1]:8080 for IPv6), got {quote(text)}"
        )
    return host, int(port)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535


def port(text: str) -> int:
    if not _is_port(text):
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {quote(text)}")
    return int(text)


# -- `tenure worker`'s settings -----------------------------------------------------------


@dataclass(frozen=True)
class SettingFlag:
    """A flag of ``tenure worker`` that sets one of :class:`tenure.Settings`."""

    flag: str
    #: The setting it sets (also the argparse destination).
    setting: str
    type: Callable[[str], Any]
    metavar: str
    help: str


#: Every flag of ``tenure worker`` that sets a worker setting: flags win over the
#: ``TENURE_*`` environment, which wins over the App's own settings (tenure.config).
WORKER_SETTING_FLAGS = (
    SettingFlag("--ttl", "lease_ttl", seconds, "S", "lease time to live, seconds"),
    SettingFlag("--heartbeat", "heartbeat", seconds, "S", "lease renewal interval, seconds"),
    SettingFlag("--poll", "poll", seconds, "S", "interval to look for free tasks, seconds"),
    SettingFlag("--grace", "grace", seconds, "S", "time running handlers get to finish on stop"),
    SettingFlag("--concurrency", "concurrency", whole, "N", "most runs in progress at once; due runs past it wait"),
    SettingFlag("--timer-grid", "timer_grid", seconds, "S", "runs start on a grid of this step, up to one step late"),
    SettingFlag("--id", "worker_id", str, "NAME", "worker id (default: host-pid-random)"),
)


def worker_setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``tenure worker``'s flags gave (None where a flag was not given)."""
    return {f.setting: getattr(args, f.setting) for f in WORKER_SETTING_FLAGS}


# -- the parser -----------------------------------------------------------------------------


def _add_serving_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that serve HTTP or run long: reads protection and log format."""
    p.add_argument(
        "--protect-reads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reads (the JSON API and /metrics) need the admin token too (default: $TENURE_PROTECT_READS, else no)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="log lines on stderr, human or JSON (default: $TENURE_LOG_FORMAT, else human)",
    )


def _add_task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND")
    p.add_argument("key", metavar="KEY")


def build_parser() -> argparse.ArgumentParser:
    """The ``tenure`` argument parser."""
    # --store is accepted after the command too: there it only overrides when given.
    store_after = _Parser(add_help=False)
    store_after.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON for scripts")
    common = [store_after]
    reads = [store_after, json_flag]

    parser = _Parser(
        prog=PROG,
        description="Periodic keyed tasks across a cluster of workers, fenced by a SQL database.",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"store URL (default: $TENURE_STORE, else {DEFAULT_STORE})",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="top", metavar="COMMAND", required=True)

    #: Where each group's actions go (``tasks`` for ``tasks add``; "" for commands).
    groups: dict[str, Any] = {"": commands}

    def group(name: str, help: str) -> None:
        """A command whose actions are commands of their own (``tasks``: ``tasks add``, ...)."""
        top = commands.add_parser(name, parents=common, help=help)
        groups[name] = top.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)

    def command(full: str, *, json: bool = False, **kw: Any) -> Any:
        """The command ``full`` (``tasks add`` is the action ``add`` of the group ``tasks``),
        taking ``--store`` after it, and ``--json`` if ``json``."""
        *group_words, name = full.split()
        p = groups[" ".join(group_words)].add_parser(name, parents=reads if json else common, **kw)
        p.set_defaults(command=full)
        return p

    command("migrate", help="create or upgrade the store's schema")

    p = command(
        "worker",
        help="run a worker for an app's task kinds",
        description="Run a worker until SIGTERM/SIGINT. Settings come from the flags, then the "
        "TENURE_* environment variables (" + ", ".join(ENV_NAMES.values()) + "), then the "
        "App's own settings. The worker uses the store its App names.",
    )
    p.add_argument("app", metavar="APP", help="module:attribute naming a tenure.App, e.g. myapp:app")
    for f in WORKER_SETTING_FLAGS:
        p.add_argument(f.flag, dest=f.setting, type=f.type, metavar=f.metavar, help=f.help)
    p.add_argument(
        "--http",
        type=host_port,
        metavar="HOST:PORT",
        help="serve the dashboard, the JSON API and this worker's /metrics on this address "
        "(e.g. 127.0.0.1:8080; port 0 picks a free one, logged)",
    )
    _add_serving_flags(p)

    group("tasks", help="add, sync, list, show and change tasks")

    p = command("tasks add", help="create a task")
    _add_task_arguments(p)
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--every", type=seconds, metavar="S", help="run every S seconds")
    schedule.add_argument("--cron", metavar="EXPR", help="run on a five-field cron schedule (UTC)")
    p.add_argument("--params", metavar="JSON", help="parameters, a JSON object")
    p.add_argument("--disabled", action="store_true", help="create the task disabled")

    p = command(
        "tasks sync",
        json=True,
        help="make a kind's tasks match a list: add, update, disable or remove what differs",
        description="Make KIND's tasks match FILE, in one transaction: add the tasks it lists that "
        "are missing, update those whose params, schedule or enabled flag differ, and disable "
        "(with --remove-missing, remove) the kind's tasks it does not list. FILE holds JSON lines, "
        'one task a line: {"key": "lisbon", "params": {...}, "every": 5} or "cron": "0 6 * * *", '
        'optionally "enabled": false; params default to {} and the schedule to the default of the kind. '
        "A bad line is reported with its number and nothing is applied. Running it again with "
        "the same FILE changes nothing.",
    )
    p.add_argument("kind", metavar="KIND")
    p.add_argument("file", metavar="FILE", help="JSON lines, one task a line ('-': standard input)")
    p.add_argument(
        "--remove-missing", action="store_true", help="remove the tasks FILE does not list (default: disable them)"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change, and change nothing")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a FILE with no tasks (it disables, or removes, every task of KIND)",
    )

    p = command("tasks list", json=True, help="list tasks")
    p.add_argument("--kind", metavar="K", help="only tasks of this kind")
    p.add_argument("--owner", metavar="WORKER", help="only tasks this worker owns")
    p.add_argument("--state", choices=STATES, help="only tasks in this state")

    p = command("tasks show", json=True, help="show one task")
    _add_task_arguments(p)

    for action, text in (
        ("enable", "let a task run again"),
        ("disable", "stop a task's runs"),
        ("trigger", "ask for one extra run as soon as possible"),
        ("remove", "delete a task (its terms are never reused)"),
    ):
        p = command(f"tasks {action}", help=text)
        _add_task_arguments(p)
        if action == "disable":
            p.add_argument(
                "--cancel",
                action="store_true",
                help="also cancel its run in progress, whose commit is then refused (else it ends on its own)",
            )

    p = command(
        "runs",
        json=True,
        help="list recorded runs, most recent first",
        description="List recorded runs, most recent first. Tables show the first line of each "
        "error; --json has them whole.",
    )
    p.add_argument("--kind", metavar="K")
    p.add_argument("--key", metavar="KEY")
    p.add_argument("--worker", metavar="W")
    p.add_argument("--outcome", metavar="O", choices=[o.value for o in Outcome])
    p.add_argument("--limit", type=whole, default=50, metavar="N", help="at most N runs (default 50)")

    command("status", json=True, help="workers, task counts and recent failures")

    group("workers", help="list and drain workers")
    command("workers list", json=True, help="list workers")
    p = command("workers drain", help="make a worker hand its tasks over and take no more")
    p.add_argument("worker", metavar="WORKER")

    cancel_help = "also cancel the runs in progress (recorded as cancelled); else they end on their own"
    group("kinds", help="pause and resume a kind")
    p = command(
        "kinds pause",
        help="stop every worker from starting runs of a kind, until resumed",
        description="Pause KIND: no worker starts a run of it from its next poll on (at once on "
        "PostgreSQL). Tasks keep their owners and schedules; the pause outlives failovers and "
        "restarts. Runs in progress end on their own, or with --cancel are cancelled.",
    )
    p.add_argument("kind", metavar="KIND")
    p.add_argument("--cancel", action="store_true", help=cancel_help)
    p = command("kinds resume", help="let a paused kind run again (missed slots follow its misfire policy)")
    p.add_argument("kind", metavar="KIND")
    p = command(
        "pause",
        help="stop every worker from starting any run, until resumed",
        description="Pause every kind (kinds paused on their own stay paused after `tenure resume`).",
    )
    p.add_argument("--cancel", action="store_true", help=cancel_help)
    command("resume", help="lift the pause of every kind")

    p = command(
        "dashboard",
        help="serve the dashboard, the JSON API and /metrics for the store",
        description="Serve the dashboard page, the JSON API and Prometheus /metrics (with the "
        "store's task and worker gauges) until SIGTERM/SIGINT. Actions need "
        "'Authorization: Bearer <TENURE_ADMIN_TOKEN>'; without that variable they are refused. "
        "Binding to an address other than loopback is allowed, with a loud warning.",
    )
    p.add_argument("--host", default=None, metavar="H", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=None, metavar="P", help="port (default 8787; 0 picks a free one)")
    _add_serving_flags(p)

    p = command(
        "demo",
        help="courier dispatch on a cluster of workers, with chaos, and a proof at the end",
        description="Run the courier-dispatch demo: worker processes dispatch couriers to orders in "
        "every city through fenced commits while a seeded chaos monkey kills and pauses them; a "
        "checker then reads the database and proves that no order went to two couriers, no courier "
        "took two orders at once, every stale commit was refused and every city kept being "
        "dispatched. Exit status 0 if every check holds, 1 otherwise. The store is --store URL, "
        "else a fresh SQLite file in a temporary folder (never TENURE_STORE).",
    )
    p.add_argument("--workers", type=whole, default=3, metavar="N", help="worker processes (default 3)")
    p.add_argument("--cities", type=whole, default=6, metavar="N", help="cities at the start (default 6)")
    p.add_argument("--duration", type=seconds, default=60.0, metavar="S", help="seconds to run (default 60)")
    p.add_argument("--seed", type=whole, default=7, metavar="N", help="seed of the orders and the chaos (default 7)")
    p.add_argument(
        "--chaos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kill and pause workers, open and close cities (default: on)",
    )
    return parser
