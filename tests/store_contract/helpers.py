"""The store contract tests' shortcuts over the store API: :mod:`support.storeapi`."""

from __future__ import annotations

from support.storeapi import LONG_TTL, SHORT_TTL, add, opened, register, task_of, wait_past

__all__ = ["LONG_TTL", "SHORT_TTL", "add", "opened", "register", "task_of", "wait_past"]
