"""Checks that every entry point shares on numbers users give, and how messages quote input.

The Python API, the CLI, the HTTP API, store URLs and the environment all read numbers
through :func:`check_number` and :func:`parse_number`, so that one value is accepted or
refused the same way wherever it comes from: never a bool, never NaN or infinity, an
``int`` of any size compared exactly (never converted to a float that overflows), and
always within a stated range with its unit.

Every message that quotes what a user gave goes through :func:`quote`, which cuts it to
about :data:`ECHO_LIMIT` characters: a 12 KB kind name is named, not echoed back.
"""

from __future__ import annotations

import math
import reprlib
from typing import Required, TypedDict, Unpack

from tenure.errors import InvalidInput

#: Characters of a user's value quoted in a message before it is cut with an ellipsis.
ECHO_LIMIT = 80
#: Longest message an entry point prints or answers, whatever went into it.
MESSAGE_LIMIT = 1000


class _Repr(reprlib.Repr):
    """A bounded repr that also survives ints too long to write out (over 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if abs(x) >= 10**self.maxlong:
            return f"<int of about {_digits(x)} digits>"
        return super().repr_int(x, level)


_repr = _Repr()
_repr.maxlevel = 2
_repr.maxstring = _repr.maxother = _repr.maxlong = ECHO_LIMIT
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 4
_repr.fillvalue = "…"


def quote(value: object, *, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, cut after about ``limit`` characters; never raises.

    A long string keeps its first ``limit`` characters and says how long it was:
    ``'xxxx…' (12288 characters)``.
    """
    try:
        if isinstance(value, str | bytes) and len(value) > limit:
            head = repr(value[:limit])
            return f"{head[:-1]}…{head[-1]} ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
            # repr() of a huge int is slow, and refused past 4300 digits.
            return f"a {'negative ' if value < 0 else ''}whole number of about {_digits(value)} digits"
        text = _repr.repr(value)
    except Exception:  # a __repr__ that fails must not turn a refusal into a crash
        return f"a {type(value).__name__}"
    return text if len(text) <= 2 * limit else text[: 2 * limit] + "…"


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` as it is (a name already checked), cut after ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "…"


def _digits(value: int) -> int:
    return int(abs(value).bit_length() * math.log10(2)) + 1


def cut(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line and at most ``limit`` characters: the last guard of every
    entry point, for messages that quote text tenure does not control (a driver's)."""
    one_line = " ".join(message.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def is_number(value: object) -> bool:
    """An ``int`` or a ``float``, and not a ``bool`` (``True`` is not one second)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(
    value: object,
    what: str,
    *,
    unit: str,
    low: float,
    high: float,
    low_open: bool = False,
    whole: bool = False,
    error: type[InvalidInput] = InvalidInput,
) -> float:
    """Return ``value`` if it is a number from ``low`` to ``high`` (``unit``), else raise ``error``.

    ``low_open`` leaves ``low`` itself out; ``whole`` asks for an ``int``. NaN and the
    infinities are out of every range. The message names ``what``, the range with its
    unit, and the value given (cut).
    """
    if not is_number(value) or (whole and not isinstance(value, int)):
        raise error(f"{what} must be {'a whole number' if whole else 'a number'} of {unit}, got {quote(value)}")
    assert isinstance(value, int | float)
    # Comparisons between an int and a float are exact in Python, whatever the int's size;
    # NaN compares false with everything, so it fails here too.
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):
        raise error(f"{what} must be {describe_range(low, high, unit, low_open=low_open)}, got {quote(value)}")
    return value


class NumberRange(TypedDict, total=False):
    """:func:`check_number`'s keywords, which :func:`parse_number` takes too."""

    unit: Required[str]
    low: Required[float]
    high: Required[float]
    low_open: bool
    whole: bool
    error: type[InvalidInput]


def parse_number(text: str, what: str, **limits: Unpack[NumberRange]) -> float:
    """:func:`check_number` on a number written as text (a URL option, a variable, a flag).

    ``whole`` numbers may be written ``8`` or ``8.0``, not ``8.5``.
    """
    unit, whole, error = limits["unit"], limits.get("whole", False), limits.get("error", InvalidInput)
    value: float
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise error(
            f"{what} must be {'a whole number' if whole else 'a number'} of {unit}, got {quote(text)}"
        ) from None
    if whole and math.isfinite(value) and value.is_integer():
        try:
            value = int(text)
        except ValueError:
            value = int(value)
    elif whole and math.isfinite(value):
        raise error(f"{what} must be a whole number of {unit}, got {quote(text)}")
    elif whole:
        the_range = describe_range(limits["low"], limits["high"], unit, low_open=limits.get("low_open", False))
        raise error(f"{what} must be {the_range}, got {quote(text)}")
    return check_number(value, what, **limits)


def describe_range(low: float, high: float, unit: str, *, low_open: bool = False) -> str:
    """``from 1 to 1000 connections``, ``positive and at most 86400 seconds``."""
    if low_open and low == 0:
        return f"positive and at most {show_number(high)} {unit}"
    if low_open:
        return f"more than {show_number(low)} and at most {show_number(high)} {unit}"
    return f"from {show_number(low)} to {show_number(high)} {unit}"


def show_number(value: float) -> str:
    """A bound as people write it: ``86400``, ``0.001``, ``2147483.647``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)
