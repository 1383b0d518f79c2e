"""Slow and idle callers cannot exhaust the gateway: heads and bodies have deadlines, idle
connections are closed, and past the connection cap a new connection is refused at once.

Real sockets against the real listener (``GatewayRunner``, as `gateway serve` runs it).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from helpers import SAMPLE_PATH, USERS, GatewayFactory, Peer, basic, make_config, rows
from processes import START_TIMEOUT, started
from tls_support import client_context, server_files

from gateway.app import build_app
from gateway.cli.server import drain_seconds
from gateway.config import Config, load_config
from gateway.errors import TOO_MANY_CONNECTIONS
from gateway.health import METRICS_CONNECTIONS
from gateway.listener import ConnectionGuard, GatewayRunner, files_needed

WAIT = 30.0
"""The most a test waits for the gateway to close a connection (it should take under a second)."""
REFUSAL = TOO_MANY_CONNECTIONS.wire(headers={"Retry-After": "1"})


@asynccontextmanager
async def listening(config: Config) -> AsyncIterator[tuple[ConnectionGuard, int]]:
    """The gateway behind its real listener on a free loopback port (HTTPS when the config says
    so, as `gateway serve` does it): its guard, and the port."""
    runner = GatewayRunner(build_app(config), config.server, tls=config.listener_tls(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.guard, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway still sends before it closes the connection."""
    async with asyncio.timeout(WAIT):
        return await reader.read()


async def one_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer (head and Content-Length body) from a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
METRICS = b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n"
"""Unauthenticated, with an answer of some kilobytes: what a caller that never reads asks for."""


def unread_socket(port: int) -> socket.socket:
    """A connection with a small receive buffer that is never read: a caller ignoring its answers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def pipeline_unread(sock: socket.socket, request: bytes) -> None:
    """Send ``request`` on and on, reading nothing, until the gateway closes the connection."""
    loop = asyncio.get_running_loop()
    with suppress(ConnectionError):
        while True:
            await loop.sock_sendall(sock, request * 64)


@pytest.mark.parametrize(
    "sent",
    [b"", b"DELETE /v1/o/myorg/oau", b"DELETE /v1/o/myorg/oauth2/accesstokens/x HTTP/1.1\r\nHost: g\r\nAuthoriz"],
    ids=["nothing", "half-a-request-line", "half-the-headers"],
)
async def test_a_head_not_in_by_header_timeout_has_its_connection_closed(tmp_path: Path, sent: bytes) -> None:
    async with listening(make_config(tmp_path, server={"header_timeout": 0.3})) as (guard, port):
        reader, writer = await connect(port)
        writer.write(sent)
        assert b"" == await until_closed(reader)  # closed, unanswered
        writer.close()
        assert (1, 0) == (guard.timed_out, guard.open)


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_header_timeout(tmp_path: Path) -> None:
    """Slowloris proper: bytes keep coming, but the deadline runs from the first of them."""
    async with listening(make_config(tmp_path, server={"header_timeout": 0.5})) as (guard, port):
        reader, writer = await connect(port)

        async def trickle() -> None:
            for byte in b"DELETE /v1/o/myorg/oauth2/accesstokens/x HTTP/1.1\r\n" + b"X-Slow: yes\r\n" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.02)

        trickling = asyncio.create_task(trickle())
        assert b"" == await until_closed(reader)
        trickling.cancel()
        writer.close()
        assert 1 == guard.timed_out


async def test_after_an_answer_an_idle_connection_lasts_keepalive_timeout_and_a_half_sent_one_header_timeout(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, server={"keepalive_timeout": 0.3, "header_timeout": 60.0})
    async with listening(config) as (guard, port):
        reader, writer = await connect(port)
        writer.write(HEALTHZ)
        assert (await one_answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"" == await until_closed(reader)  # idle: aiohttp's keep-alive timer, from the config
        assert 0 == guard.timed_out
    config = make_config(tmp_path, server={"keepalive_timeout": 60.0, "header_timeout": 0.3})
    async with listening(config) as (guard, port):
        reader, writer = await connect(port)
        writer.write(HEALTHZ)
        assert (await one_answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.write(HEALTHZ[:10])  # the next request, begun and left
        assert b"" == await until_closed(reader)
        assert 1 == guard.timed_out


async def test_past_the_cap_a_connection_is_refused_at_once_and_callers_are_served_once_idle_ones_time_out(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, server={"max_connections": 3, "header_timeout": 2.0})
    async with listening(config) as (guard, port):
        idle = [await connect(port) for _ in range(3)]  # silent: the slowloris that fills the cap
        reader, writer = await connect(port)
        assert REFUSAL == await until_closed(reader)  # answered unread, then closed
        writer.close()
        for idle_reader, idle_writer in idle:
            assert b"" == await until_closed(idle_reader)
            idle_writer.close()
        async with aiohttp.ClientSession() as session:
            async with session.delete(f"http://127.0.0.1:{port}{SAMPLE_PATH}", headers=basic("myname")) as served:
                assert 200 == served.status
        assert (1, 3) == (guard.refused, guard.timed_out)
    assert b'{"code": "gateway.too_many_connections", ' in REFUSAL
    assert REFUSAL.startswith(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n")


async def test_a_body_not_in_by_body_timeout_gets_408_and_is_audited(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url, server={"body_timeout": 0.3}))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"DELETE {SAMPLE_PATH} HTTP/1.1\r\nHost: g\r\nAuthorization: {basic('myname')['Authorization']}\r\n"
        "Content-Length: 100\r\n\r\nonly part of it".encode()
    )
    answer = await until_closed(reader)
    writer.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"\r\nConnection: close" in head
    assert {
        "code": "gateway.request_timeout",
        "message": "The request body did not arrive within 0.3 s",
        "contexts": [],
    } == json.loads(body)
    assert [] == peer.requests
    [record] = rows(tmp_path / "audit.db")
    assert ("rejected", "myname", "gateway.request_timeout") == (
        record["outcome"],
        record["actor"],
        record["error_code"],
    )


async def test_the_metrics_port_has_a_cap_and_deadlines_of_its_own(tmp_path: Path, gateway: GatewayFactory) -> None:
    """A flood on metrics.port must not take the file descriptors callers need either."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await gateway(make_config(tmp_path, server={"header_timeout": 2.0}, metrics={"port": port}))
    silent = [await connect(port) for _ in range(METRICS_CONNECTIONS)]
    reader, writer = await connect(port)
    assert REFUSAL == await until_closed(reader)
    writer.close()
    for silent_reader, silent_writer in silent:
        assert b"" == await until_closed(silent_reader)
        silent_writer.close()


async def test_a_caller_that_never_reads_its_answers_is_closed_at_send_timeout(tmp_path: Path) -> None:
    """Pipelined requests whose answers are never read: the answer being written blocks, and the
    send deadline closes the connection (unsent bytes dropped), so no such caller holds a slot."""
    config = make_config(tmp_path, server={"send_timeout": 0.5, "header_timeout": 60.0, "keepalive_timeout": 60.0})
    async with listening(config) as (guard, port):
        sock = unread_socket(port)
        try:
            async with asyncio.timeout(WAIT):
                await pipeline_unread(sock, METRICS)
        finally:
            sock.close()
        assert (1, 0) == (guard.timed_out, guard.open)
        reader, writer = await connect(port)
        writer.write(HEALTHZ)
        assert (await one_answer(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()


async def test_with_https_a_connection_counts_from_tcp_and_its_handshake_is_held_to_header_timeout(
    tmp_path: Path,
) -> None:
    """Silent TCP connections to the HTTPS listener: counted toward the cap before any handshake (the
    next one is closed at once), and closed at header_timeout, not asyncio's 60 s."""
    authority = trustme.CA()
    server_files(authority, tmp_path)
    tls = {"tls_cert": "cert.pem", "tls_key": "key.pem"}
    config = make_config(tmp_path, server={"max_connections": 2, "header_timeout": 0.5, **tls})
    async with listening(config) as (guard, port):
        silent = [await connect(port) for _ in range(2)]
        refused_reader, refused_writer = await connect(port)
        assert b"" == await until_closed(refused_reader)  # closed at once: no 503 in clear to a TLS caller
        refused_writer.close()
        assert (1, 2) == (guard.refused, guard.open)
        for silent_reader, silent_writer in silent:
            assert b"" == await until_closed(silent_reader)
            silent_writer.close()
        assert (2, 0) == (guard.timed_out, guard.open)
        connector = aiohttp.TCPConnector(ssl=client_context(authority))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.delete(f"https://127.0.0.1:{port}{SAMPLE_PATH}", headers=basic("myname")) as served:
                assert 200 == served.status


def test_files_needed_and_the_soft_limit_is_raised_as_far_as_the_hard_one_allows() -> None:
    """Run where the limits can be lowered without harm: a child Python process (hard limits only go down)."""
    assert 2064 == files_needed(1000)
    code = (
        "import resource\n"
        "from gateway.listener import raise_file_limit\n"
        "for soft, hard in ((256, 4096), (2048, 4096), (256, 512)):\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))\n"
        "    print(raise_file_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=START_TIMEOUT
    ).stdout
    # Raised to what is needed; never lowered; raised only as far as the hard limit, and said so.
    assert ["True 1000", "True 2048", "False 512"] == out.splitlines()


def write_config(tmp_path: Path, server: str, *, audit: str = "") -> Path:
    """``server``: the [server] table's lines, and any table after it."""
    user = USERS[0]
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[server]\n{server}[audit]\ndatabase = 'audit.db'\n{audit}[logging]\nformat = 'json'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    return config


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
async def test_gateway_serve_holds_its_connections_to_the_config(tmp_path: Path) -> None:
    """The real command: the cap and the head deadline from [server], and their counts in /metrics."""
    config = write_config(tmp_path, "max_connections = 1\nheader_timeout = 2.0\n")
    async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        silent_reader, silent_writer = await connect(port)
        refused_reader, refused_writer = await connect(port)
        assert REFUSAL == await until_closed(refused_reader)
        assert b"" == await until_closed(silent_reader)
        for writer in (silent_writer, refused_writer):
            writer.close()
        logged = await gateway.logged("connections_refused")
        assert (1, 1) == (logged["max_connections"], logged["refused"])
        async with aiohttp.ClientSession() as session, session.get(gateway.url + "/metrics") as response:
            scraped = await response.text()
        assert "gateway_connections_refused_total 1.0" in scraped
        assert "gateway_connections_timed_out_total 1.0" in scraped
        assert "gateway_connections_open 1.0" in scraped  # the scrape's own
        assert 0 == await gateway.stop(signal.SIGTERM)


BIG = 1_000_000
"""Under upstream.max_body_mb; eight such answers overflow loopback's largest socket buffers (4 MiB)."""
SETTLED = 1.0
"""Seconds without a new request upstream after which the unread pipeline is taken as stuck."""


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
async def test_sigterm_stops_within_the_drain_whatever_the_connections_do(tmp_path: Path, aiohttp_server: Any) -> None:
    """Idle, half-sent and unread connections do not stretch the drain (aiohttp's own waited up to
    twice its bound for an answer nobody read): SIGTERM ends the gateway within drain_seconds, and
    the call in flight is answered and recorded first."""
    arrived, answer, big_arrived = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def upstream_token(request: web.Request) -> web.Response:
        if request.path.endswith("/big"):
            big_arrived.set()
            return web.Response(body=b'{"token": "' + b"x" * BIG + b'"}', content_type="application/json")
        arrived.set()
        await answer.wait()
        return web.Response(body=b'{"token": "x"}', content_type="application/json")

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_token)
    upstream = await aiohttp_server(upstream_app)
    config = write_config(
        tmp_path,
        "header_timeout = 1.0\nbody_timeout = 0.5\nsend_timeout = 60.0\n"
        f"[upstream]\nurl = '{str(upstream.make_url('')).rstrip('/')}'\n"
        "connect_timeout = 0.5\nread_timeout = 2.0\ntotal_timeout = 2.0\n",
        audit="busy_timeout = 0.5\n",
    )
    drain = drain_seconds(load_config(config))
    loop = asyncio.get_running_loop()
    async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        idle_reader, idle_writer = await connect(port)
        half_reader, half_writer = await connect(port)
        half_writer.write(b"DELETE /v1/o/myorg/oau")
        unread = unread_socket(port)
        authorization = basic("myname")["Authorization"]
        big = (
            f"DELETE /v1/o/myorg/oauth2/accesstokens/big HTTP/1.1\r\nHost: g\r\nAuthorization: {authorization}\r\n\r\n"
        )
        await loop.sock_sendall(unread, big.encode() * 8)
        assert b"H" == await loop.sock_recv(unread, 1)  # the answers have begun; the rest is never read
        # Each answer goes upstream once the one before it is written: when no more come, the
        # gateway is stuck writing (the state no event announces, hence the wait for quiet).
        while True:
            big_arrived.clear()
            try:
                await asyncio.wait_for(big_arrived.wait(), SETTLED)
            except TimeoutError:
                break
        async with aiohttp.ClientSession() as session:
            call = asyncio.create_task(session.delete(gateway.url + SAMPLE_PATH, headers=basic("myname")))
            await arrived.wait()
            signalled = loop.time()
            gateway.process.send_signal(signal.SIGTERM)
            answer.set()
            response = await call
            assert 200 == response.status
            assert 0 == await gateway.exited()
        stopped = loop.time() - signalled
        for reader, writer in ((idle_reader, idle_writer), (half_reader, half_writer)):
            assert b"" == await until_closed(reader)
            writer.close()
        unread.close()
    assert stopped < drain, f"stopped {stopped:.1f} s after SIGTERM; drain_seconds says {drain:.1f}"
    outcomes = [row["outcome"] for row in rows(tmp_path / "audit.db")]
    assert outcomes.count("pending") == outcomes.count("deleted") == len(outcomes) / 2  # every call recorded


async def test_gateway_serve_warns_when_the_file_limit_cannot_cover_max_connections(tmp_path: Path) -> None:
    """A hard limit of 512 cannot be raised past: the gateway says so, and serves what it can."""
    config = write_config(tmp_path, "max_connections = 1000\n")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))

    async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path, preexec_fn=low_limit) as gateway:
        logged = await gateway.logged("file_limit_low")
        assert (2064, 1000) == (logged["needed"], logged["max_connections"])
        async with aiohttp.ClientSession() as session, session.get(gateway.url + "/healthz") as response:
            assert 200 == response.status
        assert 0 == await gateway.stop(signal.SIGTERM)
