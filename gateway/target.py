"""Which organisation and token a request targets, read from the raw request path.

aiohttp's router decodes ``%2F``, ``%2e%2e`` and ``%00`` before matching, so a routed
``{token}`` could be ``abc/def`` or ``..``. The gateway therefore matches the path exactly as it
arrived on the wire and accepts only plain unreserved characters: what it forwards is then
exactly what it checked and what it records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ORG_LENGTH = 255
MAX_TOKEN_LENGTH = 1024

_TOKEN_PATH = re.compile(r"/v1/(?:o|organizations)/([^/]*)/oauth2/accesstokens/(.*)", re.DOTALL)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_ALLOWED = "letters, digits, '-', '.', '_' and '~', starting with a letter or digit (no '/' and no percent-encoding)"


@dataclass(frozen=True, slots=True)
class TokenTarget:
    org: str
    token: str
    path_and_query: str
    """The request target as received, forwarded to the upstream unchanged."""


class BadTarget(Exception):
    """The path aims at the token endpoint but names an invalid org or token."""

    def __init__(self, part: str, message: str, *, org: str | None = None) -> None:
        super().__init__(message)
        self.part = part
        self.org = org


def is_org_name(text: str) -> bool:
    """Whether ``text`` is a name the gateway accepts as an organisation."""
    return len(text) <= MAX_ORG_LENGTH and _NAME.fullmatch(text) is not None


def parse_target(raw_target: str) -> TokenTarget | None:
    """The token a request targets; ``None`` if the path is not the token endpoint at all."""
    path = raw_target.partition("?")[0]
    match = _TOKEN_PATH.fullmatch(path)
    if match is None:
        return None
    org, token = match.groups()
    if not is_org_name(org):
        raise BadTarget("org", f"Invalid organization name in path: expected 1-{MAX_ORG_LENGTH} {_ALLOWED}")
    if len(token) > MAX_TOKEN_LENGTH or not _NAME.fullmatch(token):
        raise BadTarget("token", f"Invalid access token in path: expected 1-{MAX_TOKEN_LENGTH} {_ALLOWED}", org=org)
    return TokenTarget(org, token, raw_target)
