"""The audit record: one source of truth for its fields, their order and the outcomes."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, NamedTuple


class Outcome(StrEnum):
    PENDING = "pending"
    """The intent, committed before the call is forwarded; an outcome record follows it."""
    DELETED = "deleted"
    """A delete the upstream accepted (2xx): the token, key, code, app or developer is gone."""
    SUCCEEDED = "succeeded"
    """Any other call the upstream accepted (2xx): a revoke, approve, status or scope change, a
    creation; ``action`` says which."""
    NOT_FOUND = "not_found"
    DENIED = "denied"
    """Missing or wrong credentials (401), at the gateway or the upstream."""
    FORBIDDEN = "forbidden"
    """Valid credentials without the right to act on this organisation (403)."""
    REJECTED = "rejected"
    """A malformed request (4xx) that was never forwarded, or that the upstream refused."""
    UPSTREAM_ERROR = "upstream_error"
    """The upstream failed (5xx), could not be reached, or did not answer in time."""
    UNKNOWN = "unknown"
    """The call was sent but no status came back (read timeout, reset, malformed reply): the
    token may or may not be deleted. Never retried; ``gateway audit reconcile`` settles it."""
    NOT_DELETED = "not_deleted"
    """Reconciliation found that a pending deletion did not happen: the token still existed."""
    PRUNED = "pruned"
    """A retention checkpoint: older records were removed; it holds the last removed hash."""


class AuditRecord(NamedTuple):
    """One audit event. A tuple, because the request path makes two per call and the store
    writes them as rows: creation and binding cost next to nothing."""

    request_id: str
    time: str
    actor: str | None
    client_ip: str | None
    method: str
    org: str | None
    token_sha256: str | None
    token_hint: str | None
    outcome: str
    upstream_status: int | None = None
    error_code: str | None = None
    latency_ms: float | None = None
    app: str | None = None
    client_id: str | None = None
    snapshot: str | None = None
    """The upstream's JSON, re-serialised compactly, secrets redacted unless opted in."""
    token: str | None = None
    """The raw token, only when ``audit.store_raw_tokens`` is true."""
    action: str | None = None
    """What the call does, normalised: ``token.delete``, ``key.revoke``, ``app.approve``...
    (schema 4; records before it have none)."""
    resource_type: str | None = None
    """What it acts on: ``access_token``, ``consumer_key``, ``app``, ``developer``..."""
    resource: str | None = None
    """Which one, as its path below the organisation, with a secret in it (a token, a key) left
    as its placeholder (``developers/alice@example.com/apps/app1/keys/{key}``): the secret's
    fingerprint and hint are ``token_sha256`` and ``token_hint``."""
    params: str | None = None
    """The call's parameters that change what it does (``cascade``, ``app``, ``enduser``...), and
    notes such as a pre-image that could not be read, as a JSON object."""
    prev_hash: str | None = None
    """The previous record's hash (the genesis value for the first): set when appended."""
    hash: str | None = None
    """SHA-256 (HMAC-SHA-256 with a chain key) over prev_hash and this record's content."""
    id: int | None = None
    """Assigned by the store when the record is appended, in order, without gaps."""


FIELDS: tuple[str, ...] = ("id", *AuditRecord._fields[:-1])
"""Field order everywhere: the table's columns, JSON keys and CSV headers."""
Row = tuple[Any, ...]
"""A record as a plain row in ``FIELDS`` order: how long walks (verify, export) carry it."""
CONTENT_FIELDS: tuple[str, ...] = AuditRecord._fields[: AuditRecord._fields.index("prev_hash")]
"""What a record says, as the request path makes it: everything but its place in the chain."""
EXTENSION_FIELDS: tuple[str, ...] = ("action", "resource_type", "resource", "params")
"""The fields schema 4 added. A record that has none of them is hashed as before (see
``gateway.audit.chain``), so logs written before them still verify."""
STORED_FIELDS: tuple[str, ...] = AuditRecord._fields[:-1]
"""What a store writes: everything but the id, which it assigns."""

_second = -1
_second_text = ""


def utc_timestamp(epoch: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-24T18:37:00.123Z``; sorts as text."""
    global _second, _second_text
    millis = int((time.time() if epoch is None else epoch) * 1000)
    second = millis // 1000
    if second != _second:  # formatting the date is the costly part; it changes once a second
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second_text}.{millis % 1000:03d}Z"
