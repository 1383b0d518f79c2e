"""The audit trail's filters, declared once: the CLI's options and the HTTP API's parameters are
both read from ``FILTERS``, so they accept the same values and refuse the same ones.

A filter has a name (``client_id``: the parameter; ``--client-id``: the option), the
``AuditFilter`` field it sets, a parser that raises ValueError saying what is wrong, and a help
text. ``token`` and ``token_sha256`` both set ``token_sha256``: one of them at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import AuditFilter, parse_outcome, parse_sha256, parse_time, quoted


def text(value: str) -> str:
    """Free text. Bytes that are not UTF-8 reach Python as lone surrogates, which no UTF-8
    store, header or log can take: refused here, by name."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{quoted(value)} is not valid UTF-8") from None
    return value


def raw_token(value: str) -> str:
    """A raw token, looked for by its fingerprint: the log never holds it."""
    return fingerprint(text(value))


@dataclass(frozen=True)
class Filter:
    name: str
    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FILTERS: tuple[Filter, ...] = (
    Filter("org", "org", text, "only this organisation"),
    Filter(
        "token", "token_sha256", raw_token, "only this access token (matched by its SHA-256 fingerprint)", "RAW_TOKEN"
    ),
    Filter("token_sha256", "token_sha256", parse_sha256, "only the token with this SHA-256 fingerprint", "HEX"),
    Filter("actor", "actor", text, "only calls made by this gateway user", "USER"),
    Filter("app", "app", text, "only tokens of this Apigee app"),
    Filter(
        "client_id", "client_id", text, "only calls about this consumer key (client id; matched by fingerprint)", "KEY"
    ),
    Filter("outcome", "outcome", parse_outcome, "only this outcome (deleted, succeeded, not_found, pending, ...)"),
    Filter("action", "action", text, "only this action (token.delete, key.revoke, app.approve, ...)"),
    Filter(
        "resource_type",
        "resource_type",
        text,
        "only calls on this kind of resource (access_token, consumer_key, app, ...)",
        "TYPE",
    ),
    Filter("resource", "resource", text, "only calls on this resource (its path below the organisation)", "PATH"),
    Filter("since", "since", parse_time, "from this time: ISO 8601 or an age (15m, 24h, 7d)", "T"),
    Filter("until", "until", parse_time, "before this time: ISO 8601 or an age", "T"),
)
BY_NAME: Mapping[str, Filter] = {item.name: item for item in FILTERS}


class FilterError(ValueError):
    """A filter given twice (or two that set the same field); the message names them."""


def selection(
    given: Iterable[tuple[Filter, Any]], *, named: Callable[[Filter], str] = lambda item: item.name, **rest: Any
) -> AuditFilter:
    """An AuditFilter from parsed filter values (None: not given), refusing two for one field;
    ``named`` says how the error names a filter (the CLI: its option)."""
    values: dict[str, Any] = {}
    seen: dict[str, Filter] = {}
    for item, value in given:
        if value is None:
            continue
        if item.field in values:
            raise FilterError(f"give {named(seen[item.field])} or {named(item)}, not both")
        values[item.field], seen[item.field] = value, item
    return AuditFilter(**values, **rest)
