"""Bearer-token checks of the HTTP interface.

Actions that change state always need ``Authorization: Bearer <token>`` matching the
configured admin token (``TENURE_ADMIN_TOKEN``); reads need it only when reads are
protected. Answers, in the order checked:

- no token configured on the server: actions are refused (403), whatever is sent, with
  a message saying how to configure one; protected reads too;
- no ``Authorization: Bearer`` header: 401, with ``WWW-Authenticate: Bearer``;
- a token that does not match: 403.

Tokens are compared in constant time and never logged, echoed or stored. A token must
be printable ASCII (settings refuse any other at start-up): header values travel as
bytes that servers decode as Latin-1, so no request could present anything else.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

from tenure.web.responses import error


def refusal(request: Request, token: str | None, *, what: str) -> JSONResponse | None:
    """None if ``request`` carries the admin ``token``; else the response refusing it.

    ``what`` names the refused thing in messages ("actions", "reads").
    """
    if not token:
        return error(
            403,
            "no_admin_token",
            f"{what} are disabled: this server has no admin token; set TENURE_ADMIN_TOKEN "
            "in its environment and restart it",
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return error(
            401,
            "unauthorized",
            f"{what} need the header 'Authorization: Bearer <token>' with the admin token",
            headers={"WWW-Authenticate": 'Bearer realm="tenure"'},
        )
    # Header values arrive decoded as Latin-1, so only an ASCII token can ever match what
    # a client sends: Settings refuse any other at start-up (TENURE_ADMIN_TOKEN).
    if not hmac.compare_digest(given.encode(), token.encode()):
        return error(403, "forbidden", "the bearer token does not match the admin token")
    return None
