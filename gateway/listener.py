"""The listening side: how many connections the gateway holds, and how long it waits for callers.

aiohttp closes a connection that has not sent a whole request within ``keepalive_timeout`` of
connecting or of its last answer (``server.keepalive_timeout``, an hour by aiohttp's default),
and ``gateway.revoke`` bounds the wait for a body (``server.body_timeout``). That keep-alive timer
is aiohttp's only deadline for a request's head, and it has no cap on connections: callers that
open connections and send nothing, or half a request line, or a header byte now and then, each
hold a file descriptor until the process has none left and real callers fail. Two small hooks
on aiohttp's server close the gap:

- a cap (``server.max_connections``): past it, a new connection gets a fixed 503 and is closed
  at once, before anything is read or parsed;
- a head deadline (``server.header_timeout``): from connecting, and from the first byte of each
  later request, the request line and headers must be in by then, or the connection is closed.

aiohttp offers no public hook for either, so ``GatewayRunner`` builds aiohttp's server with a
request handler of its own; it reads two of aiohttp's internals, checked at start-up.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway import errors
from gateway.config import ServerConfig
from gateway.logs import Logger, get_logger
from gateway.metrics import Metrics

FILES_PER_CONNECTION = 2
"""A caller's connection, and the upstream connection its call may hold."""
FILES_RESERVED = 64
"""Listeners, the audit database's files (writer, reader, probes), the embedded stub, logs."""
LOG_REFUSALS_EVERY = 60.0
"""Seconds between log lines about refused connections: a flood must not flood the log too."""
_INTERNALS = ("_waiter", "_messages")
"""What of aiohttp's RequestHandler the head deadline reads (see ``_GuardedHandler``)."""


def files_needed(max_connections: int) -> int:
    """Open files the gateway may need with ``max_connections`` callers connected."""
    return FILES_PER_CONNECTION * max_connections + FILES_RESERVED


def raise_file_limit(needed: int) -> bool:
    """Raise the soft limit on open files to ``needed`` as far as the hard limit allows; whether
    it now suffices. (systemd starts services with a soft limit of 1024 unless LimitNOFILE says.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return True
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    except (OSError, ValueError):  # refused (a system-call filter, say): the caller warns
        return False
    return raised >= needed


class ConnectionGuard:
    """The cap's bookkeeping, shared by every connection of one listener."""

    def __init__(self, settings: ServerConfig, log: Logger) -> None:
        self.max_connections = settings.max_connections
        self.header_timeout = settings.header_timeout
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        """Connections closed because a request's head did not arrive in time."""
        self.refusal = errors.TOO_MANY_CONNECTIONS.wire(headers={"Retry-After": "1"})
        self._log = log
        self._last_logged: float | None = None
        self._refused_logged = 0

    def admit(self) -> bool:
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            self._log_refusals()
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def _log_refusals(self) -> None:
        now = time.monotonic()
        if self._last_logged is None or now - self._last_logged >= LOG_REFUSALS_EVERY:
            self._log.warning(
                "connections_refused",
                max_connections=self.max_connections,
                refused=self.refused - self._refused_logged,
                hint="server.max_connections reached",
            )
            self._last_logged, self._refused_logged = now, self.refused


class _GuardedHandler(RequestHandler):
    """aiohttp's request handler, admitted by the guard and held to the head deadline.

    "Waiting for a request" is aiohttp's own notion, the one its keep-alive timer uses: the
    handler's loop awaits ``_waiter`` for the next parsed message (``_messages``). Bytes arriving
    then belong to a request's head, so the first of them starts the deadline, and a parsed
    message ends it. Bytes arriving while a request is handled (its body, or a pipelined next
    request) start nothing: a body has its own deadline, and a pipelined head left incomplete is
    closed by aiohttp's keep-alive timer once the answer before it is sent.
    """

    __slots__ = ("_admitted", "_guard", "_head_deadline")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit():
            writer = cast(asyncio.WriteTransport, transport)
            writer.write(self._guard.refusal)
            writer.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_head_deadline()

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if self._head_deadline is None and self._waiting_for_request():
            self._start_head_deadline()
        super().data_received(data)
        if self._messages:
            self._stop_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_deadline()
        if self._admitted:
            self._admitted = False
            self._guard.release()
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _start_head_deadline(self) -> None:
        self._head_deadline = self._loop.call_later(self._guard.header_timeout, self._head_is_late)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_is_late(self) -> None:
        self._head_deadline = None
        if self._waiting_for_request() and not self._messages:
            self._guard.timed_out += 1
            self.force_close()


class _GuardedServer(web.Server):
    """aiohttp's server as the application built it, making guarded request handlers."""

    def __init__(self, plain: web.Server, guard: ConnectionGuard) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )
        self._guard = guard

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, self._guard, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are capped and held to the head deadline."""

    def __init__(self, app: web.Application, settings: ServerConfig, **kwargs: Any) -> None:
        missing = [name for name in _INTERNALS if name not in RequestHandler.__slots__]
        if missing:
            raise RuntimeError(
                f"this aiohttp's RequestHandler lacks {', '.join(missing)}: the head deadline cannot be kept"
            )
        super().__init__(app, **kwargs)
        self.guard = ConnectionGuard(settings, get_logger())

    async def _make_server(self) -> web.Server:
        return _GuardedServer(await super()._make_server(), self.guard)


def count_connections(metrics: Metrics, guard: ConnectionGuard) -> None:
    """The guard's counts, read at each scrape."""
    metrics.read_at_scrape("gateway_connections_open", "Caller connections open now.", lambda: guard.open)
    metrics.read_at_scrape(
        "gateway_connections_refused",
        "Connections refused with 503 at server.max_connections.",
        lambda: guard.refused,
        counter=True,
    )
    metrics.read_at_scrape(
        "gateway_connections_timed_out",
        "Connections closed because a request's head took over server.header_timeout.",
        lambda: guard.timed_out,
        counter=True,
    )
