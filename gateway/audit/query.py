"""Audit-trail filters, shared by the CLI and the HTTP API, and the parsing of their values."""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from gateway.audit.record import Outcome, utc_timestamp

DEFAULT_LIMIT = 100
_AGE = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to return, newest first. Every field narrows; ``None`` means any."""

    org: str | None = None
    token_sha256: str | None = None
    actor: str | None = None
    app: str | None = None
    client_id: str | None = None
    outcome: str | None = None
    since: str | None = None
    """Inclusive lower bound, as a normalised timestamp."""
    until: str | None = None
    """Exclusive upper bound, as a normalised timestamp."""
    limit: int | None = DEFAULT_LIMIT
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
        if not record_time or not record_id.isdigit():
            raise ValueError
        return record_time, int(record_id)
    except ValueError:
        raise ValueError(f"{text!r} is not a cursor given by a previous page") from None


def parse_time(text: str, *, now: float | None = None) -> str:
    """An ISO 8601 time or an age such as ``15m``, ``24h``, ``7d``, as a normalised timestamp.

    Raises ValueError naming the accepted forms. Times without a zone are taken as UTC.
    """
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        seconds = int(age.group(1)) * _UNIT_SECONDS[age.group(2)]
        return utc_timestamp((time.time() if now is None else now) - seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-24T18:00:00Z) nor an age (15m, 24h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return utc_timestamp(moment.timestamp())


def parse_outcome(text: str) -> str:
    try:
        return Outcome(text).value
    except ValueError:
        raise ValueError(f"{text!r} is not an outcome; expected one of {', '.join(o.value for o in Outcome)}") from None


def positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return value
