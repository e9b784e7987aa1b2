"""A worker's lease settings, as a test passes them to a child program: written as flags
by :meth:`Timing.argv` (:mod:`support.cluster`), read back by :meth:`Timing.add_arguments`
and :meth:`Timing.from_args` (:mod:`support.child`), one flag per field."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

from tenure import Settings


@dataclass(frozen=True, kw_only=True)
class Timing:
    """A worker's lease settings, as passed to a child program (:mod:`support.child`).

    Each field is the flag ``--<field>`` (``_`` written ``-``) and the :class:`Settings`
    field of the same name, but ``ttl``, which is ``lease_ttl``."""

    ttl: float = 1.5
    heartbeat: float = 0.3
    poll: float = 0.25
    grace: float = 1.0
    trust_margin: float = 0.3
    #: The worker's cap on runs in progress (None: the default).
    concurrency: int | None = None

    def argv(self) -> list[str]:
        """The flags, one per field that is set (not None)."""
        given = {name: value for name, value in asdict(self).items() if value is not None}
        return [arg for name, value in given.items() for arg in (_flag(name), str(value))]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the flags to a child's parser: required, but those that may be None."""
        for f in fields(cls):
            number = int if f.name == "concurrency" else float
            parser.add_argument(_flag(f.name), type=number, required=f.default is not None, default=None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Timing:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def settings(self, worker_id: str) -> Settings:
        """The worker's settings (a field that is None keeps the setting's default)."""
        given = {("lease_ttl" if name == "ttl" else name): v for name, v in asdict(self).items() if v is not None}
        return Settings(worker_id=worker_id, **given)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
