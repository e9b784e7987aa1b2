"""The JSON every HTTP answer is made of: a body that always encodes, and the error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from tenure.inputs import cut


class JSON(JSONResponse):
    """A JSON response that renders whatever the store held.

    Bodies are UTF-8 JSON as usual. Text that UTF-8 cannot encode (a lone surrogate, kept
    in parameters or a run's error by an older version) is sent as ``\\uXXXX`` escapes
    instead of failing the request: the client decodes the same string.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, *, entry: int | None = None
) -> JSONResponse:
    """The JSON error body every failing API call returns: ``{"error": {"code", "message"}}``,
    with ``"entry"``, the index of the item at fault, when a batch was refused for one item.

    The message is one line, cut to a readable length whatever went into it.
    """
    body: dict[str, Any] = {"code": code, "message": cut(message)}
    if entry is not None:
        body["entry"] = entry
    return JSON({"error": body}, status_code=status, headers=headers)
