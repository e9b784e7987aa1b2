"""Property tests (Hypothesis) of the admin inputs on the HTTP API and the CLI, every store.

Whatever kind, key, params, schedule, enabled flag or limit is generated, the answer is
success or a clean refusal (HTTP: a JSON 4xx with a one-line message; CLI: exit 1 or 2
with one ``tenure: error:`` line), never a 500 or a traceback; every view still answers
afterwards; and what was accepted reads back equal (keys after NFC normalisation).

Reproducible: examples are derandomised (the same on every run) and no example
database is kept, so CI runs exactly what a developer runs. About 300 examples per
store (200 over HTTP, 100 through the CLI), a few seconds each.
"""

from __future__ import annotations

import asyncio
import json
import math
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tenure
from tenure.inputs import MESSAGE_LIMIT
from tenure.models import check_key
from tenure.web import create_app
from test_cli import CLI, cli_on

TOKEN = "s3cret-token-for-tests"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: Derandomised and database-free: CI runs the same examples as everyone else.
PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# -- what is generated ------------------------------------------------------------------------

#: Characters that make keys look alike or break things: invisible, combining, joiners,
#: controls, a lone surrogate, a virama, Arabic-script letters around a non-joiner.
ODD = (
    "\u00ad\u200e\u3164\u0301\u0303\u200d\u200c\u094d\u0915\u0645\u06cc\u034f\ufe0f\u2060\ufeff\x00\n\t \u00a0\ud800é."
)
ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
WILD_TEXT = st.text(st.one_of(st.sampled_from(ODD), ANY_CHAR, st.sampled_from("abcxyz-_./")), max_size=12)
#: Printable text, combining marks and decomposed letters included (NFC makes them one).
FINE_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
        st.sampled_from("e\u0301a\u0303 /'"),
    ),
    max_size=12,
)
HUGE_INTS = st.integers(min_value=-(10**400), max_value=10**400)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def accepted(check: Any) -> Any:
    """A filter: values ``check`` accepts (so that valid input is generated often enough)."""

    def ok(value: Any) -> bool:
        try:
            check(value)
        except tenure.errors.InvalidInput:
            return False
        return True

    return ok


def json_values(scalars: st.SearchStrategy[Any], text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)),
        max_leaves=12,
    )


class RawJSON(str):
    """Params already written as JSON text: too deep for json.dumps (or repr) to recurse into."""


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """An object nested 25 to 60 levels deep (the limit is 32), or past a thousand (as text)."""
    value: Any = draw(st.one_of(st.none(), st.integers()))
    levels = draw(st.one_of(st.integers(24, 59), st.integers(1000, 3000)))
    array = draw(st.booleans())
    if levels >= 1000:
        opening, closing = ("[", "]") if array else ('{"x":', "}")
        return RawJSON('{"deep": ' + opening * levels + json.dumps(value) + closing * levels + "}")
    for _ in range(levels):
        value = [value] if array else {"x": value}
    return {"deep": value}


#: Integers no float can hold, both signs.
BEYOND_FLOATS = st.one_of(st.integers(10**309, 10**400), st.integers(-(10**400), -(10**309)))

FINE = {
    "kind": st.just("dispatch"),
    "key": FINE_TEXT.filter(accepted(check_key)),
    "schedule": st.one_of(
        st.none(),
        st.one_of(st.floats(0.01, 366 * 86400.0), st.integers(1, 366 * 86400)).map(lambda e: ("every", e)),
        st.sampled_from(["* * * * *", "*/5 * * * *", "0 6 * * MON", "30 1 1 * *", "0 0 29 2 *"]).map(
            lambda c: ("cron", c)
        ),
    ),
    "params": st.one_of(
        st.none(),
        st.dictionaries(
            FINE_TEXT,
            json_values(
                st.one_of(
                    st.none(), st.booleans(), HUGE_INTS, st.floats(allow_nan=False, allow_infinity=False), FINE_TEXT
                ),
                FINE_TEXT,
            ),
            max_size=4,
        ),
    ),
    "enabled": st.one_of(st.none(), st.booleans()),
    "limit": st.integers(1, 10_000),
}
WILD = {
    "kind": st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,70}", fullmatch=True), WILD_TEXT),
    "key": st.one_of(WILD_TEXT, st.sampled_from(["k" * 201, " x", "soft\u00adhyphen", "\u3164", ".", "a/../b"])),
    "schedule": st.one_of(
        st.one_of(BEYOND_FLOATS, HUGE_INTS, ANY_FLOAT, st.booleans(), WILD_TEXT).map(lambda e: ("every", e)),
        st.one_of(
            st.sampled_from(["0 0 30 2 *", "61 * * * *", "@hourly", "* * * * * *"]),
            st.lists(
                st.sampled_from(["*", "*/7", "0", "1-5", "MON", "99", "a", "L", "?", "1,2"]), min_size=3, max_size=7
            ).map(" ".join),
            WILD_TEXT,
        ).map(lambda c: ("cron", c)),
    ),
    "params": st.one_of(
        deep(),
        json_values(st.one_of(st.none(), st.booleans(), HUGE_INTS, ANY_FLOAT, WILD_TEXT), WILD_TEXT),
        st.just({"big": 10**5000}),
    ),
    "enabled": st.one_of(st.integers(), WILD_TEXT, ANY_FLOAT),
    "limit": st.one_of(BEYOND_FLOATS, HUGE_INTS, ANY_FLOAT, st.booleans(), WILD_TEXT, BEYOND_FLOATS.map(str)),
}


FIELDS = ("kind", "key", "schedule", "params", "enabled", "limit")


@st.composite
def admin_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Kind, key, schedule, params, enabled and a runs limit, each either one a user would
    give (fine) or anything at all (wild): all fine, one field wild (so that its checks
    are reached past the others'), or each field wild or not."""
    mode = draw(st.sampled_from(["all fine", "one wild", "any wild"]))
    if mode == "one wild":
        wild = {draw(st.sampled_from(FIELDS))}
    elif mode == "any wild":
        wild = {name for name in FIELDS if draw(st.booleans())}
    else:
        wild = set()
    return {name: draw(WILD[name] if name in wild else FINE[name]) for name in FIELDS}


# -- the HTTP API -----------------------------------------------------------------------------


def assert_clean_http(r: httpx.Response, allowed: set[int]) -> None:
    assert r.status_code in allowed, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    if r.status_code >= 400:
        message = body["error"]["message"]
        assert "\n" not in message
        assert len(message) <= MESSAGE_LIMIT


@pytest.fixture
def http_runner(store_url: str) -> Iterator[tuple[asyncio.Runner, tenure.App, httpx.AsyncClient]]:
    """One event loop for all examples, an App registering ``dispatch``, and a client."""
    with asyncio.Runner() as runner:
        app = tenure.App(store_url)

        @app.task("dispatch", every=5.0)
        async def dispatch(ctx: tenure.Context) -> None:  # pragma: no cover - never run here
            pass

        runner.run(app.open(migrate=True))
        asgi = create_app(app, tenure.Settings(admin_token=TOKEN))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=asgi, raise_app_exceptions=False), base_url="http://t"
        )
        try:
            yield runner, app, client
        finally:
            runner.run(client.aclose())
            runner.run(app.close())


def task_path(kind: str, key: str) -> str:
    return f"/api/tasks/{url_quote(kind, safe='')}/{url_quote(key, safe='', errors='surrogatepass')}"


def addressable(name: str) -> bool:
    """Whether a URL path can carry ``name``: clients resolve '.' and '..' segments, and an
    empty segment is another URL (the API refuses such names, so none is ever stored)."""
    return bool(name) and not any(part in (".", "..") for part in name.split("/"))


def body_text(body: dict[str, Any]) -> str:
    """The body as a client might send it: NaN and Infinity too, huge ints written out."""
    params = body.get("params")
    rest = {k: v for k, v in body.items() if k != "params"}
    if isinstance(params, RawJSON):
        return json.dumps(rest, allow_nan=True)[:-1] + ', "params": ' + params + "}"
    try:
        return json.dumps(body, allow_nan=True)
    except ValueError:  # an int beyond str()'s 4300 digits
        return json.dumps(rest, allow_nan=True)


def sent(body: dict[str, Any], text: str) -> dict[str, Any]:
    """What the server was sent, decoded (deep params stay as their text)."""
    if isinstance(body.get("params"), RawJSON):
        return body
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def test_http_admin_inputs(http_runner: tuple[asyncio.Runner, tenure.App, httpx.AsyncClient]) -> None:
    runner, _, http = http_runner

    @settings(PROPERTY, max_examples=200)
    @given(admin_inputs())
    def check(given: dict[str, Any]) -> None:
        body: dict[str, Any] = {"kind": given["kind"], "key": given["key"]}
        if given["schedule"] is not None:
            body[given["schedule"][0]] = given["schedule"][1]
        for name in ("params", "enabled"):
            if given[name] is not None:
                body[name] = given[name]
        runner.run(one_http_example(http, body, given["limit"]))

    check()


async def one_http_example(http: httpx.AsyncClient, body: dict[str, Any], limit: Any) -> None:
    text = body_text(body)
    body = sent(body, text)
    kind, key = body["kind"], body["key"]
    r = await http.post("/api/tasks", content=text, headers=AUTH)
    assert_clean_http(r, {201, 400, 409})
    event(f"POST /api/tasks: {r.status_code} {r.json()['error']['code'] if r.status_code >= 400 else ''}")
    if r.status_code == 201:
        added = r.json()
        assert added["kind"] == kind
        assert added["key"] == unicodedata.normalize("NFC", key)
        assert added["params"] == body.get("params", {})
        assert added["enabled"] == body.get("enabled", True)
        if "every" in body:
            assert added["every"] == float(body["every"])
        elif "cron" in body:
            assert added["cron"] == body["cron"]
        shown = await http.get(task_path(kind, key))  # by the spelling given
        assert_clean_http(shown, {200})
        stable = ("kind", "key", "every", "cron", "params", "enabled", "term", "version", "created_at")
        assert {k: shown.json()[k] for k in stable} == {k: added[k] for k in stable}
    elif addressable(kind) and addressable(key):
        shown = await http.get(task_path(kind, key))
        assert_clean_http(shown, {200, 400, 404})
    runs = await http.get("/api/runs", params={"kind": kind, "key": key, "limit": str(limit)})
    assert_clean_http(runs, {200, 400})
    for path in ("/api/tasks", "/api/status", "/api/failovers", "/api/workers"):
        assert_clean_http(await http.get(path), {200})
    assert (await http.get("/metrics")).status_code == 200
    if r.status_code == 201:
        assert_clean_http(await http.delete(task_path(kind, key), headers=AUTH), {200})


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CLI:
    return cli_on(store_url, capsys, monkeypatch, tmp_path, report=False)


def params_text(value: Any) -> str:
    if isinstance(value, RawJSON):
        return value
    try:
        return json.dumps(value, allow_nan=True)
    except ValueError:  # an int beyond str()'s 4300 digits
        return '{"big": ' + "9" * 5000 + "}"


def as_arg(value: Any) -> str:
    """A generated value as a user would type it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**300:
        return "9" * 400
    return repr(value) if isinstance(value, float) else str(value)


def assert_clean_cli(code: int, err: str) -> None:
    assert code in (0, 1, 2), (code, err)
    if code == 0:
        return
    assert err.startswith("tenure: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert len(err) <= MESSAGE_LIMIT + 100


def test_cli_admin_inputs(cli: CLI) -> None:
    @settings(PROPERTY, max_examples=100)
    @given(admin_inputs(), st.one_of(st.none(), st.none(), st.none(), WILD_TEXT))
    def check(given: dict[str, Any], params_as_text: str | None) -> None:
        kind, key, schedule, limit = given["kind"], given["key"], given["schedule"], given["limit"]
        params = params_text(given["params"]) if given["params"] is not None else params_as_text
        disabled = given["enabled"] is False
        argv = ["tasks", "add", kind, key]
        if schedule is not None:
            argv += [f"--{schedule[0]}", as_arg(schedule[1])]
        if params is not None:
            argv += ["--params", params]
        if disabled:
            argv.append("--disabled")
        added = cli(*argv)
        assert_clean_cli(added.code, added.err)
        event(f"tasks add: exit {added.code}")
        if added.code == 0:
            shown = cli("tasks", "show", kind, key, "--json")
            assert (shown.code, shown.err) == (0, ""), shown
            task = shown.json()
            assert (task["kind"], task["key"]) == (kind, unicodedata.normalize("NFC", key))
            assert task["params"] == (json.loads(params) if params is not None else {})
            assert task["enabled"] is not disabled
            if schedule is not None and schedule[0] == "every":
                assert math.isclose(task["every"], float(as_arg(schedule[1])))
            elif schedule is not None:
                assert task["cron"] == schedule[1]
        runs = cli("runs", "--kind", kind, "--key", key, "--limit", as_arg(limit), "--json")
        assert_clean_cli(runs.code, runs.err)
        for argv in (["tasks", "list", "--json"], ["status", "--json"]):
            listed = cli(*argv)
            assert (listed.code, listed.err) == (0, ""), listed
        if added.code == 0:
            removed = cli("tasks", "remove", kind, key)
            assert (removed.code, removed.err) == (0, ""), removed

    check()
