"""One request's facts, filled in by the steps of the request path as they become known.

They are what the call's audit records are made of (``gateway.audit.records``) and what its one
log line says. Nothing here writes or logs on its own, except ``log``, which the handler calls
once, when the answer is settled.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from aiohttp import web

from gateway.audit.fingerprint import fingerprint, hint
from gateway.audit.records import new_request_id
from gateway.logs import Logger

REQUEST_ID = "X-Request-ID"
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""What a caller's X-Request-ID may be to be kept (anything else could forge log fields)."""


@dataclass(slots=True)
class Call:
    request_id: str
    """The gateway's own id: unique, it pairs the call's intent and outcome in the audit log."""
    public_id: str
    """The id the caller and the upstream see: the caller's X-Request-ID if usable, else ``request_id``."""
    ids: dict[str, str]
    """The ids every log line of this request carries."""
    started: float
    client_ip: str | None
    method: str
    route: str = "other"
    """What the request was for, as metrics and the log name it: an operation's name, or "other"."""
    path: str | None = None
    """For a path the gateway does not serve: the path as logged, masked (``gateway.redact``)."""
    actor: str | None = None
    org: str | None = None
    token_sha256: str | None = None
    token_hint: str | None = None
    token: str | None = None
    """The raw token, kept only when ``audit.store_raw_tokens`` is true."""
    action: str | None = None
    resource_type: str | None = None
    resource: str | None = None
    params: dict[str, object] | None = None
    """What changes what the call does (``cascade``, ``app``...), and notes (a missing pre-image)."""
    outcome: str | None = None
    error_code: str | None = None
    upstream_status: int | None = None
    escaped: tuple[str, ...] = ()
    """Fields whose upstream value was not Unicode text, stored with backslash escapes."""

    @classmethod
    def begin(cls, request: web.BaseRequest) -> Call:
        own = new_request_id()
        given = request.headers.get(REQUEST_ID)
        if given is not None and _CALLER_REQUEST_ID.fullmatch(given):
            return cls(
                own,
                given,
                {"request_id": given, "audit_request_id": own},
                time.perf_counter(),
                request.remote,
                request.method,
            )
        return cls(own, own, {"request_id": own}, time.perf_counter(), request.remote, request.method)

    def target(self, org: str | None, secret: str | None, *, keep_raw: bool) -> None:
        """What the call acts on; the secret only as fingerprint and hint, unless kept raw."""
        self.org = org
        if secret is not None:
            self.token_sha256, self.token_hint = fingerprint(secret), hint(secret)
            self.token = secret if keep_raw else None

    def note(self, name: str, value: object) -> None:
        """One more parameter or note for the call's records."""
        self.params = {**(self.params or {}), name: value}

    def latency_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def log(self, log: Logger, status: int) -> None:
        """The request's one log line: the token appears only as its hint."""
        log.info(
            "request",
            **self.ids,
            method=self.method,
            path=self.path,
            client_ip=self.client_ip,
            actor=self.actor,
            org=self.org,
            action=self.action,
            token_hint=self.token_hint,
            status=status,
            outcome=self.outcome,
            upstream_status=self.upstream_status,
            error_code=self.error_code,
            latency_ms=self.latency_ms(),
            **({"escaped": list(self.escaped)} if self.escaped else {}),
        )
