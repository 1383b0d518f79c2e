"""Apigee's management login, as ``POST https://login.apigee.com/oauth/token`` answers it.

Apigee's login server speaks OAuth 2.0 for the public client ``edgecli:edgeclisecret``: the
password grant exchanges an Apigee account's credentials for a bearer access token (a JWT, with
``expires_in`` seconds to live) and a refresh token; the refresh grant trades a refresh token for
a new pair. Errors are the OAuth 2.0 shape ``{"error", "error_description"}``. The stub then
accepts ``Authorization: Bearer <access_token>`` on the management paths until it expires.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from aiohttp import hdrs, web

from gateway.basic import MalformedCredentials, parse_basic

TOKEN_PATH = "/oauth/token"
CLIENT_ID = "edgecli"
CLIENT_SECRET = "edgeclisecret"
SCOPES = ["scim.emails.read", "scim.me", "openid", "password.write", "approvals.me", "scim.ids.read", "oauth.approvals"]
ISSUER = "https://login.apigee.com/oauth/token"
REFRESH_LIFETIME = 86_400.0
"""Seconds a refresh token stays good; each use gives a new one and ends the old."""


@dataclass
class Login:
    user: str
    expires: float
    """When it stops being accepted, in ``time.time()`` seconds."""


class Logins:
    """The bearer and refresh tokens handed out, with who they stand for."""

    def __init__(self, users: dict[str, str], lifetime: float) -> None:
        self._users = users
        self._lifetime = lifetime
        self._key = secrets.token_bytes(32)
        self._access: dict[str, Login] = {}
        self._refresh: dict[str, Login] = {}

    def password_grant(self, user: str, password: str) -> dict[str, Any] | None:
        expected = self._users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return self._issue(user)

    def refresh_grant(self, refresh_token: str) -> dict[str, Any] | None:
        login = self._refresh.pop(refresh_token, None)
        if login is None or login.expires <= time.time():
            return None
        return self._issue(login.user)

    def bearer(self, access_token: str) -> Login | None:
        """Who a bearer token stands for (expired or not); None if the stub never issued it."""
        return self._access.get(access_token)

    def _issue(self, user: str) -> dict[str, Any]:
        now = time.time()
        access = self._jwt(user, now, self._lifetime, "password")
        refresh = self._jwt(user, now, REFRESH_LIFETIME, "refresh_token")
        self._access[access] = Login(user, now + self._lifetime)
        self._refresh[refresh] = Login(user, now + REFRESH_LIFETIME)
        return {
            "access_token": access,
            "token_type": "bearer",
            "refresh_token": refresh,
            "expires_in": int(self._lifetime),
            "scope": " ".join(SCOPES),
            "jti": str(uuid.uuid4()),
        }

    def _jwt(self, user: str, now: float, lifetime: float, grant: str) -> str:
        """A JWT like the login server's (clients read ``iat`` and ``exp`` from it), signed with a key of this run."""
        claims = {
            "jti": uuid.uuid4().hex,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, user)),
            "scope": SCOPES,
            "client_id": CLIENT_ID,
            "cid": CLIENT_ID,
            "grant_type": grant,
            "user_name": user,
            "email": user,
            "iat": int(now),
            "exp": int(now + lifetime),
            "iss": ISSUER,
            "zid": "uaa",
            "aud": [CLIENT_ID],
        }
        signed = _b64(json.dumps({"alg": "HS256", "typ": "JWT"})) + "." + _b64(json.dumps(claims))
        signature = (
            base64.urlsafe_b64encode(hmac.new(self._key, signed.encode(), sha256).digest()).rstrip(b"=").decode()
        )
        return f"{signed}.{signature}"


LOGINS = web.AppKey("stub_logins", Logins)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


async def token_endpoint(request: web.Request) -> web.Response:
    """``POST /oauth/token``: the password and refresh_token grants for the edgecli client."""
    if not _client_authenticated(request.headers.getall(hdrs.AUTHORIZATION, [])):
        return oauth_error(
            401,
            "unauthorized",
            "Bad credentials",
            {
                hdrs.WWW_AUTHENTICATE: 'Basic realm="UAA/client", error="unauthorized", error_description="Bad credentials"'
            },
        )
    try:
        form = await request.post()
    except ValueError:  # UnicodeDecodeError included
        return oauth_error(400, "invalid_request", "The form cannot be read")
    logins = request.app[LOGINS]
    grant = form.get("grant_type")
    if not isinstance(grant, str) or not grant:
        return oauth_error(400, "invalid_request", "Missing grant type")
    if grant == "password":
        user, password = form.get("username"), form.get("password")
        answer = logins.password_grant(user, password) if isinstance(user, str) and isinstance(password, str) else None
        if answer is None:
            return oauth_error(401, "unauthorized", "Bad credentials")
    elif grant == "refresh_token":
        refresh = form.get("refresh_token")
        answer = logins.refresh_grant(refresh) if isinstance(refresh, str) else None
        if answer is None:
            return oauth_error(401, "invalid_token", "Invalid refresh token")
    else:
        return oauth_error(400, "unsupported_grant_type", f"Unsupported grant type: {grant}")
    return web.Response(
        body=json.dumps(answer).encode(),
        content_type="application/json",
        charset="UTF-8",
        headers={hdrs.CACHE_CONTROL: "no-store", hdrs.PRAGMA: "no-cache"},
    )


def _client_authenticated(headers: list[str]) -> bool:
    if len(headers) != 1:
        return False
    try:
        credentials = parse_basic(headers[0])
    except MalformedCredentials:
        return False
    return hmac.compare_digest(credentials.user.encode(), CLIENT_ID.encode()) and hmac.compare_digest(
        credentials.password.encode(), CLIENT_SECRET.encode()
    )


def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": error, "error_description": description})
    return web.Response(status=status, body=body.encode(), content_type="application/json", headers=headers)
