"""Route: which operation a request asks for and what it targets, read from the raw path.

aiohttp's router decodes ``%2F``, ``%2e%2e`` and ``%00`` before matching, so a routed value
could be ``abc/def`` or ``..``. The gateway therefore matches the path exactly as it arrived on
the wire, and what it forwards is exactly what it checked and records: secrets (tokens, keys,
codes) must be plain unreserved characters; other values (a developer's email, an app's name)
may be percent-encoded but never hide a ``/``, a ``\\``, a NUL, a dot segment or a ``;``, nor
encode what needs no encoding (``%61pps`` is ``apps``), which an upstream could read as another
path, of another organisation.

The rule, as a class: a request the upstream could treat as an audited call is routed to that
call or refused, never passed through unaudited. So besides the exact paths, every other
spelling of them is refused (a fragment, a method override, a fixed segment or a parameter in
another case, a trailing or doubled slash), and so is any credential write that is no audited
call (another method on an audited path, an unknown ``?action=``, any other OAuth token write).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from gateway import errors
from gateway.operations import (
    ACTION_FAMILIES,
    MAX_ORG_LENGTH,
    OPERATIONS,
    PASS_THROUGH_READ,
    PASS_THROUGH_WRITE,
    Operation,
    is_name,
    is_org_name,
)
from gateway.redact import loggable_target
from gateway.refusal import Refusal

MAX_NAME_LENGTH = 1024
_ALLOWED = "letters, digits, '-', '.', '_' and '~', starting with a letter or digit (no '/' and no percent-encoding)"
_ORG_PATH = re.compile(r"/v1/(?:(?:audits|mint)/)?(?:o|organizations)/(?P<org>[^/?]*)(?:/|$)")
"""Where a path names an organisation: the management API's own base, Apigee's audit log
(``/v1/audits/organizations/{org}``) and monetization (``/v1/mint/organizations/{org}``)."""
_HIDDEN = re.compile(
    r"%(?:2f|5c|00|2e|2d|5f|7e|3[0-9]|3f|23|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a])|[\\;\x00-\x1f\x7f]", re.IGNORECASE
)
"""In a raw segment: an encoded slash, backslash, NUL, '?' or '#' (a proxy that decodes the path
before passing it on makes them a query or a fragment); an encoded letter, digit or ``-._~``,
which no client needs to encode (RFC 3986, 2.3) and an upstream decodes before matching
(``%61pps`` is ``apps``); a raw control character; or a ';' (Java servlet containers, Apigee's
among them, drop ``;...`` path parameters before matching: ``developers;v=1/...`` is
``developers/...`` upstream)."""
READS = frozenset({"GET", "HEAD"})
_SLASHES = re.compile(r"/{2,}")
OVERRIDE_HEADERS = (
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-URL",
    "X-Rewrite-URL",
)
"""Headers by which a caller asks a server to act as if another method or path had been sent (a
POST acting as a DELETE, a path routed as another): front proxies and frameworks honour them."""
_OVERRIDE_PARAMETER = "_method"
READ_PARAMETERS = frozenset({"action", *(name for operation in OPERATIONS for name in operation.params)})
"""The query parameters the gateway reads to know what a call does."""
_LOOSE = tuple(re.compile(operation.pattern.pattern, re.IGNORECASE | re.DOTALL) for operation in OPERATIONS)
"""The audited paths read as an upstream might: fixed segments in any case."""
_KEYS = re.compile(r"/apps/[^/]*/keys/*$", re.IGNORECASE)
"""An app's keys as a whole: a write there could issue or replace keys."""
_RESERVED = frozenset({"create"})
"""Literal segments of the audited paths that sit where another path has a value (``keys/create``)."""
_CREDENTIALS = re.compile(
    r"/+v1/+(?:o|organizations)/+[^/]*/+(?P<tree>oauth1|oauth2|developers|companies|apps)(?:/|$)", re.IGNORECASE
)
"""The parts of an organisation where credentials live: every token call, and owners, apps and keys."""
_FAMILIES = {
    re.compile(r"/v1/(?:o|organizations)/[^/]*/" + re.sub(r"\\\{\w+\\\}", "[^/]*", re.escape(template))): actions
    for template, actions in ACTION_FAMILIES.items()
}


@dataclass(frozen=True, slots=True)
class Routed:
    """A request matched to an operation (or to pass-through). ``problem`` is set when the path
    names an invalid organisation or value: refused once the caller is known, so the refusal is
    audited under their name and an anonymous caller learns nothing from it."""

    operation: Operation
    target: str
    """The request target (path and query) as received: forwarded to the upstream unchanged."""
    org: str | None
    secret: str | None = None
    """The credential the call acts on, from the path (a token, a key, a code)."""
    values: Mapping[str, str] = field(default_factory=dict)
    """The path's other values, decoded (developer, app, product...)."""
    query: Mapping[str, str] = field(default_factory=dict)
    problem: str | None = None
    prefix: str = ""
    """The raw path up to and including the organisation (``/v1/o/myorg``), for the reads the
    call needs first (its pre-image), in the caller's own spelling."""
    read_of: Operation | None = None
    """For a read of a credential (a GET of a token or a key): the audited operation on it,
    whose resource and secret a read record names."""

    @property
    def resource(self) -> str | None:
        """Which resource, as its path below the organisation, the secret left as its placeholder."""
        declared = self.operation if self.operation.audited else self.read_of
        if declared is None:
            return None
        resource = declared.path
        for name, value in self.values.items():
            resource = resource.replace(f"{{{name}}}", value)
        return resource

    def below_org(self, template: str) -> str:
        """``template`` (below the organisation) filled in with this call's raw values."""
        path = template
        for name, value in self.raw.items():
            path = path.replace(f"{{{name}}}", value)
        return f"{self.prefix}/{path}"

    @property
    def raw(self) -> dict[str, str]:
        match = self.operation.pattern.fullmatch(self.target.partition("?")[0])
        return {} if match is None else {name: value for name, value in match.groupdict().items() if name != "org"}


def route(method: str, raw_target: str, *, pass_through: bool = True, override: str | None = None) -> Routed:
    """The operation ``method raw_target`` asks for; raises Refusal (404, 405) when none.

    ``override``: the method-override header the request carries, if any (refused).
    A request the upstream could read as an audited call is routed to that call or routed with
    a problem (refused once the caller is known): never passed through unaudited."""
    path, _, raw_query = raw_target.partition("?")
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    query = dict(pairs)
    spelling = _spelling_problem(raw_target, pairs, override)
    if spelling is not None:
        return Routed(PASS_THROUGH_WRITE, raw_target, _org_of(path), query=query, problem=spelling)
    allowed, audited_here = [], False
    for operation in OPERATIONS:
        match = operation.pattern.fullmatch(path)
        if match is None:
            continue
        if operation.method != method:
            allowed.append(operation.method)
            continue
        audited_here = True
        if operation.query_action != query.get("action"):
            continue
        return _checked(operation, raw_target, match, query, _repeated(pairs, ("action", *operation.params)))
    problem = _unaudited_problem(method, path, query, allowed, audited_here, pass_through=pass_through)
    if problem is not None:
        return Routed(PASS_THROUGH_WRITE, raw_target, _org_of(path), query=query, problem=problem)
    if pass_through and path.startswith("/v1/"):
        return _passed_through(method, raw_target, path, query)
    if allowed:
        methods = sorted(set(allowed))
        raise Refusal(
            errors.METHOD_NOT_ALLOWED.response(
                f"{method} is not allowed here; the gateway only forwards {', '.join(methods)}",
                headers={"Allow": ", ".join(methods)},
            )
        )
    served = "; ".join(sorted({operation.template for operation in OPERATIONS[:1]}))
    # Masked in the answer too: it may be logged by whatever stands between the caller and us.
    raise Refusal(
        errors.NOT_FOUND.response(
            f"The gateway only serves the audited calls of the Apigee management API ({served}, ...); "
            f"not {loggable_target(raw_target)}"
        )
    )


def _spelling_problem(raw_target: str, pairs: list[tuple[str, str]], override: str | None) -> str | None:
    """What, in how the request is spelled, could make the upstream act otherwise than the gateway
    reads it: a fragment (the upstream's client or server drops ``#...``, and with it the rest of
    the path or query the gateway matched), a method override, or a parameter the gateway reads
    spelled in another case (``Action=revoke``)."""
    if "#" in raw_target:
        return "The request target holds a '#': a fragment is never sent to a server, and an upstream would drop what follows it"
    names = [name for name, _ in pairs]
    if override is not None or any(name.lower() == _OVERRIDE_PARAMETER for name in names):
        given = override or _OVERRIDE_PARAMETER
        return (
            f"Method or path override ({given}) is refused: send the call with its own method and path, "
            "so that what is recorded is what is done"
        )
    other_case = next(
        (name for name in names if name.strip(" ?&;").lower() in READ_PARAMETERS and name not in READ_PARAMETERS), None
    )
    if other_case is not None:
        return f"Parameter {other_case[:40]!r} must be spelled {other_case.strip(' ?&;').lower()!r}"
    return None


def _unaudited_problem(
    method: str, path: str, query: dict[str, str], allowed: list[str], audited_here: bool, *, pass_through: bool
) -> str | None:
    """Why a call that matched no audited operation must not be passed through, if it must not:
    it may be an audited call spelled otherwise, or a credential change the gateway does not know."""
    family = next((actions for pattern, actions in _FAMILIES.items() if pattern.fullmatch(path)), None)
    write = method not in READS
    if "action" in query and (audited_here or (method == "POST" and family is not None)):
        # An audited call with an action the gateway does not know (a DELETE or a creation too, which
        # Apigee may carry out ignoring it): never let it pass unaudited.
        expected = f"expected one of {', '.join(family)}" if family and method == "POST" else "this call takes none"
        return f"Unknown action {query['action'][:40]!r} here; {expected}"
    matched = bool(allowed) or audited_here
    if write and matched and pass_through:
        audited = ", ".join(sorted({*allowed, *([method] if audited_here else [])}))
        return (
            f"{method} here is not a call the gateway audits (it audits {audited} on this path, "
            "with the actions its documentation lists); refused rather than passed through unaudited"
        )
    canonical = _SLASHES.sub("/", path).rstrip("/")
    if not matched and (pass_through or canonical != path) and any(pattern.fullmatch(canonical) for pattern in _LOOSE):
        # An upstream may read a trailing or doubled slash, or a fixed segment in another case, as the
        # same resource: no way around the audit.
        return (
            "The path is not in its canonical form (a trailing or doubled '/', or a fixed segment in another case); "
            "send it exactly as Apigee documents it"
        )
    tree = _CREDENTIALS.match(path)
    if write and tree is not None and pass_through:
        if tree.group("tree").lower().startswith("oauth"):
            return "Every change to OAuth tokens and codes the gateway forwards is an audited call, and this is none of them"
        if "action" in query:
            return f"Unknown action {query['action'][:40]!r} on a developer, company, app or key: not a call the gateway audits"
        if _KEYS.search(path):
            return "A write to an app's keys as a whole is no call the gateway audits (keys are created at keys/create)"
    return None


def _repeated(pairs: list[tuple[str, str]], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` the query gives more than once. The gateway would record one value
    while the upstream may act on another (aiohttp and Java's servlets read the first, a dict the
    last): such a call is refused, never recorded as what it may not be."""
    given = [name for name, _ in pairs if name in names]
    return next((name for index, name in enumerate(given) if name in given[:index]), None)


def _checked(
    operation: Operation, raw_target: str, match: re.Match[str], query: dict[str, str], repeated: str | None = None
) -> Routed:
    org = match.group("org")
    prefix = raw_target[: match.start("org")] + org
    if repeated is not None:
        twice = (
            f"Parameter {repeated!r} is given more than once; give it once, so that what is recorded is what is done"
        )
        return Routed(
            operation, raw_target, org if is_org_name(org) else None, query=query, prefix=prefix, problem=twice
        )
    if not is_org_name(org):
        return Routed(
            operation,
            raw_target,
            None,
            query=query,
            prefix=prefix,
            problem=f"Invalid organization name in path: expected 1-{MAX_ORG_LENGTH} {_ALLOWED}",
        )
    secret, values = None, {}
    for name, raw in match.groupdict().items():
        if name == "org":
            continue
        if raw.lower() in _RESERVED:
            # "keys/Create" is a key named so here, and may be the creation of a key upstream.
            problem = f"Invalid {name} in path: {raw!r} is a word of the API's paths, in another case"
            return Routed(operation, raw_target, org, query=query, prefix=prefix, problem=problem)
        if name == operation.secret:
            if not is_name(raw, MAX_NAME_LENGTH):
                label = operation.resource_type.replace("_", " ")
                return Routed(
                    operation,
                    raw_target,
                    org,
                    query=query,
                    prefix=prefix,
                    problem=f"Invalid {label} in path: expected 1-{MAX_NAME_LENGTH} {_ALLOWED}",
                )
            secret, values[name] = raw, f"{{{name}}}"
        else:
            # Empty, "apps/" would name no app: an upstream may read the path as another call (a creation).
            unusable = f"Invalid {name} in path: it is empty" if not raw else _segment_problem(name, raw)
            if unusable is not None:
                return Routed(operation, raw_target, org, query=query, prefix=prefix, problem=unusable)
            values[name] = unquote(raw)
    return Routed(operation, raw_target, org, secret, values, query, prefix=prefix)


def _passed_through(method: str, raw_target: str, path: str, query: dict[str, str]) -> Routed:
    operation = PASS_THROUGH_READ if method in READS else PASS_THROUGH_WRITE
    org = _org_of(path)
    problem = None
    if org is not None and not is_org_name(org):
        problem, org = f"Invalid organization name in path: expected 1-{MAX_ORG_LENGTH} {_ALLOWED}", None
    else:
        problem = next(filter(None, (_segment_problem("segment", segment) for segment in path.split("/"))), None)
    if problem is None and operation is PASS_THROUGH_READ:
        read = _read_of_secret(path)
        if read is not None:
            secret, values, of = read
            return Routed(operation, raw_target, org, secret, values, query, read_of=of)
    return Routed(operation, raw_target, org, query=query, problem=problem)


def _read_of_secret(path: str) -> tuple[str, dict[str, str], Operation] | None:
    """A read of a credential an audited operation acts on (a token, a key, a code): its secret
    and values, and that operation, so that a read record names it exactly as a write's would
    (its resource and fingerprint), never in clear."""
    for operation in OPERATIONS:
        name = operation.secret
        if name is None:
            continue
        match = operation.pattern.fullmatch(path)
        if match is None or not is_name(match.group(name), MAX_NAME_LENGTH):
            continue
        values = {key: unquote(raw) for key, raw in match.groupdict().items() if key not in ("org", name)}
        return match.group(name), {**values, name: f"{{{name}}}"}, operation
    return None


def _segment_problem(name: str, raw: str) -> str | None:
    if raw in (".", "..") or _HIDDEN.search(raw) or len(raw) > MAX_NAME_LENGTH:
        return (
            f"Invalid {name} in path: a dot segment, a ';', a control character, or an encoded '/', '\\\\', "
            f"NUL, letter, digit or '-._~' could reach another path upstream"
        )
    return None


def _org_of(path: str) -> str | None:
    match = _ORG_PATH.match(path)
    return None if match is None else match.group("org")
