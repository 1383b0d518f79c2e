"""The gateway's own refusals, in Apigee's error shape: ``{"code", "message", "contexts"}``.

Every status the gateway answers by itself (rather than passing the upstream's through) is
declared here once, so the README's error table and the tests read the same list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class GatewayError:
    status: int
    code: str
    message: str
    """The default message; a refusal may give a more precise one."""

    def response(self, message: str | None = None, *, headers: Mapping[str, str] | None = None) -> web.Response:
        body = json.dumps({"code": self.code, "message": message or self.message, "contexts": []})
        return web.Response(status=self.status, body=body.encode(), content_type="application/json", headers=headers)


BAD_REQUEST = GatewayError(400, "gateway.bad_request", "The request is malformed")
UNAUTHORIZED = GatewayError(401, "gateway.unauthorized", "Missing or invalid Basic credentials")
FORBIDDEN = GatewayError(403, "gateway.forbidden", "The user may not do this")
NOT_FOUND = GatewayError(404, "gateway.not_found", "The gateway does not serve this path")
METHOD_NOT_ALLOWED = GatewayError(405, "gateway.method_not_allowed", "Method not allowed on this path")
PAYLOAD_TOO_LARGE = GatewayError(413, "gateway.payload_too_large", "The request body is too large")
TOO_MANY_ATTEMPTS = GatewayError(429, "gateway.too_many_attempts", "Too many failed logins from this address or for this user")
INTERNAL_ERROR = GatewayError(500, "gateway.internal_error", "The gateway failed unexpectedly; nothing was forwarded after the failure")
UPSTREAM_UNAVAILABLE = GatewayError(502, "gateway.upstream_unavailable", "The upstream could not be reached or gave no valid answer")
AUDIT_UNAVAILABLE = GatewayError(503, "gateway.audit_unavailable", "The audit log cannot be written; nothing was forwarded")
LOGIN_BUSY = GatewayError(503, "gateway.login_busy", "Too many passwords are being checked; the credentials were not checked")
UPSTREAM_TIMEOUT = GatewayError(504, "gateway.upstream_unavailable", "The upstream did not answer in time")

REALM = 'Basic realm="apigee-audit-gateway"'


def unauthorized() -> web.Response:
    """401 with the Basic challenge, the same on every route."""
    return UNAUTHORIZED.response(headers={"WWW-Authenticate": REALM})


def too_many_attempts(retry_after: int) -> web.Response:
    return TOO_MANY_ATTEMPTS.response(
        f"{TOO_MANY_ATTEMPTS.message}; retry after {retry_after} s", headers={"Retry-After": str(retry_after)}
    )


def login_busy(retry_after: int) -> web.Response:
    return LOGIN_BUSY.response(f"{LOGIN_BUSY.message}; retry after {retry_after} s", headers={"Retry-After": str(retry_after)})


ALL = (
    BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, PAYLOAD_TOO_LARGE, TOO_MANY_ATTEMPTS,
    INTERNAL_ERROR, UPSTREAM_UNAVAILABLE, AUDIT_UNAVAILABLE, LOGIN_BUSY, UPSTREAM_TIMEOUT,
)
