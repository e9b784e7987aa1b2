"""Serving the HTTP interface with uvicorn: ``tenure dashboard``, and beside a worker.

The socket is bound before anything starts, so an address in use or not available is a
one-line error (:class:`ServeError`) rather than a server dying later. uvicorn's own
signal handling is turned off: the dashboard's runner, or the worker, owns SIGTERM and
SIGINT and stops the server through :meth:`HttpServer.stop`.

A server bound to anything but a loopback address logs a loud warning: the dashboard,
the API and ``/metrics`` are then readable by whoever reaches the host (actions still
need the admin token; ``--protect-reads`` guards reads too). A server bound to loopback
answers only requests naming a loopback host (``localhost``, ``127.0.0.1``, ``::1``, or
the host it was given), so that another site cannot read it through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from tenure.app import App
from tenure.errors import TenureError
from tenure.inputs import clip, quote
from tenure.web.asgi import create_app

if TYPE_CHECKING:
    from tenure.worker import Worker

log = logging.getLogger("tenure.web")

#: Default address of ``tenure dashboard``.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8787
#: How long running requests get to finish when the server stops (uvicorn cancels them then).
STOP_GRACE = 2


class ServeError(TenureError):
    """The HTTP interface cannot listen on the address it was given."""


#: Connections the kernel queues before the server accepts them.
LISTEN_BACKLOG = 128


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port) and listening: the
    address is announced before the server starts accepting, and a client that comes in
    between must wait in the backlog, not be refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {_shown_host(host)}:{port}: {exc.strerror}") from None
    except UnicodeError as exc:  # a name IDNA cannot encode: a label empty or too long, bytes not UTF-8
        raise ServeError(f"cannot listen on {_shown_host(host)}:{port}: not a valid host name ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {_shown_host(host)}:{port}: {exc.strerror or exc}") from None
    return sock


def _shown_host(host: str) -> str:
    """A host name as a message quotes it: as given if it prints, cut."""
    return clip(host) if host.isprintable() else quote(host)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if sock.family == socket.AF_INET6 else f"http://{host}:{port}/"


def is_loopback(sock: socket.socket) -> bool:
    """Whether the socket is bound to a loopback address (127.0.0.0/8, ::1)."""
    address = ipaddress.ip_address(sock.getsockname()[0].split("%")[0])
    return address.is_loopback


def allowed_hosts(sock: socket.socket, host: str) -> list[str] | None:
    """Host names a loopback-bound server answers for (None: any, when bound elsewhere)."""
    if not is_loopback(sock):
        return None
    return ["localhost", "127.0.0.1", "::1", host, sock.getsockname()[0]]


def warn_if_exposed(sock: socket.socket, *, what: str, protect_reads: bool) -> None:
    if is_loopback(sock):
        return
    if protect_reads:
        exposed = "the dashboard page to anyone who can reach it (reads and actions need the admin token)"
        advice = ""
    else:
        exposed = "the dashboard, the JSON API and /metrics to anyone who can reach it (actions need the admin token)"
        advice = ", or use --protect-reads"
    log.warning(
        "!!! %s listens on %s, which is NOT a loopback address: this exposes %s. "
        "Bind to 127.0.0.1 unless this host is firewalled%s. !!!",
        what,
        url_of(sock),
        exposed,
        advice,
    )


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal handlers: whoever runs it owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """An ASGI app served by uvicorn on an already bound socket, on the running event loop."""

    def __init__(self, asgi: ASGIApp, sock: socket.socket) -> None:
        self.sock = sock
        self.url = url_of(sock)
        config = uvicorn.Config(
            asgi,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # tenure's logging (tenure.logs) formats uvicorn's records too
            access_log=False,  # a polling dashboard would flood the log
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=STOP_GRACE,
        )
        self._server = _Uvicorn(config)

    async def serve(self) -> None:
        """Serve until :meth:`stop`; then stop accepting, let requests end (bounded) and return."""
        try:
            await self._server.serve(sockets=[self.sock])
        finally:
            self.sock.close()

    def stop(self) -> None:
        """Ask :meth:`serve` to return (within about ``STOP_GRACE`` seconds)."""
        self._server.should_exit = True


class WorkerHTTP:
    """A worker's HTTP interface: the dashboard, the JSON API, this worker's /metrics, and
    its probes /healthz and /readyz (:mod:`tenure.web.probes`).

    Pass it to :meth:`tenure.App.run_worker` (``sidecars=[WorkerHTTP(host, port)]``; the
    CLI does for ``tenure worker --http HOST:PORT``). The address is bound here, so a
    bad one fails before the worker joins. The interface runs on a thread of its own,
    with its own event loop and an App of its own (its own connections): dashboard
    traffic never queues in front of the worker's lease renewals, and a handler that
    blocks the worker's loop does not silence the probes that report it. Actions need
    the worker's ``admin_token``.
    """

    def __init__(self, host: str, port: int, *, protect_reads: bool = False) -> None:
        self.protect_reads = protect_reads
        self.host = host
        self.sock = bind(host, port)
        self._server: HttpServer | None = None
        self._stopped = False
        self._lock = threading.Lock()  # stop() comes from the worker's thread

    @property
    def url(self) -> str:
        return url_of(self.sock)

    async def serve(self, worker: Worker) -> None:
        """Serve until :meth:`stop` (the worker calls it once it has left the cluster)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        def main() -> None:
            outcome: BaseException | None = None
            try:
                asyncio.run(self._serve(worker))
            except BaseException as exc:
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the worker's loop may be gone already
                loop.call_soon_threadsafe(finished, outcome)

        # A daemon thread: should the server hang, it never keeps the process alive.
        threading.Thread(target=main, name="tenure-http", daemon=True).start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            raise

    async def _serve(self, worker: Worker) -> None:
        if worker.store_url is None:
            raise TenureError("the worker's HTTP interface needs the worker's store URL (Worker(store_url=...))")
        admin = App(worker.store_url, settings=worker.settings)
        asgi = create_app(
            admin,
            worker.settings,
            protect_reads=self.protect_reads,
            store_metrics=False,
            worker=worker,
            allowed_hosts=allowed_hosts(self.sock, self.host),
        )
        try:
            with self._lock:
                if self._stopped:
                    return
                self._server = HttpServer(asgi, self.sock)
            warn_if_exposed(self.sock, what="the worker's HTTP interface", protect_reads=self.protect_reads)
            log.info(
                "HTTP interface on %s (dashboard, /api, /metrics, /healthz, /readyz)",
                self._server.url,
                extra={"worker": worker.id},
            )
            await self._server.serve()
        finally:
            self.sock.close()
            await admin.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._server is not None:
                self._server.stop()

    def close(self) -> None:
        """Release the address if the interface never served (the worker could not start)."""
        self.sock.close()


def run_dashboard(admin: App, *, host: str, port: int, protect_reads: bool = False) -> None:
    """Serve the dashboard over ``admin``'s store until SIGTERM or SIGINT; then return.

    The store must exist and answer now (it is opened, without migrating, before serving);
    later failures answer 503 until it is back.
    """
    sock = bind(host, port)

    async def main() -> None:
        try:
            await admin.open(migrate=False)
            asgi = create_app(
                admin, admin.settings, protect_reads=protect_reads, allowed_hosts=allowed_hosts(sock, host)
            )
            server = HttpServer(asgi, sock)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, server.stop)
            warn_if_exposed(sock, what="tenure dashboard", protect_reads=protect_reads)
            actions = "enabled" if admin.settings.admin_token else "disabled (no TENURE_ADMIN_TOKEN)"
            reads = "need the token" if protect_reads else "open"
            log.info("dashboard on %s for %s (reads %s, actions %s)", server.url, admin.display_url, reads, actions)
            try:
                await server.serve()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("dashboard stopped")
        finally:
            await admin.close()

    try:
        asyncio.run(main())
    finally:
        sock.close()
