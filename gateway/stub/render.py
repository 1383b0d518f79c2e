"""Answers in the form the caller asks for: Apigee's JSON (Jackson's style), or XML.

Both npm clients and the gateway's users send ``Accept: application/json``; XML is there for
callers that ask for it, in a plain mapping of the same fields (see docs/stub.md), not a copy
of Apigee's own XML schema, which its reference does not give for every entity.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from gateway.stub import jackson
from gateway.stub.errors import JSON, negotiate

ITEM_NAMES = {
    "apiProducts": "ApiProduct",
    "apiProduct": "ApiProduct",
    "apps": "App",
    "app": "App",
    "attributes": "Attribute",
    "companies": "Company",
    "company": "Company",
    "credentials": "Credential",
    "developer": "Developer",
    "environments": "Environment",
    "list": "Item",
    "property": "Property",
    "scopes": "Scope",
}
"""The element of one item of a list, by the list's key; ``Item`` for any other."""


def answer(request: web.Request, value: Any, *, root: str, status: int = 200) -> web.Response:
    """``value`` as Apigee's pretty-printed JSON, or as XML under ``<root>`` when XML is asked for."""
    if negotiate(request) == JSON:
        return web.Response(status=status, body=jackson.dumps(value).encode(), content_type="application/json")
    return web.Response(status=status, body=to_xml(root, value).encode(), content_type="application/xml")


def to_xml(root: str, value: Any) -> str:
    """``value`` under ``<root>``: keys become elements (first letter upper-cased), list items
    elements named after their list (``attributes`` -> ``Attribute``), scalars text."""
    parts: list[str] = []
    _element(root, value, parts)
    return "".join(parts)


def _element(name: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append(f"<{name}>")
        for key, item in value.items():
            _element(_tag(key), item, out)
        out.append(f"</{name}>")
    elif isinstance(value, list):
        child = ITEM_NAMES.get(name[:1].lower() + name[1:], "Item")
        out.append(f"<{name}>")
        for item in value:
            _element(child, item, out)
        out.append(f"</{name}>")
    elif value is None or value == "":
        out.append(f"<{name}/>")
    else:
        out.append(f"<{name}>{escape(_text(value))}</{name}>")


def _tag(key: str) -> str:
    """An element name for a JSON key: first letter upper-cased, anything outside XML names dropped."""
    cleaned = "".join(c for c in str(key) if c.isalnum() or c in "_-.") or "Item"
    if not (cleaned[0].isalpha() or cleaned[0] == "_"):
        cleaned = "_" + cleaned
    return cleaned[:1].upper() + cleaned[1:]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    return str(value)
