"""Route: which operation a request asks for and what it targets, read from the raw path.

aiohttp's router decodes ``%2F``, ``%2e%2e`` and ``%00`` before matching, so a routed
``{token}`` could be ``abc/def`` or ``..``. The gateway therefore matches the path exactly as it
arrived on the wire and accepts only plain unreserved characters in the organisation and the
target: what it forwards is then exactly what it checked and what it records.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import errors
from gateway.operations import MAX_ORG_LENGTH, OPERATIONS, Operation, is_name, is_org_name
from gateway.redact import loggable_target
from gateway.refusal import Refusal

MAX_NAME_LENGTH = 1024
_ALLOWED = "letters, digits, '-', '.', '_' and '~', starting with a letter or digit (no '/' and no percent-encoding)"


@dataclass(frozen=True, slots=True)
class Routed:
    """A request matched to an operation. ``problem`` is set when the path has the operation's
    shape but names an invalid organisation or target: refused once the caller is known, so the
    refusal is audited under their name and an anonymous caller learns nothing from it."""

    operation: Operation
    target: str
    """The request target (path and query) as received: forwarded to the upstream unchanged."""
    org: str | None
    secret: str | None
    """The value of the operation's secret placeholder (the token): fingerprinted for the record."""
    problem: str | None = None


def route(method: str, raw_target: str) -> Routed:
    """The operation ``method raw_target`` asks for; raises Refusal (404, 405) when none."""
    path = raw_target.partition("?")[0]
    allowed = []
    for operation in OPERATIONS:
        match = operation.pattern.fullmatch(path)
        if match is None:
            continue
        if operation.method != method:
            allowed.append(operation.method)
            continue
        return _checked(operation, raw_target, match.group("org"), match.group(operation.secret))
    if allowed:
        raise Refusal(
            errors.METHOD_NOT_ALLOWED.response(
                f"{method} is not allowed here; the gateway only forwards {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        )
    served = "; ".join(operation.template for operation in OPERATIONS)
    # Masked in the answer too: it may be logged by whatever stands between the caller and us.
    raise Refusal(errors.NOT_FOUND.response(f"The gateway only serves {served}; not {loggable_target(raw_target)}"))


def _checked(operation: Operation, raw_target: str, org: str, secret: str) -> Routed:
    if not is_org_name(org):
        return Routed(
            operation,
            raw_target,
            None,
            None,
            f"Invalid organization name in path: expected 1-{MAX_ORG_LENGTH} {_ALLOWED}",
        )
    if not is_name(secret, MAX_NAME_LENGTH):
        return Routed(
            operation,
            raw_target,
            org,
            None,
            f"Invalid {operation.secret_label} in path: expected 1-{MAX_NAME_LENGTH} {_ALLOWED}",
        )
    return Routed(operation, raw_target, org, secret)
