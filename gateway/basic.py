"""HTTP Basic credentials (RFC 7617), parsed strictly and with a precise reason on failure.

aiohttp's ``BasicAuth`` is deprecated (removed in aiohttp 4) and its errors are vague; this
leaf module serves both the gateway and the stub.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

MAX_HEADER_LENGTH = 4096


class Credentials(NamedTuple):
    user: str
    password: str


class MalformedCredentials(ValueError):
    """The Authorization header is not usable Basic credentials; the message says why."""


def parse_basic(header: str) -> Credentials:
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedCredentials(f"Authorization header longer than {MAX_HEADER_LENGTH} characters")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise MalformedCredentials("Authorization scheme is not Basic")
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedCredentials("Basic credentials are not valid base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCredentials("Basic credentials are not UTF-8") from None
    user, colon, password = text.partition(":")
    if not colon:
        raise MalformedCredentials("Basic credentials lack the ':' between user name and password")
    if not user:
        raise MalformedCredentials("Basic credentials have an empty user name")
    return Credentials(user, password)
