"""tenure's HTTP interface: a dashboard page, a JSON API and Prometheus ``/metrics``.

Served by ``tenure dashboard`` (:func:`run_dashboard`) and, with ``--http``, by each
worker (:class:`WorkerHTTP`); :func:`create_app` builds the ASGI app for any other server.
Bound to 127.0.0.1 unless told otherwise; actions need the admin token as a bearer token.

Modules: ``asgi`` (the app), ``api`` (/api), ``auth`` (tokens), ``dashboard`` (the page,
``static/dashboard.html``), ``prometheus`` (/metrics), ``responses`` (JSON bodies and the
error shape), ``server`` (uvicorn). The JSON shapes, shared with the CLI's ``--json``, are
:mod:`tenure.snapshot`'s; every read and change goes through :class:`tenure.App`.
"""

from tenure.web.asgi import create_app
from tenure.web.server import DEFAULT_HOST, DEFAULT_PORT, HttpServer, ServeError, WorkerHTTP, run_dashboard

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "HttpServer", "ServeError", "WorkerHTTP", "create_app", "run_dashboard"]
