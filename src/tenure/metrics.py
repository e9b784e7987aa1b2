"""Prometheus metrics of a worker process (prometheus-client, one registry per process).

Exposed on ``/metrics`` by the HTTP server of ``tenure worker --http`` and
``tenure dashboard``. Labels are bounded: task kinds (from code) and outcomes, never keys.
"""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: The registry tenure's metrics live in; served by tenure's HTTP endpoints.
REGISTRY = CollectorRegistry(auto_describe=True)

RUNS = Counter("tenure_runs", "Runs by kind and outcome.", ["kind", "outcome"], registry=REGISTRY)
LAG = Histogram(
    "tenure_run_lag_seconds",
    "Start time minus scheduled time of each run.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DURATION = Histogram(
    "tenure_run_duration_seconds",
    "How long runs took.",
    ["kind"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
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


@functools.cache
def _run_metrics(kind: str, outcome: str) -> tuple[Counter, Histogram, Histogram]:
    # labels() costs a lock and a dict lookup per call; a run's end is on the hot path.
    return RUNS.labels(kind, outcome), LAG.labels(kind), DURATION.labels(kind)


def record_run(kind: str, outcome: str, *, lag: float | None, duration: float | None, count: int = 1) -> None:
    """Count one run (``count`` skipped slots at once); lag and duration are left out for
    runs that did not start."""
    runs, lag_hist, duration_hist = _run_metrics(kind, outcome)
    runs.inc(count)
    if lag is not None:
        lag_hist.observe(lag)
    if duration is not None:
        duration_hist.observe(duration)
