"""Prometheus metrics of a worker process (prometheus-client, one registry per process).

Exposed on ``/metrics`` by the HTTP server of ``tenure worker --http`` and
``tenure dashboard``. Labels are bounded: task kinds (from code) and outcomes, never keys.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: The registry tenure's metrics live in; served by tenure's HTTP endpoints.
REGISTRY = CollectorRegistry(auto_describe=True)

#: Buckets of the run lag and run duration histograms (seconds).
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Histogram:
    """One label set of a histogram: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class RunMetrics(Collector):
    """Runs by kind and outcome, and the lag and duration of runs by kind.

    Counted in plain integers on the event loop and turned into metric families only when
    scraped: with prometheus-client's own Counter and Histogram, each run cost five
    locked increments (a tenth of a no-op run's cost to the worker).
    """

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], int] = {}
        self._lag: dict[str, _Histogram] = {}
        self._duration: dict[str, _Histogram] = {}

    def record(self, kind: str, outcome: str, lag: float | None, duration: float | None, count: int) -> None:
        key = (kind, outcome)
        self._runs[key] = self._runs.get(key, 0) + count
        if lag is not None:
            hist = self._lag.get(kind)
            if hist is None:
                hist = self._lag[kind] = _Histogram(LAG_BUCKETS)
            hist.observe(lag)
        if duration is not None:
            hist = self._duration.get(kind)
            if hist is None:
                hist = self._duration[kind] = _Histogram(DURATION_BUCKETS)
            hist.observe(duration)

    def collect(self) -> Iterator[Metric]:
        # list() copies each dict in one step under the GIL: a scrape from another thread
        # never sees one change size while it reads.
        runs = CounterMetricFamily("tenure_runs", "Runs by kind and outcome.", labels=["kind", "outcome"])
        for (kind, outcome), n in list(self._runs.items()):
            runs.add_metric([kind, outcome], float(n))
        yield runs
        for name, doc, hists in (
            ("tenure_run_lag_seconds", "Start time minus scheduled time of each run.", self._lag),
            ("tenure_run_duration_seconds", "How long runs took.", self._duration),
        ):
            family = HistogramMetricFamily(name, doc, labels=["kind"])
            for kind, hist in list(hists.items()):
                family.add_metric([kind], hist.buckets(), hist.sum)
            yield family

    def describe(self) -> Iterator[Metric]:
        # Described, so that the registry refuses another collector of these names.
        yield CounterMetricFamily("tenure_runs", "Runs by kind and outcome.", labels=["kind", "outcome"])
        yield HistogramMetricFamily("tenure_run_lag_seconds", "", labels=["kind"])
        yield HistogramMetricFamily("tenure_run_duration_seconds", "", labels=["kind"])


RUN_METRICS = RunMetrics()
REGISTRY.register(RUN_METRICS)
TASKS_HELD = Gauge("tenure_tasks_held", "Tasks this worker owns.", registry=REGISTRY)
TERM_CHANGES = Counter(
    "tenure_term_changes",
    "Tasks this worker took over, by how the previous owner let go (new, released, expired).",
    ["how"],
    registry=REGISTRY,
)
RENEW_LATENCY = Histogram(
    "tenure_lease_renew_seconds",
    "Round trip of lease renewals.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
SELF_FENCES = Counter("tenure_self_fences", "Times this worker stopped trusting its lease.", registry=REGISTRY)
FENCED_REFUSED = Counter(
    "tenure_fenced_commits_refused", "Fenced commits refused with LeaseLost.", ["kind"], registry=REGISTRY
)
FENCED_COMMITTED = Counter("tenure_fenced_commits", "Fenced commits accepted.", ["kind"], registry=REGISTRY)
RUNS_WAITING = Gauge(
    "tenure_runs_waiting", "Due runs waiting for a place under the worker's concurrency cap.", registry=REGISTRY
)
OLDEST_WAITING = Gauge(
    "tenure_runs_waiting_oldest_seconds", "How long the longest-waiting due run has waited.", registry=REGISTRY
)
LOOP_STALLS = Counter("tenure_event_loop_stalls", "Times the watchdog saw the event loop blocked.", registry=REGISTRY)


def record_run(kind: str, outcome: str, *, lag: float | None, duration: float | None, count: int = 1) -> None:
    """Count one run (``count`` skipped slots at once); lag and duration are left out for
    runs that did not start."""
    RUN_METRICS.record(kind, outcome, lag, duration, count)
