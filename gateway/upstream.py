"""Forwarding to the upstream and passing its answer back exactly.

What the caller gets is what the upstream sent: status, reason, body bytes (never decompressed
or re-encoded) and every end-to-end header (several ``Set-Cookie`` included). Only hop-by-hop
headers (RFC 9110, section 7.6.1) and the framing the gateway redoes itself are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from gateway.call import REQUEST_ID
from gateway.tls import upstream_context

HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
    )
)
# The gateway frames bodies itself and connects to its own upstream host.
_NOT_FORWARDED = frozenset(name.lower() for name in (hdrs.HOST, hdrs.CONTENT_LENGTH, hdrs.EXPECT))
_NOT_RETURNED = frozenset({hdrs.CONTENT_LENGTH.lower()})
# Without this the client would add headers the caller never sent.
_SKIP_AUTO_HEADERS = (hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE)


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The largest answer body taken, in bytes, and the config key that sets it (named when
    an answer is over it): an answer is held whole in memory, to record and relay it."""

    size: int
    key: str


MAX_UPSTREAM_BODY = BodyLimit(1 << 20, "upstream.max_body_mb")
"""The default bound of an answer."""


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    reason: str | None
    headers: CIMultiDict[str]
    """End-to-end headers only, ready to send back."""
    body: bytes
    """Exactly the bytes received, still content-encoded if they were."""
    length: str | None = None
    """The upstream's ``Content-Length`` as sent: relayed where the answer carries no body to
    frame (HEAD, 304), since it then states the size of what a GET would have answered."""


class UpstreamError(Exception):
    """No usable answer. ``sent`` is False only when the request surely never left.

    ``status`` is the upstream's status when its head was read before the failure (the body
    too large, cut off or late, or a head that cannot be passed on): the upstream has then
    said what became of the call, though the caller cannot be given its answer."""

    def __init__(self, kind: str, detail: str, *, timeout: bool, sent: bool, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.timeout = timeout
        self.sent = sent
        self.status = status


def received(raw_headers: Iterable[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Headers as they came on the wire, names in their own case. aiohttp's parsed headers
    respell the names it knows (``ETag`` becomes ``Etag``, ``content-type`` ``Content-Type``);
    its raw ones are the bytes received, decoded as its parser decodes them."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in raw_headers:
        headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
    return headers


def end_to_end(headers: Mapping[str, str], drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """A copy without hop-by-hop headers, those named in ``Connection``, and ``drop``."""
    named = {
        token.strip().lower()
        for value in headers.getall(hdrs.CONNECTION, ())  # type: ignore[attr-defined]
        for token in value.split(",")
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in named and lowered not in drop:
            kept.add(name, value)
    return kept


def make_session(
    *, connect_timeout: float, read_timeout: float, total_timeout: float | None, verify_tls: bool, ca_bundle: str | None
) -> aiohttp.ClientSession:
    """The one client session: pooled keep-alive connections, bounded waits, bytes untouched.

    ``read_timeout`` is a wait between reads, so an upstream sending a byte now and then never
    trips it; ``total_timeout`` bounds the whole call, reading the body included."""
    tls = upstream_context(verify_tls, Path(ca_bundle) if ca_bundle else None)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls, limit=0),
        timeout=aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout, sock_read=read_timeout),
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        # Cookies set by the upstream for one caller must never ride along with another's call.
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # aiohttp silently sends an idempotent request (DELETE among them) a second time when a
    # kept-alive connection drops before the answer. A deletion whose fate is unknown must not
    # be repeated behind the audit log's back, and the only switch is this attribute (the one
    # aiohttp's own test client uses). Refuse to run where it is gone rather than retry.
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError(
            f"aiohttp {aiohttp.__version__} cannot be kept from retrying DELETEs; use aiohttp 3.10 to 3.x"
        )
    session._retry_connection = False
    return session


class Credentials(Protocol):
    """What the upstream is told about who calls, in place of the caller's own credentials:
    the service account's Basic header, or the bearer token of ``gateway.upstream_auth``."""

    async def authorization(self) -> str:
        """The Authorization value to send now; raises UpstreamError (never sent) when there is none."""
        ...

    def rejected(self, authorization: str) -> None:
        """The management API answered 401 to ``authorization``."""
        ...


class Upstream:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        credentials: Credentials | None = None,
        max_body: BodyLimit = MAX_UPSTREAM_BODY,
    ) -> None:
        """``credentials`` replace the caller's (``upstream.auth`` "service" or "oauth2") when
        given; ``max_body`` bounds an answer's body (``upstream.max_body_mb``)."""
        self.base_url = base_url.rstrip("/")
        self._session = session
        self.credentials = credentials
        self._max_body = max_body

    async def authorize(self) -> None:
        """Make sure the gateway's own credentials are at hand (a bearer token obtained): the
        request path asks before it writes an intent, so a call that cannot be forwarded leaves
        none. Raises UpstreamError (``sent`` False) when they cannot be had."""
        if self.credentials is not None:
            await self.credentials.authorization()

    async def forward(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        request_id: str | None = None,
        max_body: BodyLimit | None = None,
    ) -> UpstreamReply:
        """Send the call on (``target``: path and query, as received) and return the upstream's
        answer, whose head can be passed on byte for byte; raises UpstreamError otherwise.
        ``max_body`` bounds this answer's body instead of ``upstream.max_body_mb`` (a call
        passed through has ``upstream.pass_through_max_body_mb``).

        ``request_id`` goes upstream as ``X-Request-ID`` (replacing one the caller sent that
        the gateway did not keep), so both sides' logs can be matched. A 401 to the gateway's own
        credentials is reported to them (a bearer token is then renewed for the next call; this
        one is never sent again)."""
        outgoing = end_to_end(headers, _NOT_FORWARDED)
        authorization = None
        if self.credentials is not None:
            authorization = outgoing[hdrs.AUTHORIZATION] = await self.credentials.authorization()
        if request_id is not None:
            outgoing[REQUEST_ID] = request_id
        url = URL(self.base_url + target, encoded=True)
        limit = self._max_body if max_body is None else max_body
        reply = await send(self._session, method, url, outgoing, body, max_body=limit)
        if authorization is not None and reply.status == 401:
            assert self.credentials is not None
            self.credentials.rejected(authorization)
        problem = relay_problem(reply)
        if problem is not None:
            raise UpstreamError("unrelayable", problem, timeout=False, sent=True, status=reply.status)
        return reply


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_body: BodyLimit = MAX_UPSTREAM_BODY,
) -> UpstreamReply:
    """One request, sent once, its whole answer read (up to ``max_body`` bytes); every way it
    can fail is an UpstreamError that says whether the request may have left, and the status
    when the head had come."""
    status: int | None = None  # known once the head is read: failures after it carry it
    try:
        async with session.request(method, url, headers=headers, data=body or None, allow_redirects=False) as response:
            status = response.status
            content = await _read_capped(response, max_body)
            headers = received(response.raw_headers)
            return UpstreamReply(
                response.status,
                response.reason,
                end_to_end(headers, _NOT_RETURNED),
                content,
                headers.get(hdrs.CONTENT_LENGTH),
            )
    except aiohttp.ConnectionTimeoutError:
        raise UpstreamError(
            "connect_timeout", "no connection within the connect timeout", timeout=True, sent=False
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError("connect_failed", f"cannot connect: {_reason(exc)}", timeout=False, sent=False) from None
    except aiohttp.ServerTimeoutError:
        late = "no answer" if status is None else "the rest of the answer did not come"
        raise UpstreamError(
            "read_timeout", f"{late} within the read timeout", timeout=True, sent=True, status=status
        ) from None
    except TimeoutError:
        # aiohttp's total deadline: a bare TimeoutError, where its connect and read
        # deadlines raise the ServerTimeoutError subclasses caught above.
        raise UpstreamError(
            "total_timeout", "no complete answer within the total timeout", timeout=True, sent=True, status=status
        ) from None
    except aiohttp.ServerDisconnectedError:
        raise UpstreamError(
            "disconnected",
            "the upstream closed the connection without answering",
            timeout=False,
            sent=True,
            status=status,
        ) from None
    except aiohttp.ClientPayloadError:
        raise UpstreamError(
            "incomplete", "the upstream's answer was cut off mid-body", timeout=False, sent=True, status=status
        ) from None
    except (HttpProcessingError, aiohttp.ClientResponseError):
        raise UpstreamError(
            "malformed", "the upstream sent a malformed HTTP response", timeout=False, sent=True, status=status
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        # Deliberately not str(exc): client errors can carry the URL, and the URL the token.
        raise UpstreamError(
            "failed", f"connection failed: {_reason(exc)}", timeout=False, sent=True, status=status
        ) from None


def unforwardable(headers: Mapping[str, str]) -> str | None:
    """The name of a header that cannot go upstream unchanged, if any.

    aiohttp keeps header bytes that are not UTF-8 (obs-text, 0x80-0xFF) as surrogate escapes,
    and its client writes headers as UTF-8, silently dropping them: such a header would reach
    the upstream altered, so the gateway refuses the call instead of forwarding it.
    """
    for name, value in end_to_end(headers, _NOT_FORWARDED).items():
        if not value.isascii() and not _is_utf8(value):
            return name
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate escape: a received byte that was not UTF-8
        return False
    return True


class PassThrough(web.Response):
    """The upstream's answer, its head written byte for byte as received.

    aiohttp writes a head as UTF-8, dropping the bytes its parsers kept as surrogate escapes
    (obs-text, 0x80-0xFF, in a header value or the reason phrase), and it adds
    ``Content-Type: application/octet-stream`` and its own ``Server`` where the upstream sent
    none. This response lets aiohttp prepare the head (framing, ``Connection``, and ``Date``,
    which RFC 9110 has a proxy add when missing), then drops those two additions and writes
    the head itself, encoding back exactly the bytes that came in. The body is aiohttp's to write.
    An answer without a body to frame (to a HEAD, or a 304) keeps the upstream's
    ``Content-Length``, where aiohttp would send none.
    """

    def __init__(self, reply: UpstreamReply) -> None:
        super().__init__(status=reply.status, reason=reply.reason, headers=reply.headers, body=reply.body)
        self._not_sent = tuple(name for name in (hdrs.CONTENT_TYPE, hdrs.SERVER) if name not in reply.headers)
        self._length = reply.length
        self._request: web.BaseRequest | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._request = request
        return await super().prepare(request)

    async def _write_headers(self) -> None:
        """Replaces aiohttp's (``StreamResponse._write_headers``): the one place a head is written."""
        assert self._request is not None
        for name in self._not_sent:
            self.headers.popall(name, None)
        if self._length is not None and (self._request.method == hdrs.METH_HEAD or self.status == 304):
            self.headers[hdrs.CONTENT_LENGTH] = self._length
        version = self._request.version
        head = _head(f"HTTP/{version.major}.{version.minor} {self.status} {self.reason}", self.headers)
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the caller has gone")
        transport.write(head)


_BREAKS_HEAD = re.compile(r"[\r\n\x00]")
"""What cannot be relayed in a head: CR and LF would end its line early (header injection),
NUL is refused by HTTP parsers. Every other byte the upstream sent (other controls, DEL,
obs-text) is passed on as it came. aiohttp's client yields none of the three in a header, but
it does yield a NUL in the reason phrase."""


def relay_problem(reply: UpstreamReply) -> str | None:
    """Why the answer's head cannot be passed on byte for byte, if it cannot: decided before
    the outcome is recorded, so that a recorded answer is never followed by a dropped connection."""
    if reply.reason and _BREAKS_HEAD.search(reply.reason):
        return "its reason phrase holds a CR, LF or NUL"
    for name, value in reply.headers.items():
        if _BREAKS_HEAD.search(name) or _BREAKS_HEAD.search(value):
            return "a header of it holds a CR, LF or NUL"
    return None


def _head(status_line: str, headers: Mapping[str, str]) -> bytes:
    lines = [status_line, *(f"{name}: {value}" for name, value in headers.items())]
    for line in lines:
        if _BREAKS_HEAD.search(line):  # never from the upstream (relay_problem); a guard against injection
            raise ValueError("a CR, LF or NUL in a response header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def _read_capped(response: aiohttp.ClientResponse, limit: BodyLimit) -> bytes:
    """The whole body, refusing one over ``limit``: it is held in memory, once per call in flight."""
    length = response.content_length
    if length is not None:
        if length > limit.size:
            raise _too_large(response.status, limit)
        return await response.read()
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit.size:
            raise _too_large(response.status, limit)
    return bytes(body)


def _too_large(status: int, limit: BodyLimit) -> UpstreamError:
    return UpstreamError(
        "too_large",
        f"its body is over {limit.size} bytes ({limit.key})",
        timeout=False,
        sent=True,
        status=status,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
