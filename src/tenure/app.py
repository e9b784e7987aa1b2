"""The App: the registry of task kinds, the admin API, and the way to start a worker."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

from tenure import snapshot
from tenure.config import Settings, store_url
from tenure.context import refuse_inside_fenced_block
from tenure.desired import DesiredTask, SyncResult, TaskSpec
from tenure.errors import (
    InvalidInput,
    InvalidKey,
    InvalidSchedule,
    InvalidSettings,
    SchemaMissing,
    StoreUnavailable,
    TaskNotFound,
    UnknownKind,
)
from tenure.inputs import check_number, clip, quote
from tenure.kinds import Handler, Sidecar, TaskKind
from tenure.models import (
    KindInfo,
    Outcome,
    Pause,
    Run,
    Task,
    check_key,
    check_kind,
    check_worker_id,
    encode_params,
    parse_params,
    storable_key,
)
from tenure.schedule import MAX_PERIOD, Misfire, Schedule, make_schedule
from tenure.store import Store, make_store
from tenure.store.base import RunQuery, full_run_query
from tenure.worker import Worker

#: Most runs one call lists.
MAX_RUNS_LISTED = 10_000
#: Known kinds named in an "unknown kind" message; the rest are counted.
KINDS_LISTED = 20
#: Most tasks one sync takes (the desired state of one kind, in one transaction).
MAX_SYNC_TASKS = 1_000_000
#: Failures :meth:`App.status` lists by default.
RECENT_FAILURES = 10
#: Longest account of who paused something.
MAX_PAUSED_BY = 200


def default_actor() -> str:
    """Who acts, when a caller does not say: ``user@host`` of this process, always a valid
    ``by`` (printable, and short enough to take a prefix such as ``cli ``).

    The user name comes from the environment (``LOGNAME``, ``USER``…), which may hold
    anything: a tab, bytes that are not UTF-8, 300 characters. Refusing the pause for
    that would leave the operator without the big red button when it is needed, so
    what does not print is escaped (``\\t``, ``\\udcff``) and the whole is cut.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's bare uid)
        user = f"uid {os.getuid()}"
    actor = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in f"{user}@{socket.gethostname()}")
    return clip(actor, MAX_PAUSED_BY - 20)


def _check_by(by: object) -> str:
    if not isinstance(by, str):
        raise InvalidInput(f"by must be a string naming who acts, got {quote(by)}")
    if not by.strip() or len(by) > MAX_PAUSED_BY or not by.isprintable():
        raise InvalidInput(f"by must be 1 to {MAX_PAUSED_BY} printable characters, got {quote(by)}")
    return by


def _check_enabled(enabled: object) -> None:
    _check_flag("enabled", enabled)


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be True or False, got {quote(value)}")


def _schedule(kind: str, every: float | None, cron: str | None, default: Schedule | None) -> Schedule:
    """``every`` or ``cron`` if given, else the kind's default."""
    if every is not None or cron is not None:
        return make_schedule(every=every, cron=cron)
    if default is None:
        raise InvalidSchedule(f"kind {quote(kind)} has no default schedule; give every= or cron=")
    return default


class App:
    """A tenure application: task kinds registered in code, bound to one store.

    ::

        app = tenure.App("sqlite:///tenure.db")

        @app.task("dispatch", every=5.0, timeout=4.0)
        async def dispatch(ctx: tenure.Context) -> None: ...

    The App is the one public surface of a store: the worker runs through it, and every
    tool (the CLI, the HTTP API, the demo) reads and changes the store through its admin
    methods (``add_task``, ``disable``, ``sync_tasks``, ``roster``, ``status``, ``drain``…),
    which validate their input the same way whoever calls them. They open the store on
    first use; call :meth:`close` (or use ``async with app:``) when done. A handler may
    call them, but not those that change the store from inside its fenced block: they
    raise :class:`~tenure.errors.FencedBlockOpen` there.
    """

    def __init__(self, store: str | None = None, *, settings: Settings | None = None) -> None:
        self.store_url = store_url(store, os.environ)
        if settings is not None and not isinstance(settings, Settings):
            raise InvalidSettings(f"settings must be a tenure.Settings, got {type(settings).__name__}")
        self.settings = settings or Settings()
        self._store: Store = make_store(self.store_url)
        self._opened = False
        self._published = False  # this app's kinds are recorded in the store
        self._kinds: dict[str, TaskKind] = {}

    # -- registration ---------------------------------------------------------------------

    def task(
        self,
        kind: str,
        *,
        every: float | None = None,
        cron: str | None = None,
        timeout: float | None = None,
        misfire: Misfire | str = Misfire.SKIP,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``kind``.

        ``every`` or ``cron`` is the default schedule of the kind's tasks (a task may
        override it when added). ``timeout`` cancels a run that takes longer (default:
        the period of an ``every`` task, 300 seconds for a cron task: see
        :meth:`TaskKind.timeout_for`). ``misfire`` is ``"skip"`` or ``"catch_up"``.
        """
        check_kind(kind)
        if kind in self._kinds:
            raise InvalidInput(f"kind {quote(kind)} is already registered")
        schedule = None if every is None and cron is None else make_schedule(every=every, cron=cron)
        if timeout is not None:
            check_number(
                timeout, "timeout", unit="seconds", low=0, high=MAX_PERIOD, low_open=True, error=InvalidSchedule
            )
        try:
            policy = Misfire(misfire)
        except ValueError:
            raise InvalidSchedule(f"misfire must be 'skip' or 'catch_up', got {quote(misfire)}") from None

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise InvalidInput(f"handler of {quote(kind)} is not callable")
            self._kinds[kind] = TaskKind(kind=kind, handler=fn, schedule=schedule, timeout=timeout, misfire=policy)
            return fn

        return register

    @property
    def kinds(self) -> Mapping[str, TaskKind]:
        """Kinds registered in this app's code."""
        return dict(self._kinds)

    # -- store life cycle -----------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store this app talks to (opened by :meth:`open`): what the worker runs on.

        Tools use the admin methods instead, which validate what they are given.
        """
        return self._store

    @property
    def display_url(self) -> str:
        """The store's URL with any password hidden, fit for logs and messages."""
        return self._store.display_url

    async def open(self, *, migrate: bool | None = None) -> None:
        """Connect to the store and publish this app's kinds.

        The embedded SQLite store creates or upgrades its schema on first start; server
        stores expect ``tenure migrate`` unless ``migrate=True``. With ``migrate=False``
        nothing is ever created: an embedded store whose file does not exist is refused
        (:class:`~tenure.errors.StoreUnavailable`) rather than left behind empty.
        """
        if self._opened:
            if not self._published:  # an earlier open connected, but could not publish
                await self._publish_kinds()
            return
        if migrate is None:
            migrate = self._store.dialect == "sqlite"
        if not migrate:
            self._refuse_missing_file()
        try:
            await self._store.open(migrate=migrate)
        except BaseException:
            # A failed open may have connected already; left open, the connections'
            # threads keep the process from exiting.
            await self._store.close()
            raise
        self._opened = True
        await self._publish_kinds()

    def _refuse_missing_file(self) -> None:
        if self._store.dialect != "sqlite":
            return
        from tenure.store.sqlite import parse_sqlite_url

        path, _ = parse_sqlite_url(self.store_url)
        try:
            exists = path.exists()
        except OSError as exc:  # a path too long for the system, a loop of links...
            raise StoreUnavailable(f"cannot open SQLite store {quote(str(path))}: {exc.strerror}") from exc
        if not exists:
            raise StoreUnavailable(
                f"no SQLite store at {quote(str(path))}; run `tenure migrate` to create one, or name another store"
            )

    async def _publish_kinds(self) -> None:
        if self._kinds:
            await self._store.publish_kinds(
                [KindInfo(kind=k.kind, schedule=k.schedule, timeout=k.timeout) for k in self._kinds.values()]
            )
        self._published = True

    async def close(self) -> None:
        """Close the store's connections (also those a failed :meth:`open` left)."""
        self._opened = self._published = False
        await self._store.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the store's schema; return (version before, version after)."""
        refuse_inside_fenced_block("migrate")
        if self._opened:
            return await self._store.migrate()
        # Connect without migrating (open(migrate=True) would migrate first and the
        # versions reported here would always be equal). No schema yet, or an older one,
        # is what migrating is for; the store stays connected after SchemaMissing.
        try:
            with contextlib.suppress(SchemaMissing):
                await self._store.open(migrate=False)
            versions = await self._store.migrate()
        except BaseException:
            await self._store.close()
            raise
        self._opened = True
        await self._publish_kinds()
        return versions

    async def _ready(self) -> Store:
        await self.open()
        return self._store

    # -- running --------------------------------------------------------------------------

    async def run_worker(
        self, *, settings: Settings | None = None, handle_signals: bool = True, sidecars: Sequence[Sidecar] = ()
    ) -> None:
        """Run a worker for this app's kinds until SIGTERM/SIGINT (or cancellation).

        ``settings`` default to the app's. With ``handle_signals``, SIGTERM and SIGINT
        start a graceful stop: running handlers get ``grace`` seconds, tasks are
        released so other workers take them at once, the store is closed, and the
        call returns. ``sidecars`` run beside the worker until it has left, e.g. its
        HTTP interface: ``sidecars=[tenure.web.WorkerHTTP("127.0.0.1", 8080)]``.

        A run whose handler catches its cancellation and goes on is left behind (recorded
        as cancelled, unable to commit, logged at ERROR): it is still a task of the loop
        when this returns, and ``asyncio.run()`` waits for every task at its end. ``tenure
        worker`` exits without such runs; a program of its own must do the same to exit.
        """
        worker = Worker(
            store=self._store,
            kinds=self._kinds,
            settings=settings or self.settings,
            sidecars=sidecars,
            store_url=self.store_url,
        )
        try:
            await self.open()
            await worker.run(handle_signals=handle_signals)
        finally:
            await self.close()  # the store's connection threads would keep the process alive

    # -- admin ----------------------------------------------------------------------------

    async def add_task(
        self,
        kind: str,
        key: str,
        *,
        every: float | None = None,
        cron: str | None = None,
        params: Mapping[str, Any] | str | None = None,
        enabled: bool = True,
    ) -> Task:
        """Create a task. Its schedule is ``every``/``cron`` if given, else the kind's default.

        ``params`` is a JSON object, as a dict or as JSON text. Raises
        :class:`~tenure.errors.UnknownKind`, :class:`~tenure.errors.InvalidKey`,
        :class:`~tenure.errors.InvalidSchedule`, :class:`~tenure.errors.InvalidParams`
        or :class:`~tenure.errors.TaskExists`; nothing is stored then.
        """
        refuse_inside_fenced_block("add_task")
        check_kind(kind)
        key = check_key(key)
        params_json = self._params_json(params)
        _check_enabled(enabled)
        store = await self._ready()
        schedule = _schedule(kind, every, cron, await self._default_schedule(store, kind))
        return await store.add_task(kind=kind, key=key, schedule=schedule, params_json=params_json, enabled=enabled)

    def _params_json(self, params: object) -> str:
        """Parameters (a mapping, JSON text or None for none) as tenure stores them."""
        limit = self.settings.max_params_bytes
        if isinstance(params, str):
            return encode_params(parse_params(params, max_bytes=limit), max_bytes=limit)
        if params is None:
            return encode_params({}, max_bytes=limit)
        if isinstance(params, Mapping):
            return encode_params(dict(params), max_bytes=limit)
        return encode_params(params, max_bytes=limit)  # a list, a number…: refused as not an object

    async def sync_tasks(
        self,
        kind: str,
        desired: Mapping[str, Mapping[str, Any] | TaskSpec | None],
        *,
        remove_missing: bool = False,
        dry_run: bool = False,
        allow_empty: bool = False,
    ) -> SyncResult:
        """Make ``kind``'s tasks match ``desired``, in one store transaction.

        ``desired`` maps each key to its parameters (a mapping; None for none), or to a
        :class:`~tenure.TaskSpec` (parameters, ``every`` or ``cron``, ``enabled``). A task
        given no schedule gets the kind's default. Then:

        - a task missing from the store is added;
        - a task whose schedule, parameters or enabled flag differ is updated (its version
          bumped: its owner picks the change up within one poll, and keeps the task);
        - a task of the kind absent from ``desired`` is disabled, or with
          ``remove_missing`` removed (its terms are never reused);
        - every other task, and every other kind, is left as it is.

        Syncing again with the same ``desired`` changes nothing. With ``dry_run`` nothing
        is changed: the result says what the call would do. Everything is validated
        before anything is written (keys as :meth:`add_task` takes them, normalised to
        NFC, each once; parameters; schedules): one bad entry raises
        :class:`~tenure.errors.InvalidInput` (the subclass :meth:`add_task` would raise),
        whose ``entry`` is that entry's key, and nothing is applied. An empty ``desired``
        would disable (or remove) every task of the kind: it is refused unless
        ``allow_empty`` (or ``dry_run``). A sync takes at most :data:`MAX_SYNC_TASKS`
        tasks. Raises :class:`~tenure.errors.UnknownKind` for a kind no app has registered.
        """
        if not dry_run:
            refuse_inside_fenced_block("sync_tasks")
        check_kind(kind)
        if not isinstance(desired, Mapping):
            raise InvalidInput(f"desired must map keys to params or TaskSpecs, got {type(desired).__name__}")
        for name, flag in (("remove_missing", remove_missing), ("dry_run", dry_run), ("allow_empty", allow_empty)):
            if not isinstance(flag, bool):
                raise InvalidInput(f"{name} must be True or False, got {quote(flag)}")
        if len(desired) > MAX_SYNC_TASKS:
            raise InvalidInput(f"{len(desired)} tasks given; a sync takes at most {MAX_SYNC_TASKS}")
        if not desired and not (allow_empty or dry_run):
            action = "remove" if remove_missing else "disable"
            raise InvalidInput(
                f"no tasks are given for kind {quote(kind)}: that would {action} every one of its tasks; "
                "set allow_empty if that is meant"
            )
        store = await self._ready()
        default = await self._default_schedule(store, kind)
        tasks: list[DesiredTask] = []
        given_as: dict[str, str] = {}
        for key, spec in desired.items():
            try:
                tasks.append(self._desired_task(kind, key, spec, default, given_as))
            except InvalidInput as exc:
                raise type(exc)(f"task {quote(key)}: {exc}", entry=key) from None
        return await store.sync_tasks(kind, tasks, remove_missing=remove_missing, dry_run=dry_run)

    def _desired_task(
        self, kind: str, key: str, spec: object, default: Schedule | None, given_as: dict[str, str]
    ) -> DesiredTask:
        normal = check_key(key)
        if normal in given_as:
            raise InvalidKey(f"key {quote(normal)} is given twice (also as {quote(given_as[normal])})")
        given_as[normal] = key
        if spec is None or isinstance(spec, Mapping):
            spec = TaskSpec(params=spec)
        if not isinstance(spec, TaskSpec):
            raise InvalidInput(f"must be params (a mapping) or a tenure.TaskSpec, got {type(spec).__name__}")
        _check_enabled(spec.enabled)
        return DesiredTask(
            key=normal,
            schedule=_schedule(kind, spec.every, spec.cron, default),
            params_json=self._params_json(spec.params),
            enabled=spec.enabled,
        )

    async def _default_schedule(self, store: Store, kind: str) -> Schedule | None:
        """The kind's default schedule (None if it has none). Raises UnknownKind."""
        if kind in self._kinds:
            return self._kinds[kind].schedule
        published = {k.kind: k for k in await store.list_kinds()}
        if kind not in published:
            known = sorted(set(self._kinds) | set(published))
            listed = ", ".join(known[:KINDS_LISTED]) + (
                f" and {len(known) - KINDS_LISTED} more" if known[KINDS_LISTED:] else ""
            )
            raise UnknownKind(
                f"unknown kind {quote(kind)}; known kinds: {listed or 'none yet'} "
                "(a kind becomes known when an app registering it opens the store)"
            )
        return published[kind].schedule

    async def get_task(self, kind: str, key: str) -> Task:
        """One task. Raises :class:`~tenure.errors.TaskNotFound`."""
        store, key = await self._locate(kind, key)
        task = await store.get_task(kind, key)
        if task is None:
            raise TaskNotFound(f"no task {kind}/{clip(key)}")
        return task

    async def list_tasks(self, *, kind: str | None = None, owner: str | None = None) -> list[Task]:
        """All tasks, by kind and key, optionally only one kind's or one worker's."""
        if kind is not None:
            check_kind(kind)
        if owner is not None:
            owner = check_worker_id(owner, what="owner")
        return await (await self._ready()).list_tasks(kind=kind, owner=owner)

    async def enable(self, kind: str, key: str) -> Task:
        """Let a task run again; a worker claims it within one poll interval."""
        refuse_inside_fenced_block("enable")
        store, key = await self._locate(kind, key)
        return await store.set_enabled(kind, key, True)

    async def disable(self, kind: str, key: str, *, cancel: bool = False) -> Task:
        """Stop a task's runs; its owner lets it go within one poll interval.

        A run in progress ends on its own (its commit is accepted while the owner still
        holds the task). With ``cancel``, the task is freed at once, so that run can no
        longer commit (the database refuses it), and its owner cancels it within one
        poll (at once on PostgreSQL), recording it as ``cancelled``: the same
        cancellation as :meth:`pause_kind`'s.
        """
        refuse_inside_fenced_block("disable")
        _check_flag("cancel", cancel)
        store, key = await self._locate(kind, key)
        return await store.set_enabled(kind, key, False, cancel=cancel)

    async def trigger(self, kind: str, key: str) -> Task:
        """Ask for one extra run of a task as soon as its owner sees the request."""
        refuse_inside_fenced_block("trigger")
        store, key = await self._locate(kind, key)
        return await store.trigger(kind, key)

    async def remove(self, kind: str, key: str) -> str:
        """Delete a task. Its owner stops running it; its terms are never reused.

        Returns the key as it was stored (normalised, or a stored row's own spelling).
        """
        refuse_inside_fenced_block("remove")
        store, key = await self._locate(kind, key)
        await store.remove_task(kind, key)
        return key

    async def _locate(self, kind: str, key: str) -> tuple[Store, str]:
        """The store, and the spelling of ``key`` under which its task row is stored.

        Keys are normalised (NFC) on the way in, so either spelling of "é" finds the
        task. A row stored before that (or before a character was refused) keeps the
        exact spelling it was stored under, and is found by that spelling, so it can
        still be shown, changed and removed.
        """
        check_kind(kind)
        try:
            normal = check_key(key)
        except InvalidKey:
            if not storable_key(key):
                raise
            store = await self._ready()
            if await store.get_task(kind, key) is None:
                raise
            return store, key
        store = await self._ready()
        if normal != key and await store.get_task(kind, normal) is None and await store.get_task(kind, key) is not None:
            return store, key
        return store, normal

    # -- pauses (the big red button) -------------------------------------------------------

    async def pause_kind(self, kind: str, *, cancel: bool = False, by: str | None = None) -> Pause:
        """Stop every worker from starting runs of ``kind``, until :meth:`resume_kind`.

        Workers see it within one poll (at once on PostgreSQL). Runs in progress end on
        their own, or with ``cancel`` are cancelled (recorded as ``lease_lost``). Tasks keep
        their owners, terms and schedules; tasks added meanwhile are claimed as usual and
        wait. Pausing a paused kind changes nothing but ``cancel``. ``by`` says who
        paused it (default: ``user@host``). The pause is in the store: it outlives
        failovers and restarts. Raises :class:`~tenure.errors.UnknownKind`.
        """
        refuse_inside_fenced_block("pause_kind")
        check_kind(kind)
        _check_flag("cancel", cancel)
        by = default_actor() if by is None else _check_by(by)
        store = await self._ready()
        await self._default_schedule(store, kind)  # an unknown kind is refused
        return await store.set_pause(kind, by=by, cancel=cancel)

    async def resume_kind(self, kind: str) -> Pause | None:
        """Let ``kind`` run again: each task's next run follows its kind's misfire policy
        (``skip``: the latest missed slot runs once, not a burst). Returns the pause lifted,
        or None if the kind was not paused by itself (a pause of every kind is lifted by
        :meth:`resume`). Raises :class:`~tenure.errors.UnknownKind`."""
        refuse_inside_fenced_block("resume_kind")
        check_kind(kind)
        store = await self._ready()
        await self._default_schedule(store, kind)
        return await store.clear_pause(kind)

    async def pause(self, *, cancel: bool = False, by: str | None = None) -> Pause:
        """Pause every kind, as :meth:`pause_kind` does one. Kinds paused on their own stay
        paused after :meth:`resume`."""
        refuse_inside_fenced_block("pause")
        _check_flag("cancel", cancel)
        by = default_actor() if by is None else _check_by(by)
        return await (await self._ready()).set_pause(None, by=by, cancel=cancel)

    async def resume(self) -> Pause | None:
        """Lift the pause of every kind; None if there was none."""
        refuse_inside_fenced_block("resume")
        return await (await self._ready()).clear_pause(None)

    async def pauses(self) -> list[Pause]:
        """Pauses in force: the whole store's first, then by kind."""
        return await (await self._ready()).list_pauses()

    # -- workers and the store's state ----------------------------------------------------

    async def now(self) -> float:
        """The database's clock, in seconds since the Unix epoch: the clock every time
        tenure shows (last slots, lease ends, run times) is on."""
        return await (await self._ready()).now()

    async def roster(self) -> snapshot.Roster:
        """Every worker's membership row, live or expired, by id, with the database's clock
        read just after: whether a worker (and so a task's owner) is live is judged at that
        ``now``."""
        store = await self._ready()
        workers = await store.list_workers()
        return snapshot.Roster(now=await store.now(), workers=workers)

    async def status(self, *, recent_failures: int = RECENT_FAILURES) -> snapshot.Status:
        """The store at a glance: its workers (with the kinds each runs), its tasks counted
        by state, the enabled tasks no live worker can run (by kind), and the latest
        ``recent_failures`` runs that ended in error, timeout or lease_lost, newest first.

        What ``tenure status`` and ``GET /api/status`` show.
        """
        check_number(recent_failures, "recent_failures", unit="runs", low=1, high=MAX_RUNS_LISTED, whole=True)
        tasks = await self.list_tasks()
        roster = await self.roster()
        failures: list[Run] = []
        for outcome in snapshot.FAILURES:
            failures += await self.list_runs(outcome=outcome, limit=recent_failures)
        failures.sort(key=lambda r: (r.ended_at, r.id or 0), reverse=True)
        return snapshot.Status(
            store=self.display_url,
            roster=roster,
            tasks=snapshot.state_counts(tasks, roster),
            recent_failures=failures[:recent_failures],
            pauses=await self.pauses(),
            unrunnable=snapshot.unrunnable(tasks, roster),
        )

    async def drain(self, worker_id: str) -> bool:
        """Ask a worker to hand its tasks over and take no more; False if there is no such worker.

        The worker sees it at its next lease renewal, releases its tasks (other workers
        take them within one poll) and keeps running, holding none, until stopped.
        """
        refuse_inside_fenced_block("drain")
        worker_id = check_worker_id(worker_id)
        return await (await self._ready()).set_draining(worker_id, True)

    async def list_runs(self, **where: Unpack[RunQuery]) -> list[Run]:
        """Recorded runs, most recent first, those ``where`` asks for (:class:`RunQuery`)."""
        query = full_run_query(where)
        kind, key, worker, outcome = query["kind"], query["key"], query["worker"], query["outcome"]
        if kind is not None:
            check_kind(kind)
        if key is not None:
            # With a kind, a task stored under an older spelling finds its runs too.
            query["key"] = check_key(key) if kind is None else (await self._locate(kind, key))[1]
        if worker is not None:
            query["worker"] = check_worker_id(worker)
        check_number(query["limit"], "limit", unit="runs", low=1, high=MAX_RUNS_LISTED, whole=True)
        if outcome is not None:
            valid = [o.value for o in Outcome]
            if outcome not in valid:
                raise InvalidInput(f"outcome {quote(outcome)} is not one of {', '.join(valid)}")
        return await (await self._ready()).list_runs(**query)
