"""How tokens are kept out of the audit log: a SHA-256 fingerprint plus a short hint.

The fingerprint lets ``audit query --token RAW`` find a record without the log holding the
token; the hint (last 4 characters, only for tokens long enough that 4 reveal little) lets a
person recognise it.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

HINT_LENGTH = 4
MIN_LENGTH_FOR_HINT = 16
TOKEN_SNAPSHOT_FIELDS = (
    "token",
    "refreshToken",
    "access_token",
    "refresh_token",
    "accessToken",
    "idToken",
    "oauth_token",
    "requestToken",
)
"""The tokens themselves: kept in clear only when the operator opts in (``audit.store_raw_tokens``)."""
SECRET_SNAPSHOT_FIELDS = (
    *TOKEN_SNAPSHOT_FIELDS,
    "id_token",
    "consumerKey",
    "clientId",
    "consumerSecret",
    "secret",
    "client_secret",
    "clientSecret",
    "password",
    "oauth_token_secret",
    "oauth_verifier",
    "verifier",
    "authorization",
    "apiKey",
    "privateKey",
)
"""Fields whose values are secrets wherever they are in a snapshot (an OAuth 2 token, an OAuth 1
app's credentials, a developer app's keys, an authorization code or header...). A name matches
ignoring case, ``_``, ``-`` and spaces, so ``Refresh-Token`` and ``refresh token`` are
``refreshToken`` too. All but the tokens are redacted even with raw storage."""


def fingerprint(token: str) -> str:
    # surrogatepass: a lone surrogate (from a JSON "\\ud800" escape) has a fingerprint too, never an error
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def hint(token: str) -> str:
    return token[-HINT_LENGTH:] if len(token) >= MIN_LENGTH_FOR_HINT else ""


def redacted(token: str) -> str:
    """What stands in the stored snapshot in place of a secret value."""
    shown = hint(token)
    return f"[redacted …{shown}]" if shown else "[redacted]"


MIN_HIDDEN_INSIDE = 8
"""The shortest credential looked for inside a longer text (shorter ones only as whole values:
a 1-character secret would mangle every text it is a letter of)."""


def hidden_in(text: str, values: frozenset[str]) -> str:
    """``text`` with each of ``values`` (the credential a call acts on) redacted, whether it is the
    whole text or a part of it ("Invalid token abc...": an upstream may quote it in a message, an
    error code or a field's name)."""
    if text in values:
        return redacted(text)
    for value in values:
        if len(value) >= MIN_HIDDEN_INSIDE and value in text:
            text = text.replace(value, redacted(value))
    return text


@functools.lru_cache(maxsize=4096)  # the same few dozen names in every snapshot
def _plain(name: str) -> str:
    return name.casefold().replace("_", "").replace("-", "").replace(" ", "")


_SECRET_NAMES = frozenset(map(_plain, SECRET_SNAPSHOT_FIELDS))
_SECRET_NAMES_BUT_TOKENS = _SECRET_NAMES - frozenset(map(_plain, TOKEN_SNAPSHOT_FIELDS))


def is_secret_field(name: object, *, keep_tokens: bool = False) -> bool:
    """Whether a field of this name is redacted (tokens are not, when ``keep_tokens``)."""
    return isinstance(name, str) and _plain(name) in (_SECRET_NAMES_BUT_TOKENS if keep_tokens else _SECRET_NAMES)


def redact_snapshot(
    snapshot: dict[str, Any], *, keep_tokens: bool = False, values: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A copy of an upstream snapshot with every secret field's value replaced, at any depth
    (objects in arrays in objects...), keys in their order; ``keep_tokens`` leaves the tokens
    themselves (``audit.store_raw_tokens``). A string equal to one of ``values`` (the credential
    the call acts on) is replaced too, whatever its field is named: an authorization code's
    ``code``, or a field no list foresaw.

    A string keeps its hint (``[redacted …last4]``); any other value but null and true/false
    (a number, an object, an array) becomes ``[redacted]`` whole. Apigee's custom attributes
    are ``{"name": ..., "value": ...}`` pairs, so a pair named like a secret field has its
    value redacted too. The walk is a loop, not recursion: a snapshot nested a thousand levels
    deep (JSON allows it) cannot exhaust the stack.
    """
    names = _SECRET_NAMES_BUT_TOKENS if keep_tokens else _SECRET_NAMES
    copy: dict[str, Any] = {}
    pending: list[tuple[Any, Any]] = [(snapshot, copy)]
    while pending:
        original, target = pending.pop()
        if isinstance(original, dict):
            name = original.get("name")
            secret_pair = isinstance(name, str) and _plain(name) in names and "value" in original
            for key, value in original.items():
                shown = hidden_in(key, values) if values else key
                if _plain(key) in names or (secret_pair and key == "value"):
                    target[shown] = _redacted_value(value)
                elif isinstance(value, (dict, list)):
                    target[shown] = _queued(value, pending)
                else:
                    target[shown] = hidden_in(value, values) if values and isinstance(value, str) else value
        else:
            target.extend(
                _queued(value, pending)
                if isinstance(value, (dict, list))
                else hidden_in(value, values)
                if values and isinstance(value, str)
                else value
                for value in original
            )
    return copy


def _queued(value: dict[str, Any] | list[Any], pending: list[tuple[Any, Any]]) -> dict[str, Any] | list[Any]:
    """An empty object or array in place of ``value``, queued to be filled from it."""
    empty: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
    pending.append((value, empty))
    return empty


def _redacted_value(value: Any) -> Any:
    if isinstance(value, str):
        return redacted(value)
    return value if value is None or isinstance(value, bool) else "[redacted]"
