"""``GET /``: the dashboard page, one static HTML file with its CSS and JavaScript inline.

The page holds no data: its script polls the JSON API every two seconds and builds the
tables with ``textContent`` only (task keys are free text). It loads nothing from
elsewhere, and a Content-Security-Policy allowing exactly its own inline script and
style (by hash) and requests to this origin keeps it that way.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response


@cache
def page() -> tuple[str, str]:
    """The page's HTML and the Content-Security-Policy that fits it."""
    html = resources.files("tenure.web").joinpath("static/dashboard.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        assert bodies, f"the dashboard page has no inline <{tag}>"
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, csp


async def dashboard(request: Request) -> Response:
    html, csp = page()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )
