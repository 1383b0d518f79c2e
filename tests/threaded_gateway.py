"""A real gateway and a recording upstream served from a thread with its own event loop, so that
plain synchronous tests (hypothesis examples) can send it raw bytes (the ``rig`` fixture)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from helpers import make_config

from gateway.app import build_app
from gateway.listener import GatewayRunner


@dataclass
class Rig:
    """A gateway and a recording upstream, served from a thread with its own event loop."""

    gateway: tuple[str, int]
    forwarded: list[tuple[str, str | None]] = field(default_factory=list)
    """(raw path, Authorization) of every call the upstream received."""

    def send(self, request: bytes) -> int:
        with socket.create_connection(self.gateway, timeout=10) as sock:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock, method=request.split(b" ", 1)[0].decode("ascii", "replace"))
            response.begin()
            response.read()
            return response.status


@contextmanager
def served_in_thread(folder: Path) -> Iterator[Rig]:
    """A gateway (audit log in ``folder``, no login throttling) in front of an upstream that
    records every call and answers 200; both stop when the block ends."""
    loop = asyncio.new_event_loop()
    holder: list[Rig] = []
    ready = threading.Event()
    stop = asyncio.Event()

    async def upstream(request: web.Request) -> web.Response:
        holder[0].forwarded.append((request.raw_path, request.headers.get("Authorization")))
        return web.Response(body=b'{"token":"x"}', content_type="application/json")

    async def serve() -> None:
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/{tail:.*}", upstream)
        upstream_runner = web.AppRunner(upstream_app, access_log=None)
        await upstream_runner.setup()
        await web.TCPSite(upstream_runner, "127.0.0.1", 0).start()
        upstream_url = f"http://127.0.0.1:{upstream_runner.addresses[0][1]}"
        config = make_config(folder, upstream=upstream_url, throttle={"max_failures": 0})
        runner = GatewayRunner(build_app(config), config.server, access_log=None)  # as `gateway serve` serves it
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        holder.append(Rig(runner.addresses[0][:2]))
        ready.set()
        await stop.wait()
        await runner.cleanup()
        await upstream_runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield holder[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
