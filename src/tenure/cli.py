"""The ``tenure`` command line: migrate the store, run a worker, and administer tasks.

::

    tenure [--store URL] migrate
    tenure [--store URL] worker APP [--ttl S] [--heartbeat S] [--poll S] [--grace S] [--id NAME]
                                    [--http HOST:PORT] [--protect-reads] [--log-format human|json]
    tenure [--store URL] tasks add KIND KEY [--every S | --cron EXPR] [--params JSON] [--disabled]
    tenure [--store URL] tasks list [--kind K] [--owner WORKER] [--state STATE] [--json]
    tenure [--store URL] tasks show KIND KEY [--json]
    tenure [--store URL] tasks enable|disable|trigger|remove KIND KEY
    tenure [--store URL] runs [--kind K] [--key KEY] [--worker W] [--outcome O] [--limit N] [--json]
    tenure [--store URL] status [--json]
    tenure [--store URL] workers list [--json]
    tenure [--store URL] workers drain WORKER
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
  URL that does not parse, settings that contradict each other).

Every user mistake prints one line, ``tenure: error: ...``, on stderr, and never a
traceback. Nothing is changed by a command that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tenure import __version__, snapshot
from tenure.app import DEFAULT_STORE, App
from tenure.config import ENV_NAMES, Settings
from tenure.errors import InvalidInput, StoreUnavailable, TenureError
from tenure.inputs import ECHO_LIMIT, clip, cut, quote
from tenure.models import Outcome, Run, Task, WorkerInfo, check_worker_id
from tenure.schedule import next_slot
from tenure.store.urls import shown

PROG = "tenure"
#: Outcomes that ``status`` lists as recent failures.
FAILURES = tuple(Outcome(o) for o in snapshot.FAILURES)
#: Task states ``tasks list --state`` filters on (``status`` counts them).
STATES = snapshot.STATES
RECENT_FAILURES = 10
LOG_FORMATS = ("human", "json")
#: Width tables are laid out at when the output is not a terminal: wide enough to cut nothing.
UNCUT_WIDTH = 10_000
#: Run errors are cut to their first line and this many characters in tables (--json has them whole).
ERROR_WIDTH = 60
#: A run of characters in an argparse message long enough to be an echoed argument.
_LONG_WORD = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")

T = TypeVar("T")


class CommandFailed(TenureError):
    """A command could not do what it was asked (exit status 1)."""


# -- argument parsing ---------------------------------------------------------------------


class _UsageError(Exception):
    """argparse refused the command line."""


class _Exit(Exception):
    """argparse wants to stop (``--help``, ``--version``) with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports instead of exiting, so main() returns a status."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes what it refuses (an unknown choice, leftover arguments) whole.
        message = _LONG_WORD.sub(lambda m: clip(m.group()), message)
        raise _UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _seconds(text: str) -> float:
    """argparse type: a number of seconds (range checks are the settings' and schedules')."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {quote(text)}") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {quote(text)}") from None


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not _is_port(port):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), got {quote(text)}")
    return host, int(port)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535


def _port(text: str) -> int:
    if not _is_port(text):
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {quote(text)}")
    return int(text)


def _add_http_flags(p: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``tenure`` argument parser."""
    # --store is accepted after the command too: there it only overrides when given.
    store_after = _Parser(add_help=False)
    store_after.add_argument("--store", metavar="URL", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON for scripts")
    common = [store_after]

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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("migrate", parents=common, help="create or upgrade the store's schema", description=None)
    p.set_defaults(func=cmd_migrate)

    p = commands.add_parser(
        "worker",
        parents=common,
        help="run a worker for an app's task kinds",
        description="Run a worker until SIGTERM/SIGINT. Settings come from the flags, then the "
        "TENURE_* environment variables (" + ", ".join(ENV_NAMES.values()) + "), then the "
        "App's own settings. The worker uses the store its App names.",
    )
    p.add_argument("app", metavar="APP", help="module:attribute naming a tenure.App, e.g. myapp:app")
    p.add_argument("--ttl", type=_seconds, metavar="S", help="lease time to live, seconds")
    p.add_argument("--heartbeat", type=_seconds, metavar="S", help="lease renewal interval, seconds")
    p.add_argument("--poll", type=_seconds, metavar="S", help="interval to look for free tasks, seconds")
    p.add_argument("--grace", type=_seconds, metavar="S", help="time running handlers get to finish on stop")
    p.add_argument("--id", metavar="NAME", help="worker id (default: host-pid-random)")
    p.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve the dashboard, the JSON API and this worker's /metrics on this address "
        "(e.g. 127.0.0.1:8080; port 0 picks a free one, logged)",
    )
    _add_http_flags(p)
    p.set_defaults(func=cmd_worker)

    tasks = commands.add_parser("tasks", parents=common, help="add, list, show and change tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)

    p = tasks_sub.add_parser("add", parents=common, help="create a task")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("key", metavar="KEY")
    schedule = p.add_mutually_exclusive_group()
    schedule.add_argument("--every", type=_seconds, metavar="S", help="run every S seconds")
    schedule.add_argument("--cron", metavar="EXPR", help="run on a five-field cron schedule (UTC)")
    p.add_argument("--params", metavar="JSON", help="parameters, a JSON object")
    p.add_argument("--disabled", action="store_true", help="create the task disabled")
    p.set_defaults(func=cmd_tasks_add)

    p = tasks_sub.add_parser("list", parents=[store_after, json_flag], help="list tasks")
    p.add_argument("--kind", metavar="K", help="only tasks of this kind")
    p.add_argument("--owner", metavar="WORKER", help="only tasks this worker owns")
    p.add_argument("--state", choices=STATES, help="only tasks in this state")
    p.set_defaults(func=cmd_tasks_list)

    p = tasks_sub.add_parser("show", parents=[store_after, json_flag], help="show one task")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_tasks_show)

    for action, text in (
        ("enable", "let a task run again"),
        ("disable", "stop a task's runs"),
        ("trigger", "ask for one extra run as soon as possible"),
        ("remove", "delete a task (its terms are never reused)"),
    ):
        p = tasks_sub.add_parser(action, parents=common, help=text)
        p.add_argument("kind", metavar="KIND")
        p.add_argument("key", metavar="KEY")
        p.set_defaults(func=cmd_tasks_change, action=action)

    p = commands.add_parser(
        "runs",
        parents=[store_after, json_flag],
        help="list recorded runs, most recent first",
        description="List recorded runs, most recent first. Tables show the first line of each "
        "error; --json has them whole.",
    )
    p.add_argument("--kind", metavar="K")
    p.add_argument("--key", metavar="KEY")
    p.add_argument("--worker", metavar="W")
    p.add_argument("--outcome", metavar="O", choices=[o.value for o in Outcome])
    p.add_argument("--limit", type=_whole, default=50, metavar="N", help="at most N runs (default 50)")
    p.set_defaults(func=cmd_runs)

    p = commands.add_parser("status", parents=[store_after, json_flag], help="workers, task counts and recent failures")
    p.set_defaults(func=cmd_status)

    workers = commands.add_parser("workers", parents=common, help="list and drain workers")
    workers_sub = workers.add_subparsers(dest="workers_command", metavar="ACTION", required=True)
    p = workers_sub.add_parser("list", parents=[store_after, json_flag], help="list workers")
    p.set_defaults(func=cmd_workers_list)
    p = workers_sub.add_parser("drain", parents=common, help="make a worker hand its tasks over and take no more")
    p.add_argument("worker", metavar="WORKER")
    p.set_defaults(func=cmd_workers_drain)

    p = commands.add_parser(
        "dashboard",
        parents=common,
        help="serve the dashboard, the JSON API and /metrics for the store",
        description="Serve the dashboard page, the JSON API and Prometheus /metrics (with the "
        "store's task and worker gauges) until SIGTERM/SIGINT. Actions need "
        "'Authorization: Bearer <TENURE_ADMIN_TOKEN>'; without that variable they are refused. "
        "Binding to an address other than loopback is allowed, with a loud warning.",
    )
    p.add_argument("--host", default=None, metavar="H", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None, metavar="P", help="port (default 8787; 0 picks a free one)")
    _add_http_flags(p)
    p.set_defaults(func=cmd_dashboard)

    p = commands.add_parser(
        "demo",
        parents=common,
        help="courier dispatch on a cluster of workers, with chaos, and a proof at the end",
        description="Run the courier-dispatch demo: worker processes dispatch couriers to orders in "
        "every city through fenced commits while a seeded chaos monkey kills and pauses them; a "
        "checker then reads the database and proves that no order went to two couriers, no courier "
        "took two orders at once, every stale commit was refused and every city kept being "
        "dispatched. Exit status 0 if every check holds, 1 otherwise. The store is --store URL, "
        "else a fresh SQLite file in a temporary folder (never TENURE_STORE).",
    )
    p.add_argument("--workers", type=_whole, default=3, metavar="N", help="worker processes (default 3)")
    p.add_argument("--cities", type=_whole, default=6, metavar="N", help="cities at the start (default 6)")
    p.add_argument("--duration", type=_seconds, default=60.0, metavar="S", help="seconds to run (default 60)")
    p.add_argument("--seed", type=_whole, default=7, metavar="N", help="seed of the orders and the chaos (default 7)")
    p.add_argument(
        "--chaos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kill and pause workers, open and close cities (default: on)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


# -- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # psycopg's pool logs each failed connection attempt; with no logging configured
    # (admin commands) Python would print them on stderr before tenure's one-line error.
    # Workers and the dashboard configure logging, and still see them there.
    driver_log = logging.getLogger("psycopg")
    if not any(isinstance(h, logging.NullHandler) for h in driver_log.handlers):
        driver_log.addHandler(logging.NullHandler())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _Exit as exc:
        return exc.status
    except _UsageError as exc:
        _error(str(exc))
        return 2
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except InvalidInput as exc:
        _error(str(exc))
        return 2
    except TenureError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`tenure runs | head`): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {cut(message)}\n")


def _store_url(args: argparse.Namespace) -> str:
    url: str | None = args.store
    if url is not None:
        if not url.strip():
            raise InvalidInput("--store is empty; give a store URL such as sqlite:///tenure.db")
        return url
    return os.environ.get("TENURE_STORE") or DEFAULT_STORE


def _run_admin(args: argparse.Namespace, body: Callable[[App], Awaitable[T]]) -> T:
    """Open an App (no kinds of its own) on the store, without migrating, and run ``body``."""
    app = App(_store_url(args))
    _refuse_missing_sqlite_file(app)

    async def go() -> T:
        try:
            await app.open(migrate=False)
            return await body(app)
        finally:
            await app.close()

    return asyncio.run(go())


def _refuse_missing_sqlite_file(app: App) -> None:
    if app.store.dialect != "sqlite":
        return
    from tenure.store.sqlite import parse_sqlite_url

    path, _ = parse_sqlite_url(app.store_url)
    if not path.exists():
        raise StoreUnavailable(
            f"no SQLite store at {quote(str(path))}; run `tenure migrate` to create one, or give --store"
        )


# -- output -------------------------------------------------------------------------------


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _show(*items: str | Table) -> None:
    """Print lines (verbatim, no markup) and tables.

    On a terminal, tables fit its width; elsewhere (a pipe, a file) nothing is cut or
    folded, and lines carry no trailing blanks.
    """
    renderables = [Text(item) if isinstance(item, str) else item for item in items]
    if sys.stdout.isatty():
        console = Console(highlight=False)
        for renderable in renderables:
            console.print(renderable)
        return
    buffer = io.StringIO()
    console = Console(file=buffer, width=UNCUT_WIDTH, highlight=False, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    text = "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())
    encoding = sys.stdout.encoding or "utf-8"
    if not encoding.lower().replace("-", "").startswith("utf"):
        text = text.replace("─", "-").encode(encoding, "replace").decode(encoding)
    else:  # a lone surrogate in stored text (a run's error) must not end the command
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    sys.stdout.write(text)


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: Sequence[str] = ()) -> Table:
    """A table: on a narrow terminal its ``wrap`` columns fold; the others stay whole."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        if column in wrap:
            table.add_column(column, overflow="fold", min_width=min(len(column), 10))
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        # Text, not markup: keys and error messages are shown exactly as stored.
        table.add_row(*(Text(cell) for cell in row))
    return table


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 10:
        text = f"{s:.1f}s"
    elif s < 120:
        text = f"{s:.0f}s"
    elif s < 7200:
        text = f"{s // 60:.0f}m{s % 60:02.0f}s"
    elif s < 172800:
        text = f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"
    else:
        text = f"{s // 86400:.0f}d{s % 86400 // 3600:02.0f}h"
    return text


def _ago(now: float, t: float | None) -> str:
    if t is None:
        return "-"
    delta = now - t
    return f"{_span(delta)} ago" if delta >= 0 else f"in {_span(delta)}"


def _when_ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{_when(t)} UTC ({_ago(now, t)})"


def _describe(task: Task) -> str:
    return task.schedule.describe()


# -- snapshots of the store ---------------------------------------------------------------


async def _cluster(app: App) -> snapshot.Cluster:
    store = app.store
    workers = await store.list_workers()
    return snapshot.Cluster(now=await store.now(), workers=workers)


def _next_slot(task: Task, now: float) -> float | None:
    """The schedule's next slot after now (None while disabled)."""
    if not task.enabled:
        return None
    return next_slot(task.schedule, task.kind, task.key, max(now, task.last_slot or now))


def _owner_text(task: Task, cluster: snapshot.Cluster) -> str:
    if task.owner is None:
        return "-"
    return task.owner if cluster.owned(task) else f"{task.owner} (lease expired)"


def _runs_table(runs: Sequence[Run], now: float) -> Table:
    return _table(
        ["ID", "TASK", "WORKER", "TERM", "STARTED", "LATE", "TOOK", "OUTCOME", "ERROR"],
        [
            [
                str(r.id),
                f"{r.kind}/{r.key}",
                r.worker,
                str(r.term),
                _ago(now, r.started_at),
                _span(max(0.0, r.started_at - r.scheduled_at)),
                _span(r.ended_at - r.started_at),
                r.outcome.value,
                _first_line(r.error or "", ERROR_WIDTH),
            ]
            for r in runs
        ],
        wrap=("TASK", "WORKER", "ERROR"),
    )


def _first_line(text: str, width: int) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > width or len(lines) > 1:
        return line[: width - 1] + "…"
    return line


def _workers_table(workers: Sequence[WorkerInfo], now: float) -> Table:
    rows = []
    for w in workers:
        state = "expired" if w.expires_at <= now else "draining" if w.draining else "live"
        rows.append(
            [
                w.id,
                w.host,
                str(w.pid),
                state,
                _span(now - w.started_at),
                _span(w.expires_at - now) if w.expires_at > now else "-",
                str(w.tasks_held),
            ]
        )
    return _table(["ID", "HOST", "PID", "STATE", "AGE", "LEASE LEFT", "TASKS"], rows, wrap=("ID", "HOST"))


# -- commands -----------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    app = App(_store_url(args))

    async def go() -> tuple[int, int]:
        try:
            return await app.migrate()
        finally:
            await app.close()

    before, after = asyncio.run(go())
    where = app.store.display_url
    if before == after:
        print(f"schema is up to date at version {after} ({where})")
    else:
        print(f"schema migrated from version {before} to {after} ({where})")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.store is not None and _store_url(args) != app.store_url:
        raise InvalidInput(
            f"--store {shown(args.store)} differs from the store {quote(args.app)} names ({shown(app.store_url)}); "
            "a worker runs on its App's store (set it in code or with TENURE_STORE)"
        )
    settings = worker_settings(
        app,
        os.environ,
        lease_ttl=args.ttl,
        heartbeat=args.heartbeat,
        poll=args.poll,
        grace=args.grace,
        worker_id=args.id,
    )

    protect_reads = _protect_reads(args, os.environ)
    _configure_logs(args, os.environ)
    extra: dict[str, Any] = {}
    http = None
    if args.http is not None:
        from tenure.web import WorkerHTTP  # the web stack loads only when asked for

        http = WorkerHTTP(*args.http, protect_reads=protect_reads)
        extra["sidecars"] = [http]

    async def go() -> None:
        try:
            await app.run_worker(settings=settings, **extra)
        finally:
            await app.close()

    try:
        asyncio.run(go())
    except NotImplementedError as exc:
        raise CommandFailed(f"this version of tenure cannot run workers: {exc}") from exc
    finally:
        if http is not None:
            http.close()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tenure import web  # the web stack loads only when asked for

    settings = Settings.from_env(os.environ)
    protect_reads = _protect_reads(args, os.environ)
    app = App(_store_url(args), settings=settings)
    _refuse_missing_sqlite_file(app)
    _configure_logs(args, os.environ)
    host = web.DEFAULT_HOST if args.host is None else args.host
    port = web.DEFAULT_PORT if args.port is None else args.port
    if not host.strip():
        raise InvalidInput("--host is empty; give an address such as 127.0.0.1")
    web.run_dashboard(app, host=host, port=port, protect_reads=protect_reads)
    return 0


def _protect_reads(args: argparse.Namespace, env: Mapping[str, str]) -> bool:
    """--protect-reads / --no-protect-reads, else TENURE_PROTECT_READS (1/true/yes/on, 0/false/no/off)."""
    if args.protect_reads is not None:
        return bool(args.protect_reads)
    raw = env.get("TENURE_PROTECT_READS", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InvalidInput(f"TENURE_PROTECT_READS={quote(raw)} must be one of 1, true, yes, on, 0, false, no, off")


def _configure_logs(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Send logs to stderr as --log-format, else TENURE_LOG_FORMAT, else human, says."""
    from tenure import logs

    chosen: str | None = args.log_format
    if chosen is None:
        chosen = env.get("TENURE_LOG_FORMAT", "").strip().lower() or "human"
        if chosen not in LOG_FORMATS:
            raise InvalidInput(f"TENURE_LOG_FORMAT={quote(chosen)} must be human or json")
    logs.configure(json_lines=chosen == "json")


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (the current folder first on the path) and check it is an App."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise InvalidInput(f"APP must be module:attribute, e.g. myapp:app; got {quote(spec)}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the named module missing is the user's typo; a missing import inside it
        # is a bug in their code, best shown with its traceback.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise CommandFailed(f"cannot import {quote(module_name)}: no module named {quote(exc.name)}") from exc
    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandFailed(f"module {quote(module_name)} has no attribute {quote(attr_path)}") from None
    if not isinstance(target, App):
        raise CommandFailed(f"{clip(spec)} is a {type(target).__name__}, not a tenure.App")
    return target


def worker_settings(app: App, env: Mapping[str, str], **flags: Any) -> Settings:
    """Settings for a worker: flags win over TENURE_* variables, which win over the App's."""
    from_app = {f.name: getattr(app.settings, f.name) for f in fields(Settings) if not env.get(ENV_NAMES[f.name])}
    given = {name: value for name, value in flags.items() if value is not None}
    return Settings.from_env(env, **{**from_app, **given})


def cmd_tasks_add(args: argparse.Namespace) -> int:
    async def go(app: App) -> Task:
        return await app.add_task(
            args.kind,
            args.key,
            every=args.every,
            cron=args.cron,
            params=args.params,
            enabled=not args.disabled,
        )

    task = _run_admin(args, go)
    state = "enabled" if task.enabled else "disabled"
    print(f"added task {task.kind}/{task.key} ({_describe(task)}, {state})")
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[list[Task], snapshot.Cluster]:
        tasks = await app.list_tasks(kind=args.kind, owner=args.owner)
        return tasks, await _cluster(app)

    tasks, cluster = _run_admin(args, go)
    if args.state:
        tasks = [t for t in tasks if snapshot.in_state(t, args.state, cluster)]
    if args.json:
        _print_json([snapshot.task_json(t, cluster) for t in tasks])
        return 0
    if not tasks:
        print("no tasks")
        return 0
    rows = [
        [
            t.kind,
            t.key,
            _describe(t),
            "yes" if t.enabled else "no",
            _owner_text(t, cluster),
            str(t.term),
            _ago(cluster.now, t.last_slot),
        ]
        for t in tasks
    ]
    columns = ["KIND", "KEY", "SCHEDULE", "ENABLED", "OWNER", "TERM", "LAST SLOT"]
    _show(_table(columns, rows, wrap=("KIND", "KEY", "SCHEDULE", "OWNER")))
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[Task, snapshot.Cluster]:
        task = await app.get_task(args.kind, args.key)
        return task, await _cluster(app)

    task, cluster = _run_admin(args, go)
    upcoming = _next_slot(task, cluster.now)
    if args.json:
        _print_json({**snapshot.task_json(task, cluster), "next_slot": upcoming})
        return 0
    rows = [
        ["kind", task.kind],
        ["key", task.key],
        ["schedule", _describe(task)],
        ["enabled", "yes" if task.enabled else "no"],
        ["owner", _owner_text(task, cluster)],
        ["term", str(task.term)],
        ["last slot", _when_ago(task.last_slot, cluster.now)],
        ["next slot", _when_ago(upcoming, cluster.now)],
        ["triggered", _ago(cluster.now, task.trigger_at) if task.trigger_at else "no"],
        ["params", json.dumps(task.params, sort_keys=True)],
        ["version", str(task.version)],
        ["created", f"{_when(task.created_at)} UTC"],
        ["updated", f"{_when(task.updated_at)} UTC"],
    ]
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    _show(table)
    return 0


def cmd_tasks_change(args: argparse.Namespace) -> int:
    action: str = args.action

    async def go(app: App) -> None:
        if action == "enable":
            await app.enable(args.kind, args.key)
        elif action == "disable":
            await app.disable(args.kind, args.key)
        elif action == "trigger":
            await app.trigger(args.kind, args.key)
        else:
            await app.remove(args.kind, args.key)

    _run_admin(args, go)
    done = {"enable": "enabled", "disable": "disabled", "trigger": "triggered", "remove": "removed"}
    print(f"{done[action]} task {args.kind}/{args.key}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[list[Run], float]:
        runs = await app.list_runs(
            kind=args.kind, key=args.key, worker=args.worker, outcome=args.outcome, limit=args.limit
        )
        return runs, await app.store.now()

    runs, now = _run_admin(args, go)
    if args.json:
        _print_json([snapshot.run_json(r) for r in runs])
    elif not runs:
        print("no runs")
    else:
        _show(_runs_table(runs, now))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[str, list[Task], snapshot.Cluster, list[Run]]:
        tasks = await app.list_tasks()
        cluster = await _cluster(app)
        failures: list[Run] = []
        for outcome in FAILURES:
            failures += await app.list_runs(outcome=outcome.value, limit=RECENT_FAILURES)
        failures.sort(key=lambda r: (r.ended_at, r.id or 0), reverse=True)
        return app.store.display_url, tasks, cluster, failures[:RECENT_FAILURES]

    where, tasks, cluster, failures = _run_admin(args, go)
    counts = snapshot.state_counts(tasks, cluster)
    live = cluster.live
    if args.json:
        _print_json(
            {
                "store": where,
                "now": cluster.now,
                "workers": [snapshot.worker_json(w, cluster.now) for w in cluster.workers],
                "tasks": counts,
                "recent_failures": [snapshot.run_json(r) for r in failures],
            }
        )
        return 0
    expired = len(cluster.workers) - len(live)
    out: list[str | Table] = [
        f"store: {where}",
        f"workers: {len(live)} live" + (f", {expired} expired" if expired else ""),
    ]
    if cluster.workers:
        out.append(_workers_table(cluster.workers, cluster.now))
    out.append("tasks: " + ", ".join(f"{counts[name]} {name}" for name in ("total", *STATES)))
    if failures:
        out += ["recent failures:", _runs_table(failures, cluster.now)]
    else:
        out.append("recent failures: none")
    _show(*out)
    return 0


def cmd_workers_list(args: argparse.Namespace) -> int:
    async def go(app: App) -> snapshot.Cluster:
        return await _cluster(app)

    cluster = _run_admin(args, go)
    if args.json:
        _print_json([snapshot.worker_json(w, cluster.now) for w in cluster.workers])
    elif not cluster.workers:
        print("no workers")
    else:
        _show(_workers_table(cluster.workers, cluster.now))
    return 0


def cmd_workers_drain(args: argparse.Namespace) -> int:
    worker: str = args.worker

    async def go(app: App) -> bool:
        return await app.drain(worker)

    if not _run_admin(args, go):
        raise CommandFailed(f"no worker {quote(check_worker_id(worker))}")
    print(f"worker {check_worker_id(worker)} is draining: it hands its tasks over and takes no more")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tenure.demo.runner import Options, run  # the demo's modules load only for the demo

    store: str | None = args.store
    if store is not None and not store.strip():
        raise InvalidInput("--store is empty; give a store URL such as sqlite:///demo.db")
    options = Options(
        store=store,
        workers=args.workers,
        cities=args.cities,
        duration=args.duration,
        seed=args.seed,
        chaos=args.chaos,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
