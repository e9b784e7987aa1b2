"""Settings and where they come from: flags, then the environment, then defaults.

Every tool resolves its settings here, once, by the same precedence: a value given
explicitly (a command-line flag, an argument) wins over a ``TENURE_*`` environment
variable, which wins over the application's own settings, which win over the defaults.

- :class:`Settings`: how a worker keeps its lease and runs its tasks (frozen, validated once);
- :func:`store_url`: which store (``--store``, ``TENURE_STORE``, :data:`DEFAULT_STORE`);
- :func:`protect_reads` and :func:`log_format`: options of the commands that serve HTTP
  or run long (``TENURE_PROTECT_READS``, ``TENURE_LOG_FORMAT``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tenure.errors import InvalidSettings
from tenure.inputs import check_number, quote
from tenure.models import DEFAULT_MAX_PARAMS_BYTES, check_worker_id

#: Environment variable for each setting read by :meth:`Settings.from_env`.
ENV_NAMES = {
    "lease_ttl": "TENURE_LEASE_TTL",
    "heartbeat": "TENURE_HEARTBEAT",
    "poll": "TENURE_POLL",
    "grace": "TENURE_GRACE",
    "trust_margin": "TENURE_TRUST_MARGIN",
    "takeover_delay": "TENURE_TAKEOVER_DELAY",
    "run_retention": "TENURE_RUN_RETENTION",
    "max_params_bytes": "TENURE_MAX_PARAMS_BYTES",
    "concurrency": "TENURE_CONCURRENCY",
    "timer_grid": "TENURE_TIMER_GRID",
    "worker_id": "TENURE_WORKER_ID",
    "admin_token": "TENURE_ADMIN_TOKEN",
}

#: The store when neither a flag nor ``TENURE_STORE`` names one.
DEFAULT_STORE = "sqlite:///tenure.db"
#: The variable naming the store.
STORE_ENV = "TENURE_STORE"
#: The variable asking for reads (the JSON API, /metrics) to need the admin token too.
PROTECT_READS_ENV = "TENURE_PROTECT_READS"
#: The variable choosing the format of log lines.
LOG_FORMAT_ENV = "TENURE_LOG_FORMAT"
#: Formats of log lines: human, or JSON (one object per line).
LOG_FORMATS = ("human", "json")

#: Longest lease, interval, grace or delay accepted: a day (longer ones are mistakes, and
#: some would overflow the event loop's timers).
MAX_SECONDS = 86400.0
#: Longest run retention accepted: ten years.
MAX_RETENTION = 3650 * 86400.0
#: Runs a worker has in progress at once by default: far more than the cores it has, for
#: handlers that mostly wait on I/O, and few enough that an overloaded worker queues runs
#: instead of starting them all and letting them time out.
DEFAULT_CONCURRENCY = 100
#: Most runs in progress at once one may ask for.
MAX_CONCURRENCY = 100_000
#: The grid slot timers are rounded up to by default, seconds: runs start at most this
#: late, and a worker starting thousands of runs a second wakes at most 250 times a second.
DEFAULT_TIMER_GRID = 0.004
#: The finest and the coarsest grid accepted: the event loop's clock does not resolve
#: less than a millisecond, and a run a second late is no longer on time.
MIN_TIMER_GRID = 0.001
MAX_TIMER_GRID = 1.0
#: Settings that are whole numbers.
WHOLE_SETTINGS = ("max_params_bytes", "concurrency")
#: How long, beyond ``grace``, a stopping worker may take to exit: cancelling runs past
#: the grace period, stopping its poll and its loops, leaving the cluster and stopping
#: its HTTP interface are each bounded, and add up to less than this. A supervisor
#: should wait ``grace + STOP_OVERHEAD`` seconds after SIGTERM before SIGKILL (systemd's
#: ``TimeoutStopSec``, Kubernetes' ``terminationGracePeriodSeconds``).
STOP_OVERHEAD = 20.0


#: The shortest ``poll`` and ``heartbeat`` accepted (a poll of a nanosecond kept an idle
#: worker's core busy reading the store).
MIN_LOOP_INTERVAL = 0.05


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How a worker keeps its lease and runs its tasks. Times are seconds.

    The failover bound, the longest a dead worker's task goes unrun, is about
    ``lease_ttl + poll``; a gracefully stopping worker's tasks move within ``poll``.
    """

    #: How long a lease lives on the database's clock after each renewal.
    lease_ttl: float = 10.0
    #: How often the lease is renewed; at most half the TTL, so one lost renewal is survived.
    heartbeat: float = 2.0
    #: How often a worker looks for free tasks and admin changes.
    poll: float = 1.0
    #: How long a stopping worker lets running handlers finish before cancelling them.
    grace: float = 10.0
    #: A renewal sent at local time t is trusted until t + lease_ttl - trust_margin. This
    #: covers clock-rate drift and the time the renewal took to reach the database.
    trust_margin: float = 1.0
    #: Wait before the first run of a task taken from an *expired* worker (Chubby's lock-delay).
    takeover_delay: float = 0.0
    #: How long run records are kept.
    run_retention: float = 7 * 86400.0
    #: Largest task parameters accepted, in bytes of JSON.
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES
    #: Most runs one worker has in progress at once. Due runs past it wait their turn,
    #: oldest due first, coalesced by their kind's misfire policy; a run's timeout counts
    #: from its start.
    concurrency: int = DEFAULT_CONCURRENCY
    #: Runs start on a grid of this many seconds: the slots due within one step share one
    #: wake-up of the worker, and each run starts up to one step after its slot. Each
    #: wake-up costs the worker and the database backends its runs reach about as much as
    #: a short run, so a coarser grid saves CPU where a worker starts hundreds of runs a
    #: second (0.05 instead of 0.004: a third less at 1,000 tasks a second on 4 workers,
    #: README "Real load"); a finer one starts runs closer to their slots.
    timer_grid: float = DEFAULT_TIMER_GRID
    #: This worker's id; by default host-pid-random, unique per process start.
    worker_id: str | None = None
    #: Bearer token that HTTP actions changing state require.
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("lease_ttl", "heartbeat", "poll", "grace", "trust_margin"):
            _seconds(name, getattr(self, name), low=0, high=MAX_SECONDS, low_open=True)
        _seconds("takeover_delay", self.takeover_delay, low=0, high=MAX_SECONDS)
        _seconds("run_retention", self.run_retention, low=0, high=MAX_RETENTION, low_open=True)
        _seconds("timer_grid", self.timer_grid, low=MIN_TIMER_GRID, high=MAX_TIMER_GRID)
        for name in ("poll", "heartbeat"):
            value = getattr(self, name)
            if value < MIN_LOOP_INTERVAL:
                raise InvalidSettings(
                    f"{name} {value:g}s is below the minimum of {MIN_LOOP_INTERVAL:g}s: each one is a "
                    "statement to the store, and an idle worker would keep a core busy sending them"
                )
        if self.lease_ttl < 0.5:
            raise InvalidSettings(f"lease_ttl {self.lease_ttl}s is below the minimum of 0.5s")
        if self.heartbeat > self.lease_ttl / 2:
            raise InvalidSettings(
                f"heartbeat {self.heartbeat}s must be at most half of lease_ttl {self.lease_ttl}s, "
                "so that one late renewal does not lose the lease"
            )
        if self.trust_margin >= self.lease_ttl - self.heartbeat:
            raise InvalidSettings(
                f"trust_margin {self.trust_margin}s must be below lease_ttl - heartbeat "
                f"({self.lease_ttl - self.heartbeat}s), or the worker would never trust its lease"
            )
        check_number(
            self.max_params_bytes,
            "max_params_bytes",
            unit="bytes",
            low=2,
            high=16 * 1024 * 1024,
            whole=True,
            error=InvalidSettings,
        )
        check_number(
            self.concurrency, "concurrency", unit="runs", low=1, high=MAX_CONCURRENCY, whole=True, error=InvalidSettings
        )
        if self.worker_id is not None:
            # Normalised (NFC) like keys, so either spelling names the same worker.
            object.__setattr__(
                self, "worker_id", check_worker_id(self.worker_id, what="worker_id", error=InvalidSettings)
            )
        if self.admin_token is not None:
            _check_admin_token(self.admin_token)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, base: Settings | None = None, **overrides: Any) -> Settings:
        """Settings by precedence: ``overrides`` that are not None (flags), then the
        ``TENURE_*`` variables in ``env`` (empty ones count as unset), then ``base`` (an
        App's own settings), then the defaults.

        A refused value from the environment is named with its variable, which is what
        the user must fix.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_NAMES[f.name])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        from_env = {name: env[ENV_NAMES[name]] for name in values if overrides.get(name) is None}
        if base is not None:
            values = {f.name: getattr(base, f.name) for f in fields(cls) if f.name not in values} | values
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except InvalidSettings as exc:
            # Name the variables behind the refused settings: that is what the user must fix.
            culprits = [
                ENV_NAMES[name] if name == "admin_token" else f"{ENV_NAMES[name]}={quote(raw)}"
                for name, raw in from_env.items()
                if re.search(rf"\b{name}\b", str(exc))
            ]
            if not culprits:
                raise
            raise InvalidSettings(f"{exc} (set by {', '.join(culprits)})") from None

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated again."""
        return replace(self, **changes)


def store_url(given: str | None, env: Mapping[str, str]) -> str:
    """The store's URL: ``given`` (a flag, an argument) if not None, else ``TENURE_STORE``
    if set and not empty, else :data:`DEFAULT_STORE`. The URL itself is checked when the
    store is made."""
    if given is not None:
        return given
    return env.get(STORE_ENV) or DEFAULT_STORE


def protect_reads(given: bool | None, env: Mapping[str, str]) -> bool:
    """Whether reads need the admin token: ``given`` if not None, else
    ``TENURE_PROTECT_READS`` (1/true/yes/on or 0/false/no/off; unset or empty: no)."""
    if given is not None:
        return given
    raw = env.get(PROTECT_READS_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InvalidSettings(f"{PROTECT_READS_ENV}={quote(raw)} must be one of 1, true, yes, on, 0, false, no, off")


def log_format(given: str | None, env: Mapping[str, str]) -> str:
    """The format of log lines: ``given`` if not None, else ``TENURE_LOG_FORMAT``, else
    ``human`` (one of :data:`LOG_FORMATS`)."""
    if given is not None:
        if given not in LOG_FORMATS:
            raise InvalidSettings(f"log format {quote(given)} must be human or json")
        return given
    chosen = env.get(LOG_FORMAT_ENV, "").strip().lower() or "human"
    if chosen not in LOG_FORMATS:
        raise InvalidSettings(f"{LOG_FORMAT_ENV}={quote(chosen)} must be human or json")
    return chosen


def _parse(name: str, raw: str) -> Any:
    if name in ("worker_id", "admin_token"):
        return raw
    try:
        return int(raw) if name in WHOLE_SETTINGS else float(raw)
    except ValueError:
        whole = " whole" if name in WHOLE_SETTINGS else ""
        raise InvalidSettings(f"{ENV_NAMES[name]}={quote(raw)} is not a{whole} number") from None


def _seconds(name: str, value: object, *, low: float, high: float, low_open: bool = False) -> None:
    check_number(value, name, unit="seconds", low=low, high=high, low_open=low_open, error=InvalidSettings)


def _check_admin_token(token: object) -> None:
    """Refuse a token no HTTP request could present.

    Header values travel as bytes that servers decode as Latin-1, so a token outside
    printable ASCII would never compare equal to what a client sends: every action
    would be refused with 403. Refused here, at start-up, it is one clear line instead.
    The token itself is never echoed.
    """
    if not isinstance(token, str):
        raise InvalidSettings(f"admin_token must be a string, got {type(token).__name__}")
    bad = next((i for i, ch in enumerate(token) if not " " <= ch <= "~"), None)
    if bad is not None:
        raise InvalidSettings(
            f"admin_token holds a character that is not printable ASCII (character {bad + 1}); an HTTP "
            "header cannot carry it, so the token could never match: use letters, digits and punctuation"
        )
    if token != token.strip():
        raise InvalidSettings("admin_token starts or ends with a space, which an HTTP header drops")
