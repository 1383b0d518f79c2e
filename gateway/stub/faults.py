"""Upstream failures on demand, so the gateway's handling of each can be rehearsed.

A fault is plain data checked by ``parse_fault``; ``Faults`` holds the one in force and counts
it down; ``answer`` carries it out on a request, down to breaking the connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import hdrs, web

KINDS = ("none", "status", "reset", "empty", "malformed")
"""none: only the delay; status: a chosen answer; reset: the connection drops mid-body;
empty: it closes before any byte; malformed: bytes that are not HTTP."""

RESET_BYTES = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n"
    b'{\n"apiProducts" : [ "sandbox" ],\n'
)
"""A 200 whose body stops long before its Content-Length: the answer a deletion loses in flight."""
MALFORMED_BYTES = b"HTTP/1.1 abc\r\n\r\n"
"""A status line without a status code."""
_RAW_BYTES = {"reset": RESET_BYTES, "empty": b"", "malformed": MALFORMED_BYTES}

_STATUS_ONLY = ("status", "body", "content_type")
FIELDS = ("kind", *_STATUS_ONLY, "delay", "jitter", "times")


class FaultError(ValueError):
    """A fault description that cannot be used; the message starts with the field's name."""


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    delay: float = 0.0
    """Seconds to wait before the fault (for "none", before the normal answer)."""
    jitter: float = 0.0
    """Up to this many seconds more, at random."""
    times: int | None = None
    """How many more requests get the fault; None: until it is cleared."""

    def pause(self) -> float:
        return self.delay + random.uniform(0, self.jitter) if self.jitter else self.delay

    def to_json(self) -> dict[str, Any]:
        """The fault as ``parse_fault`` accepts it, so what GET shows can be PUT back."""
        shown = dataclasses.asdict(self)
        if self.kind != "status":
            for name in _STATUS_ONLY:
                del shown[name]
        return shown


def parse_fault(data: Any) -> Fault:
    """Check a fault description (parsed JSON), naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise FaultError(f"expected a JSON object with {_listing(FIELDS)}")
    for name in data:
        if name not in FIELDS:
            raise FaultError(f"{name}: unknown field; expected {_listing(FIELDS)}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise FaultError(f"kind: expected one of {_listing(KINDS, 'or')}; got {_show(kind)}")
    values: dict[str, Any] = {"kind": kind}
    if kind == "status":
        if "status" not in data:
            raise FaultError('status: required with kind "status"')
        values["status"] = _status(data["status"])
        if "body" in data:
            values["body"] = _string(data["body"], "body")
        if "content_type" in data:
            values["content_type"] = _content_type(data["content_type"])
    else:
        for name in _STATUS_ONLY:
            if name in data:
                raise FaultError(f'{name}: only with kind "status"')
    for name in ("delay", "jitter"):
        if name in data:
            values[name] = _seconds(data[name], name)
    if data.get("times") is not None:
        values["times"] = _times(data["times"])
    return Fault(**values)


class Faults:
    """The fault in force, if any, taken by each request as it arrives."""

    def __init__(self) -> None:
        self.current: Fault | None = None

    def take(self) -> Fault | None:
        """The fault for the request arriving now, counted against its ``times``."""
        fault = self.current
        if fault is not None and fault.times is not None:
            self.current = dataclasses.replace(fault, times=fault.times - 1) if fault.times > 1 else None
        return fault


async def answer(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    """Carry out ``fault`` after its delay; None means answer normally."""
    pause = fault.pause()
    if pause:
        await asyncio.sleep(pause)
    if fault.kind == "none":
        return None
    if fault.kind == "status":
        return web.Response(
            status=fault.status, body=fault.body.encode(), headers={hdrs.CONTENT_TYPE: fault.content_type}
        )
    return await _break_connection(request, _RAW_BYTES[fault.kind])


async def _break_connection(request: web.Request, raw: bytes) -> web.StreamResponse:
    """Send ``raw`` as the whole answer and close the connection behind it.

    The request body is read first: closing with unread bytes would make the kernel send a
    reset that could overtake ``raw``. ``close`` (not ``abort``) flushes ``raw`` before the FIN.
    The response returned is never sent: aiohttp finds the transport closed when it starts to
    write, takes that as the client having gone, and moves on without logging an error.
    """
    await request.read()
    transport = request.transport
    if transport is not None:
        if raw:
            transport.write(raw)
        transport.close()
    return web.Response()


def _seconds(value: Any, name: str) -> float:
    seconds = math.nan
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            pass
    if not 0 <= seconds < math.inf:
        raise FaultError(f"{name}: expected a number of seconds, 0 or more; got {_show(value)}")
    return seconds


def _times(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FaultError(f"times: expected a whole number, 1 or more, or null for until cleared; got {_show(value)}")
    return value


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise FaultError(f"status: expected an HTTP status from 200 to 599; got {_show(value)}")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FaultError(f"{name}: expected a string; got {_show(value)}")
    return value


def _content_type(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "\r\n"):
        raise FaultError(f'content_type: expected a media type such as "application/json"; got {_show(value)}')
    return value


def _listing(names: tuple[str, ...], last: str = "and") -> str:
    quoted = [f'"{name}"' for name in names]
    return f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def _show(value: Any) -> str:
    """``value`` as it was written in the JSON."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value, default=str)
