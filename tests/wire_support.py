"""Requests and answers as bytes on a socket, for what a client library would tidy up: a body
exactly as sent, a malformed head, the answer's head byte for byte. And an upstream that keeps
each request whole (head and body), where ``raw_upstream`` keeps only heads."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from helpers import PASSWORDS

from gateway.app import build_app
from gateway.config import Config
from gateway.listener import GatewayRunner


@asynccontextmanager
async def served(config: Config) -> AsyncIterator[int]:
    """The gateway behind its real listener (``GatewayRunner``, as `gateway serve` runs it) on a
    free loopback port: the port."""
    runner = GatewayRunner(build_app(config), config.server, tls=config.listener_tls(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def authorization(user: str) -> bytes:
    """The Authorization header line of a test user, as bytes."""
    credentials = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return f"Authorization: Basic {credentials}".encode()


def request(method: str, target: str, *headers: bytes, body: bytes = b"", user: str | None = "myname") -> bytes:
    """One HTTP/1.1 request asking to close: the user's credentials, ``headers`` as given, and a
    Content-Length for ``body`` unless a header frames it already."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: gateway"]
    if user is not None:
        lines.append(authorization(user))
    lines += headers
    framed = any(line.lower().startswith((b"content-length:", b"transfer-encoding:")) for line in headers)
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, *parts: bytes, pause: asyncio.Event | None = None) -> bytes:
    """Send ``parts`` to 127.0.0.1:``port`` (waiting for ``pause`` between the first and the
    rest, when given), then read the whole answer until the gateway closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, part in enumerate(parts):
            if index == 1 and pause is not None:
                await pause.wait()
            writer.write(part)
            await writer.drain()
        return await reader.read()
    finally:
        writer.close()


@dataclass(frozen=True)
class Answer:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[0] if found else None


def parse(answer: bytes) -> Answer:
    """An answer split into its status line, headers (names as sent) and body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = [(name, value.lstrip()) for name, _, value in (line.partition(b":") for line in lines)]
    return Answer(status_line, headers, body)
