"""Value objects that cross the store boundary, and the checks on user-given names and data.

Everything here is frozen: a store returns snapshots, never live rows.

Names users give (task keys, worker ids) are compared after Unicode normalisation (NFC),
so ``e`` + U+0301 and ``é`` are one key, and may not hold characters that render as
nothing: Unicode's default-ignorable code points and format characters (category Cf),
as a class. Zero-width joiners (U+200C, U+200D) are allowed only where IDNA allows them
(RFC 5892, CONTEXTJ): after a virama, and a non-joiner between joining letters (Persian,
Arabic), where they change how the word is drawn; anywhere else they are invisible.
A name may not have ``.`` or ``..`` between slashes: URLs resolve those away.
"""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import regex

from tenure.errors import InvalidInput, InvalidKey, InvalidKind, InvalidParams
from tenure.inputs import ECHO_LIMIT, cut, quote
from tenure.schedule import Schedule, StoredSchedule

KIND_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
MAX_KEY_LENGTH = 200
MAX_WORKER_ID_LENGTH = 200
#: Default ceiling on a task's parameters, as UTF-8 JSON.
DEFAULT_MAX_PARAMS_BYTES = 64 * 1024
#: Deepest nesting of objects and arrays accepted in parameters ({"a": 1} is 1 level).
MAX_PARAMS_DEPTH = 32
#: Deepest nesting decoded when parameters are read back. Far above what is accepted,
#: so values stored by older versions keep their meaning; far below what would exhaust
#: the interpreter's stack wherever a value is decoded or shown (worker, CLI, HTTP).
MAX_STORED_PARAMS_DEPTH = 256
#: Keys of the parameters a task shows when its stored text cannot be read back.
UNREADABLE, STORED = "$unreadable", "$stored"

#: Characters that draw nothing: every default-ignorable code point and every format
#: character, except the joiners IDNA's CONTEXTJ rule allows (see the module docstring).
_INVISIBLE = regex.compile(
    r"""
    (?!
        (?<=\p{ccc=Virama})[\u200c\u200d]
      | (?<=[\p{jt=L}\p{jt=D}]\p{jt=T}*)\u200c(?=\p{jt=T}*[\p{jt=R}\p{jt=D}])
    )
    [\p{Default_Ignorable_Code_Point}\p{Cf}]
    """,
    regex.VERBOSE,
)
#: Controls, surrogates, private use, unassigned, line and paragraph separators.
_CONTROL = frozenset(("Cc", "Cs", "Co", "Cn", "Zl", "Zp"))


class Outcome(StrEnum):
    """How a run ended."""

    OK = "ok"
    ERROR = "error"
    LEASE_LOST = "lease_lost"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    #: Cancelled on an operator's request (``pause --cancel``, ``disable --cancel``), or by
    #: its own worker stopping (not a lost lease, not a timeout).
    CANCELLED = "cancelled"


class Freed(StrEnum):
    """How a task came to have no owner, which decides whether a takeover delay applies."""

    NEW = "new"  # never owned
    RELEASED = "released"  # its owner let go on purpose (stop, rebalance, drain)
    EXPIRED = "expired"  # its owner's lease ran out


def check_kind(kind: object) -> str:
    """Return ``kind`` if it is a valid kind name, else raise :class:`InvalidKind`.

    Kinds are ASCII names (they name code), so they need no normalisation.
    """
    if not isinstance(kind, str):
        raise InvalidKind(f"kind must be a string, got {type(kind).__name__}")
    if not KIND_PATTERN.fullmatch(kind):
        raise InvalidKind(
            f"kind {quote(kind)} is not valid: use 1-64 characters, letters, digits, '_', '.', '-', "
            "starting with a letter or '_'"
        )
    return kind


def check_key(key: object) -> str:
    """Return ``key`` normalised to NFC if it is a valid task key, else raise :class:`InvalidKey`.

    Keys are free text (city names have quotes and accents) stored verbatim through
    parameterised SQL; only what breaks tables, logs and terminals, and what would make
    two keys look alike (see the module docstring), is refused.
    """
    return _check_name(key, "key", MAX_KEY_LENGTH, InvalidKey)


def check_worker_id(worker_id: object, *, what: str = "worker id", error: type[InvalidInput] = InvalidInput) -> str:
    """Return ``worker_id`` normalised to NFC if it is a valid worker id, else raise ``error``.

    The rules of keys, and every character must print (no spaces other than U+0020).
    """
    name = _check_name(worker_id, what, MAX_WORKER_ID_LENGTH, error)
    if not name.isprintable():
        bad = next(ch for ch in name if not ch.isprintable())
        raise error(f"{what} {quote(name)} holds {describe_char(bad)}, which does not print")
    return name


def _check_name(value: object, what: str, limit: int, error: type[InvalidInput]) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise error(f"{what} is empty")
    if len(value) > 3 * limit:  # NFC composes at most three characters into one
        raise error(f"{what} is {len(value)} characters long; the limit is {limit}")
    for ch in value:
        if unicodedata.category(ch) in _CONTROL:
            raise error(f"{what} {quote(value)} holds a control, unassigned or separator character {describe_char(ch)}")
    normal = unicodedata.normalize("NFC", value)
    if len(normal) > limit:
        raise error(f"{what} is {len(normal)} characters long; the limit is {limit}")
    if normal != normal.strip():
        raise error(f"{what} {quote(normal)} starts or ends with whitespace")
    invisible = _INVISIBLE.search(normal)
    if invisible is not None:
        raise error(f"{what} {quote(normal)} holds the invisible character {describe_char(invisible.group())}")
    if any(part in (".", "..") for part in normal.split("/")):
        # Clients resolve these in URL paths (RFC 3986; browsers even for %2E): the HTTP
        # API and the dashboard could never name such a task or worker.
        raise error(f"{what} {quote(normal)} has a '.' or '..' part between slashes, which URLs drop")
    return normal


def storable_key(key: object) -> bool:
    """Whether ``key`` is text a task row might hold although :func:`check_key` refuses it
    now (stored by an older version, or directly): worth one look-up by exact spelling."""
    return (
        isinstance(key, str)
        and 0 < len(key) <= MAX_KEY_LENGTH
        and not any(unicodedata.category(ch) in _CONTROL for ch in key)
    )


def describe_char(ch: str) -> str:
    """``U+00AD (SOFT HYPHEN)``."""
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def encode_params(params: object, *, max_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> str:
    """Serialise task parameters (a JSON object) to text, enforcing the size and depth limits.

    Parameters hold what JSON text reads back equal: objects with string keys, arrays
    (lists or tuples), strings (valid Unicode: no lone surrogates), finite numbers,
    booleans and null, nested at most :data:`MAX_PARAMS_DEPTH` levels.
    """
    if not isinstance(params, dict):
        raise InvalidParams(f"params must be a JSON object (a dict), got {type(params).__name__}")
    _check_json_value(params)
    try:
        text = json.dumps(params, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidParams(f"params are not JSON-serialisable: {cut(str(exc), ECHO_LIMIT)}") from exc
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidParams(f"params are {size} bytes as JSON; the limit is {max_bytes}")
    return text


def _check_json_value(value: object) -> None:
    """Refuse what JSON cannot hold or read back equal; walks without recursion."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_PARAMS_DEPTH:
                raise InvalidParams(f"params nest deeper than {MAX_PARAMS_DEPTH} levels of objects and arrays")
            if isinstance(item, dict):
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise InvalidParams(f"params keys must be strings, got {quote(k)}")
                    _check_text(k)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidParams(f"params hold {item!r}, which JSON cannot represent")
        elif not (item is None or isinstance(item, bool | int | float)):
            raise InvalidParams(f"params hold a {type(item).__name__}, which is not a JSON value")


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidParams(f"params hold the text {quote(text)}, which has a lone surrogate (not Unicode)") from None


def parse_params(text: str, *, max_bytes: int = DEFAULT_MAX_PARAMS_BYTES) -> dict[str, Any]:
    """Parse user-given JSON text into task parameters, with the same checks as on write."""
    if len(text.encode(errors="surrogatepass")) > max_bytes * 4:  # don't even parse absurd input
        raise InvalidParams(f"params are larger than the limit of {max_bytes} bytes")
    if nests_deeper(text, MAX_PARAMS_DEPTH):
        raise InvalidParams(f"params nest deeper than {MAX_PARAMS_DEPTH} levels of objects and arrays")
    try:
        value = load_json(text, unique_names=True)
    except (ValueError, RecursionError) as exc:
        raise InvalidParams(f"params are not valid JSON: {cut(str(exc), ECHO_LIMIT)}") from exc
    encode_params(value, max_bytes=max_bytes)
    assert isinstance(value, dict)
    return value


def decode_stored_params(text: object) -> dict[str, Any]:
    """The parameters a task row holds; never raises, whatever was stored.

    Rows written by tenure decode to what was given. Text that is not a JSON object,
    holds NaN or infinity, or nests deeper than :data:`MAX_STORED_PARAMS_DEPTH` (written
    by an older version, or directly into the database) is not decoded: the task shows
    ``{"$unreadable": <why>, "$stored": <the stored text>}`` instead, so every view can
    still list and show it; remove the task and add it again to repair it.
    """
    if text == "{}":
        return {}  # most tasks' (a claim decodes thousands at once): no parse for it
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode(errors="replace")
    if not isinstance(text, str):
        return _unreadable(f"are stored as {type(text).__name__}, not text", repr(text))
    if nests_deeper(text, MAX_STORED_PARAMS_DEPTH):
        return _unreadable(f"nest deeper than {MAX_STORED_PARAMS_DEPTH} levels", text)
    try:
        value = load_json(text)
    except (ValueError, RecursionError) as exc:
        return _unreadable(f"are not valid JSON ({cut(str(exc), ECHO_LIMIT)})", text)
    if not isinstance(value, dict):
        return _unreadable(f"are a JSON {type(value).__name__}, not an object", text)
    return value


def _unreadable(why: str, text: str) -> dict[str, Any]:
    return {UNREADABLE: f"the stored params {why}; shown as stored", STORED: text}


#: A JSON string literal (an unrolled loop: linear time on any input).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nests_deeper(text: str, levels: int) -> bool:
    """Whether JSON ``text`` nests objects and arrays deeper than ``levels``; no recursion.

    Brackets inside strings do not count. Only a guard before decoding: text that is not
    JSON may get either answer, and the decoder refuses it anyway.
    """
    if text.count("[") + text.count("{") <= levels:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > levels:
            return True
    return False


def load_json(text: str | bytes, *, unique_names: bool = False) -> Any:
    """``json.loads``, refusing ``NaN`` and ``Infinity`` (Python's JSON reads them; JSON has
    no such numbers). Raises ValueError (or RecursionError): callers guard depth first.

    With ``unique_names`` (what users send: request bodies, ``--params``, sync lines) an
    object that names a member twice is refused too: Python keeps the last value and
    other parsers the first, so ``{"enabled": false, "enabled": true}`` or a sync body
    with two ``"tasks"`` would be applied in a way its author may not have meant.
    """
    try:
        if unique_names:
            return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_object)
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        # Python's own message tells the reader to call sys.set_int_max_str_digits().
        raise ValueError(f"a number has more than {sys.get_int_max_str_digits()} digits") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"an object names {quote(name)} twice")
            seen.add(name)
    return obj


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
    schedule: StoredSchedule
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
class WorkerLoad:
    """How loaded a worker is, as it publishes with each lease renewal (in the renewal's
    own statement: no write of its own)."""

    #: Due runs waiting for a place under the concurrency cap (0: the worker keeps up).
    waiting: int
    #: Seconds the longest-waiting of them had waited (0 when none waits).
    oldest_waiting: float
    #: The worker's cap on runs in progress at once (``concurrency``).
    concurrency: int

    @property
    def over_capacity(self) -> bool:
        """Due runs wait for a place: the worker cannot start them all on time."""
        return self.waiting > 0


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
    #: The kinds it runs, sorted (empty for a row written before workers published them).
    kinds: tuple[str, ...] = ()
    #: Its load as of its last renewal (``heartbeat_at``); None until it publishes one (a
    #: worker that has just joined, or of a release from before schema version 6).
    load: WorkerLoad | None = None


#: Most characters of a run's error kept in its record (and logged): a handler's exception
#: may carry megabytes (a response body), more than MySQL/MariaDB's packet limit.
RUN_ERROR_LIMIT = 8_000


def storable_error(text: str) -> str:
    """A run's error text as every store can keep it: at most :data:`RUN_ERROR_LIMIT`
    characters, no NUL (PostgreSQL's text refuses it), and encodable as UTF-8 (a lone
    surrogate, from a file name that is not UTF-8, is escaped). A handler's exception is
    not ours to trust: one record the store refused stopped the worker's recorder, or sat
    in every batch after it, so that no run record was saved any more."""
    if len(text) > RUN_ERROR_LIMIT:
        text = f"{text[:RUN_ERROR_LIMIT]}… ({len(text) - RUN_ERROR_LIMIT:,} more characters cut)"
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


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
    #: The kinds each live, non-draining worker runs, by worker id.
    worker_kinds: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Number of enabled tasks of each kind (kinds with none are absent).
    enabled_by_kind: dict[str, int] = field(default_factory=dict)
    #: When the live worker that registered last did so (database clock; None: no live
    #: worker). A newcomer settles relative to it (see the rebalancer's ``_settling``).
    newest_start: float | None = None

    def runners(self, kind: str) -> list[str]:
        """The live, non-draining workers that run ``kind``, sorted."""
        return [w for w in self.live_workers if kind in self.worker_kinds.get(w, ())]


#: The scope of a pause of every kind (no kind can be spelled so).
ALL_KINDS = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """Paused work: one kind, or every kind (``kind`` None). Workers start no run of it;
    its tasks keep their owners and schedules."""

    #: The paused kind; None for a pause of the whole store.
    kind: str | None
    #: When it was paused, on the database's clock.
    since: float
    #: Who paused it: the CLI's user and host, the HTTP interface's token, or the caller's word.
    by: str
    #: Runs in progress are cancelled too (else they end on their own).
    cancel: bool

    def covers(self, kind: str) -> bool:
        """Whether this pause stops runs of ``kind``."""
        return self.kind is None or self.kind == kind


def pause_from_row(row: Any) -> Pause:
    """A :class:`Pause` from (scope, paused_at, paused_by, cancel)."""
    scope, since, by, cancel = row
    return Pause(kind=None if scope == ALL_KINDS else str(scope), since=float(since), by=str(by), cancel=bool(cancel))
