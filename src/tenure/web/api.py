"""The JSON API under ``/api``: reads of the store, and the admin actions.

::

    GET    /api/status                          workers, task counts, recent failures
    GET    /api/tasks?kind=&owner=&state=       tasks, with owner, term, next slot, last run
    GET    /api/tasks/{kind}/{key}              one task and its recent runs
    GET    /api/runs?kind=&key=&worker=&outcome=&limit=
    GET    /api/workers
    GET    /api/failovers?runs=N                changes of term seen in the last N run records
    POST   /api/tasks                           add: {"kind", "key", "every"|"cron", "params", "enabled"}
    POST   /api/tasks/{kind}/{key}/enable|disable|trigger   (disable: {"cancel": true} optional)
    DELETE /api/tasks/{kind}/{key}
    POST   /api/workers/{id}/drain
    PUT    /api/kinds/{kind}/tasks              sync: {"tasks": [{"key", "params", "every"|"cron", "enabled"}…],
                                                "remove_missing", "dry_run", "allow_empty"}
    POST   /api/kinds/{kind}/pause | /api/pause {"cancel": false} (body optional): pause a kind, every kind
    POST   /api/kinds/{kind}/resume | /api/resume

Every change goes through :class:`tenure.App`, so the API validates exactly as the
Python API and the CLI do. A call that fails answers ``{"error": {"code", "message"}}``
with 400 (malformed input: unknown parameter, bad schedule, params or kind), 401/403
(token), 404 (no such task or worker), 409 (the task exists), 413 (body too large) or
503 (the store does not answer), and changes nothing. A sync refused for one of its
tasks says which: the message starts ``tasks[i]`` and the error object has ``"entry": i``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tenure import snapshot
from tenure.app import MAX_RUNS_LISTED, App
from tenure.desired import TaskSpec, entry_from_json
from tenure.errors import InvalidInput, StoreError, TaskExists, TaskNotFound, TenureError
from tenure.inputs import clip, parse_number, quote
from tenure.models import MAX_PARAMS_DEPTH, check_worker_id, load_json, nests_deeper
from tenure.web.auth import refusal
from tenure.web.responses import JSON, error

log = logging.getLogger("tenure.web")

#: Runs read to find each task's last run in task lists (one query, whatever the number of tasks).
RECENT_RUNS = 1000
#: Runs shown with one task.
TASK_RUNS = 20
#: Failures shown in the status.
RECENT_FAILURES = 10
#: The options of a sync, besides its tasks.
SYNC_FLAGS = ("remove_missing", "dry_run", "allow_empty")
#: Runs examined for changes of term by default, and at most.
FAILOVER_RUNS, MAX_FAILOVER_RUNS = 2000, 10_000

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True)
class Options:
    """How the HTTP interface is guarded and what it describes itself as."""

    #: Bearer token actions need (None: actions are refused).
    admin_token: str | None = None
    #: Reads (API, /metrics) need the token too.
    protect_reads: bool = False
    #: The worker serving this interface, if a worker does.
    worker_id: str | None = None
    #: Largest request body accepted, in bytes.
    max_body: int = 1024 * 1024
    #: Largest body of a sync (a kind's whole desired state), in bytes.
    max_sync_body: int = 32 * 1024 * 1024


class Api:
    """The /api endpoints over one admin :class:`App`."""

    def __init__(self, admin: App, options: Options) -> None:
        self.admin = admin
        self.options = options

    def routes(self) -> list[Route]:
        read, act = self._read, self._act
        paths: dict[str, dict[str, Endpoint]] = {
            "/api/status": {"GET": read(self.status)},
            "/api/tasks": {"GET": read(self.tasks), "POST": act(self.add_task)},
            **{
                f"/api/tasks/{{kind}}/{{key:path}}/{action}": {"POST": act(self._changer(action))}
                for action in ("enable", "disable", "trigger")
            },
            "/api/tasks/{kind}/{key:path}": {"GET": read(self.task), "DELETE": act(self.remove_task)},
            "/api/runs": {"GET": read(self.runs)},
            "/api/workers": {"GET": read(self.workers)},
            "/api/workers/{worker:path}/drain": {"POST": act(self.drain)},
            "/api/failovers": {"GET": read(self.failovers)},
            "/api/kinds/{kind}/tasks": {"PUT": act(self.sync_tasks)},
            "/api/kinds/{kind}/pause": {"POST": act(self.pause)},
            "/api/kinds/{kind}/resume": {"POST": act(self.resume)},
            "/api/pause": {"POST": act(self.pause)},
            "/api/resume": {"POST": act(self.resume)},
        }
        # One route per path, so that a 405 lists every method the path takes.
        return [Route(path, _by_method(endpoints), methods=list(endpoints)) for path, endpoints in paths.items()]

    # -- guards ---------------------------------------------------------------------------

    def _read(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if self.options.protect_reads:
                refused = refusal(request, self.options.admin_token, what="reads")
                if refused is not None:
                    return refused
            return await self._translated(endpoint, request)

        return guarded

    def _act(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            refused = refusal(request, self.options.admin_token, what="actions")
            if refused is not None:
                client = request.client.host if request.client else "?"
                log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, refused.status_code)
                return refused
            return await self._translated(endpoint, request)

        return guarded

    async def _translated(self, endpoint: Endpoint, request: Request) -> Response:
        """Run ``endpoint`` on the opened store, answering tenure's errors as JSON errors."""
        try:
            # Never migrate from here: a store without a schema is an error to show.
            await self.admin.open(migrate=False)
            return await endpoint(request)
        except InvalidInput as exc:
            return error(400, _code(exc), str(exc))
        except TaskNotFound as exc:
            return error(404, "task_not_found", str(exc))
        except TaskExists as exc:
            return error(409, "task_exists", str(exc))
        except _TooLarge as exc:
            return error(413, "too_large", str(exc))
        except ClientDisconnect:
            # The client went away mid-body: nothing was done, and no one reads the answer
            # (uncaught, the server logged a traceback at ERROR per aborted request).
            log.debug("%s %s: the client disconnected before its body was read", request.method, request.url.path)
            return error(400, "client_disconnected", "the client disconnected before its request body was read")
        except StoreError as exc:
            log.warning("%s %s: the store failed: %s", request.method, request.url.path, exc)
            return error(503, "store_unavailable", f"the store failed: {exc}")

    # -- reads ----------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        _query(request)
        status = await self.admin.status(recent_failures=RECENT_FAILURES)
        served = {"served_by": self.options.worker_id, "actions": bool(self.options.admin_token)}
        return JSON(snapshot.status_json(status) | served)

    async def tasks(self, request: Request) -> Response:
        q = _query(request, "kind", "owner", "state")
        state = q.get("state")
        if state is not None and state not in snapshot.STATES:
            raise InvalidInput(f"state {quote(state)} is not one of {', '.join(snapshot.STATES)}")
        tasks = await self.admin.list_tasks(kind=q.get("kind"), owner=q.get("owner"))
        roster = await self.admin.roster()
        if state is not None:
            tasks = [t for t in tasks if snapshot.in_state(t, state, roster)]
        latest = snapshot.last_runs(await self.admin.list_runs(kind=q.get("kind"), limit=RECENT_RUNS))
        return JSON([snapshot.task_json(t, roster, latest.get((t.kind, t.key))) for t in tasks])

    async def task(self, request: Request) -> Response:
        _query(request)
        kind, key = request.path_params["kind"], request.path_params["key"]
        task = await self.admin.get_task(kind, key)
        runs = await self.admin.list_runs(kind=kind, key=key, limit=TASK_RUNS)
        roster = await self.admin.roster()
        body = snapshot.task_json(task, roster, runs[0] if runs else None)
        body["runs"] = [snapshot.run_json(r) for r in runs]
        return JSON(body)

    async def runs(self, request: Request) -> Response:
        q = _query(request, "kind", "key", "worker", "outcome", "limit")
        limit = _whole(q, "limit", default=50, high=MAX_RUNS_LISTED)
        runs = await self.admin.list_runs(
            kind=q.get("kind"), key=q.get("key"), worker=q.get("worker"), outcome=q.get("outcome"), limit=limit
        )
        return JSON([snapshot.run_json(r) for r in runs])

    async def workers(self, request: Request) -> Response:
        _query(request)
        roster = await self.admin.roster()
        return JSON([snapshot.worker_json(w, roster.now) for w in roster.workers])

    async def failovers(self, request: Request) -> Response:
        q = _query(request, "runs")
        limit = _whole(q, "runs", default=FAILOVER_RUNS, high=MAX_FAILOVER_RUNS)
        runs = await self.admin.list_runs(limit=limit)
        tasks = await self.admin.list_tasks()
        return JSON(
            {
                "now": await self.admin.now(),
                "runs_examined": len(runs),
                "since": min((r.started_at for r in runs), default=None),
                "events": snapshot.failovers(runs, tasks),
            }
        )

    # -- actions --------------------------------------------------------------------------

    async def add_task(self, request: Request) -> Response:
        _query(request)
        body = await _json_object(request, self.options.max_body)
        unknown = sorted(set(body) - {"kind", "key", "every", "cron", "params", "enabled"})
        if unknown:
            raise InvalidInput(f"unknown field {quote(unknown[0])}; fields are kind, key, every, cron, params, enabled")
        for name in ("kind", "key"):
            if name not in body:
                raise InvalidInput(f"missing field {name!r}")
        every, cron, params = body.get("every"), body.get("cron"), body.get("params")
        enabled = body.get("enabled", True)
        if every is not None and (isinstance(every, bool) or not isinstance(every, int | float)):
            raise InvalidInput(f"every must be a number of seconds, got {_json_quote(every)}")
        if cron is not None and not isinstance(cron, str):
            raise InvalidInput(f"cron must be a string, got {_json_quote(cron)}")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput(f"params must be a JSON object, got {_json_quote(params)}")
        if not isinstance(enabled, bool):
            raise InvalidInput(f"enabled must be true or false, got {_json_quote(enabled)}")
        task = await self.admin.add_task(
            body["kind"], body["key"], every=every, cron=cron, params=params, enabled=enabled
        )
        _audit(request, "added task %s/%s", task.kind, task.key)
        roster = await self.admin.roster()
        return JSON(snapshot.task_json(task, roster), status_code=201)

    def _changer(self, action: str) -> Endpoint:
        """The endpoint of ``POST /api/tasks/{kind}/{key}/<action>``: enable, disable or trigger."""
        change = {"enable": self.admin.enable, "disable": self.admin.disable, "trigger": self.admin.trigger}[action]
        done = {"enable": "enabled", "disable": "disabled", "trigger": "triggered"}[action]

        async def change_task(request: Request) -> Response:
            _query(request)
            kind, key = request.path_params["kind"], request.path_params["key"]
            if action == "disable":
                task = await self.admin.disable(kind, key, cancel=await _cancel_flag(request, self.options.max_body))
            else:
                task = await change(kind, key)
            _audit(request, "%s task %s/%s", done, kind, key)
            return JSON(snapshot.task_json(task, await self.admin.roster()))

        return change_task

    async def remove_task(self, request: Request) -> Response:
        _query(request)
        kind, key = request.path_params["kind"], request.path_params["key"]
        key = await self.admin.remove(kind, key)  # as it was stored, the way other answers show it
        _audit(request, "removed task %s/%s", kind, key)
        return JSON({"removed": {"kind": kind, "key": key}})

    async def sync_tasks(self, request: Request) -> Response:
        """``PUT /api/kinds/{kind}/tasks``: make the kind's tasks what the body lists."""
        _query(request)
        kind = request.path_params["kind"]
        # {"tasks": [{"params": {…}}]}: params sit three levels down.
        body = await _json_object(request, self.options.max_sync_body, depth=MAX_PARAMS_DEPTH + 3)
        unknown = sorted(set(body) - {"tasks", *SYNC_FLAGS})
        if unknown:
            raise InvalidInput(f"unknown field {quote(unknown[0])}; fields are tasks, {', '.join(SYNC_FLAGS)}")
        entries = body.get("tasks")
        if not isinstance(entries, list):
            raise InvalidInput(f"tasks must be a JSON array of tasks, got {_json_quote(entries)}")
        flags = {name: body.get(name, False) for name in SYNC_FLAGS}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidInput(f"{name} must be true or false, got {_json_quote(value)}")
        specs: dict[str, TaskSpec] = {}
        index_of: dict[str, int] = {}
        for i, entry in enumerate(entries):
            try:
                key, spec = entry_from_json(entry)
            except InvalidInput as exc:
                return _entry_error(exc, i)
            if key in index_of:
                return error(
                    400, "invalid_key", f"tasks[{i}]: key {quote(key)} is already tasks[{index_of[key]}]", entry=i
                )
            specs[key], index_of[key] = spec, i
        try:
            result = await self.admin.sync_tasks(kind, specs, **flags)
        except InvalidInput as exc:
            if exc.entry is None or exc.entry not in index_of:
                raise
            return _entry_error(exc, index_of[exc.entry])
        if not result.dry_run:
            _audit(request, "synced kind %s: %s", kind, result.counts())
        return JSON(snapshot.sync_json(result))

    async def pause(self, request: Request) -> Response:
        """``POST /api/kinds/{kind}/pause`` and ``POST /api/pause``, with ``{"cancel": bool}``
        or no body. The pause is signed with the token and the client's address."""
        _query(request)
        kind = request.path_params.get("kind")
        cancel = await _cancel_flag(request, self.options.max_body)
        client = request.client.host if request.client else "?"
        by = f"http admin token from {client}"
        if kind is None:
            done = await self.admin.pause(cancel=cancel, by=by)
        else:
            done = await self.admin.pause_kind(kind, cancel=cancel, by=by)
        _audit(request, "paused %s%s", "every kind" if kind is None else f"kind {kind}", " (cancel)" if cancel else "")
        return JSON({"paused": snapshot.pause_json(done)})

    async def resume(self, request: Request) -> Response:
        """``POST /api/kinds/{kind}/resume`` and ``POST /api/resume``: ``{"resumed": pause | null}``."""
        _query(request)
        kind = request.path_params.get("kind")
        lifted = await self.admin.resume() if kind is None else await self.admin.resume_kind(kind)
        if lifted is not None:
            _audit(request, "resumed %s", "every kind" if kind is None else f"kind {kind}")
        return JSON({"resumed": None if lifted is None else snapshot.pause_json(lifted)})

    async def drain(self, request: Request) -> Response:
        _query(request)
        worker = request.path_params["worker"]
        if not await self.admin.drain(worker):
            return error(404, "worker_not_found", f"no worker {quote(check_worker_id(worker))}")
        worker = check_worker_id(worker)
        _audit(request, "worker %s set draining", worker)
        return JSON({"worker": worker, "draining": True})


# -- helpers ------------------------------------------------------------------------------


def _by_method(endpoints: Mapping[str, Endpoint]) -> Endpoint:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return dispatch


def _code(exc: TenureError) -> str:
    """``InvalidSchedule`` -> ``invalid_schedule``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


class _TooLarge(TenureError):
    """The request body is larger than the limit."""


def _query(request: Request, *allowed: str) -> dict[str, str]:
    """The query parameters, refusing unknown and repeated ones; empty values count as absent."""
    params = request.query_params
    for name in params:
        if name not in allowed:
            names = ", ".join(allowed) if allowed else "none"
            raise InvalidInput(f"unknown query parameter {quote(name)}; this endpoint takes: {names}")
        if len(params.getlist(name)) > 1:
            raise InvalidInput(f"query parameter {quote(name)} is given more than once")
    return {name: value for name, value in params.items() if value != ""}


def _whole(query: Mapping[str, str], name: str, *, default: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    return int(parse_number(raw, name, unit="runs", low=1, high=high, whole=True))


async def _cancel_flag(request: Request, limit: int) -> bool:
    """``cancel`` from an optional body ``{"cancel": bool}`` (no body: False)."""
    body = await _json_object(request, limit, optional=True)
    unknown = sorted(set(body) - {"cancel"})
    if unknown:
        raise InvalidInput(f"unknown field {quote(unknown[0])}; the only field is cancel")
    cancel = body.get("cancel", False)
    if not isinstance(cancel, bool):
        raise InvalidInput(f"cancel must be true or false, got {_json_quote(cancel)}")
    return cancel


def _entry_error(exc: InvalidInput, index: int) -> Response:
    return error(400, _code(exc), f"tasks[{index}]: {exc}", entry=index)


async def _json_object(
    request: Request, limit: int, *, depth: int = MAX_PARAMS_DEPTH + 1, optional: bool = False
) -> dict[str, Any]:
    """The request body, a JSON object, read up to ``limit`` bytes and nesting ``depth``
    levels (objects holding params: ``MAX_PARAMS_DEPTH`` plus the levels above them).
    With ``optional``, no body at all reads as ``{}``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared[:20]) > limit:
        raise _TooLarge(f"the request body is {clip(declared, 20)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if optional and not raw.strip():
        return {}
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    if nests_deeper(raw.decode(errors="replace"), depth):
        raise InvalidInput(f"the request body nests too deep: params may nest at most {MAX_PARAMS_DEPTH} levels")
    try:
        body = load_json(raw, unique_names=True)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _json_quote(value: object) -> str:
    """A JSON value from a request, as a message quotes it (cut)."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        return quote(value)
    return clip(text)


def _audit(request: Request, msg: str, *args: object) -> None:
    client = request.client.host if request.client else "?"
    log.info("HTTP action from %s: " + msg, client, *args)
