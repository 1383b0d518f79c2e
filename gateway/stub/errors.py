"""Apigee's error shape, shared by the emulated endpoints and the stub's admin endpoints."""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

from aiohttp import hdrs, web


def error_response(
    request: web.Request, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """Apigee's error shape: XML by default, JSON when the caller accepts it."""
    if "application/json" in request.headers.get(hdrs.ACCEPT, ""):
        return json_error(status, code, message, headers=headers)
    body = f"<Error> <Code>{escape(code)}</Code> <Message>{escape(message)}</Message> <Contexts/> </Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=headers)


def json_error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON form of Apigee's error shape."""
    body = json.dumps({"code": code, "message": message, "contexts": []})
    return web.Response(status=status, body=body.encode(), content_type="application/json", headers=headers)
