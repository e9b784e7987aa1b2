"""The ASGI application: the dashboard page, the JSON API and /metrics, over one admin App."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tenure.app import App
from tenure.config import Settings
from tenure.inputs import clip, quote
from tenure.web import prometheus
from tenure.web.api import Api, Options
from tenure.web.auth import refusal
from tenure.web.dashboard import dashboard
from tenure.web.probes import Probes
from tenure.web.responses import error

if TYPE_CHECKING:
    from tenure.worker import Worker


def create_app(
    admin: App,
    settings: Settings,
    *,
    protect_reads: bool = False,
    store_metrics: bool = True,
    worker_id: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    worker: Worker | None = None,
) -> ASGIApp:
    """The HTTP interface of tenure over ``admin`` (an App on the store; opened on first use).

    Actions need ``settings.admin_token`` as a bearer token; so do reads (the API and
    ``/metrics``) with ``protect_reads``. The page itself holds no data and is always
    served: it asks for the token when the API wants one. ``store_metrics`` adds the
    store-level gauges to ``/metrics`` (``tenure dashboard``; a worker leaves them out).
    ``worker_id`` names the worker serving this interface, if one does; ``worker`` is that
    worker, whose state ``/healthz`` and ``/readyz`` report (:mod:`tenure.web.probes`). With
    ``allowed_hosts``, a request whose ``Host`` header names another host is refused
    (400): a page on another site cannot reach a server bound to loopback by pointing
    its own host name at 127.0.0.1 (DNS rebinding) and read it.

    The caller owns ``admin``: closing it is the caller's job.
    """
    options = Options(
        admin_token=settings.admin_token,
        protect_reads=protect_reads,
        worker_id=worker_id if worker is None else worker.id,
        max_body=4 * settings.max_params_bytes + 16 * 1024,
    )
    metrics_admin = admin if store_metrics else None

    async def metrics(request: Request) -> Response:
        if options.protect_reads:
            refused = refusal(request, options.admin_token, what="reads")
            if refused is not None:
                return refused
        return await prometheus.scrape(metrics_admin)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return error(
                405,
                "method_not_allowed",
                f"{clip(request.method)} is not allowed on {clip(request.url.path)}",
                exc.headers,
            )
        return error(exc.status_code, "not_found", f"nothing at {clip(request.url.path)}")

    probes = Probes(admin, settings, worker)
    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", probes.healthz, methods=["GET"]),
        Route("/readyz", probes.readyz, methods=["GET"]),
        *Api(admin, options).routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return app if allowed_hosts is None else HostCheck(app, allowed_hosts)


class HostCheck:
    """ASGI middleware refusing HTTP requests whose ``Host`` is not one of ``allowed`` (port aside)."""

    def __init__(self, app: ASGIApp, allowed: Collection[str]) -> None:
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = host_of(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                response = error(400, "host_not_allowed", f"this server does not answer for host {quote(host)}")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_of(header: str) -> str:
    """The host name of a ``Host`` header: ``[::1]:8787`` -> ``::1``, ``Localhost:80`` -> ``localhost``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header
