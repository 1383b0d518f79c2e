"""The listening side: how many connections the gateway holds, and how long it waits for callers.

aiohttp closes a connection that has not sent a whole request within ``keepalive_timeout`` of
connecting or of its last answer (``server.keepalive_timeout``, an hour by aiohttp's default),
and ``gateway.revoke`` bounds the wait for a body (``server.body_timeout``). That keep-alive timer
is aiohttp's only deadline, and it has no cap on connections: callers that open connections and
send nothing, or half a request line, or a header byte now and then, or that never read their
answers, each hold a file descriptor until the process has none left and real callers fail. A
few hooks on aiohttp's server close the gaps:

- a cap (``server.max_connections``), counted from the TCP connection: past it, a new connection
  gets a fixed 503 and is closed at once, before anything is read or parsed (with HTTPS, before
  any handshake, which is why the handler starts TLS itself instead of asyncio's server);
- a head deadline (``server.header_timeout``): from connecting (the TLS handshake included), and
  from the first byte of each later request, the request line and headers must be in by then,
  or the connection is closed;
- a send deadline (``server.send_timeout``): an answer must be written, handed whole to the
  operating system, within it, or the connection is closed; a forced close drops unsent bytes
  rather than wait for a reader that may never come;
- an answer of its own to a request aiohttp's parser refuses: Apigee-shaped, quoting nothing
  of the request (aiohttp's echoes the offending line, which may hold an Authorization header);
- a drain with one deadline (SIGTERM): idle connections close at once, calls in flight get the
  runner's ``shutdown_timeout`` (aiohttp's own drain waits up to twice that), and then what is
  left is cancelled and closed.

aiohttp offers no public hook for these, so ``GatewayRunner`` builds aiohttp's server with a
request handler of its own; it reads a few of aiohttp's internals, checked at start-up.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from typing import Any, cast

from aiohttp import http_exceptions, web
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
UNPARSABLE = "The request is not valid HTTP/1.1: its request line, a header or its body's framing is malformed"
"""What the gateway says of a request aiohttp's parser refused: a fixed sentence, never the
parser's message, which quotes the offending line (an Authorization header, a token in a path).
aiohttp's C parser gives most of its refusals one class, so the sentence does not guess which."""
TOO_LONG = "The request line or a header is too long"
_INTERNALS = ("_waiter", "_messages", "_task_handler", "_request_in_progress")
"""What of aiohttp's RequestHandler the deadlines and the drain read (see ``_GuardedHandler``)."""


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
    """The cap's bookkeeping, shared by every connection of one listener, and its settings."""

    def __init__(self, settings: ServerConfig, log: Logger, tls: ssl.SSLContext | None = None) -> None:
        self.max_connections = settings.max_connections
        self.header_timeout = settings.header_timeout
        self.send_timeout = settings.send_timeout
        self.tls = tls
        """The listener's TLS: each admitted connection's handler starts it (``_GuardedHandler``)."""
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        """Connections closed because a head (or handshake) or an answer took too long."""
        self.handshakes: set[asyncio.Task[None]] = set()
        """TLS handshakes under way: connections counted, not yet aiohttp's."""
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
    """aiohttp's request handler, admitted by the guard and held to its deadlines.

    "Waiting for a request" is aiohttp's own notion, the one its keep-alive timer uses: the
    handler's loop awaits ``_waiter`` for the next parsed message (``_messages``). Bytes arriving
    then belong to a request's head, so the first of them starts the deadline, and a parsed
    message ends it. Bytes arriving while a request is handled (its body, or a pipelined next
    request) start nothing: a body has its own deadline, and a pipelined head left incomplete is
    closed by aiohttp's keep-alive timer once the answer before it is sent.

    Answers are written by ``finish_response``; the send deadline runs from its start, and stays
    armed past it while the transport still holds unsent bytes (the next answer re-arms it).
    """

    __slots__ = (
        "_admitted",
        "_answering",
        "_draining",
        "_finished",
        "_gone",
        "_guard",
        "_handshake",
        "_head_deadline",
        "_send_deadline",
        "_task",
    )

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._answering = False
        self._draining = False
        self._gone = False
        self._finished = asyncio.Event()
        """Set once the connection is closed and its call, if one runs, has ended."""
        self._handshake: asyncio.Task[None] | None = None
        self._head_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = cast(asyncio.Transport, transport)
        if not self._guard.admit():
            if self._guard.tls is None:
                connection.write(self._guard.refusal)
                connection.close()
            else:  # a 503 in clear could not be read before a handshake, and a handshake costs
                connection.abort()
            return
        self._admitted = True
        self._start_head_deadline()
        tls = self._guard.tls
        if tls is None:
            self._connected(connection)
            return
        connection.pause_reading()  # the ClientHello is for start_tls, not the HTTP parser
        self._handshake = self._loop.create_task(self._secure(connection, tls), name="tls-handshake")
        self._guard.handshakes.add(self._handshake)
        self._handshake.add_done_callback(self._guard.handshakes.discard)

    async def _secure(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        """TLS on a connection already counted, within the head deadline (which cancels it)."""
        secured: asyncio.Transport | None
        try:
            secured = await self._loop.start_tls(
                transport,
                self,
                tls,
                server_side=True,
                ssl_handshake_timeout=self._guard.header_timeout,
                ssl_shutdown_timeout=self._guard.send_timeout,
            )
        except (Exception, asyncio.CancelledError):  # failed, timed out, or cut by the head deadline or SIGTERM
            secured = None
        self._handshake = None
        if secured is None:  # also when the connection went during the handshake
            transport.abort()
            self._release()
            return
        self._connected(secured)

    def _connected(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._task = self._task_handler
        if self._task is not None:
            self._task.add_done_callback(lambda _: self._check_finished())

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
        self._stop_send_deadline()
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self._guard.release()
        self._gone = True
        self._check_finished()

    def _check_finished(self) -> None:
        if self._gone and (self._task is None or self._task.done()):
            self._finished.set()

    def force_close(self) -> None:
        """aiohttp's, except that unsent bytes are dropped: closing a transport that holds some
        waits for the caller to read them, which one that never reads never does."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()  # before aiohttp's close: a TLS transport closed twice cannot be aborted
        super().force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's, where every answer is written, under the send deadline."""
        if self._draining:
            resp.force_close()  # the last answer on this connection: say so
        self._start_send_deadline()
        self._answering = True
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answering = False
            if self._draining:
                self.close()
            transport = self.transport
            if transport is None or not transport.get_write_buffer_size():
                self._stop_send_deadline()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused (400), or to a handler's uncaught
        exception (500), in Apigee's shape and quoting nothing of the request. aiohttp's own
        echoes the offending line, secrets included; its log line (kept: aiohttp writes it,
        the exception's text dropped by ``gateway.logs``) and its checks stay."""
        super().handle_error(request, status, exc, message)
        response = answer_for_error(status, exc)
        response.force_close()
        return response

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
        if self._handshake is not None:
            self._guard.timed_out += 1
            self._handshake.cancel()
        elif self._waiting_for_request() and not self._messages:
            self._guard.timed_out += 1
            self.force_close()

    def _start_send_deadline(self) -> None:
        self._stop_send_deadline()
        self._send_deadline = self._loop.call_later(self._guard.send_timeout, self._answer_is_late)

    def _stop_send_deadline(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _answer_is_late(self) -> None:
        self._send_deadline = None
        transport = self.transport
        if transport is not None and (self._answering or transport.get_write_buffer_size()):
            self._guard.timed_out += 1
            self.force_close()

    def drain(self) -> None:
        """SIGTERM: an idle connection (or one in its handshake, or half-way through a head) is
        closed now; a call in flight goes on, and its answer closes its connection."""
        if self._handshake is not None:
            self._handshake.cancel()
        elif self._waiting_for_request() and not self._messages:
            self.force_close()
        else:
            self._draining = True
            if not self._request_in_progress:  # answered, and reading what is left of a body
                self.close()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def abort(self) -> None:
        """The drain's end: the call still running is cancelled and the connection closed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.force_close()


def answer_for_error(status: int, exc: BaseException | None) -> web.Response:
    """The Apigee-shaped answer to a request aiohttp could not parse (400) or handle (500)."""
    if status >= 500:
        return errors.INTERNAL_ERROR.response()
    return errors.BAD_REQUEST.response(TOO_LONG if isinstance(exc, http_exceptions.LineTooLong) else UNPARSABLE)


class _GuardedServer(web.Server):
    """aiohttp's server as the application built it, making guarded request handlers, and
    draining them with one deadline."""

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

    def pre_shutdown(self) -> None:
        """Replaces aiohttp's, which stops reading every connection, the bodies of calls in flight too."""
        for task in list(self._guard.handshakes):
            task.cancel()
        for handler in self._guarded():
            handler.drain()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """Replaces aiohttp's, which waits up to ``timeout`` for a call, then as long again for
        its connection: here the calls in flight, and the answers being written, get ``timeout``
        in all; then what is left is cancelled and closed."""
        handlers = self._guarded()
        if handlers:
            waits = [asyncio.ensure_future(handler.wait_finished()) for handler in handlers]
            _, late = await asyncio.wait(waits, timeout=timeout)
            for wait in late:
                wait.cancel()
        for handler in handlers:
            handler.abort()
        self._connections.clear()

    def _guarded(self) -> list[_GuardedHandler]:
        return [handler for handler in self._connections if isinstance(handler, _GuardedHandler)]


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are capped and held to the deadlines. With ``tls``,
    its sites serve HTTPS: give them no ``ssl_context`` of their own (asyncio's TLS would run
    before a connection is counted)."""

    def __init__(
        self, app: web.Application, settings: ServerConfig, *, tls: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        missing = [name for name in _INTERNALS if name not in RequestHandler.__slots__]
        if missing:
            raise RuntimeError(
                f"this aiohttp's RequestHandler lacks {', '.join(missing)}: the connection deadlines cannot be kept"
            )
        super().__init__(app, **kwargs)
        self.guard = ConnectionGuard(settings, get_logger(), tls)

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
        "Connections closed because a request's head (with HTTPS, the handshake too) took over "
        "server.header_timeout, or an answer over server.send_timeout.",
        lambda: guard.timed_out,
        counter=True,
    )
