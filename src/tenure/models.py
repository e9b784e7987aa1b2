"""Value objects that cross the store boundary, and the checks on user-given names and data.

Everything here is frozen: a store returns snapshots, never live rows.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tenure.errors import InvalidKey, InvalidKind, InvalidParams
from tenure.schedule import Schedule

#: Bidirectional overrides and invisible spaces make two keys look alike in tables and logs
#: (Trojan Source). Joiners (U+200C, U+200D) stay allowed: some scripts need them.
_DECEPTIVE = frozenset("\u200b\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
KIND_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
MAX_KEY_LENGTH = 200
#: Default ceiling on a task's parameters, as UTF-8 JSON.
DEFAULT_MAX_PARAMS_BYTES = 64 * 1024


class Outcome(StrEnum):
    """How a run ended."""

    OK = "ok"
    ERROR = "error"
    LEASE_LOST = "lease_lost"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


class Freed(StrEnum):
    """How a task came to have no owner, which decides whether a takeover delay applies."""

    NEW = "new"  # never owned
    RELEASED = "released"  # its owner let go on purpose (stop, rebalance, drain)
    EXPIRED = "expired"  # its owner's lease ran out


def check_kind(kind: object) -> str:
    """Return ``kind`` if it is a valid kind name, else raise :class:`InvalidKind`."""
    if not isinstance(kind, str):
        raise InvalidKind(f"kind must be a string, got {type(kind).__name__}")
    if not KIND_PATTERN.fullmatch(kind):
        raise InvalidKind(
            f"kind {kind!r} is not valid: use 1-64 characters, letters, digits, '_', '.', '-', "
            "starting with a letter or '_'"
        )
    return kind


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid task key, else raise :class:`InvalidKey`.

    Keys are free text (city names have quotes and accents) stored verbatim through
    parameterised SQL; only what breaks tables, logs and terminals is refused.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}")
    if key != key.strip():
        raise InvalidKey(f"key {key!r} starts or ends with whitespace")
    for ch in key:
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn", "Zl", "Zp") or ch in _DECEPTIVE:
            raise InvalidKey(f"key {key!r} holds a control, invisible or unassigned character {ch!r}")
    return key


def encode_params(params: object, *, max_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> str:
    """Serialise task parameters (a JSON object) to text, enforcing the size limit."""
    if not isinstance(params, dict):
        raise InvalidParams(f"params must be a JSON object (a dict), got {type(params).__name__}")
    try:
        text = json.dumps(params, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidParams(f"params are not JSON-serialisable: {exc}") from exc
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidParams(f"params are {size} bytes as JSON; the limit is {max_bytes}")
    return text


def parse_params(text: str, *, max_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> dict[str, Any]:
    """Parse user-given JSON text into task parameters, with the same checks as on write."""
    if len(text.encode()) > max_bytes * 4:  # don't even parse absurd input
        raise InvalidParams(f"params are larger than the limit of {max_bytes} bytes")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidParams(f"params are not valid JSON: {exc}") from exc
    encode_params(value, max_bytes=max_bytes)
    assert isinstance(value, dict)
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


@dataclass(frozen=True, slots=True, kw_only=True)
class KindInfo:
    """A task kind as published to the store by an app, so tools without the code know it."""

    kind: str
    schedule: Schedule | None
    timeout: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One task row: what to run, when, and who owns it at which term."""

    kind: str
    key: str
    schedule: Schedule
    params: dict[str, Any]
    enabled: bool
    owner: str | None
    term: int
    last_slot: float | None
    freed_at: float | None
    freed_how: Freed
    trigger_at: float | None
    version: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A task a worker just acquired, with what it needs to continue the schedule."""

    task: Task
    #: Latest time the previous owner may have run a slot; slots up to it are not rerun.
    done_before: float | None

    @property
    def term(self) -> int:
        return self.task.term


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A worker's confirmed lease, all on the database's clock."""

    worker_id: str
    expires_at: float
    #: The database's clock when it confirmed the lease.
    db_now: float
    #: An operator asked this worker to hand its tasks over and take no more.
    draining: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """A worker's membership row."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    expires_at: float
    draining: bool
    tasks_held: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One execution of a task. Times are on the database's clock (as the worker estimates it)."""

    kind: str
    key: str
    worker: str
    term: int
    scheduled_at: float
    started_at: float
    ended_at: float
    outcome: Outcome
    error: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotDone:
    """A slot a worker has started, to be remembered on the task so a later owner skips it."""

    kind: str
    key: str
    term: int
    slot: float
    #: The run answered a manual trigger; the trigger request is cleared with it.
    triggered: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    """What a worker needs each poll to keep its fair share and notice admin changes."""

    #: Grows on every admin change to tasks (add, enable, disable, trigger, remove).
    changes: int
    #: Ids of live, non-draining workers, sorted.
    live_workers: list[str]
    #: Number of enabled tasks.
    enabled_tasks: int
