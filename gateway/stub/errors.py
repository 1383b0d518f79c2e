"""Apigee's error shape, shared by the emulated endpoints and the stub's admin endpoints."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from aiohttp import hdrs, web

JSON = "json"
XML = "xml"


class ApigeeError(Exception):
    """A refusal as Apigee words it: the status, its ``code`` and its ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def negotiate(request: web.Request, default: str = JSON) -> str:
    """The form the caller asked for with ``Accept``: JSON or XML, else ``default``."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    if "application/json" in accept:
        return JSON
    if "application/xml" in accept or "text/xml" in accept:
        return XML
    return default


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    default: str = XML,
) -> web.Response:
    """Apigee's error shape in the form the caller accepts; ``default`` when it names neither.

    The documented token-delete error is XML, so the token paths keep XML as their default;
    everything added since answers JSON unless XML is asked for.
    """
    if negotiate(request, default) == JSON:
        return json_error(status, code, message, headers=headers)
    body = f"<Error> <Code>{escape(code)}</Code> <Message>{escape(message)}</Message> <Contexts/> </Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=headers)


def json_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON form of Apigee's error shape."""
    body = json.dumps({"code": code, "message": message, "contexts": []})
    return web.Response(status=status, body=body.encode(), content_type="application/json", headers=headers)
