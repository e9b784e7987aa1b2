"""What the stores' URLs share: tenure's own numeric options, and hiding passwords.

Each store module says which options its URL takes (:class:`NumberOption`: default,
unit, range, and why the range is what it is); :func:`number_options` reads them the
same way for every store. A value is refused, naming the option, its range and its
unit, when it is not a finite number, not whole where it must be, or outside a range
the store's server accepts once the value is converted to the server's unit (a timeout
that would round to 0 ms means "no limit" to PostgreSQL, so it is refused, not sent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tenure.errors import InvalidStoreURL
from tenure.inputs import parse_number, quote

#: Timeouts are at least a millisecond (the finest unit a server takes) ...
MIN_TIMEOUT = 0.001
#: ... and connecting waits at most an hour.
MAX_CONNECT_TIMEOUT = 3600.0


@dataclass(frozen=True, kw_only=True)
class NumberOption:
    """One numeric option of a store URL."""

    name: str
    default: float
    unit: str
    low: float
    high: float
    whole: bool = False
    #: Said after a refusal: where the range comes from.
    why: str = ""


def server_options(*, timeout_high: float, why: str) -> tuple[NumberOption, ...]:
    """The numeric options of a database server's store URL: ``pool`` (connections),
    ``idle_tx_timeout`` and ``lock_timeout`` (up to ``timeout_high`` seconds, the most the
    server takes, ``why`` saying so) and ``connect_timeout``."""
    return (
        NumberOption(name="pool", default=8, unit="connections", low=1, high=1000, whole=True),
        NumberOption(name="idle_tx_timeout", default=2.0, unit="seconds", low=MIN_TIMEOUT, high=timeout_high, why=why),
        NumberOption(name="lock_timeout", default=5.0, unit="seconds", low=MIN_TIMEOUT, high=timeout_high, why=why),
        NumberOption(name="connect_timeout", default=5.0, unit="seconds", low=MIN_TIMEOUT, high=MAX_CONNECT_TIMEOUT),
    )


def number_options(label: str, query: Sequence[tuple[str, str]], specs: Sequence[NumberOption]) -> dict[str, float]:
    """The value of every option in ``specs``, from the URL's ``query`` pairs or the default.

    Options not in ``specs`` are left to the caller. Raises :class:`InvalidStoreURL` for
    an option given twice or a value out of its range (``label`` names the URL kind).
    """
    given: dict[str, str] = {}
    for name, raw in query:
        if any(spec.name == name for spec in specs):
            if name in given:
                raise InvalidStoreURL(f"{label} URL option {name} is given more than once")
            given[name] = raw
    values: dict[str, float] = {}
    for spec in specs:
        if spec.name not in given:
            values[spec.name] = spec.default
            continue
        raw = given[spec.name]
        try:
            values[spec.name] = parse_number(
                raw,
                f"{label} URL option {spec.name}",
                unit=spec.unit,
                low=spec.low,
                high=spec.high,
                whole=spec.whole,
                error=InvalidStoreURL,
            )
        except InvalidStoreURL as exc:
            raise InvalidStoreURL(f"{exc}{'; ' + spec.why if spec.why else ''}") from None
    return values


#: A URL query option whose value is a secret: libpq takes ``password`` and ``sslpassword``
#: there as well as in the user part.
_SECRET_OPTION = re.compile(r"(?i)([?&][^=&#]*password[^=&#]*=)[^&#]*")


def hide_password(url: str) -> str:
    """``url`` with its passwords replaced by ``***`` (the user part's, and any query
    option named like a password), for messages and the dashboard."""
    url = _SECRET_OPTION.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a URL that does not parse may still hold a password
        return re.sub(r"//([^:/@]*):[^/]*@", r"//\1:***@", url)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_user_part(label: str, url: str, netloc: str) -> None:
    """Refuse a user part with more than one ``@``: we split at the last, libpq and the
    MySQL drivers at the first, and the driver's error would then quote the rest of the
    password as a host name."""
    if netloc.count("@") > 1:
        raise InvalidStoreURL(
            f"{label} URL {shown(url)} has '@' in its user or password: write it as %40 (percent-encoded)"
        )


def shown(url: str) -> str:
    """A URL as a message quotes it: password hidden, cut to a readable length."""
    return quote(hide_password(url))
