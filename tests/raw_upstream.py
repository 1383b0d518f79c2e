"""A raw asyncio upstream, for answers aiohttp's own server would never send: a byte at a time,
header bytes that are not UTF-8, no Content-Type. It also counts the connections it accepts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field


@dataclass
class RawUpstream:
    url: str = ""
    connections: int = 0
    """Connections accepted, whether or not a request came on them."""
    requests: list[bytes] = field(default_factory=list)
    """Each request head received (request line and headers), as bytes."""
    bodies: list[bytes] = field(default_factory=list)
    """Each request body received (as long as its Content-Length says), as bytes."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the first request head has arrived."""


@asynccontextmanager
async def raw_upstream(reply: bytes = b"", *, trickled: bytes = b"", every: float = 0.1) -> AsyncIterator[RawUpstream]:
    """Answer every request with ``reply`` at once, then ``trickled`` one byte each ``every`` seconds."""
    upstream = RawUpstream()
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        upstream.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            upstream.requests.append(head)
            upstream.bodies.append(await reader.readexactly(_content_length(head)))
            upstream.arrived.set()
            writer.write(reply)
            await writer.drain()
            for byte in trickled:
                await asyncio.sleep(every)
                writer.write(bytes([byte]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away: a probe's connection, or the gateway giving up
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=1 << 20)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield upstream
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        for task in handlers:
            with suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
