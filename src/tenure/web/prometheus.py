"""``GET /metrics``: Prometheus text of this process's metrics, and optionally the store's.

This process's metrics are :data:`tenure.metrics.REGISTRY` (a worker's runs, lag, tasks
held, term changes, renewals, fenced commits). With ``store_metrics`` (what
``tenure dashboard`` serves), gauges read from the store at scrape time are added:

- ``tenure_store_up``: 1 if the store answered this scrape, else 0 (and no other store gauge);
- ``tenure_store_tasks{state}``: tasks per state (``enabled``, ``disabled``, ``owned``,
  ``unowned``; the first two and the last two each add up to all tasks);
- ``tenure_store_workers{state}``: membership rows, ``live`` (lease live, not draining),
  ``draining`` (lease live) and ``expired``.

Workers leave them out, so that a cluster's scrapes do not count the store once per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from tenure import metrics, snapshot
from tenure.app import App
from tenure.errors import TenureError

log = logging.getLogger("tenure.web")


class _Frozen(Collector):
    """A collector that yields metric families computed beforehand (collectors are synchronous)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


async def store_families(admin: App) -> list[Metric]:
    """The store-level gauges, read now."""
    up = GaugeMetricFamily("tenure_store_up", "1 if the store answered this scrape, else 0.")
    try:
        await admin.open(migrate=False)  # never create a schema from a scrape
        tasks = await admin.list_tasks()
        roster = await admin.roster()
    except TenureError as exc:
        # Not only a store that does not answer: a row tenure cannot read (a schedule
        # written into the table by hand) must not turn the scrape into a plain-text 500,
        # which leaves alerting blind to this process's own metrics too.
        log.warning("/metrics: the store failed: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    workers, now = roster.workers, roster.now
    by_state = GaugeMetricFamily("tenure_store_tasks", "Tasks in the store by state.", labels=["state"])
    for state, count in snapshot.state_counts(tasks, roster).items():
        if state != "total":
            by_state.add_metric([state], count)
    live = [w for w in workers if w.expires_at > now]
    members = GaugeMetricFamily("tenure_store_workers", "Workers in the store by state.", labels=["state"])
    members.add_metric(["live"], sum(not w.draining for w in live))
    members.add_metric(["draining"], sum(w.draining for w in live))
    members.add_metric(["expired"], len(workers) - len(live))
    return [up, by_state, members]


async def scrape(admin: App | None) -> Response:
    """The /metrics response: this process's registry, plus the store's gauges if ``admin`` is given."""
    text = generate_latest(metrics.REGISTRY)
    if admin is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Frozen(await store_families(admin)))
        text += generate_latest(registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
