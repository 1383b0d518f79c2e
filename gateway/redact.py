"""What of a request target may reach a log line: its shape, never a secret it carries.

Apigee's management paths carry secrets in their variable segments (an access token, a consumer
key, an authorization code) and so can a query string. A client that lost its base path sends
``DELETE /oauth2/accesstokens/<token>``, so where a segment sits says nothing about what it
holds. The rule is therefore an allow-list: a segment is kept only when it is one of the API's
literal words (``v1``, ``o``, ``oauth2``, ``accesstokens``, ``developers``, ...), or the
organisation in the one place the API puts it (``/v1/o/{org}``, ``/v1/organizations/{org}``,
``/v1/audits/organizations/{org}``); everything else becomes ``*``. A query keeps its known
parameter names and literal values (``?action=revoke&cascade=true``), the rest likewise ``*``.
"""

from __future__ import annotations

from gateway.operations import is_org_name

HIDDEN = "*"
MAX_SEGMENTS = 16
MAX_PARAMETERS = 8
"""Beyond these, ``...``: a log line stays short however long the path."""

PATH_WORDS = frozenset(
    {
        "v1",
        "o",
        "organizations",
        "audits",
        "e",
        "environments",
        "oauth1",
        "oauth2",
        "accesstokens",
        "refreshtokens",
        "requesttokens",
        "authorizationcodes",
        "revoke",
        "search",
        "token",
        "authorize",
        "developers",
        "companies",
        "apps",
        "keys",
        "create",
        "apiproducts",
        "attributes",
        "apis",
        "sharedflows",
        "revisions",
        "deployments",
        "policies",
        "proxies",
        "targets",
        "resources",
        "resourcefiles",
        "keyvaluemaps",
        "entries",
        "keystores",
        "aliases",
        "certs",
        "references",
        "targetservers",
        "virtualhosts",
        "caches",
        "flowhooks",
        "userroles",
        "users",
        "permissions",
        "stats",
        "reports",
        "analytics",
        "queries",
        "debugsessions",
        "data",
        "vaults",
        "mint",
        "verifiers",
    }
)
"""Literal path segments of the Apigee Edge management API (``apigee-management-api.md``)."""

QUERY_NAMES = frozenset({"action", "cascade", "app", "enduser", "expand", "limit", "start", "count", "startKey"})
QUERY_VALUES = frozenset({"approve", "revoke", "active", "inactive", "true", "false"})

_ORG_PREFIXES = (
    ("", "v1", "o"),
    ("", "v1", "organizations"),
    ("", "v1", "audits", "o"),
    ("", "v1", "audits", "organizations"),
    ("", "v1", "mint", "o"),
    ("", "v1", "mint", "organizations"),
)
_LONG_SPELLING = "/v1/organizations/"


def loggable_target(target: str) -> str:
    """``target`` (a raw path and query, as on the wire) with every part that may be secret as ``*``."""
    path, question, query = target.partition("?")
    segments = path.split("/")
    kept = "/".join(_segment(segments, index) for index in range(min(len(segments), MAX_SEGMENTS)))
    if len(segments) > MAX_SEGMENTS:
        kept += "/..."
    if question:
        parameters = query.split("&")
        kept += "?" + "&".join(_parameter(parameter) for parameter in parameters[:MAX_PARAMETERS])
        if len(parameters) > MAX_PARAMETERS:
            kept += "&..."
    return kept


def _segment(segments: list[str], index: int) -> str:
    segment = segments[index]
    if not segment or segment in PATH_WORDS:
        return segment
    if tuple(segments[:index]) in _ORG_PREFIXES and is_org_name(segment):
        return segment
    return HIDDEN


def _parameter(parameter: str) -> str:
    name, equals, value = parameter.partition("=")
    shown = name if not name or name in QUERY_NAMES else HIDDEN
    if equals:
        shown += "=" + (value if value in QUERY_VALUES else HIDDEN)
    return shown


def one_spelling(target: str) -> str:
    """``target`` (as logged) with the organisation's base spelled one way, ``/v1/o/{org}``: the same
    call by either spelling makes the same record."""
    if target.startswith(_LONG_SPELLING):
        return "/v1/o/" + target[len(_LONG_SPELLING) :]
    return target
