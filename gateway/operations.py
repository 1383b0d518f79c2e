"""The operations the gateway audits, declared as data: method, path, role, what they act on.

Every call that creates, revokes, re-approves, changes or destroys a credential of the Apigee
Edge management API (``docs/upstream/apigee-management-api.md``) is one entry here. Every call
goes through the same steps (``gateway.handler``); what differs between operations is only what
is declared: which path and method, which query ``action``, what the call acts on, which path
segment is a secret, whether its answer carries the resource or it must be read first
(``pre_image``), and which parameters change what it does. Any other ``/v1/...`` call is passed
through (``PASS_THROUGH_READ``, ``PASS_THROUGH_WRITE``), logged but not audited.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import MANAGE, READ, REVOKE

ORG_PREFIX = r"/v1/(?:o|organizations)/(?P<org>[^/]*)/"
"""Both spellings Apigee accepts for an organisation's base path."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
MAX_ORG_LENGTH = 255
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")

SECRET_PLACEHOLDERS = frozenset({"token", "code", "key", "verifier"})
"""Path values that are credentials themselves: kept only as fingerprint and hint."""


def is_org_name(text: str) -> bool:
    """Whether ``text`` is a name the gateway accepts as an organisation: plain unreserved
    characters, so that what is forwarded is exactly what was checked and recorded."""
    return len(text) <= MAX_ORG_LENGTH and _NAME.fullmatch(text) is not None


def is_name(text: str, limit: int) -> bool:
    """The same rule for a secret in the path (a token, a key, a code), up to ``limit`` characters."""
    return len(text) <= limit and _NAME.fullmatch(text) is not None


@dataclass(frozen=True)
class Operation:
    """One kind of call the gateway forwards and audits."""

    action: str
    """What the call does, normalised: ``token.delete``, ``key.revoke``... (the record's ``action``)."""
    method: str
    path: str
    """Below the organisation, with ``{placeholders}``: ``oauth2/accesstokens/{token}``. For
    ``token.delete``, the last placeholder takes the rest of the path, so that a stray ``/`` is
    refused as an invalid token rather than passed through as another path."""
    resource_type: str
    verb: str
    """What the role lets a user do here, as a refusal says it: "revoke tokens"."""
    effect: str
    """What the call does upstream, as an answer about its fate says it: "deletion"."""
    query_action: str | None = None
    """The ``?action=`` the call carries (None: a call without one)."""
    role: str = REVOKE
    pre_image: str | None = None
    """Where to read the resource before the call, when its answer does not carry it (the 204
    of an action): a path template below the organisation."""
    params: tuple[str, ...] = ()
    """Query parameters that change what the call does, kept in the record's ``params``."""
    body_secret: str | None = None
    """A field of the request body holding the credential the call acts on (a consumer key
    supplied at creation): fingerprinted into the record, as a secret in the path would be."""
    enumerate_tokens: bool = False
    """A bulk revocation: the tokens it will cut are listed first (``/oauth2/search``) and their
    fingerprints kept in the intent, since Apigee's answer gives only their number."""
    audited: bool = True
    name: str = ""
    """How metrics and the log name the route: ``token`` for token calls, else the action's kind."""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PLACEHOLDER.split(self.path)
        regex = ""
        for index, part in enumerate(parts):
            if index % 2 == 0:
                regex += re.escape(part)
            else:
                rest = self.action == "token.delete" and index == len(parts) - 2 and parts[-1] == ""
                regex += f"(?P<{part}>{'.*' if rest else '[^/]*'})"
        object.__setattr__(self, "pattern", re.compile(ORG_PREFIX + regex, re.DOTALL))
        if not self.name:
            object.__setattr__(self, "name", self.action.split(".")[0])

    @property
    def secret(self) -> str | None:
        """The placeholder of the path that holds a credential, if any."""
        return next((name for name in _PLACEHOLDER.findall(self.path) if name in SECRET_PLACEHOLDERS), None)

    @property
    def template(self) -> str:
        query = f"?action={self.query_action}" if self.query_action else ""
        return f"{self.method} /v1/o/{{org}}/{self.path}{query}"


def _kind(resource_type: str, verb: str, name: str = "") -> Callable[..., Operation]:
    """A maker of the operations on one kind of resource, which share its type and wording."""

    def make(action: str, method: str, path: str, effect: str, **declared: Any) -> Operation:
        return Operation(action, method, path, resource_type, verb, effect, name=name, **declared)

    return make


def _token_operations() -> list[Operation]:
    token = "oauth2/accesstokens/{token}"
    tokens = _kind("access_token", "revoke tokens")
    operations = [
        tokens("token.delete", "DELETE", token, "deletion"),
        tokens(
            "token.revoke", "POST", token, "revocation", query_action="revoke", pre_image=token, params=("cascade",)
        ),
        tokens(
            "token.approve", "POST", token, "approval", query_action="approve", pre_image=token, params=("cascade",)
        ),
        tokens("token.update", "POST", token, "change"),
        _kind("access_tokens", "revoke tokens", "token")(
            "tokens.revoke",
            "POST",
            "oauth2/revoke",
            "revocation",
            params=("app", "enduser", "cascade"),
            enumerate_tokens=True,
        ),
        _kind("authorization_code", "revoke authorization codes")(
            "authorization_code.delete", "DELETE", "oauth2/authorizationcodes/{code}", "deletion"
        ),
    ]
    for resource_type, path in (
        ("oauth1_access_token", "oauth1/accesstokens/{token}"),
        ("oauth1_request_token", "oauth1/requesttokens/{token}"),
    ):
        oauth1 = _kind(resource_type, "revoke tokens", "oauth1")
        operations += [
            oauth1(f"{resource_type}.delete", "DELETE", path, "deletion"),
            oauth1(f"{resource_type}.revoke", "POST", path, "revocation", query_action="revoke", pre_image=path),
            oauth1(f"{resource_type}.approve", "POST", path, "approval", query_action="approve", pre_image=path),
            oauth1(f"{resource_type}.update", "POST", path, "change"),
        ]
    # A verifier lets its request token be exchanged for an access token: deleting it cuts that.
    verifiers = _kind("oauth1_verifier", "revoke tokens", "oauth1")
    operations.append(verifiers("oauth1_verifier.delete", "DELETE", "oauth1/verifiers/{verifier}", "deletion"))
    return operations


def _app_operations(owner: str) -> list[Operation]:
    """The calls on an owner's apps and their keys: ``developers/{developer}`` or ``companies/{company}``."""
    apps, app = f"{owner}/apps", f"{owner}/apps/{{app}}"
    key, product = f"{app}/keys/{{key}}", f"{app}/keys/{{key}}/apiproducts/{{product}}"
    keys = _kind("consumer_key", "change consumer keys")
    products = _kind("consumer_key_product", "change consumer keys")
    on_app = _kind("app", "change apps")
    return [
        # Before key.update: "keys/create" would match "keys/{key}" too (the stub and Apigee read it as creation).
        keys("key.create", "POST", f"{app}/keys/create", "creation", body_secret="consumerKey"),
        keys("key.revoke", "POST", key, "revocation", query_action="revoke", pre_image=key),
        keys("key.approve", "POST", key, "approval", query_action="approve", pre_image=key),
        keys("key.update", "POST", key, "change"),
        keys("key.update", "PUT", key, "change"),  # apigee-edge-js adds products to a key with PUT
        keys("key.delete", "DELETE", key, "deletion"),
        products("key_product.revoke", "POST", product, "revocation", query_action="revoke", pre_image=key),
        products("key_product.approve", "POST", product, "approval", query_action="approve", pre_image=key),
        products("key_product.delete", "DELETE", product, "deletion", pre_image=key),
        on_app("app.revoke", "POST", app, "revocation", query_action="revoke", pre_image=app),
        on_app("app.approve", "POST", app, "approval", query_action="approve", pre_image=app),
        on_app("app.update", "POST", app, "change"),
        on_app("app.update", "PUT", app, "change"),
        on_app("app.delete", "DELETE", app, "deletion"),
        on_app("app.create", "POST", apps, "creation"),
    ]


def _owner_operations(kind: str, path: str, verb: str) -> list[Operation]:
    """A developer's or a company's status, update and deletion: an inactive owner's apps are
    cut, an update's body may carry a ``status`` (or an email that moves the apps to another
    name), and a deleted owner takes its apps and their keys with it."""
    owners = _kind(kind, verb)
    return [
        owners(f"{kind}.inactive", "POST", path, "deactivation", query_action="inactive", pre_image=path),
        owners(f"{kind}.active", "POST", path, "activation", query_action="active", pre_image=path),
        owners(f"{kind}.update", "PUT", path, "change", pre_image=path),
        owners(f"{kind}.delete", "DELETE", path, "deletion"),
    ]


OPERATIONS: tuple[Operation, ...] = (
    *_token_operations(),
    *_app_operations("developers/{developer}"),
    *_app_operations("companies/{company}"),
    # An app by its id alone (apigee-edge-js's apps.del): the app and its keys are gone as by its owner's path.
    _kind("app", "change apps")("app.delete", "DELETE", "apps/{app_id}", "deletion"),
    *_owner_operations("developer", "developers/{developer}", "change developers"),
    *_owner_operations("company", "companies/{company}", "change companies"),
)
"""Every audited operation. A path may carry several (one per method and ``?action=``)."""

TOKEN_DELETE = OPERATIONS[0]

PASS_THROUGH_READ = Operation("read", "GET", "", "", "read resources", "call", role=READ, audited=False, name="read")
"""Any other GET or HEAD: forwarded after auth and org scoping (role ``read``), logged."""
PASS_THROUGH_WRITE = Operation(
    "manage", "*", "", "", "change resources", "call", role=MANAGE, audited=False, name="manage"
)
"""Any other call: forwarded after auth and org scoping (role ``manage``), logged."""
READ_RESOURCE_TYPE = "path"
"""What a pass-through read recorded under ``audit.reads`` acts on (its ``resource`` is the path)."""
RECORDED_ACTIONS = frozenset({operation.action for operation in OPERATIONS} | {PASS_THROUGH_READ.action})
"""Every ``action`` a record can hold: what the fleet collector accepts."""
RECORDED_RESOURCE_TYPES = frozenset({operation.resource_type for operation in OPERATIONS} | {READ_RESOURCE_TYPE})
"""Every ``resource_type`` a record can hold."""

ACTION_FAMILIES: dict[str, tuple[str, ...]] = {}
"""For each path template, the ``?action=`` values audited there (an unknown one is refused)."""
for _operation in OPERATIONS:
    if _operation.query_action is not None:
        ACTION_FAMILIES.setdefault(_operation.path, ())
        ACTION_FAMILIES[_operation.path] += (_operation.query_action,)

REFERENCE_HEADER = (
    "Action",
    "Method",
    "Path below `/v1/o/{org}/`",
    "`?action=`",
    "`resource_type`",
    "Role",
    "Fingerprinted",
    "Read first",
    "`params`",
)
"""The columns of docs/audited-calls.md's table of the audited calls."""


def reference_rows() -> list[tuple[str, ...]]:
    """One row per audited operation, in declaration order: what docs/audited-calls.md shows
    (a test holds the document to it)."""
    return [_reference_row(operation) for operation in OPERATIONS]


def reference_table() -> str:
    """docs/audited-calls.md's table, rendered from ``OPERATIONS``; paste it there when they change."""
    lines = [_cells(REFERENCE_HEADER), _cells(("---",) * len(REFERENCE_HEADER))]
    return "\n".join([*lines, *map(_cells, reference_rows())])


def _reference_row(operation: Operation) -> tuple[str, ...]:
    secret = operation.secret
    fingerprinted = f"`{{{secret}}}`" if secret else f"body `{operation.body_secret}`" if operation.body_secret else "-"
    if operation.enumerate_tokens:
        first = "`GET oauth2/search` (every page): the tokens' fingerprints"
    else:
        first = f"`GET {operation.pre_image}`" if operation.pre_image else "-"
    params = [*operation.params, *(["submitted"] if operation.enumerate_tokens else [])]
    return (
        f"`{operation.action}`",
        f"`{operation.method}`",
        f"`{operation.path}`",
        f"`{operation.query_action}`" if operation.query_action else "-",
        f"`{operation.resource_type}`",
        f"`{operation.role}`",
        fingerprinted,
        first,
        ", ".join(f"`{name}`" for name in params) or "-",
    )


def _cells(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"
