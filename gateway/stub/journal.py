"""What reached the stub: so a test can prove a call was forwarded, or that it never was."""

from __future__ import annotations

from collections import deque
from typing import Any

from aiohttp import hdrs, web

JOURNAL_SIZE = 10_000
"""Requests kept, newest last; older ones fall off so a long-running stub stays bounded."""
REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({hdrs.AUTHORIZATION.lower(), hdrs.PROXY_AUTHORIZATION.lower()})


def entry(request: web.BaseRequest) -> dict[str, Any]:
    """One request as the journal shows it: headers raw and in arrival order, credentials hidden."""
    headers = []
    for raw_name, raw_value in request.raw_headers:
        # The same decoding aiohttp applies to request.headers, so nothing is lost or altered.
        name = raw_name.decode("utf-8", "surrogateescape")
        value = REDACTED if name.lower() in _SECRET_HEADERS else raw_value.decode("utf-8", "surrogateescape")
        headers.append([name, value])
    return {"method": request.method, "path": request.raw_path, "headers": headers}


class Journal:
    """The last ``size`` requests, oldest first."""

    def __init__(self, size: int = JOURNAL_SIZE) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, item: dict[str, Any]) -> None:
        self._entries.append(item)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
