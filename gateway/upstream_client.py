"""The upstream's HTTP/1.1 client: one exchange at a time per pooled connection, on aiohttp's own
response parser, never a retry.

aiohttp's ``ClientSession`` costs about 120 us of event-loop CPU per call more than this client
(``docs/performance.md``): tracing hooks, cookie and redirect handling, timers per phase, a
request object and a response object per call. The gateway needs none of it. What it needs is
kept here, and nothing else:

- **Exact bytes.** The request goes as given (method, target as received, headers in order,
  ``Host`` and ``Content-Length`` the only additions, as aiohttp's client adds them). The answer
  is parsed by ``aiohttp.http_parser.HttpResponseParser`` (llhttp, the C parser, where aiohttp
  was built with it) with decompression off: status, reason, headers (bytes that are not UTF-8
  kept as surrogate escapes) and body, framed by ``Content-Length``, chunks or the close of the
  connection; none for ``HEAD``, 1xx, 204 and 304. A status outside 100-599, or a ``101``
  (the gateway never asks to switch protocol), is no answer at all: a malformed one. What came
  before a fault the parser refuses counts, however the bytes were split into reads: a whole
  answer with bytes after it, or a head whose body then broke (``_Connection._unparsable``).
- **Never a retry.** A request is written once. A kept-alive connection the upstream closed
  just before it is a failed call (``disconnected``), reported as one that may have left.
- **One answer per call.** A connection that received anything past its answer (a second
  answer, the start of one, bytes while idle) is closed, never given the next call.
- **Deadlines.** ``connect_timeout`` bounds opening a connection (and its TLS handshake), the
  addresses of the upstream's name tried 250 ms apart (``HAPPY_EYEBALLS_DELAY``; not on uvloop);
  ``read_timeout`` is a wait between reads, from the request written to the answer's last
  byte; ``total_timeout`` bounds the whole call.
- **TLS** with the context of ``gateway.tls.upstream_context`` (the configured CA bundle).

The parser's constructor and the way it hands out messages are aiohttp internals:
``tests/test_upstream_client.py`` pins them, and ``pyproject.toml`` pins aiohttp's range.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import hdrs
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES
from aiohttp.http_parser import HttpParser, HttpResponseParser, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.typedefs import RawHeaders
from yarl import URL

HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next of an upstream name's addresses is tried while one has not answered
(RFC 8305; aiohttp's client's value): an address that drops connections silently (IPv6 routed
nowhere, say) must not spend the whole connect_timeout of a name that has a working one."""
KEEPALIVE = 15.0
"""Seconds an idle pooled connection is kept (aiohttp's client default)."""
READ_BUFFER = 1 << 16
"""Bytes a body may buffer before the connection stops reading (aiohttp's ``read_bufsize``)."""
BODYLESS_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS, hdrs.METH_TRACE})
"""Methods sent without ``Content-Length: 0`` when they carry no body (as aiohttp's client does)."""
_BREAKS_LINE = re.compile(r"[\r\n\x00]")


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


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The largest answer body taken, in bytes, and the config key that sets it (named when
    an answer is over it): an answer is held whole in memory, to record and relay it."""

    size: int
    key: str


MAX_UPSTREAM_BODY = BodyLimit(1 << 20, "upstream.max_body_mb")
"""The default bound of an answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The upstream's answer as received: every header, hop-by-hop ones included."""

    status: int
    reason: str
    raw_headers: RawHeaders
    """Names and values as the bytes received (the parsed headers respell the names aiohttp knows)."""
    body: bytes


class _Broken(Exception):
    """The exchange failed after the request was written; ``send`` adds what it knows (the status)."""

    def __init__(self, kind: str, detail: str, *, timeout: bool = False) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.timeout = kind, detail, timeout


def _lost(exc: BaseException | None) -> _Broken:
    if exc is None:
        return _Broken("disconnected", "the upstream closed the connection without answering")
    return _Broken("failed", f"connection failed: {reason(exc)}")


_INCOMPLETE = "the upstream's answer was cut off mid-body"
_MALFORMED = "the upstream sent a malformed HTTP response"


class _CutOff(_Broken):
    """A body that ended or broke before its framing said it would (the parser's ``payload_exception``)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("incomplete", _INCOMPLETE)


class _Connection(BaseProtocol):
    """One connection to the upstream: a request written, its answer parsed as it arrives.

    The answer's head is a future; its body a ``StreamReader`` fed by the parser (which pauses
    the connection's reading when the reader's buffer is full). Every failure lands on whichever
    of the two is still awaited, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._head: asyncio.Future[tuple[RawResponseMessage, StreamReader]] | None = None
        self._payload: StreamReader | None = None
        self._read_timeout: float | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.release: Callable[[], None] | None = None
        """While the connection waits in the pool: takes it out (the upstream closed it)."""
        self.lost = False
        self._with_body = True
        self._extra = False
        """More was received than the one answer: the connection cannot serve another call."""
        self._before_head = bytearray()
        """What came of the answer until its head was parsed, to parse again should a fault follow."""

    def exchange(
        self, request: bytes, method: str, read_timeout: float | None
    ) -> asyncio.Future[tuple[RawResponseMessage, StreamReader]]:
        """Write ``request`` and return the future of its answer's head and body reader."""
        assert self.transport is not None
        self._with_body = method != hdrs.METH_HEAD
        self._parser = self._new_parser()
        self._head = self._loop.create_future()
        self._payload = None
        self._before_head.clear()
        self._read_timeout = read_timeout
        self.transport.write(request)
        self._arm()
        return self._head

    def reusable(self, message: RawResponseMessage) -> bool:
        """After a whole answer: whether the connection may carry the next call. Not when bytes
        came after the answer (the rest of them could be taken for the next call's answer)."""
        self._disarm()
        parser, self._parser = self._parser, None
        if parser is not None and _began_another(parser):
            self._extra = True
        transport = self.transport
        return not (message.should_close or self.lost or self._extra or transport is None or transport.is_closing())

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            if data:  # bytes nobody asked for, on an idle connection: never reuse it
                self._extra = True
                self.abort()
            return
        if data:
            self._arm()
        if self._payload is None and len(self._before_head) <= READ_BUFFER:  # bounded: 1xx answers can keep coming
            self._before_head += data
        try:
            messages, _, _ = parser.feed_data(data)
        except Exception:  # the parser's HttpProcessingError, or whatever else it raises on garbage
            self._unparsable()
            return
        for message, payload in messages:
            self._received(message, payload)

    def _new_parser(self) -> HttpResponseParser:
        return HttpResponseParser(
            self,
            self._loop,
            READ_BUFFER,
            payload_exception=_CutOff,
            response_with_body=self._with_body,
            read_until_eof=True,
            auto_decompress=False,
        )

    def _unparsable(self) -> None:
        """The parser refused what came. The bytes before the fault are still the upstream's word:
        the answer's head (its status says what became of the call), perhaps the whole answer with
        bytes after it that are none (RFC 9112, section 6.3: an answer, the rest discarded and the
        connection closed). The same bytes in other reads would have given exactly that, but a
        parser raises for a whole read, dropping the head it parsed in it: so when the head had
        not come before the fault's read, the answer is parsed again, up to the fault."""
        if self._payload is None and len(self._before_head) <= READ_BUFFER:  # held in one reader, never paused
            for message, payload in self._parsed_until_fault(bytes(self._before_head)):
                self._received(message, payload)
        self._fail(_Broken("malformed", _MALFORMED) if self._payload is None else _CutOff())
        self._extra = True
        self.abort()

    def _parsed_until_fault(self, received: bytes) -> list[tuple[RawResponseMessage, StreamReader]]:
        """The messages of ``received`` before the byte a parser refuses. A parser reads byte by
        byte: a prefix refused stays refused when longer, so the longest one taken is searched."""
        taken, refused = 0, len(received)
        while refused - taken > 1:
            middle = (taken + refused) // 2
            try:
                self._new_parser().feed_data(received[:middle])
            except Exception:
                refused = middle
            else:
                taken = middle
        messages, _, _ = self._new_parser().feed_data(received[:taken])
        return list(messages)

    def _received(self, message: RawResponseMessage, payload: StreamReader) -> None:
        head = self._head
        if message.code == 101 or not 100 <= message.code <= 599:
            # A switch of protocol nobody asked for (the gateway forwards no Upgrade), or a status
            # HTTP does not have (RFC 9110, section 15): nothing the caller could be given, and
            # the connection no longer speaks HTTP/1.1 as far as anyone knows.
            self._fail(_Broken("malformed", _MALFORMED))
            self.abort()
            return
        if head is None or head.done():
            self._extra = True  # a second answer to one request, final or informational
            return
        if message.code < 200:
            return  # informational (100 Continue, 103 Early Hints): the answer follows
        if message.code in EMPTY_BODY_STATUS_CODES or not self._with_body:
            payload = EMPTY_PAYLOAD
        self._payload = payload
        self._before_head.clear()
        if payload is EMPTY_PAYLOAD:
            self._disarm()
        else:
            payload.on_eof(self._disarm)
        head.set_result((message, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self._disarm()
        if self.release is not None:
            self.release()
        parser, payload = self._parser, self._payload
        if parser is not None:
            try:
                parser.feed_eof()  # ends a body read until the connection's close
            except Exception:
                if payload is not None and not payload.is_eof() and payload.exception() is None:
                    payload.set_exception(_CutOff())
        self._fail(_lost(exc) if payload is None else _CutOff())
        super().connection_lost(exc)

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: _Broken) -> None:
        """``error`` to the awaited head, or to the body being read; never over an earlier failure."""
        head, payload = self._head, self._payload
        if head is not None and not head.done():
            head.set_exception(error)
        elif payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
            if payload.exception() is None:
                payload.set_exception(error)

    def _arm(self) -> None:
        if self._read_timeout is None:
            return
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self._loop.call_later(self._read_timeout, self._read_is_late)

    def _disarm(self) -> None:
        self._read_timeout = None
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_is_late(self) -> None:
        self._read_timer = None
        late = "no answer" if self._payload is None else "the rest of the answer did not come"
        self._fail(_Broken("read_timeout", f"{late} within the read timeout", timeout=True))
        self.abort()


def _began_another(parser: HttpParser[Any]) -> bool:
    """Whether ``parser``, its answer read whole, holds the beginning of another message: bytes
    that came in the same read as the end of the answer. A whole second message is already seen
    (``_Connection._received``); the start of one only the parser knows: its ``feed_eof`` makes a
    message of what it holds (the C parser), or the bytes wait in ``_tail`` (the Python one)."""
    try:
        return parser.feed_eof() is not None or bool(getattr(parser, "_tail", b""))
    except Exception:  # whatever it holds, it is not nothing
        return True


class UpstreamClient:
    """Pooled keep-alive connections per scheme, host and port, and the three deadlines."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float | None,
        total_timeout: float | None,
        tls: ssl.SSLContext,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._tls = tls
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Every connection closed, idle or carrying a call."""
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        self._idle.clear()

    async def request(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes, *, max_body: BodyLimit
    ) -> Answer:
        """One request, sent once, its whole answer read (up to ``max_body`` bytes); every way it
        can fail is an UpstreamError that says whether the request may have left, and the status
        when the head had come."""
        request = _request_bytes(method, url, headers, body)
        loop = asyncio.get_running_loop()
        deadline = None if self._total_timeout is None else loop.time() + self._total_timeout
        connection: _Connection | None = None
        status: int | None = None
        done = False
        try:
            async with asyncio.timeout_at(deadline):
                connection = await self._connection(url, deadline)
                message, payload = await connection.exchange(request, method, self._read_timeout)
                status = message.code
                content = await _read_capped(message, payload, max_body.size)
            done = True
        except TimeoutError:
            if connection is None:
                raise _connect_timeout() from None
            raise UpstreamError(
                "total_timeout", "no complete answer within the total timeout", timeout=True, sent=True, status=status
            ) from None
        except _Broken as exc:
            raise UpstreamError(exc.kind, exc.detail, timeout=exc.timeout, sent=True, status=status) from None
        except _TooLarge:
            raise UpstreamError(
                "too_large",
                f"its body is over {max_body.size} bytes ({max_body.key})",
                timeout=False,
                sent=True,
                status=status,
            ) from None
        finally:
            if connection is not None and not done:
                self._discard(connection)  # failed or cancelled half-way: its state is unknown
        if connection.reusable(message):
            self._keep(_key(url), connection)
        else:
            self._discard(connection)
        return Answer(message.code, message.reason, message.raw_headers, content)

    async def _connection(self, url: URL, deadline: float | None) -> _Connection:
        key = _key(url)
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            connection.release = None
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            transport = connection.transport
            if not connection.lost and transport is not None and not transport.is_closing():
                return connection
            self._discard(connection)
        return await self._connect(url, key)

    async def _connect(self, url: URL, key: tuple[str, str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        secure = key[0] == "https"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    key[1],
                    key[2],
                    ssl=self._tls if secure else None,
                    server_hostname=key[1] if secure else None,
                    **_staggered(loop),
                )
        except TimeoutError:
            raise _connect_timeout() from None
        except OSError as exc:  # refused, unreachable, no such host, a certificate not trusted
            raise UpstreamError("connect_failed", f"cannot connect: {reason(exc)}", timeout=False, sent=False) from None
        self._open.add(connection)
        return connection

    def _keep(self, key: tuple[str, str, int], connection: _Connection) -> None:
        self._idle.setdefault(key, []).append(connection)
        connection.idle_timer = asyncio.get_running_loop().call_later(KEEPALIVE, self._expire, key, connection)
        connection.release = partial(self._expire, key, connection)

    def _expire(self, key: tuple[str, str, int], connection: _Connection) -> None:
        """Out of the pool and closed: its idle time over, or the upstream closed it meanwhile."""
        connection.release = None
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
        idle = self._idle.get(key)
        if idle is not None and connection in idle:
            idle.remove(connection)
        self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.abort()


class _TooLarge(Exception):
    """The answer's body is over ``upstream.max_body_mb``."""


async def _read_capped(message: RawResponseMessage, payload: StreamReader, limit: int) -> bytes:
    """The whole body, refusing one over ``limit`` bytes (``upstream.max_body_mb``): it is held
    in memory, once per call in flight."""
    if payload is EMPTY_PAYLOAD:
        return b""
    length = message.headers.get(hdrs.CONTENT_LENGTH)
    if length is not None and not message.chunked:
        if int(length) > limit:  # the parser accepts digits only
            raise _TooLarge
        return await payload.read()
    body = bytearray()
    while chunk := await payload.readany():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _request_bytes(method: str, url: URL, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request as it goes on the wire: ``Host`` first, then ``headers`` as given, then the
    body's length (aiohttp's client's order and additions, with none of its automatic headers)."""
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    if hdrs.HOST not in headers:
        lines.append(f"Host: {url.host_port_subcomponent}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method not in BODYLESS_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    for line in lines:
        if _BREAKS_LINE.search(line):  # never from the gateway's own checks; a guard against injection
            raise UpstreamError("failed", "a request header holds a CR, LF or NUL", timeout=False, sent=False)
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    except UnicodeEncodeError:  # a byte that was not UTF-8 (``gateway.upstream.unforwardable`` refuses those)
        raise UpstreamError(
            "failed", "a request header holds bytes that are not UTF-8", timeout=False, sent=False
        ) from None
    return head + body


def _key(url: URL) -> tuple[str, str, int]:
    return (url.scheme, url.raw_host or "", url.port or (443 if url.scheme == "https" else 80))


def _staggered(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """``create_connection``'s happy eyeballs, where the loop has them: asyncio's own. uvloop's
    (``gateway serve`` with the ``speed`` extra) takes no such arguments and tries one address
    after another, as before."""
    if isinstance(loop, asyncio.BaseEventLoop):
        return {"happy_eyeballs_delay": HAPPY_EYEBALLS_DELAY, "interleave": 1}
    return {}


def _connect_timeout() -> UpstreamError:
    return UpstreamError("connect_timeout", "no connection within the connect timeout", timeout=True, sent=False)


def reason(exc: BaseException) -> str:
    """What went wrong, without the exception's text (which can quote a URL, and a URL a token)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
