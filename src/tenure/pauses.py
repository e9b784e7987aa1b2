"""Which work is paused, as one worker last read it from the store (issue 18).

A pause is a row in the store (:meth:`tenure.App.pause_kind`, :meth:`tenure.App.pause`);
each worker reads the rows again whenever the store's change counter moves, so it sees a
pause within one poll (at once on PostgreSQL, whose notification wakes the poll). The
worker only asks :meth:`PauseView.of` before it starts a run: the rule lives here.
"""

from __future__ import annotations

from collections.abc import Iterable

from tenure.models import Pause


class PauseView:
    """The pauses in force as last read: one for every kind, and one per kind."""

    def __init__(self) -> None:
        self._all: Pause | None = None
        self._kinds: dict[str, Pause] = {}

    def update(self, pauses: Iterable[Pause]) -> list[str]:
        """Replace what is known with ``pauses``, read from the store; say what changed
        (``"kind dispatch paused by alice@ops"``, ``"every kind resumed"``), for the log."""
        before = self._known()
        self._all, self._kinds = None, {}
        for p in pauses:
            if p.kind is None:
                self._all = p
            else:
                self._kinds[p.kind] = p
        after = self._known()
        changes = []
        for scope in sorted(before.keys() | after.keys(), key=lambda k: k or ""):
            what = "every kind" if scope is None else f"kind {scope}"
            old, new = before.get(scope), after.get(scope)
            if new is not None and (old is None or new.cancel != old.cancel):
                changes.append(f"{what} paused by {new.by}" + (", cancelling runs in progress" if new.cancel else ""))
            elif new is None and old is not None:
                changes.append(f"{what} resumed")
        return changes

    def _known(self) -> dict[str | None, Pause]:
        known: dict[str | None, Pause] = {k: p for k, p in self._kinds.items()}
        if self._all is not None:
            known[None] = self._all
        return known

    def of(self, kind: str) -> Pause | None:
        """The pause that stops ``kind`` (its own first: it says more), or None."""
        if not self._kinds and self._all is None:
            return None  # the usual case, on every run's start
        return self._kinds.get(kind) or self._all

    def cancels(self, kind: str) -> Pause | None:
        """The pause asking runs of ``kind`` in progress to be cancelled, if any."""
        for p in (self._kinds.get(kind), self._all):
            if p is not None and p.cancel:
                return p
        return None
