"""The lean upstream client: aiohttp's response parser as the client uses it (an aiohttp internal,
pinned here so that a change in it fails loudly), the bytes it sends, every framing of an answer,
and its pool, against real sockets on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from yarl import URL

from gateway import upstream_client
from gateway.upstream import make_session, send
from gateway.upstream_client import READ_BUFFER, BodyLimit, UpstreamClient, UpstreamError

PARSERS = {"python": http_parser.HttpResponseParserPy}
if hasattr(http_parser, "HttpResponseParserC"):
    PARSERS["c"] = http_parser.HttpResponseParserC


def test_the_client_parses_with_aiohttps_own_parser_the_c_one_when_built() -> None:
    assert upstream_client.HttpResponseParser is http_parser.HttpResponseParser  # type: ignore[attr-defined]
    if not os.environ.get("AIOHTTP_NO_EXTENSIONS"):
        assert "c" in PARSERS, "aiohttp was installed without its C parser: the client would be slower"
        assert http_parser.HttpResponseParser is PARSERS["c"]


class _Reader(BaseProtocol):
    """A protocol with no transport, enough for the parser's body readers."""


def _parse(parser_class: Any, chunks: list[bytes], *, with_body: bool = True, eof: bool = False) -> tuple[Any, bytes]:
    """Feed ``chunks`` to a parser built exactly as ``gateway.upstream_client`` builds it; the
    one answer's message and its body (read after ``eof`` when asked)."""
    loop = asyncio.get_running_loop()
    protocol = _Reader(loop)
    parser = parser_class(
        protocol,
        loop,
        READ_BUFFER,
        payload_exception=RuntimeError,
        response_with_body=with_body,
        read_until_eof=True,
        auto_decompress=False,
    )
    found: list[tuple[Any, StreamReader]] = []
    for chunk in chunks:
        messages, upgraded, tail = parser.feed_data(chunk)
        assert (False, b"") == (upgraded, tail)
        found += messages
    if eof:
        parser.feed_eof()
    [(message, payload)] = found
    assert isinstance(payload, StreamReader)
    body = payload.read_nowait() if payload.is_eof() else b"<open>"
    return message, body


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED_ANSWER = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"


@pytest.fixture(params=sorted(PARSERS))
def parser_class(request: pytest.FixtureRequest) -> Any:
    return PARSERS[request.param]


async def test_the_parser_gives_the_head_as_received(parser_class: Any) -> None:
    head = b"HTTP/1.1 418 I'm\xe9 A\x01Teapot\r\nX-Mixed-Case: a\xff\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    message, body = await _parse_async(parser_class, [head + b"Content-Length: 3\r\n\r\nabc"])
    assert (418, "I'm\udce9 A\x01Teapot", False, False) == (
        message.code,
        message.reason,
        message.should_close,
        message.chunked,
    )
    assert [("X-Mixed-Case", "a\udcff"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Length", "3")] == list(
        message.headers.items()
    )
    assert b"abc" == body


async def _parse_async(parser_class: Any, chunks: list[bytes], **options: Any) -> tuple[Any, bytes]:
    return _parse(parser_class, chunks, **options)


async def test_the_parser_frames_every_kind_of_body(parser_class: Any) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    message, body = await _parse_async(parser_class, [chunked[:40], chunked[40:]])
    assert (True, b"abcde") == (message.chunked, body)
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    assert b"<open>" == (await _parse_async(parser_class, [until_close]))[1]
    assert b"all of it" == (await _parse_async(parser_class, [until_close], eof=True))[1]
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
    assert (await _parse_async(parser_class, [closing]))[0].should_close
    # HEAD (the client says there is no body) and 204: the parser reads no body.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    assert b"" == (await _parse_async(parser_class, [head], with_body=False))[1]
    assert b"" == (await _parse_async(parser_class, [b"HTTP/1.1 204 No Content\r\n\r\n"]))[1]


async def test_the_parser_refuses_what_is_not_http_and_a_body_cut_short(parser_class: Any) -> None:
    loop = asyncio.get_running_loop()
    parser = parser_class(_Reader(loop), loop, READ_BUFFER, read_until_eof=True, auto_decompress=False)
    with pytest.raises(aiohttp.http_exceptions.HttpProcessingError):
        parser.feed_data(b"HTTP/1.1 abc\r\n\r\n")
    parser = parser_class(_Reader(loop), loop, READ_BUFFER, read_until_eof=True, auto_decompress=False)
    parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(aiohttp.http_exceptions.ContentLengthError):
        parser.feed_eof()


@pytest.mark.parametrize(
    ("extra", "began"),
    [
        (b"", False),
        (b"H", True),
        (b"HTTP/1.1 5", True),
        (b"HTTP/1.1 500 Stale\r\n", True),
        (b"HTTP/1.1 500 Stale\r\nX-A: 1\r\n", True),
    ],
)
@pytest.mark.parametrize("answer", [OK, CHUNKED_ANSWER], ids=["length", "chunked"])
async def test_the_parser_tells_whether_another_message_began_after_the_answer(
    parser_class: Any, answer: bytes, extra: bytes, began: bool
) -> None:
    loop = asyncio.get_running_loop()
    parser = parser_class(_Reader(loop), loop, READ_BUFFER, read_until_eof=True, auto_decompress=False)
    [(_, payload)], _, _ = parser.feed_data(answer + extra)
    assert payload.is_eof()
    assert began == upstream_client._began_another(parser)


@dataclass
class Upstream:
    """A raw upstream that keeps connections alive and answers each request with the next reply."""

    replies: list[bytes | tuple[bytes, ...]]
    """Each reply at once, or in parts that each come in a read of their own."""
    url: str = ""
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    """Each request as it came: head and body."""


@asynccontextmanager
async def keep_alive_upstream(
    *replies: bytes | tuple[bytes, ...], close_after: Callable[[int], bool] = lambda n: False
) -> AsyncIterator[Upstream]:
    upstream = Upstream(list(replies))
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        upstream.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                upstream.received.append(head + await reader.readexactly(length))
                reply = upstream.replies.pop(0)
                for index, part in enumerate((reply,) if isinstance(reply, bytes) else reply):
                    if index:
                        await asyncio.sleep(0.05)  # for the client, a read of its own
                    writer.write(part)
                    await writer.drain()
                if close_after(len(upstream.received)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()


@asynccontextmanager
async def client(**timeouts: float) -> AsyncIterator[UpstreamClient]:
    settings = {"connect_timeout": 1.0, "read_timeout": 1.0, "total_timeout": 2.0, **timeouts}
    async with make_session(verify_tls=True, ca_bundle=None, **settings) as session:
        yield session


MIB = BodyLimit(1 << 20, "upstream.max_body_mb")


async def test_the_request_goes_as_given_with_host_and_length_added_as_aiohttp_adds_them() -> None:
    async with keep_alive_upstream(OK, OK, OK) as upstream, client() as session:
        base = upstream.url
        await send(
            session, "DELETE", URL(base + "/v1/o/a%2Fb?x=%2F", encoded=True), {"X-B": "2", "x-a": "caf\u00e9"}, b""
        )
        await send(session, "GET", URL(base + "/"), {}, b"")
        await send(session, "POST", URL(base + "/p"), {"Content-Type": "application/json"}, b'{"a": 1}')
    port = base.rsplit(":", 1)[1]
    assert [
        f"DELETE /v1/o/a%2Fb?x=%2F HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-B: 2\r\nx-a: caf\u00e9\r\nContent-Length: 0\r\n\r\n".encode(),
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(),
        f'POST /p HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{{"a": 1}}'.encode(),
    ] == upstream.received
    assert 1 == upstream.connections  # kept alive and reused


async def test_every_framing_of_an_answer_is_read_whole_and_the_connection_reused_when_it_can_be() -> None:
    replies = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # to a HEAD: no body follows
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: e\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\ny",
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",  # no length: the body ends with the connection
    )
    async with keep_alive_upstream(*replies, close_after=lambda n: n == 7) as upstream, client() as session:
        url = URL(upstream.url + "/t")
        answers = [
            await session.request(method, url, {}, b"", max_body=MIB)
            for method in ("GET", "GET", "HEAD", "GET", "GET", "GET", "GET")
        ]
    assert [
        (200, b"abc"),
        (201, b"x"),
        (200, b""),
        (204, b""),
        (304, b""),
        (200, b"y"),
        (200, b"until the end"),
    ] == [(answer.status, answer.body) for answer in answers]
    assert ((b"Content-Length", b"5"),) == answers[2].raw_headers  # the HEAD's length, as the upstream said it
    assert 2 == upstream.connections  # a new one only after "Connection: close"


async def test_an_idle_connection_the_upstream_closed_is_not_used_again() -> None:
    async with keep_alive_upstream(OK, OK, close_after=lambda n: True) as upstream, client() as session:
        assert 200 == (await send(session, "GET", URL(upstream.url), {}, b"")).status
        await asyncio.sleep(0.05)  # the upstream's close reaches the client (nothing to await on)
        assert 200 == (await send(session, "GET", URL(upstream.url), {}, b"")).status
    assert 2 == upstream.connections


async def test_a_delete_on_a_kept_alive_connection_the_upstream_drops_is_never_sent_again() -> None:
    """The upstream closes the pooled connection as the DELETE arrives on it (its idle timeout,
    say): the call may have taken effect, so it fails as one that left, and goes nowhere else."""
    async with keep_alive_upstream(OK, b"", OK, close_after=lambda n: n == 2) as upstream, client() as session:
        assert 200 == (await send(session, "GET", URL(upstream.url), {}, b"")).status
        with pytest.raises(UpstreamError) as raised:
            await send(session, "DELETE", URL(upstream.url + "/t"), {}, b"")
        assert ("disconnected", True, None) == (raised.value.kind, raised.value.sent, raised.value.status)
    assert [b"GET", b"DELETE"] == [received.split(b" ", 1)[0] for received in upstream.received]
    assert 1 == upstream.connections


async def test_an_address_that_never_answers_does_not_hold_up_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with two addresses whose first drops connections silently (an IPv6 route to
    nowhere, say): the second is tried a moment later, as aiohttp's client did, instead of after
    the whole connect_timeout. The silent one is a listener whose queue is full."""
    with socket.socket() as silent, socket.socket() as filler:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        filler.connect(silent.getsockname())  # the one connection its queue holds; the rest wait
        async with keep_alive_upstream(OK) as upstream:
            port = int(upstream.url.rsplit(":", 1)[1])
            loop = asyncio.get_running_loop()
            resolve = loop.getaddrinfo

            async def two_addresses(host: str, *args: Any, **kwargs: Any) -> list[Any]:
                assert "upstream.test" == host
                [(family, kind, proto, name, address)] = await resolve("127.0.0.1", port, *args[1:], **kwargs)
                return [(family, kind, proto, name, silent.getsockname()), (family, kind, proto, name, address)]

            monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
            async with client(connect_timeout=1.5, total_timeout=3.0) as session:
                answer = await asyncio.wait_for(
                    send(session, "GET", URL(f"http://upstream.test:{port}/"), {}, b""), 1.0
                )
    assert (200, b"ok") == _status_body(answer)


async def test_a_pooled_connection_the_upstream_closes_leaves_the_pool_at_once() -> None:
    """It was dropped from the idle list only when a later call came by, and never from the
    client's open connections: one kept object per connection an upstream closed while idle."""
    async with keep_alive_upstream(OK, OK, OK, close_after=lambda n: True) as upstream, client() as session:
        for _ in range(3):
            assert 200 == (await send(session, "GET", URL(upstream.url), {}, b"")).status
            async with asyncio.timeout(1):
                while session._open:  # until the upstream's close reaches the client
                    await asyncio.sleep(0.01)
        assert {} == {key: idle for key, idle in session._idle.items() if idle}
    assert 3 == upstream.connections


async def test_a_call_cancelled_half_way_leaves_no_connection_behind_for_the_next() -> None:
    """The caller went away mid-answer: that connection's state is unknown, so it is closed."""
    async with keep_alive_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", OK) as upstream:
        async with client() as session:
            call = asyncio.create_task(send(session, "GET", URL(upstream.url), {}, b""))
            while not upstream.received:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert b"ok" == (await send(session, "GET", URL(upstream.url), {}, b"")).body
        assert 2 == upstream.connections


async def test_a_bad_header_never_leaves() -> None:
    async with keep_alive_upstream() as upstream, client() as session:
        for value in ("a\r\nX-Injected: 1", "caf\udce9"):
            with pytest.raises(UpstreamError) as raised:
                await send(session, "GET", URL(upstream.url), {"X-A": value}, b"")
            assert (raised.value.kind, raised.value.sent) == ("failed", False)
    assert 0 == upstream.connections


async def test_a_closed_client_closes_its_connections() -> None:
    async with keep_alive_upstream(OK) as upstream:
        async with client() as session:
            await send(session, "GET", URL(upstream.url), {}, b"")
        assert [] == [connection for connection in session._open if not connection.lost]


async def test_a_connection_that_sent_more_than_its_answer_is_not_used_again() -> None:
    """Bytes after an answer (with it, or later on the idle connection) could be read as the next
    call's answer: the connection is closed, and the next call gets its own answer."""
    for extra in (b"HTTP/1.1 500 Stale\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"):
        async with keep_alive_upstream(OK + extra, OK) as upstream, client() as session:
            assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
            assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
        assert 2 == upstream.connections


async def test_a_connection_whose_last_read_began_another_answer_is_not_used_again() -> None:
    """The start of a second answer in the same read as the end of the first: the parser holds
    it, and the rest could come just after the next call is written there, as its answer."""
    for extra in (b"HTTP/1.1 5", b"HTTP/1.1 500 Stale\r\n"):
        async with keep_alive_upstream(OK + extra, OK) as upstream, client() as session:
            assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
            assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
        assert 2 == upstream.connections


@pytest.mark.parametrize(
    "status_line",
    [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x", b"HTTP/1.1 000 Zero", b"HTTP/1.1 099 X", b"HTTP/1.1 600 X"],
    ids=["101", "000", "099", "600"],
)
async def test_a_status_http_does_not_have_is_malformed_and_its_connection_closed(status_line: bytes) -> None:
    async with keep_alive_upstream(status_line + b"\r\nContent-Length: 2\r\n\r\nok", OK) as upstream:
        async with client() as session:
            with pytest.raises(UpstreamError) as raised:
                await send(session, "DELETE", URL(upstream.url), {}, b"")
            assert ("malformed", True, None) == (raised.value.kind, raised.value.sent, raised.value.status)
            assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
        assert 2 == upstream.connections


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
FAULT_AFTER_HEAD = {
    # name: (the first read, the rest, what the call gets), the rest coming at once or in a read of its own
    "extra": (OK[:-2], b"okEXTRA", (200, b"ok")),  # more than its Content-Length
    "204-body": (b"HTTP/1.1 204 No Content\r\n", b"Content-Length: 3\r\n\r\nabc", (204, b"")),  # 204 has none
    "100-extra": (b"HTTP/1.1 100 Continue\r\n\r\n" + OK[:-2], b"ok\x00junk", (200, b"ok")),
    "bad-chunk": (CHUNKED_HEAD, b"2\r\nok\r\nzz\r\n", ("incomplete", 200)),
}


@pytest.mark.parametrize("case", sorted(FAULT_AFTER_HEAD))
@pytest.mark.parametrize("reads", ["one-read", "two-reads"])
async def test_a_fault_after_the_head_gives_the_same_answer_however_the_bytes_are_read(case: str, reads: str) -> None:
    """A parser refuses a whole read: the head it had parsed in the read that also held the fault
    was lost, and the call was "malformed" (recorded unknown), while the same bytes in two reads
    gave the answer (RFC 9112, section 6.3: what follows it discarded) or, its body broken, its
    status. Either way the connection is never used again."""
    first, rest, expected = FAULT_AFTER_HEAD[case]
    parts = first + rest if reads == "one-read" else (first, rest)
    async with keep_alive_upstream(parts, OK) as upstream, client() as session:
        try:
            got: tuple[object, ...] = _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
        except UpstreamError as exc:
            got = (exc.kind, exc.status)
        assert expected == got
        assert (200, b"ok") == _status_body(await send(session, "GET", URL(upstream.url), {}, b""))
    assert 2 == upstream.connections


def _status_body(reply: Any) -> tuple[int, bytes]:
    return reply.status, reply.body
