"""Structured logs with structlog, configured once for the process.

Following structlog's performance guide: a filtering bound logger (disabled levels cost
nothing) and one renderer (orjson for JSON). Lines are buffered and written in chunks: one write
per request was a system call per request, a measurable share of the gateway's CPU under load.
Warnings and errors are written at once; the rest waits at most ``FLUSH_INTERVAL`` seconds (the
gateway flushes on that timer and on shutdown). The request path logs one event per request,
built from facts it already holds; nothing secret is ever passed in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from gateway.terminal import printable, printable_json

Logger = Any
"""structlog's filtering bound loggers are generated classes; this names what callers hold."""

FLUSH_INTERVAL = 0.2
MAX_BUFFERED_LINES = 256


class LineBuffer:
    """A structlog logger that collects rendered lines and writes them in chunks."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []

    def msg(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED_LINES:
            self.flush()

    def urgent(self, line: str) -> None:
        self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # the stream is gone (closed, broken pipe): no one can read them
                pass

    debug = info = msg
    warning = error = critical = exception = fatal = urgent


class _Handler(logging.Handler):
    """Standard-library records (aiohttp, asyncio) go through the same buffer, in order."""

    def __init__(self, buffer: LineBuffer) -> None:
        super().__init__()
        self._buffer = buffer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _without_exception_text(record)
            self._buffer.urgent(self.format(record))
        except Exception:
            self.handleError(record)


def _without_exception_text(record: logging.LogRecord) -> None:
    """Keep an exception's type, drop its text and traceback: aiohttp's parser errors quote
    the offending request line or header (an Authorization value, a token in a path), and a
    traceback is not what an operator should read. The request's own log line says the rest."""
    if record.exc_info and record.exc_info[0] is not None:
        record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__})"
        record.args = None
        record.exc_info = record.exc_text = None
        record.stack_info = None


_buffer: LineBuffer | None = None


def configure_logging(format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send our events and the standard library's to ``stream`` in one format."""
    global _buffer
    flush_logs()
    stream = stream or sys.stderr
    if format == "auto":
        format = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    # JSON escapes what a terminal would obey (see _orjson_text); console lines need it done here.
    escape: list[Any] = [_printable_values] if format != "json" else []
    shared: list[Any] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    _buffer = buffer = LineBuffer(stream)
    structlog.configure(
        processors=[*shared, *escape, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: buffer,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    handler = _Handler(buffer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *escape, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def flush_logs() -> None:
    """Write out buffered lines now (tests call it before reading what was logged)."""
    if _buffer is not None:
        _buffer.flush()


async def flush_logs_periodically() -> None:
    """Run for the gateway's lifetime, so an idle gateway's last lines still appear promptly."""
    try:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            flush_logs()
    finally:
        flush_logs()


def _orjson_text(event: Any, **_: Any) -> str:
    """structlog's JSON renderer, with orjson: a quarter of the cost of the standard library.
    Characters a terminal would obey (a claimed user name may hold them) become JSON escapes;
    what orjson refuses (a lone surrogate, an integer past 64 bits) is written by the standard
    library, escaped: a log line must never be the reason a request fails."""
    try:
        return printable_json(orjson.dumps(event, default=str).decode())
    except TypeError:
        return json.dumps(event, default=str)


def _printable_values(logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Console lines: every text value with its control and format characters escaped."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in event.items()}


def get_logger() -> Logger:
    """A logger bound to the current configuration, for one component to keep."""
    return structlog.get_logger().bind()
