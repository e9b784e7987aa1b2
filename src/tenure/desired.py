"""Desired state: the tasks a kind should have, given all at once.

The business knows which cities (shops, tenants…) exist now; :meth:`tenure.App.sync_tasks`
makes a kind's tasks match that list in one store transaction: it adds what is missing,
updates what differs, and disables (or removes) what is absent. Running it again with
the same list changes nothing.

- :class:`TaskSpec`: what one task should be (parameters, a schedule, enabled), as a
  caller gives it; a key maps to one, or simply to its parameters.
- :func:`entry_from_json`: one entry as JSON (a line of ``tenure tasks sync``, an item of
  ``PUT /api/kinds/{kind}/tasks``) to its key and spec, refusing unknown fields and
  values of the wrong JSON type. Ranges and the rest are the App's to check.
- :class:`DesiredTask`: one task as the store receives it, validated and encoded.
- :class:`SyncResult`: what a sync did (or, dry, would do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenure.errors import InvalidInput
from tenure.inputs import quote
from tenure.schedule import Schedule

#: Fields of one entry given as JSON: ``key`` is required, the others optional.
ENTRY_FIELDS = ("key", "params", "every", "cron", "enabled")
#: The categories of a sync's result, in the order they are shown.
CHANGES = ("added", "updated", "disabled", "removed")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What one task of a desired state should be.

    ``params`` (a JSON object) default to ``{}``; the schedule is ``every`` or ``cron``,
    else the kind's default. A task given as desired ends ``enabled`` (True by default);
    ``enabled=False`` keeps one stored but idle.
    """

    params: Mapping[str, Any] | None = None
    every: float | None = None
    cron: str | None = None
    enabled: bool = True


def entry_from_json(entry: object) -> tuple[str, TaskSpec]:
    """``{"key": …, "params": {…}, "every": 5 | "cron": "…", "enabled": true}`` to
    (key, spec). Raises :class:`~tenure.errors.InvalidInput` naming the field at fault."""
    if not isinstance(entry, dict):
        raise InvalidInput(f"a task must be a JSON object with a key, got {_json_type(entry)}")
    unknown = sorted(set(entry) - set(ENTRY_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {quote(unknown[0])}; fields are {', '.join(ENTRY_FIELDS)}")
    if "key" not in entry:
        raise InvalidInput("missing field 'key'")
    key, params, every, cron = entry["key"], entry.get("params"), entry.get("every"), entry.get("cron")
    enabled = entry.get("enabled", True)
    if not isinstance(key, str):
        raise InvalidInput(f"key must be a string, got {_json_type(key)}")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput(f"params must be a JSON object, got {_json_type(params)}")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int | float)):
        raise InvalidInput(f"every must be a number of seconds, got {_json_type(every)}")
    if cron is not None and not isinstance(cron, str):
        raise InvalidInput(f"cron must be a string, got {_json_type(cron)}")
    if not isinstance(enabled, bool):
        raise InvalidInput(f"enabled must be true or false, got {_json_type(enabled)}")
    return key, TaskSpec(params=params, every=every, cron=cron, enabled=enabled)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if type(value) in names:
        shown = "" if isinstance(value, dict | list) or value is None else f" {quote(value)}"
        return names[type(value)] + shown
    if isinstance(value, int | float):
        return f"the number {quote(value)}"
    return type(value).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredTask:
    """One task of a desired state, validated: a normalised key, a schedule, parameters
    encoded as tenure stores them, and whether it is enabled."""

    key: str
    schedule: Schedule
    params_json: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """What a sync changed, or with ``dry_run`` would change: the keys of the tasks added,
    updated (schedule, parameters or enabled), disabled and removed, by key, as stored;
    and how many tasks were left as they were (present and as desired, or absent and
    already disabled)."""

    kind: str
    added: tuple[str, ...]
    updated: tuple[str, ...]
    disabled: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int
    dry_run: bool

    def counts(self) -> dict[str, int]:
        """``{"added", "updated", "disabled", "removed", "unchanged"}``."""
        return {name: len(getattr(self, name)) for name in CHANGES} | {"unchanged": self.unchanged}

    @property
    def changed(self) -> bool:
        return any(getattr(self, name) for name in CHANGES)
