"""The gateway's own refusals, in Apigee's error shape: ``{"code", "message", "contexts"}``.

Every status the gateway answers by itself (rather than passing the upstream's through) is
declared here once, so the README's error table and the tests read the same list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web


@dataclass(frozen=True, slots=True)
class GatewayError:
    status: int
    code: str
    message: str
    """The default message; a refusal may give a more precise one."""

    def body(self, message: str | None = None) -> bytes:
        return json.dumps({"code": self.code, "message": message or self.message, "contexts": []}).encode()

    def response(self, message: str | None = None, *, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.Response(
            status=self.status, body=self.body(message), content_type="application/json", headers=headers
        )

    def wire(self, *, headers: Mapping[str, str]) -> bytes:
        """The whole answer as bytes, closing the connection: for a refusal made before aiohttp
        reads anything (a connection over the cap), built once and written as it is."""
        body = self.body()
        head = [
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BAD_REQUEST = GatewayError(400, "gateway.bad_request", "The request is malformed")
UNAUTHORIZED = GatewayError(401, "gateway.unauthorized", "Missing or invalid Basic credentials")
FORBIDDEN = GatewayError(403, "gateway.forbidden", "The user may not do this")
NOT_FOUND = GatewayError(404, "gateway.not_found", "The gateway does not serve this path")
METHOD_NOT_ALLOWED = GatewayError(405, "gateway.method_not_allowed", "Method not allowed on this path")
REQUEST_TIMEOUT = GatewayError(408, "gateway.request_timeout", "The request body did not arrive in time")
PAYLOAD_TOO_LARGE = GatewayError(413, "gateway.payload_too_large", "The request body is too large")
EXPECTATION_FAILED = GatewayError(417, "gateway.expectation_failed", "The only expectation understood is 100-continue")
TOO_MANY_ATTEMPTS = GatewayError(
    429, "gateway.too_many_attempts", "Too many failed logins from this address or for this user"
)
INTERNAL_ERROR = GatewayError(
    500, "gateway.internal_error", "The gateway failed unexpectedly; nothing was forwarded after the failure"
)
UPSTREAM_UNAVAILABLE = GatewayError(
    502, "gateway.upstream_unavailable", "The upstream could not be reached or gave no valid answer"
)
UPSTREAM_ANSWER_LOST = GatewayError(
    502, "gateway.upstream_answer_lost", "The upstream answered, but its answer could not be passed on"
)
AUDIT_UNAVAILABLE = GatewayError(
    503, "gateway.audit_unavailable", "The audit log cannot be written; nothing was forwarded"
)
LOGIN_BUSY = GatewayError(
    503, "gateway.login_busy", "Too many passwords are being checked; the credentials were not checked"
)
TOO_MANY_CONNECTIONS = GatewayError(
    503,
    "gateway.too_many_connections",
    "The gateway holds as many connections as it may (server.max_connections); retry shortly",
)
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
    return LOGIN_BUSY.response(
        f"{LOGIN_BUSY.message}; retry after {retry_after} s", headers={"Retry-After": str(retry_after)}
    )


ALL = (
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    PAYLOAD_TOO_LARGE,
    EXPECTATION_FAILED,
    TOO_MANY_ATTEMPTS,
    INTERNAL_ERROR,
    UPSTREAM_UNAVAILABLE,
    UPSTREAM_ANSWER_LOST,
    AUDIT_UNAVAILABLE,
    LOGIN_BUSY,
    TOO_MANY_CONNECTIONS,
    UPSTREAM_TIMEOUT,
)
