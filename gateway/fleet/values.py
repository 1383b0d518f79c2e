"""What each field of a shipped record may hold: what a sidecar's own log can produce, no more.

The collector keeps what sidecars send, and everything downstream (fleet queries, ``verify``,
``export --format ocsf``, ``GET /audit/events``) reads it back as the sidecar wrote it: a
``time`` that is not a timestamp, a ``snapshot`` that is not JSON, an ``outcome`` no gateway
writes would break those readers or hide the record from their filters later, long after the
batch was taken. So every value is checked here by type *and* form, against how the gateway
makes it (``gateway.audit.records``, ``gateway.audit.chain``, ``gateway.operations``); a batch
with one bad value is refused whole, naming the record and the field.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeGuard

import orjson

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import HINT_LENGTH
from gateway.audit.record import FIELDS, Outcome
from gateway.audit.records import exact_loads
from gateway.operations import RECORDED_ACTIONS, RECORDED_RESOURCE_TYPES

Check = Callable[[Any], str | None]
"""None when the value is one the field can hold, else what the field expects."""

MAX_ID = 2**63 - 1
_HASH = re.compile(r"[0-9a-f]{64}")
_HEX_DIGITS = "0123456789abcdef"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP method is a token (RFC 9110 section 5.6.2); PRUNE and THROTTLE are the log's own."""
_OUTCOMES = frozenset(outcome.value for outcome in Outcome)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "is not text"


def _hint(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= HINT_LENGTH:
        return None
    return f"is not a token hint (text of at most {HINT_LENGTH} characters)"


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "is not non-empty text"


def _record_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
        return None
    return f"is not a record id (a whole number from 1 to {MAX_ID})"


def is_hash(value: Any) -> TypeGuard[str]:
    """A chain hash or key check as the gateway writes it: 64 lowercase hexadecimal digits."""
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _hash(value: Any) -> str | None:
    if type(value) is str and len(value) == 64 and not value.strip(_HEX_DIGITS):  # is_hash, three a record
        return None
    return "is not a SHA-256 hash (64 lowercase hexadecimal digits)"


def is_timestamp(value: Any) -> bool:
    """A record's time as ``utc_timestamp`` writes it (``2026-11-24T18:37:00.123Z``), a real date."""
    if not isinstance(value, str) or _TIME.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _time(value: Any) -> str | None:
    return None if is_timestamp(value) else "is not a UTC time as the gateway writes it (2026-11-24T18:37:00.123Z)"


def _method(value: Any) -> str | None:
    return None if isinstance(value, str) and _METHOD.fullmatch(value) else "is not an HTTP method"


def _ip(value: Any) -> str | None:
    if not isinstance(value, str):  # ip_address() also takes a number
        return "is not an IP address"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "is not an IP address"
    return None


def _one_of(allowed: frozenset[str], what: str) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in allowed else f"is not {what} the gateway records"

    return check


def _status(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 999:
        return None
    return "is not an HTTP status (100-999)"


def _latency(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return None
    return "is not a duration in milliseconds (a number, 0 or more)"


def _json(value: Any, *, object_only: bool = False) -> str | None:
    if not isinstance(value, str):
        return "is not JSON text"
    try:
        parsed = orjson.loads(value)  # what exact_loads reads first; it knows the rest (long numbers, surrogates)
    except orjson.JSONDecodeError:
        try:
            parsed = exact_loads(value)
        except (ValueError, RecursionError):
            return "is not JSON text"
    if object_only and not isinstance(parsed, dict):
        return "is not a JSON object"
    return None


FIELD_CHECKS: dict[str, tuple[bool, Check]] = {
    "id": (False, _record_id),
    "request_id": (False, _non_empty),
    "time": (False, _time),
    "actor": (True, _text),
    "client_ip": (True, _ip),
    "method": (False, _method),
    "org": (True, _text),
    "token_sha256": (True, _hash),
    "token_hint": (True, _hint),
    "outcome": (False, _one_of(_OUTCOMES, "an outcome")),
    "upstream_status": (True, _status),
    "error_code": (True, _text),
    "latency_ms": (True, _latency),
    "app": (True, _text),
    "client_id": (True, _text),
    "snapshot": (True, _json),
    "token": (True, _text),
    "action": (True, _one_of(RECORDED_ACTIONS, "an action")),
    "resource_type": (True, _one_of(RECORDED_RESOURCE_TYPES, "a resource type")),
    "resource": (True, _text),
    "params": (True, lambda value: _json(value, object_only=True)),
    "prev_hash": (False, _hash),
    "hash": (False, _hash),
}
"""Per record field: whether it may be null, and its check. Every field has one (a test compares)."""
_CHECKS = tuple(FIELD_CHECKS[name] for name in FIELDS)


REPEATING = frozenset(
    {
        "actor",
        "client_ip",
        "method",
        "org",
        "token_hint",
        "outcome",
        "upstream_status",
        "error_code",
        "app",
        "action",
        "resource_type",
        "resource",
    }
)
"""Fields whose values recur from record to record (who, where, what): a value that passed its
check once is not checked again (``row_problem``). A collector checks every field of tens of
thousands of records a second, and parsing the same IP address each time was a tenth of it."""
_PASSED_LIMIT = 4096
_passed: tuple[set[Any] | None, ...] = tuple(set() if name in REPEATING else None for name in FIELDS)


def row_problem(row: list[Any]) -> str | None:
    """What is wrong with the first bad value of a row in ``FIELDS`` order (naming the field), or None."""
    for name, value, (nullable, check), passed in zip(FIELDS, row, _CHECKS, _passed, strict=True):
        if value is None:
            if not nullable:
                return f"has no {name}"
            continue
        if passed is not None and type(value) in (str, int) and value in passed:
            continue
        problem = check(value)
        if problem is not None:
            return f"{name} {problem}"
        if passed is not None and type(value) in (str, int) and len(passed) < _PASSED_LIMIT:
            passed.add(value)
    return None


def chain_problem(mode: Any, key_check: Any) -> str | None:
    """What is wrong with a batch's chain description: a plain chain has no key check, a keyed
    one the check of its key (``ChainKey.check``)."""
    if mode == ChainKey(None).mode:
        return None if key_check is None else "a sha256 chain has no key_check (null)"
    if mode == ChainKey(b"-").mode:
        return None if is_hash(key_check) else "an hmac-sha256 chain's key_check is 64 lowercase hexadecimal digits"
    return f"mode is one of {ChainKey(None).mode}, {ChainKey(b'-').mode}"
