"""OpenTelemetry spans of runs, with the optional extra ``tenure[otel]`` (issue 18).

With the OpenTelemetry API installed, each run is a span ``tenure.run`` whose attributes
are ``tenure.kind``, ``tenure.key``, ``tenure.term``, ``tenure.worker``, ``tenure.slot``
(the scheduled time, database clock), ``tenure.lag`` (start minus slot, seconds),
``tenure.triggered`` and, at its end, ``tenure.outcome``; it is the current span while
the handler runs (a sync handler's thread too), so the handler's own spans nest under
it. Each fenced transaction is a child span ``tenure.fenced_commit`` whose
``tenure.commit`` is ``accepted``, ``refused`` (the fence did not hold: ``LeaseLost``) or
``rolled_back`` (the block raised). A lost lease is a span event ``tenure.lease_lost``,
and a run cancelled because its worker fenced itself, ``tenure.self_fenced``; a run
cancelled on an operator's request, ``tenure.cancelled``.

Only the API is used: the application chooses the SDK, exporters and sampling. Until it
sets a tracer provider no span is made (the provider is looked up once a second, or at
once after :func:`provider_changed`).
Without the package every function here returns at once and no OpenTelemetry code is
imported: tracing costs nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
except ImportError:  # the extra is not installed
    _trace = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]

#: The instrumentation scope of tenure's spans.
SCOPE = "tenure"


def enabled() -> bool:
    """Whether the OpenTelemetry API is installed (``tenure[otel]``)."""
    return _trace is not None


#: How often the tracer provider is looked up again (the lookup costs microseconds).
RECHECK = 1.0
_provider: object = None
_tracer_now: Tracer | None = None
_recheck_at = 0.0


def provider_changed() -> None:
    """Look the tracer provider up again at the next span. Without it, a provider the
    application sets after tenure has started is used within :data:`RECHECK` seconds."""
    global _recheck_at
    _recheck_at = 0.0


def _tracer() -> Tracer | None:
    """tenure's tracer from the application's tracer provider; None while there is none
    (the API's proxy, or its no-op provider): spans nobody records are not made at all."""
    global _provider, _tracer_now, _recheck_at
    now = time.monotonic()
    if now >= _recheck_at:
        _recheck_at = now + RECHECK
        provider = _trace.get_tracer_provider()
        if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
            _provider, _tracer_now = None, None
        elif provider is not _provider:
            import tenure  # its __init__ imports this module

            _provider, _tracer_now = provider, provider.get_tracer(SCOPE, tenure.__version__)
    return _tracer_now


def start_run(
    *, kind: str, key: str, term: int, worker: str, slot: float, started: float, triggered: bool
) -> tuple[Span, object] | None:
    """Start a run's span and make it current; None without OpenTelemetry. Pass what it
    returns to :func:`end_run`, in the same task."""
    tracer = None if _trace is None else _tracer()
    if tracer is None:
        return None
    span = tracer.start_span(
        "tenure.run",
        attributes={
            "tenure.kind": kind,
            "tenure.key": key,
            "tenure.term": term,
            "tenure.worker": worker,
            "tenure.slot": slot,
            "tenure.lag": max(0.0, started - slot),
            "tenure.triggered": triggered,
        },
    )
    token = _context.attach(_trace.set_span_in_context(span))
    return span, token


def end_run(run: tuple[Span, object] | None, *, outcome: str, error: str | None, self_fenced: bool) -> None:
    """End a run's span with its outcome; a lost lease, a self-fencing or a cancellation
    becomes an event, and any outcome but ``ok`` and ``skipped`` an error status."""
    if run is None:
        return
    span, token = run
    _context.detach(token)  # type: ignore[arg-type]
    span.set_attribute("tenure.outcome", outcome)
    attributes: dict[str, Any] = {"tenure.reason": error or ""}
    if outcome == "lease_lost":
        span.add_event("tenure.self_fenced" if self_fenced else "tenure.lease_lost", attributes)
    elif outcome == "cancelled":
        span.add_event("tenure.cancelled", attributes)
    if outcome not in ("ok", "skipped"):
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error))
    span.end()


def start_commit(*, kind: str, key: str, term: int) -> Span | None:
    """Start the span of a fenced transaction, a child of the current (run's) span. It is
    not made current: a sync handler's block begins and ends in different tasks."""
    tracer = None if _trace is None else _tracer()
    if tracer is None:
        return None
    return tracer.start_span(
        "tenure.fenced_commit", attributes={"tenure.kind": kind, "tenure.key": key, "tenure.term": term}
    )


def end_commit(span: Span | None, verdict: str, error: str | None = None) -> None:
    """End a fenced transaction's span: ``accepted``, ``refused`` or ``rolled_back``."""
    if span is None:
        return
    span.set_attribute("tenure.commit", verdict)
    if verdict == "refused":
        span.add_event("tenure.lease_lost", {"tenure.reason": error or ""})
    if verdict != "accepted":
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, error))
    span.end()
