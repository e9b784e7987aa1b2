"""The input of ``tenure tasks sync``: a kind's desired tasks as JSON lines.

One task a line, ``{"key": "lisbon", "params": {...}, "every": 5}`` or ``"cron": "…"``,
optionally ``"enabled": false``; blank lines are skipped. Every line is checked before
anything is applied, and a refusal names its line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from tenure.desired import TaskSpec, entry_from_json
from tenure.errors import InvalidInput
from tenure.inputs import quote
from tenure.models import MAX_PARAMS_DEPTH, load_json, nests_deeper


@contextmanager
def opened(path: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading bytes; ``-`` is standard input."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the caller is done
    except OSError as exc:
        raise InvalidInput(f"cannot read {quote(path)}: {exc.strerror or exc}") from None
    with f:
        yield f


def read_lines(f: BinaryIO, *, max_line_bytes: int) -> tuple[dict[str, TaskSpec], dict[str, int]]:
    """The tasks the lines of ``f`` give, by key as given, and the line each key is on.

    No more than ``max_line_bytes + 1`` bytes of a line are ever read: a longer line is
    refused there, not read whole into memory first (``/dev/zero``, a file without
    newlines, a stream that never ends one).
    """
    specs: dict[str, TaskSpec] = {}
    line_of: dict[str, int] = {}
    number = 0
    try:
        for number, raw in enumerate(_bounded_lines(f, max_line_bytes + 1), start=1):
            if len(raw) > max_line_bytes:
                raise InvalidInput(
                    f"line {number} is more than {max_line_bytes} bytes long; the limit is {max_line_bytes}"
                )
            key, spec = _entry(raw, number)
            if key is None:
                continue
            if key in line_of:
                raise InvalidInput(f"line {number}: key {quote(key)} is already on line {line_of[key]}")
            specs[key], line_of[key] = spec, number
    except OSError as exc:  # a read error half-way (a FIFO gone, an I/O error)
        raise InvalidInput(f"reading line {number + 1} failed: {exc.strerror or exc}") from None
    return specs, line_of


def _bounded_lines(f: BinaryIO, most: int) -> Iterator[bytes]:
    """The lines of ``f``, each cut after ``most`` bytes (the rest would come as more lines)."""
    while True:
        line = f.readline(most)
        if not line:
            return
        yield line


def _entry(raw: bytes, number: int) -> tuple[str | None, TaskSpec]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"line {number} is not UTF-8 text (byte {exc.start + 1})") from None
    if number == 1:
        text = text.removeprefix("\ufeff")  # the byte order mark some editors begin a UTF-8 file with
    text = text.strip()
    if not text:
        return None, TaskSpec()
    # The line is an object holding params: one level more than params may have.
    if nests_deeper(text, MAX_PARAMS_DEPTH + 1):
        raise InvalidInput(f"line {number}: params nest deeper than {MAX_PARAMS_DEPTH} levels")
    try:
        value = load_json(text, unique_names=True)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"line {number} is not valid JSON: {exc}") from None
    try:
        return entry_from_json(value)
    except InvalidInput as exc:
        raise InvalidInput(f"line {number}: {exc}") from None
