"""``/healthz`` and ``/readyz``: what a supervisor or an orchestrator asks a worker.

- ``/healthz`` (liveness: "restart me?") answers 200 while the worker's event loop turns,
  as its watchdog sees it, and 503 once the loop has not turned for longer than the
  lease's trusted span (``lease_ttl - trust_margin``): a loop blocked that long cannot
  keep the lease, and the worker's tasks are moving elsewhere. The worker's HTTP
  interface runs on a thread of its own, so it answers while the loop is blocked, and
  says what blocks it.
- ``/readyz`` (readiness: "is this worker doing its share?") answers 200 while the worker
  holds a lease it trusts, its loop turns, it is neither draining nor stopping, and the
  store answers a query within :data:`STORE_TIMEOUT`; 503 otherwise (joining, loop
  blocked, self-fenced and rejoining, renewals failing, draining, stopping, store down),
  with every reason. Whenever ``/healthz`` answers 503, so does ``/readyz``.

On ``tenure dashboard`` (no worker) ``/healthz`` is always 200 and ``/readyz`` is the
store check alone. Both answer JSON, never need the admin token (they hold nothing
secret, and probes rarely send headers), and are never cached.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tenure.app import App
from tenure.config import Settings
from tenure.errors import StoreError
from tenure.web.responses import JSON

if TYPE_CHECKING:
    from tenure.worker import Worker

#: Longest wait for the store's answer in ``/readyz``, in seconds; probes time out too.
STORE_TIMEOUT = 2.0
#: What every probe answer carries: a probe's answer is about now.
NO_STORE = {"Cache-Control": "no-store"}


def blocked_limit(settings: Settings) -> float:
    """How long the event loop may go without turning before ``/healthz`` answers 503."""
    return settings.lease_ttl - settings.trust_margin


class Probes:
    """The two probe endpoints of one HTTP interface, over ``worker`` if one serves it."""

    def __init__(self, admin: App, settings: Settings, worker: Worker | None) -> None:
        self.admin = admin
        self.settings = settings
        self.worker = worker

    async def healthz(self, request: Request) -> Response:
        if self.worker is None:
            return JSON({"status": "ok"}, headers=NO_STORE)
        probe = self.worker.probe()
        limit = blocked_limit(self.settings)
        # Judged on the figure the body shows, so that the two never disagree.
        blocked_for = round(probe.loop_blocked_for, 3)
        healthy = blocked_for <= limit
        body = {
            "status": "ok" if healthy else "blocked",
            "worker": probe.worker_id,
            "loop": {
                "blocked_for": blocked_for,
                "limit": limit,
                "blocked_by": probe.loop_blocked_by,
            },
        }
        return JSON(body, status_code=200 if healthy else 503, headers=NO_STORE)

    async def readyz(self, request: Request) -> Response:
        reasons: list[str] = []
        body: dict[str, Any] = {}
        if self.worker is not None:
            probe = self.worker.probe()
            blocked_for = round(probe.loop_blocked_for, 3)
            if blocked_for > blocked_limit(self.settings):
                # The lease's trusted deadline counts from the last renewal sent, which may
                # come up to a watchdog tick after the loop's last tick: judged on the lease
                # alone, /readyz could still say 200 while /healthz says the loop is blocked.
                reasons.append(f"event loop blocked for {blocked_for:g}s: the lease cannot be renewed")
            if probe.stopping:
                reasons.append("stopping: handing its tasks over")
            if probe.draining:
                reasons.append("draining: hands its tasks over and takes no more")
            if probe.trusted_for <= 0:
                if not probe.joined_before:
                    reasons.append("joining: no lease yet")
                elif probe.self_fences:
                    reasons.append("no trusted lease: self-fenced or renewals failing; rejoining")
                else:
                    reasons.append("no trusted lease: renewals are failing")
            body |= {
                "worker": probe.worker_id,
                "lease": {"trusted_for": round(probe.trusted_for, 3), "self_fences": probe.self_fences},
                "draining": probe.draining,
                "stopping": probe.stopping,
            }
        store_error = await self._store_error()
        if store_error is not None:
            reasons.append(f"the store does not answer: {store_error}")
        body["store"] = {"answers": store_error is None, "error": store_error}
        ready = not reasons
        return JSON({"ready": ready, "reasons": reasons, **body}, status_code=200 if ready else 503, headers=NO_STORE)

    async def _store_error(self) -> str | None:
        """None if the store answers a query in time, else why not."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self.admin.open(migrate=False)
                await self.admin.now()
        except TimeoutError:
            return f"no answer within {STORE_TIMEOUT:g}s"
        except StoreError as exc:
            return str(exc)
        return None
