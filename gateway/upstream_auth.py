"""The gateway's own credentials for the upstream: ``upstream.auth`` "service" and "oauth2".

With "service", every upstream call carries the service account's Basic header. Apigee SaaS
organisations that turned Basic off (SAML, MFA) accept only OAuth 2.0 bearer tokens, which its
login server (``POST https://login.apigee.com/oauth/token``) gives for the password grant of an
account through the public client ``edgecli:edgeclisecret``; so with "oauth2" the gateway logs
the same account in there, sends ``Authorization: Bearer <token>``, and renews the token before
it expires, with the refresh grant (the password grant again when the refresh is refused).

Why it is shaped as it is:

- One renewal at a time: every call that finds the token due waits for the same renewal (a
  burst of calls at expiry would otherwise log in once each, and Apigee rate-limits logins).
- A renewal that fails while the old token still has time left does not fail the call: the old
  token is used until it expires, and renewal is tried again at most every ``RETRY_AFTER``
  seconds meanwhile (each try can cost the upstream timeouts).
- A 401 from the management API to a token the gateway believed valid (revoked, or Apigee's
  view of time differs) marks it for renewal before the NEXT call; the refused call itself is
  never sent again, since it may be a write.
- The token endpoint is asked through the same upstream client as the management API, with the
  same timeouts, TLS settings and body cap (``gateway.upstream.send``).
- No token, refresh token, password or client secret is ever logged, nor quoted in an error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import orjson
from aiohttp import encode_basic_auth, hdrs
from yarl import URL

from gateway.config import APIGEE_TOKEN_URL, PUBLIC_OAUTH_CLIENT, Config
from gateway.logs import Logger
from gateway.stub.oauth import TOKEN_PATH as STUB_TOKEN_PATH
from gateway.upstream import UpstreamReply, send
from gateway.upstream_client import UpstreamClient, UpstreamError

REFRESH_AHEAD = 60.0
"""Seconds before expiry a token is renewed (at most half its lifetime, for short-lived tokens)."""
MIN_LIFETIME = 10.0
"""The shortest lifetime a token is taken to have (so renewed at most every 5 s)."""
MAX_LIFETIME = 86_400.0
"""The longest: a token is renewed at least once a day, whatever the endpoint says."""
DEFAULT_LIFETIME = 1799.0
"""A token whose lifetime is not given (or not a number): Apigee's tokens live 1799 s."""
RETRY_AFTER = 5.0
"""Seconds between renewal attempts while a renewal fails and the old token still holds."""

_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's b64token: what may follow ``Bearer`` (anything else could break the header)."""
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""An OAuth ``error`` code as quoted in a log line or an error (anything else is not quoted)."""

Clock = Callable[[], float]


class ServiceAccount:
    """``upstream.auth = "service"``: one fixed Basic header for every call."""

    def __init__(self, user: str, password: str) -> None:
        self._header = encode_basic_auth(user, password)

    async def authorization(self) -> str:
        return self._header

    def rejected(self, authorization: str) -> None:
        """Nothing to renew: a wrong password stays wrong until the config changes."""


class LoginError(UpstreamError):
    """No token could be had: the call is refused before anything reaches the upstream."""

    def __init__(self, kind: str, detail: str, *, timeout: bool = False) -> None:
        super().__init__(kind, detail, timeout=timeout, sent=False)


class _Refused(Exception):
    """The token endpoint refused the grant (400 or 401): the credentials, not the network."""

    def __init__(self, status: int, error: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error

    def __str__(self) -> str:
        return f"{self.status} {self.error}" if self.error else str(self.status)


@dataclass(frozen=True, slots=True)
class _Token:
    header: str
    """``Bearer <access token>``."""
    refresh_token: str | None
    renew_at: float
    """When to renew it (clock seconds)."""
    expires_at: float
    """When it stops being good (clock seconds), its lifetime held to sane bounds (``_lifetime``)."""


@dataclass(frozen=True, slots=True)
class LoginSettings:
    token_url: str
    user: str
    password: str = field(repr=False)
    client_id: str = PUBLIC_OAUTH_CLIENT[0]
    client_secret: str = field(default=PUBLIC_OAUTH_CLIENT[1], repr=False)


def login_settings(config: Config, stub_url: str) -> LoginSettings:
    """Who logs in where, for ``upstream.auth = "oauth2"`` (the config resolved with its
    ``service_password``): ``upstream.oauth_token_url``, else Apigee's login server, or with
    ``upstream.url = "stub"`` the stub's own token endpoint, at ``stub_url``."""
    upstream = config.upstream
    token_url = upstream.oauth_token_url or (f"{stub_url}{STUB_TOKEN_PATH}" if config.uses_stub else APIGEE_TOKEN_URL)
    return LoginSettings(
        token_url, upstream.service_user, config.service_password, upstream.oauth_client_id, config.oauth_client_secret
    )


class OAuthLogin:
    """``upstream.auth = "oauth2"``: a bearer token from Apigee's login server, kept fresh."""

    def __init__(
        self, settings: LoginSettings, session: UpstreamClient, log: Logger, *, clock: Clock = time.monotonic
    ) -> None:
        self._settings = settings
        self._url = URL(settings.token_url)
        self._client = encode_basic_auth(settings.client_id, settings.client_secret)
        self._session = session
        self._log = log
        self._clock = clock
        self._token: _Token | None = None
        self._stale = False
        """The management API refused the token: renew before the next call."""
        self._renewal: asyncio.Task[_Token] | None = None
        self._retry_at = 0.0
        self.token_requests = 0
        """Requests sent to the token endpoint, both grants (a metric)."""

    async def authorization(self) -> str:
        """``Bearer <token>`` for a call about to be sent, renewing the token first when it is due."""
        token = self._token
        now = self._clock()
        if token is not None and not self._stale and (now < token.renew_at or self._holds(token, now)):
            return token.header
        if self._renewal is None:
            self._renewal = asyncio.create_task(self._renew(), name="upstream-login")
            self._renewal.add_done_callback(self._renewed)
        try:
            # Shielded: a caller that goes away must not cancel the renewal others wait for.
            return (await asyncio.shield(self._renewal)).header
        except LoginError:
            token = self._token
            if token is not None and not self._stale and self._clock() < token.expires_at:
                return token.header
            raise

    def rejected(self, authorization: str) -> None:
        token = self._token
        if token is not None and token.header == authorization and not self._stale:
            self._stale = True
            self._log.warning(
                "upstream_token_rejected",
                token_url=self._settings.token_url,
                hint="the management API answered 401 to the gateway's bearer token; a new one is obtained for the next call",
            )

    async def problem(self) -> str | None:
        """Why no token can be had now (None: one is at hand), for ``/readyz``."""
        try:
            await self.authorization()
        except LoginError as exc:
            return exc.detail
        return None

    def _holds(self, token: _Token, now: float) -> bool:
        """Whether a token due for renewal is still used: renewal failed lately and it has not expired."""
        return now < self._retry_at and now < token.expires_at

    def _renewed(self, task: asyncio.Task[_Token]) -> None:
        self._renewal = None
        if task.cancelled():
            return
        if task.exception() is None:
            self._token, self._stale, self._retry_at = task.result(), False, 0.0
        else:
            self._retry_at = self._clock() + RETRY_AFTER

    async def _renew(self) -> _Token:
        """A new token: by the refresh grant when there is a refresh token, else (or when it is
        refused) by the password grant."""
        refresh_token = self._token.refresh_token if self._token is not None else None
        if refresh_token is not None:
            try:
                return await self._grant("refresh_token", {"refresh_token": refresh_token})
            except _Refused as exc:
                self._log.info(
                    "upstream_token_refresh_refused",
                    token_url=self._settings.token_url,
                    refusal=str(exc),
                    hint="logging in again with the password grant",
                )
        settings = self._settings
        try:
            return await self._grant("password", {"username": settings.user, "password": settings.password})
        except _Refused as exc:
            detail = (
                f"the token endpoint refused the gateway's login as {settings.user} ({exc}); "
                "check upstream.service_user, its password and the OAuth client"
            )
            self._failed("password", detail)
            raise LoginError("login_refused", f"cannot obtain an upstream token: {detail}") from None

    async def _grant(self, grant_type: str, fields: dict[str, str]) -> _Token:
        """One request to the token endpoint; raises _Refused for a 400 or 401, LoginError otherwise."""
        headers = {
            "Authorization": self._client,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json;charset=utf-8",
        }
        body = urlencode({"grant_type": grant_type, **fields}).encode()
        sent_at = self._clock()
        self.token_requests += 1
        try:
            reply = await send(self._session, hdrs.METH_POST, self._url, headers, body)
        except UpstreamError as exc:
            self._failed(grant_type, exc.detail)
            raise LoginError(
                "login_failed", f"cannot obtain an upstream token: {exc.detail}", timeout=exc.timeout
            ) from None
        if reply.status in (400, 401):
            raise _Refused(reply.status, _error_code(reply))
        try:
            token = _token(reply, sent_at)
        except ValueError as exc:
            self._failed(grant_type, str(exc))
            raise LoginError("login_failed", f"cannot obtain an upstream token: {exc}") from None
        self._log.info(
            "upstream_token_obtained",
            grant=grant_type,
            token_url=self._settings.token_url,
            expires_in=round(token.expires_at - sent_at, 3),
        )
        return token

    def _failed(self, grant_type: str, reason: str) -> None:
        self._log.error("upstream_token_failed", grant=grant_type, token_url=self._settings.token_url, reason=reason)


def _token(reply: UpstreamReply, sent_at: float) -> _Token:
    """The token of the endpoint's answer, or a ValueError saying what is wrong with it. Its
    lifetime counts from when it was asked for, so the gateway never thinks it longer-lived
    than the endpoint meant."""
    if reply.status != 200:
        raise ValueError(f"the token endpoint answered {reply.status}")
    try:
        answer = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise ValueError("the token endpoint's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("the token endpoint's answer is not a JSON object")
    access = answer.get("access_token")
    if not isinstance(access, str) or not _BEARER_TOKEN.fullmatch(access):
        raise ValueError("the token endpoint's answer has no usable access_token")
    kind = answer.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise ValueError("the token endpoint's answer is not a bearer token (token_type)")
    refresh = answer.get("refresh_token")
    if refresh is not None and not isinstance(refresh, str):
        raise ValueError("the token endpoint's answer has an invalid refresh_token")
    lifetime = _lifetime(answer.get("expires_in"))
    expires_at = sent_at + lifetime
    return _Token(f"Bearer {access}", refresh or None, expires_at - min(REFRESH_AHEAD, lifetime / 2), expires_at)


def _lifetime(value: object) -> float:
    """``expires_in`` in seconds, held between ``MIN_LIFETIME`` and ``MAX_LIFETIME``: 0 or a
    negative lifetime would have the gateway log in again for every call, a huge one (or none)
    never, until the management API refused the token. A value that is no number of seconds
    (missing, text, true) counts as Apigee's own lifetime, ``DEFAULT_LIFETIME``; some servers
    send the number as a string."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return DEFAULT_LIFETIME
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
        return DEFAULT_LIFETIME
    return float(min(max(value, MIN_LIFETIME), MAX_LIFETIME))


def _error_code(reply: UpstreamReply) -> str | None:
    """The OAuth ``error`` of a refusal, if it is a plain code (quoted in logs and errors)."""
    try:
        answer = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
