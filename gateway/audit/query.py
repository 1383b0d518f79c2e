"""Audit-trail filters, shared by the CLI and the HTTP API, and the parsing of their values.

Every parser here takes text from anyone (a command line, a query string) and either returns a
value the store can use or raises ValueError saying what is wrong: numbers are plain ASCII
digits within SQLite's 64-bit integers (``str.isdigit`` is true for ``²``, which ``int`` then
refuses), and times stay within the years the log can hold.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.audit.record import Outcome, utc_timestamp

DEFAULT_LIMIT = 100
MAX_INTEGER = 2**63 - 1
"""The largest integer SQLite stores (and binds: a larger one is an OverflowError)."""
_AGE = re.compile(r"([0-9]+)([smhdw])")
_AGE_DIGITS = 12
"""Enough for any age (a trillion weeks); int() and the clock are spared a megabyte of digits."""
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EARLIEST = 0.0
"""1970-01-01: no record is older, so an earlier time selects the same records."""
LATEST = 253402300799.999
"""9999-12-31T23:59:59.999Z: the last time the record's text timestamps can spell (and sort)."""
_SHOWN = 40


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to return, newest first. Every field narrows; ``None`` means any."""

    org: str | None = None
    token_sha256: str | None = None
    actor: str | None = None
    app: str | None = None
    client_id: str | None = None
    """The consumer key as given: matches its fingerprint (what records since schema 4 hold) or,
    in older records, the key itself."""
    outcome: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource: str | None = None
    since: str | None = None
    """Inclusive lower bound, as a normalised timestamp."""
    until: str | None = None
    """Exclusive upper bound, as a normalised timestamp."""
    limit: int | None = DEFAULT_LIMIT
    after_id: int | None = None
    """Only records after this id (what a shipper has not sent yet)."""
    before: tuple[str, int] | None = None
    """Keyset cursor (time, id): only records that come after it, newest first."""
    orgs: frozenset[str] | None = None
    """Scope: only records of these organisations (None: every one)."""


def encode_cursor(record_time: str, record_id: int) -> str:
    """An opaque cursor for the page after the record with this time and id."""
    return base64.urlsafe_b64encode(f"{record_time}|{record_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        record_time, _, record_id = raw.partition("|")
        if not record_time:
            raise ValueError
        return record_time, positive_int(record_id)
    except ValueError:
        raise ValueError(f"{quoted(text)} is not a cursor given by a previous page") from None


def quoted(text: str) -> str:
    """``text`` quoted for a message, cut short: a refusal need not repeat a megabyte."""
    return repr(text) if len(text) <= _SHOWN else f"{text[:_SHOWN]!r}..."


def parse_time(text: str, *, now: float | None = None) -> str:
    """An ISO 8601 time or an age such as ``15m``, ``24h``, ``7d``, as a normalised timestamp.

    Raises ValueError naming the accepted forms. Times without a zone are taken as UTC. Times
    before 1970 (no record is older) are taken as 1970, so ``99999d`` means "all"; times past
    the year 9999 as its end.
    """
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        if len(age.group(1)) > _AGE_DIGITS:
            raise ValueError(f"{quoted(text)}: an age has at most {_AGE_DIGITS} digits")
        seconds = int(age.group(1)) * _UNIT_SECONDS[age.group(2)]
        return utc_timestamp(max(EARLIEST, (time.time() if now is None else now) - seconds))
    try:
        if not value.isascii():  # fromisoformat would read other scripts' digits
            raise ValueError
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        epoch = moment.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(
            f"{quoted(text)} is neither an ISO 8601 time (2026-11-24T18:00:00Z) nor an age (15m, 24h, 7d)"
        ) from None
    return utc_timestamp(min(max(EARLIEST, epoch), LATEST))


def parse_outcome(text: str) -> str:
    try:
        return Outcome(text).value
    except ValueError:
        raise ValueError(
            f"{quoted(text)} is not an outcome; expected one of {', '.join(o.value for o in Outcome)}"
        ) from None


def whole_number(text: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
    """Plain ASCII digits (no sign, no spaces) for a number from ``minimum`` to ``maximum``."""
    digits = text.isascii() and text.isdigit() and len(text) <= 20  # int() never reads a megabyte
    value = int(text) if digits else -1
    if not minimum <= value <= maximum:
        raise ValueError(f"{quoted(text)} is not a whole number from {minimum} to {maximum}")
    return value


def positive_int(text: str) -> int:
    """A record id or a count of records: 1 to SQLite's largest integer."""
    try:
        return whole_number(text, minimum=1)
    except ValueError:
        raise ValueError(f"{quoted(text)} is not a positive whole number (at most {MAX_INTEGER})") from None


def parse_sha256(text: str) -> str:
    """A SHA-256 fingerprint, as 64 hex digits in either case; returned in lower case."""
    if len(text) != 64 or not text.isascii() or any(c not in "0123456789abcdef" for c in text.lower()):
        raise ValueError(f"{quoted(text)} is not a SHA-256 fingerprint (64 hex digits)")
    return text.lower()
