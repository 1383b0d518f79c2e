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

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict
from yarl import URL

from gateway.call import REQUEST_ID
from gateway.tls import upstream_context
from gateway.upstream_client import MAX_UPSTREAM_BODY, BodyLimit, UpstreamClient, UpstreamError

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


def received(raw_headers: Iterable[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Headers as they came on the wire, names in their own case. aiohttp's parsed headers
    respell the names it knows (``ETag`` becomes ``Etag``, ``content-type`` ``Content-Type``);
    its raw ones are the bytes received, decoded as its parser decodes them.

    Whitespace before a name's colon goes, as RFC 9112 (section 5.1) has a proxy remove it:
    aiohttp's C parser takes ``Transfer-Encoding : chunked`` (and Content-Length, Connection,
    Upgrade so spelled) and frames by it, but keeps the space in the raw name,
    which then slipped past the hop-by-hop and framing filters to the caller, over a body the
    gateway frames with Content-Length."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in raw_headers:
        headers.add(name.decode("utf-8", "surrogateescape").rstrip(" \t"), value.decode("utf-8", "surrogateescape"))
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
) -> UpstreamClient:
    """The one client: pooled keep-alive connections, bounded waits, bytes untouched, never a retry.

    ``read_timeout`` is a wait between reads, so an upstream sending a byte now and then never
    trips it; ``total_timeout`` bounds the whole call, reading the body included."""
    tls = upstream_context(verify_tls, Path(ca_bundle) if ca_bundle else None)
    return UpstreamClient(
        connect_timeout=connect_timeout, read_timeout=read_timeout, total_timeout=total_timeout, tls=tls
    )


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
        session: UpstreamClient,
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
    session: UpstreamClient,
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
    answer = await session.request(method, url, headers, body, max_body=max_body)
    received_headers = received(answer.raw_headers)
    return UpstreamReply(
        answer.status,
        answer.reason,
        end_to_end(received_headers, _NOT_RETURNED),
        answer.body,
        received_headers.get(hdrs.CONTENT_LENGTH),
    )


def unforwardable(headers: Mapping[str, str]) -> str | None:
    """The name of a header that cannot go upstream unchanged, if any.

    aiohttp keeps header bytes that are not UTF-8 (obs-text, 0x80-0xFF) as surrogate escapes,
    and the upstream client writes headers as UTF-8 (refusing those): such a header could not
    reach the upstream unchanged, so the gateway refuses the call instead of forwarding it.
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
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name (RFC 9110, section 5.6.2)."""
_NOT_A_TOKEN = "a header name of it is not a token"
"""What cannot be relayed in a head: CR and LF would end its line early (header injection),
NUL is refused by HTTP parsers. Every other byte the upstream sent (other controls, DEL,
obs-text) is passed on as it came. aiohttp's response parser yields none of the three in a
header, but it does yield a NUL in the reason phrase."""


def relay_problem(reply: UpstreamReply) -> str | None:
    """Why the answer's head cannot be passed on byte for byte, if it cannot: decided before
    the outcome is recorded, so that a recorded answer is never followed by a dropped connection."""
    if reply.reason and _BREAKS_HEAD.search(reply.reason):
        return "its reason phrase holds a CR, LF or NUL"
    for name, value in reply.headers.items():
        if _BREAKS_HEAD.search(value):
            return "a header of it holds a CR, LF or NUL"
        if not _TOKEN.fullmatch(name):  # what else a parser lets through: the filters go by name
            return "a header of it holds a CR, LF or NUL" if _BREAKS_HEAD.search(name) else _NOT_A_TOKEN
    return None


def _head(status_line: str, headers: Mapping[str, str]) -> bytes:
    lines = [status_line, *(f"{name}: {value}" for name, value in headers.items())]
    for line in lines:
        if _BREAKS_HEAD.search(line):  # never from the upstream (relay_problem); a guard against injection
            raise ValueError("a CR, LF or NUL in a response header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
