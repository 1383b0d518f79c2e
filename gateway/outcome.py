"""What the upstream's answer means for the audit trail: outcome, snapshot and error code.

The caller gets the upstream's bytes untouched; everything here works on a private copy
(decompressed if need be) and never changes what is sent back.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from aiohttp import hdrs

from gateway.audit.fingerprint import fingerprint, hidden_in, redact_snapshot
from gateway.audit.record import Outcome
from gateway.audit.records import exact_loads, json_text, storable
from gateway.upstream import UpstreamReply

MAX_DECODED_BODY = 1 << 20
MAX_ERROR_CODE = 200


@dataclass(frozen=True, slots=True)
class Interpretation:
    outcome: Outcome
    snapshot: dict[str, Any] | None = None
    """The deleted token as the upstream described it (successful deletions only)."""
    error_code: str | None = None


def interpret(reply: UpstreamReply, *, carries_resource: bool = True) -> Interpretation:
    """``carries_resource``: whether a 2xx answer of this call describes the resource (false for
    the bare number of a bulk revocation). A 204 never does: its empty body is no unreadable snapshot."""
    outcome = outcome_for_status(reply.status)
    if outcome is Outcome.DELETED and (reply.status == 204 or not carries_resource):
        return Interpretation(outcome)
    content = decoded(reply.headers, reply.body)
    if outcome is Outcome.DELETED:
        snapshot = _json_object(content)
        return Interpretation(outcome, snapshot, None if snapshot is not None else "upstream.snapshot_unreadable")
    return Interpretation(outcome, None, _error_code(content))


@dataclass(frozen=True, slots=True)
class Meaning:
    """What an answer means, ready for the outcome record: every value the upstream chose is
    storable text (``escaped`` names those that had to be escaped), the snapshot redacted,
    ``client_id`` a fingerprint."""

    outcome: Outcome
    error_code: str | None
    app: str | None
    client_id: str | None
    snapshot: str | None
    escaped: tuple[str, ...] = ()


def meaning(
    reply: UpstreamReply,
    *,
    keep_raw_tokens: bool,
    deletes: bool = True,
    carries_resource: bool = True,
    hidden: frozenset[str] = frozenset(),
) -> Meaning:
    """The outcome step's reading of an answer (``interpret``), made fit to store: a 2xx is
    ``deleted`` for a delete, ``succeeded`` for any other change. The consumer key an answer
    names (``clientId``) is kept as its fingerprint: it is a credential. ``hidden``: values
    redacted wherever they are in the snapshot (the credential the call acts on)."""
    read = interpret(reply, carries_resource=carries_resource)
    if read.outcome is Outcome.DELETED and not deletes:
        read = Interpretation(Outcome.SUCCEEDED, read.snapshot, read.error_code)
    snapshot = _stored_snapshot(read.snapshot, keep_raw=keep_raw_tokens, hidden=hidden)
    error_code = read.error_code if snapshot is not None or read.snapshot is None else "upstream.snapshot_unreadable"
    if error_code is not None:  # an upstream may quote the credential in its error code: hidden, then cut
        error_code = (hidden_in(error_code, hidden) if hidden else error_code)[:MAX_ERROR_CODE]
    escaped: list[str] = []

    def kept(field: str, value: str | None) -> str | None:
        if value is None:
            return None
        text = storable(value)
        if text is not value:
            escaped.append(field)
        return text

    return Meaning(
        read.outcome,
        kept("error_code", error_code),
        kept("app", _text(read.snapshot, "app")),
        _fingerprint(_text(read.snapshot, "clientId")),
        snapshot,
        tuple(escaped),
    )


def _fingerprint(secret: str | None) -> str | None:
    return None if secret is None else fingerprint(secret)


def _text(snapshot: dict[str, Any] | None, key: str) -> str | None:
    value = snapshot.get(key) if snapshot else None
    return value if isinstance(value, str) else None


def _stored_snapshot(
    snapshot: dict[str, Any] | None, *, keep_raw: bool, hidden: frozenset[str] = frozenset()
) -> str | None:
    if snapshot is None:
        return None
    try:
        return json_text(redact_snapshot(snapshot, keep_tokens=keep_raw, values=hidden))
    except RecursionError:  # nested deeper than the stack allows: left out, and the record says so
        return None


def pre_image(reply: UpstreamReply, *, keep_raw_tokens: bool, hidden: frozenset[str] = frozenset()) -> Meaning | None:
    """A resource as a successful read of it describes it, fit to store (secrets redacted), with
    the app and consumer key it names: the pre-image of a call whose own answer will not carry
    it. None when the read did not describe it."""
    if not 200 <= reply.status < 300:
        return None
    read = meaning(reply, keep_raw_tokens=keep_raw_tokens, deletes=False, hidden=hidden)
    return read if read.snapshot is not None else None


def number_in(reply: UpstreamReply) -> int | None:
    """The number an answer's body is (Apigee's 202 to a bulk revocation: how many tokens)."""
    content = decoded(reply.headers, reply.body)
    text = content.strip() if content else b""
    return int(text) if text.isdigit() and len(text) < 19 else None


def outcome_of(status: int, *, deletes: bool) -> Outcome:
    """What the upstream's status says became of a call: a 2xx is ``deleted`` for a delete,
    ``succeeded`` for any other call."""
    outcome = outcome_for_status(status)
    return Outcome.SUCCEEDED if outcome is Outcome.DELETED and not deletes else outcome


def outcome_for_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELETED
    if status == 404:
        return Outcome.NOT_FOUND
    if status == 401:
        return Outcome.DENIED
    if status == 403:
        return Outcome.FORBIDDEN
    if 400 <= status < 500:
        return Outcome.REJECTED
    return Outcome.UPSTREAM_ERROR


def decoded(headers: Mapping[str, str], body: bytes) -> bytes | None:
    """A private copy of a body without its content encoding (an answer's, or a request's to
    read a field of it), or None when it cannot be undone safely. The bytes relayed stay as sent."""
    encoding = headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    try:
        # 32 + MAX_WBITS accepts both gzip and zlib framing, whichever the upstream used.
        decompressor = zlib.decompressobj(32 + zlib.MAX_WBITS)
        content = decompressor.decompress(body, MAX_DECODED_BODY)
    except zlib.error:
        return None
    # A body that inflates past the bound is treated as unreadable rather than read in full.
    return None if decompressor.unconsumed_tail else content


def _json_object(content: bytes | None) -> dict[str, Any] | None:
    if not content:
        return None
    try:
        value = exact_loads(content)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _error_code(content: bytes | None) -> str | None:
    """Apigee's error code from a JSON (``code``) or XML (``<Code>``) error body."""
    if not content:
        return None
    document = _json_object(content)
    if document is not None:
        code = document.get("code")
    else:
        try:
            code = ElementTree.fromstring(content).findtext("Code")
        except ElementTree.ParseError:
            return None
    return code if isinstance(code, str) else None
