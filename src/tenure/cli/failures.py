"""How a command that failed says so: one line on stderr, ``tenure: error: ...``, and its
exit status (2 for the user's mistake, 1 for anything else tenure reports, 130 for an
interrupt). Never a traceback for an error tenure raised on purpose."""

from __future__ import annotations

import sys

from tenure.errors import InvalidInput, TenureError
from tenure.inputs import cut

from .parser import PROG


def error_line(message: str) -> None:
    """Print the one line a failed command says on stderr."""
    sys.stderr.write(f"{PROG}: error: {cut(message)}\n")


def report(exc: BaseException) -> int | None:
    """Say why a command failed and return its exit status, for the errors tenure raises
    on purpose (and an interrupt); None for any other, whose traceback is the report."""
    if isinstance(exc, TenureError):
        error_line(str(exc))
        return 2 if isinstance(exc, InvalidInput) else 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return None
