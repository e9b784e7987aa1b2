"""What each ``tenure`` command does: read its arguments, call :class:`tenure.App`, print.

Every command goes through an App, the one public surface of a store; nothing here
talks to a store directly. Admin commands open an App of no kinds of its own on the
store, never migrating (nor creating an embedded store's file).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenure import config, snapshot
from tenure.app import App, default_actor
from tenure.config import Settings
from tenure.desired import SyncResult
from tenure.errors import InvalidInput, TenureError
from tenure.inputs import clip, quote
from tenure.models import DEFAULT_MAX_PARAMS_BYTES, Pause, Run, Task, check_kind, check_worker_id
from tenure.snapshot import Roster
from tenure.store.urls import shown
from tenure.worker.executor import RUN_TASK_PREFIX, SYNC_THREAD_PREFIX

from . import failures, render, sync_input
from .parser import worker_setting_flags

T = TypeVar("T")
#: Longest line ``tasks sync`` reads: parameters at their default limit, escaped, and the rest.
MAX_LINE_BYTES = 8 * DEFAULT_MAX_PARAMS_BYTES + 4096
Command = Callable[[argparse.Namespace], int]


class CommandFailed(TenureError):
    """A command could not do what it was asked (exit status 1)."""


# -- the store and the app ------------------------------------------------------------------


def store_url(args: argparse.Namespace) -> str:
    """The store: --store (before or after the command), else TENURE_STORE, else the default."""
    given: str | None = args.store
    if given is not None and not given.strip():
        raise InvalidInput("--store is empty; give a store URL such as sqlite:///tenure.db")
    return config.store_url(given, os.environ)


def run_admin(args: argparse.Namespace, body: Callable[[App], Awaitable[T]]) -> T:
    """Open an App (no kinds of its own) on the store, without migrating, and run ``body``."""
    app = App(store_url(args))

    async def go() -> T:
        try:
            await app.open(migrate=False)
            return await body(app)
        finally:
            await app.close()

    return asyncio.run(go())


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
    return Settings.from_env(env, base=app.settings, **flags)


def configure_logs(given: str | None) -> None:
    """Send logs to stderr in the format chosen by flag, else TENURE_LOG_FORMAT, else human."""
    from tenure import logs

    logs.configure(json_lines=config.log_format(given, os.environ) == "json")


# -- commands -------------------------------------------------------------------------------


def migrate(args: argparse.Namespace) -> int:
    app = App(store_url(args))

    async def go() -> tuple[int, int]:
        try:
            return await app.migrate()
        finally:
            await app.close()

    before, after = asyncio.run(go())
    if before == after:
        print(f"schema is up to date at version {after} ({app.display_url})")
    else:
        print(f"schema migrated from version {before} to {after} ({app.display_url})")
    return 0


def worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    if args.store is not None and store_url(args) != app.store_url:
        raise InvalidInput(
            f"--store {shown(args.store)} differs from the store {quote(args.app)} names ({shown(app.store_url)}); "
            "a worker runs on its App's store (set it in code or with TENURE_STORE)"
        )
    settings = worker_settings(app, os.environ, **worker_setting_flags(args))
    protect_reads = config.protect_reads(args.protect_reads, os.environ)
    configure_logs(args.log_format)
    extra: dict[str, Any] = {}
    http = None
    if args.http is not None:
        from tenure.web import WorkerHTTP  # the web stack loads only when asked for

        http = WorkerHTTP(*args.http, protect_reads=protect_reads)
        extra["sidecars"] = [http]

    async def go() -> None:
        failure: BaseException | None = None
        try:
            await app.run_worker(settings=settings, **extra)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await app.close()
            _exit_past_stuck_runs(failure)

    try:
        asyncio.run(go())
    finally:
        if http is not None:
            http.close()
    _exit_past_stuck_handlers()
    return 0


#: How long a worker that has left waits for its sync handlers' threads before exiting
#: without them (idle ones end at once; a thread cannot be stopped).
STUCK_THREADS_WAIT = 1.0


def _exit_past_stuck_runs(failure: BaseException | None) -> None:
    """The worker has left; an async handler that caught its cancellation and went on
    would hold the process forever, since asyncio.run() waits for every task it cancels
    at its end. Exit without it, saying so (the worker has said which runs).

    The exit comes before :func:`tenure.cli.main` could report ``failure`` (why the
    worker ended, if it failed), so it is reported here as main would have: its one
    line and status, or the traceback of an error that is not tenure's."""
    stuck = [t for t in asyncio.all_tasks() if t.get_name().startswith(RUN_TASK_PREFIX) and not t.done()]
    if not stuck:
        return
    code = 0
    if failure is not None:
        status = failures.report(failure)
        if status is None:
            traceback.print_exception(failure)
            status = 1
        code = status
    _exit_now(f"{len(stuck)} run(s) still going after being cancelled; exiting without them", code)


def _exit_now(why: str, code: int = 0) -> None:
    logging.getLogger("tenure.worker").warning("%s", why)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_past_stuck_handlers() -> None:
    """The worker has left (its tasks released, its runs recorded); a sync handler stuck
    in its thread (a call without a timeout) would hold the process forever, since Python
    joins the handlers' threads at exit. Exit without them, saying so."""
    deadline = time.monotonic() + STUCK_THREADS_WAIT
    stuck = []
    for t in threading.enumerate():
        if t.name.startswith(SYNC_THREAD_PREFIX):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
    if stuck:
        _exit_now(f"{len(stuck)} sync handler thread(s) still running after the worker left; exiting without them")


def dashboard(args: argparse.Namespace) -> int:
    from tenure import web  # the web stack loads only when asked for

    settings = Settings.from_env(os.environ)
    protect_reads = config.protect_reads(args.protect_reads, os.environ)
    app = App(store_url(args), settings=settings)
    configure_logs(args.log_format)
    host = web.DEFAULT_HOST if args.host is None else args.host
    port = web.DEFAULT_PORT if args.port is None else args.port
    if not host.strip():
        raise InvalidInput("--host is empty; give an address such as 127.0.0.1")
    web.run_dashboard(app, host=host, port=port, protect_reads=protect_reads)
    return 0


def tasks_add(args: argparse.Namespace) -> int:
    async def go(app: App) -> Task:
        return await app.add_task(
            args.kind, args.key, every=args.every, cron=args.cron, params=args.params, enabled=not args.disabled
        )

    task = run_admin(args, go)
    state = "enabled" if task.enabled else "disabled"
    print(f"added task {task.kind}/{task.key} ({task.schedule.describe()}, {state})")
    return 0


def tasks_sync(args: argparse.Namespace) -> int:
    kind = check_kind(args.kind)
    with sync_input.opened(args.file) as f:
        specs, line_of = sync_input.read_lines(f, max_line_bytes=MAX_LINE_BYTES)
    if not specs and not (args.allow_empty or args.dry_run):
        action = "remove" if args.remove_missing else "disable"
        raise InvalidInput(
            f"{quote(args.file)} holds no tasks: that would {action} every task of kind {quote(kind)}; "
            "give --allow-empty if that is meant"
        )

    async def go(app: App) -> SyncResult:
        try:
            return await app.sync_tasks(
                kind, specs, remove_missing=args.remove_missing, dry_run=args.dry_run, allow_empty=args.allow_empty
            )
        except InvalidInput as exc:
            if exc.entry is None or exc.entry not in line_of:
                raise
            raise type(exc)(f"line {line_of[exc.entry]}: {exc}") from None

    result = run_admin(args, go)
    if args.json:
        render.print_json(snapshot.sync_json(result))
    else:
        render.show(*render.sync_lines(result))
    return 0


def tasks_list(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[list[Task], Roster]:
        tasks = await app.list_tasks(kind=args.kind, owner=args.owner)
        return tasks, await app.roster()

    tasks, roster = run_admin(args, go)
    if args.state:
        tasks = [t for t in tasks if snapshot.in_state(t, args.state, roster)]
    render.show_listing(
        tasks,
        "tasks",
        as_json=args.json,
        to_json=lambda t: snapshot.task_json(t, roster),
        table=lambda: render.tasks_table(tasks, roster),
    )
    return 0


def tasks_show(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[Task, Roster]:
        task = await app.get_task(args.kind, args.key)
        return task, await app.roster()

    task, roster = run_admin(args, go)
    if args.json:
        render.print_json({**snapshot.task_json(task, roster), "next_slot": render.upcoming_slot(task, roster.now)})
    else:
        render.show(render.task_fields(task, roster))
    return 0


def tasks_change(args: argparse.Namespace) -> int:
    """``tasks enable|disable|trigger|remove KIND KEY``."""
    action = args.command.split()[-1]

    cancel = action == "disable" and args.cancel

    async def go(app: App) -> Task | str:
        if cancel:
            return await app.disable(args.kind, args.key, cancel=True)
        if action == "remove":
            return await app.remove(args.kind, args.key)
        change = {"enable": app.enable, "disable": app.disable, "trigger": app.trigger}
        return await change[action](args.kind, args.key)

    changed = run_admin(args, go)
    done = {"enable": "enabled", "disable": "disabled", "trigger": "triggered", "remove": "removed"}
    also = "; its run in progress, if any, is cancelled and cannot commit" if cancel else ""
    if action == "trigger" and isinstance(changed, Task) and not changed.enabled:
        also = "; the task is disabled: the run waits until it is enabled"
    print(f"{done[action]} task {args.kind}/{args.key}{also}")
    return 0


def runs(args: argparse.Namespace) -> int:
    async def go(app: App) -> tuple[list[Run], float]:
        found = await app.list_runs(
            kind=args.kind, key=args.key, worker=args.worker, outcome=args.outcome, limit=args.limit
        )
        return found, await app.now()

    found, now = run_admin(args, go)
    render.show_listing(
        found, "runs", as_json=args.json, to_json=snapshot.run_json, table=lambda: render.runs_table(found, now)
    )
    return 0


def status(args: argparse.Namespace) -> int:
    async def go(app: App) -> snapshot.Status:
        return await app.status()

    st = run_admin(args, go)
    if args.json:
        render.print_json(snapshot.status_json(st))
        return 0
    roster, counts = st.roster, st.tasks
    expired = len(roster.workers) - len(roster.live)
    out: list[Any] = [
        f"store: {st.store}",
        f"workers: {len(roster.live)} live" + (f", {expired} expired" if expired else ""),
    ]
    if roster.workers:
        out.append(render.workers_table(roster.workers, roster.now))
    over = render.over_capacity_text(roster.workers, roster.now)
    if over is not None:
        out.append(over)
    out.append("tasks: " + ", ".join(f"{counts[name]} {name}" for name in ("total", *snapshot.STATES)))
    if st.unrunnable:
        out.append(render.unrunnable_text(st.unrunnable))
    if st.pauses:
        out.append("paused: " + "; ".join(render.pause_text(p, roster.now) for p in st.pauses))
    if st.recent_failures:
        out += ["recent failures:", render.runs_table(st.recent_failures, roster.now)]
    else:
        out.append("recent failures: none")
    render.show(*out)
    return 0


def workers_list(args: argparse.Namespace) -> int:
    async def go(app: App) -> Roster:
        return await app.roster()

    roster = run_admin(args, go)
    render.show_listing(
        roster.workers,
        "workers",
        as_json=args.json,
        to_json=lambda w: snapshot.worker_json(w, roster.now),
        table=lambda: render.workers_table(roster.workers, roster.now),
    )
    return 0


def workers_drain(args: argparse.Namespace) -> int:
    name: str = args.worker

    async def go(app: App) -> bool:
        return await app.drain(name)

    if not run_admin(args, go):
        raise CommandFailed(f"no worker {quote(check_worker_id(name))}")
    print(f"worker {check_worker_id(name)} is draining: it hands its tasks over and takes no more")
    return 0


def pause(args: argparse.Namespace) -> int:
    """``tenure pause`` and ``tenure kinds pause KIND``."""
    kind: str | None = getattr(args, "kind", None)
    by = f"cli {default_actor()}"

    async def go(app: App) -> tuple[Pause, float]:
        if kind is None:
            done = await app.pause(cancel=args.cancel, by=by)
        else:
            done = await app.pause_kind(kind, cancel=args.cancel, by=by)
        return done, await app.now()

    done, now = run_admin(args, go)
    what = "every kind" if kind is None else f"kind {kind}"
    runs = "runs in progress are cancelled" if done.cancel else "runs in progress end on their own"
    print(f"paused {what} (since {render.when_ago(done.since, now)}, by {done.by}); {runs}")
    return 0


def resume(args: argparse.Namespace) -> int:
    """``tenure resume`` and ``tenure kinds resume KIND``."""
    kind: str | None = getattr(args, "kind", None)

    async def go(app: App) -> tuple[Pause | None, list[Pause]]:
        lifted = await app.resume() if kind is None else await app.resume_kind(kind)
        return lifted, await app.pauses()

    lifted, left = run_admin(args, go)
    what = "every kind" if kind is None else f"kind {kind}"
    if lifted is None:
        print(f"{what} was not paused" + ("" if kind is None else " on its own"))
    else:
        print(f"resumed {what} (paused since {render.when(lifted.since)} UTC by {lifted.by})")
    still = [p for p in left if kind is None or p.covers(kind)]
    if still:
        print("still paused: " + "; ".join(render.pause_text(p) for p in still))
    return 0


def demo(args: argparse.Namespace) -> int:
    from tenure.demo.runner import Options, run  # the demo's modules load only for the demo

    store: str | None = args.store
    if store is not None and not store.strip():
        raise InvalidInput("--store is empty; give a store URL such as sqlite:///demo.db")
    options = Options(
        store=store, workers=args.workers, cities=args.cities, duration=args.duration, seed=args.seed, chaos=args.chaos
    )
    return run(options)


#: Each command's function, by the name the parser gives it.
COMMANDS: dict[str, Command] = {
    "migrate": migrate,
    "worker": worker,
    "dashboard": dashboard,
    "tasks add": tasks_add,
    "tasks sync": tasks_sync,
    "tasks list": tasks_list,
    "tasks show": tasks_show,
    **{f"tasks {action}": tasks_change for action in ("enable", "disable", "trigger", "remove")},
    "runs": runs,
    "status": status,
    "workers list": workers_list,
    "workers drain": workers_drain,
    "kinds pause": pause,
    "kinds resume": resume,
    "pause": pause,
    "resume": resume,
    "demo": demo,
}
