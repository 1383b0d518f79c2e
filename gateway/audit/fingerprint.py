"""How tokens are kept out of the audit log: a SHA-256 fingerprint plus a short hint.

The fingerprint lets ``audit query --token RAW`` find a record without the log holding the
token; the hint (last 4 characters, only for tokens long enough that 4 reveal little) lets a
person recognise it.
"""

from __future__ import annotations

import hashlib
from typing import Any

HINT_LENGTH = 4
MIN_LENGTH_FOR_HINT = 16
SECRET_SNAPSHOT_FIELDS = ("token", "refreshToken")


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hint(token: str) -> str:
    return token[-HINT_LENGTH:] if len(token) >= MIN_LENGTH_FOR_HINT else ""


def redacted(token: str) -> str:
    """What stands in the stored snapshot in place of a secret value."""
    shown = hint(token)
    return f"[redacted …{shown}]" if shown else "[redacted]"


def redact_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A copy of an Apigee token snapshot with its secret fields replaced, keys in their order."""
    copy = dict(snapshot)
    for key in SECRET_SNAPSHOT_FIELDS:
        value = copy.get(key)
        if isinstance(value, str):
            copy[key] = redacted(value)
    return copy
