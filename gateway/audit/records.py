"""The one maker of audit records: every record the gateway and its commands write is built here.

A record is made from facts already known (a call's, a throttling window's, a prune's), never
from a half-filled object that something else goes on changing. This module also owns the two
things every record shares: the request-id scheme and the serialiser of the JSON a record holds.

    intent        a call about to be forwarded (``pending``)
    outcome       what became of it (the upstream's answer, or why there was none)
    refusal       a call the gateway answered itself (401, 403, 400, ...)
    throttled     one throttling window's refused logins, as one record
    reconciled    the settled fate of a call left open
    checkpoint    a prune: what was removed, and the hash the chain goes on from
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from gateway.audit.record import AuditRecord, Outcome, utc_timestamp

_PROCESS = os.urandom(6).hex()
_counter = itertools.count(1)


def new_request_id(kind: str = "") -> str:
    """Unique without a syscall per request: a random per-process prefix and a counter.

    Records that belong to no request (a throttling window, a prune) say what they are in front
    (``throttle-...``, ``prune-...``), so they never look like a caller's call."""
    own = f"{_PROCESS}{next(_counter):010x}"
    return f"{kind}-{own}" if kind else own


def storable(text: str) -> str:
    """``text`` as the store can keep it. A JSON ``"\\ud800"`` escape (valid JSON, sent by an
    upstream) decodes to a lone surrogate, which is not Unicode text: written as UTF-8 it fails,
    and with it the whole commit batch. Such characters are kept as backslash escapes instead
    (``\\ud800``); every other text is returned as it is (the same object)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class Number(str):
    """A JSON number kept as the upstream wrote it: one that a double cannot hold exactly (an
    integer past 64 bits, 17 digits or more, an exponent past 308), which would otherwise come
    back changed (a float), or as ``Infinity``, which is not JSON."""


_INEXACT = re.compile(rb"[0-9]{17,}|[eE][+-]?[0-9]{3,}")
"""Number text a double might not hold exactly: looked for before taking orjson's fast reading."""


def _integer(text: str) -> int | Number:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else Number(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def exact_loads(content: bytes | str) -> Any:
    """JSON, every number exactly as written (see ``Number``); raises ValueError (or
    RecursionError) for what is not JSON, ``NaN`` and ``Infinity`` included."""
    raw = content.encode() if isinstance(content, str) else content
    if not _INEXACT.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # lone surrogates: the standard library reads them
    return json.loads(raw, parse_float=Number, parse_int=_integer, parse_constant=_no_constant)


def json_default(value: Any) -> Any:
    """orjson's ``default``: an exact number as written; a BLOB, which only an edit of the file
    can put in a record, shown for what it is rather than failing the output."""
    if isinstance(value, Number):
        return orjson.Fragment(str.__str__(value))
    if isinstance(value, bytes):
        return f"[{len(value)} bytes, not text: {value[:32].hex()}]"
    raise TypeError


def json_text(value: Any, *, option: int = 0) -> str:
    """The one serialiser of the JSON a record holds (snapshots, details): compact, with orjson,
    numbers kept exactly (``Number``); lone surrogates (which orjson refuses) as ``\\u``
    escapes, so the text is storable and means exactly the value."""
    try:
        return orjson.dumps(value, default=json_default, option=option | orjson.OPT_PASSTHROUGH_SUBCLASS).decode()
    except TypeError:
        return "".join(_fallback_json(value))


def _fallback_json(value: Any) -> list[str]:
    """What orjson cannot write (a lone surrogate, nesting past its limit): compact JSON, a lone
    surrogate as its ``\\u`` escape."""
    if isinstance(value, Number):
        return [str.__str__(value)]
    if isinstance(value, dict):
        parts = ["{"]
        for index, (key, item) in enumerate(value.items()):
            parts += [("," if index else "") + _scalar(key) + ":", *_fallback_json(item)]
        return [*parts, "}"]
    if isinstance(value, list):
        parts = ["["]
        for index, item in enumerate(value):
            parts += [*([","] if index else []), *_fallback_json(item)]
        return [*parts, "]"]
    return [_scalar(value)]


def _scalar(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if storable(text) is text else json.dumps(value)


class CallFacts(Protocol):
    """What a record says about the call it belongs to (``gateway.call.Call`` holds them)."""

    request_id: str
    client_ip: str | None
    method: str
    actor: str | None
    org: str | None
    token_sha256: str | None
    token_hint: str | None
    token: str | None
    action: str | None
    resource_type: str | None
    resource: str | None
    params: dict[str, object] | None

    def latency_ms(self) -> float: ...


def intent(call: CallFacts, snapshot: str | None = None) -> AuditRecord:
    """Written and committed before anything reaches the upstream; ``snapshot`` is the resource
    as it was before the call (its pre-image) when the answer will not carry it."""
    return _of_call(call, Outcome.PENDING, latency_ms=None, snapshot=snapshot)


def outcome(
    call: CallFacts,
    outcome: Outcome,
    *,
    upstream_status: int | None = None,
    error_code: str | None = None,
    app: str | None = None,
    client_id: str | None = None,
    snapshot: str | None = None,
) -> AuditRecord:
    """What became of a forwarded call; committed before the caller hears anything."""
    return _of_call(
        call,
        outcome,
        upstream_status=upstream_status,
        error_code=error_code,
        app=app,
        client_id=client_id,
        snapshot=snapshot,
    )


def refusal(call: CallFacts, outcome: Outcome, error_code: str) -> AuditRecord:
    """A call the gateway refused itself; it never reached the upstream."""
    return _of_call(call, outcome, error_code=error_code)


def _of_call(call: CallFacts, outcome: Outcome, *, latency_ms: float | None = -1.0, **fields: Any) -> AuditRecord:
    return AuditRecord(
        request_id=call.request_id,
        time=utc_timestamp(),
        actor=call.actor,
        client_ip=call.client_ip,
        method=call.method,
        org=call.org,
        token_sha256=call.token_sha256,
        token_hint=call.token_hint,
        outcome=outcome.value,
        latency_ms=call.latency_ms() if latency_ms is not None else None,
        token=call.token,
        action=call.action,
        resource_type=call.resource_type,
        resource=call.resource,
        params=json_text(call.params) if call.params else None,
        **fields,
    )


def read(call: CallFacts, outcome: Outcome, upstream_status: int | None, error_code: str | None) -> AuditRecord:
    """A call passed through and read (``audit.reads``): one record, after the answer, with
    the path as it was logged (its secret segments masked)."""
    return _of_call(call, outcome, upstream_status=upstream_status, error_code=error_code)


def throttled(
    by: str, subject: str, count: int, start: str, end: str, error_code: str, extra: Mapping[str, int]
) -> AuditRecord:
    """One window's refused logins as one ``denied`` record (``method`` THROTTLE): a flood of
    refusals must not grow the log without bound. ``by`` says what ``subject`` is: a client
    address, a claimed user name, or "all" (the window's summary over every address)."""
    details = {"refused_attempts": count, "by": by, "window_start": start, "window_end": end, **extra}
    return AuditRecord(
        request_id=new_request_id("throttle"),
        time=utc_timestamp(),
        actor=subject if by == "user" else None,
        client_ip=subject if by == "client" else None,
        method="THROTTLE",
        org=None,
        token_sha256=None,
        token_hint=None,
        outcome=Outcome.DENIED.value,
        error_code=error_code,
        snapshot=json_text(details),
    )


def reconciled(
    intent: AuditRecord, outcome: Outcome, operator: str, evidence: Mapping[str, object], status: int | None
) -> AuditRecord:
    """The settled fate of a call left open, under the call's own request id (so it pairs with
    its intent), with who settled it and on what evidence."""
    details = {"reconciled_by": operator, "intent_id": intent.id, **evidence}
    return intent._replace(
        time=utc_timestamp(),
        outcome=outcome.value,
        upstream_status=status,
        error_code="reconciled",
        latency_ms=None,
        app=None,
        client_id=None,
        snapshot=json_text(details),
        prev_hash=None,
        hash=None,
        id=None,
    )


def checkpoint(actor: str, client_ip: str | None, details: Mapping[str, object]) -> AuditRecord:
    """A prune's record: who removed how many records, through which id, and the last removed
    hash, which ``verify`` starts from."""
    return AuditRecord(
        request_id=new_request_id("prune"),
        time=utc_timestamp(),
        actor=actor,
        client_ip=client_ip,
        method="PRUNE",
        org=None,
        token_sha256=None,
        token_hint=None,
        outcome=Outcome.PRUNED.value,
        snapshot=json_text(details),
    )
