"""Log formats: human by default, JSON lines by option.

tenure logs through stdlib ``logging`` (loggers under ``tenure.``) and puts the worker,
task kind, key and term on each record where they apply (``extra=``); both formats
show them. Store URLs are logged through ``display_url``, which hides passwords.
"""

from __future__ import annotations

import json
import logging
import time

_CONTEXT_FIELDS = ("worker", "kind", "key", "term")


class HumanFormatter(logging.Formatter):
    """``2026-11-27 10:00:00.123 INFO tenure.worker claimed (new) worker=w1 task=dispatch/bcn term=7``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname} {record.name} {record.getMessage()}"
        ctx = _context(record)
        if "worker" in ctx:
            line += f" worker={ctx['worker']}"
        if "kind" in ctx:
            line += f" task={ctx['kind']}/{ctx.get('key', '')} term={ctx.get('term', '')}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the task context."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _context(record: logging.LogRecord) -> dict[str, str]:
    return {f: str(getattr(record, f)) for f in _CONTEXT_FIELDS if getattr(record, f, None) is not None}


def configure(*, json_lines: bool = False, level: int = logging.INFO) -> None:
    """Send tenure's logs (and the root logger's) to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if json_lines else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
