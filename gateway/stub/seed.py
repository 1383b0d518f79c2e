"""The stub's data: the demo seed of DESIGN.md and seed files given with ``--seed``."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

DEMO_USER = "myname"
DEMO_PASSWORD = "mypass"
DEMO_ORG = "myorg"

# The sample response of the upstream documentation, field for field and in its order.
SAMPLE_TOKEN: dict[str, Any] = {
    "apiProducts": ["sandbox"],
    "app": "app1",
    "attributes": [{"name": "att_n1", "value": "att_v1"}],
    "clientId": "fGytmxA5UDajPMdOA5E3bebiBOBPikOT",
    "createdAt": 1343038476540,
    "createdBy": "defaultUser",
    "expiresAt": 1343040276540,
    "grantType": "password",
    "issuedAt": 1343038476540,
    "lastModifiedAt": 1343038476958,
    "lastModifiedBy": "defaultUser",
    "refreshCount": 0,
    "refreshToken": "1h11770Z",
    "scope": "read",
    "status": "approved",
    "token": "taFM3LHUTQAFhL0dIFg81XhRc7vC",
    "tokenType": "BearerToken",
}

_ALPHANUMERIC = string.ascii_letters + string.digits


class SeedError(Exception):
    """Seed data that cannot be used (a seed file, or tokens posted to the admin endpoint); the message names the entry."""


@dataclass
class Seed:
    """Who may call the stub and what each organisation holds, in the order given.

    ``orgs`` holds every OAuth 2.0 access token per organisation (those listed under a key
    first, in the order of the file); ``entities`` the rest of each organisation as checked
    by ``parse_seed`` (products, developers, companies and their apps and keys, authorization
    codes, OAuth 1.0a tokens); ``token_keys`` the consumer key each token was listed under.
    """

    users: dict[str, str]
    orgs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    generated: int = 0
    """How many load-test tokens (``load0``, ``load1``, ...) each organisation also holds."""
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_keys: dict[str, dict[str, str]] = field(default_factory=dict)


def generated_token(index: int, *, org: str = DEMO_ORG) -> dict[str, Any]:
    """A plausible token snapshot, the same for the same org and index, shaped like the sample."""
    rng = random.Random(f"{org}/{index}")
    issued = 1700000000000 + index * 60_000
    token = "".join(rng.choices(_ALPHANUMERIC, k=28))
    return {
        "apiProducts": ["sandbox"],
        "app": f"app{2 + index % 3}",
        "attributes": [],
        "clientId": "".join(rng.choices(_ALPHANUMERIC, k=32)),
        "createdAt": issued,
        "createdBy": "defaultUser",
        "expiresAt": issued + 1_800_000,
        "grantType": "client_credentials",
        "issuedAt": issued,
        "lastModifiedAt": issued,
        "lastModifiedBy": "defaultUser",
        "refreshCount": 0,
        "refreshToken": "".join(rng.choices(_ALPHANUMERIC, k=8)),
        "scope": "read",
        "status": "approved",
        "token": token,
        "tokenType": "BearerToken",
    }


LOAD_PREFIX = "load"
_LOAD_TEMPLATE = {**SAMPLE_TOKEN, "app": "load-test", "grantType": "client_credentials", "refreshToken": "loadRefresh0"}


def load_token(name: str) -> dict[str, Any]:
    """The snapshot of a generated load-test token: the sample's shape, cheap to make."""
    return {**_LOAD_TEMPLATE, "token": name}


DEMO_DEVELOPER = "demo@example.com"
DEMO_DEVELOPER_ID = "5e2ba9c1-3c4e-4f0b-9a53-6f2d0b8f3a10"
DEMO_APP = "app1"
DEMO_APP_ID = "0b0f3f1e-6d3c-4f5e-8a7b-1c2d3e4f5a6b"
DEMO_PRODUCT = "sandbox"


def demo_data(extra_tokens: int = 5) -> dict[str, Any]:
    """The demo seed as a seed file would write it: a developer whose app ``app1`` holds the key
    the documented sample token was issued under, that token, and a few generated ones."""
    sample_key = {
        "consumerKey": SAMPLE_TOKEN["clientId"],
        "consumerSecret": "Ha8wYq3kTz6PdR2m",
        "apiProducts": [DEMO_PRODUCT],
        "tokens": [dict(SAMPLE_TOKEN)],
    }
    developer = {
        "email": DEMO_DEVELOPER,
        "firstName": "Demo",
        "lastName": "Developer",
        "userName": "demo",
        "developerId": DEMO_DEVELOPER_ID,
        "apps": [{"name": DEMO_APP, "appId": DEMO_APP_ID, "credentials": [sample_key]}],
    }
    org = {
        "apiproducts": [{"name": DEMO_PRODUCT, "displayName": "Sandbox"}],
        "developers": [developer],
        "tokens": [generated_token(i) for i in range(extra_tokens)],
    }
    return {"users": {DEMO_USER: DEMO_PASSWORD}, "orgs": {DEMO_ORG: org}}


def demo_seed(extra_tokens: int = 5) -> Seed:
    """The default data (``demo_data``), checked as a seed file is."""
    return parse_seed(demo_data(extra_tokens), source="demo seed")


def load_seed(path: Path) -> Seed:
    """Read a seed file, keeping numbers and key order exactly as written."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"{path}: cannot read: {_reason(exc)}") from None
    try:
        data = exact_json(text)
    except ValueError as exc:
        raise SeedError(f"{path}: invalid JSON: {exc}") from None
    return parse_seed(data, source=str(path))


def exact_json(text: str | bytes) -> Any:
    """Parse JSON keeping numbers as written (``1.50`` stays ``1.50``) and refusing NaN and Infinity."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def parse_seed(data: Any, *, source: str) -> Seed:
    """Check the shape of seed data, naming the first entry that is wrong.

    An organisation is either a list of tokens (the original format) or an object of what it
    holds (``ORG_FIELDS``); see docs/stub.md.
    """
    if not isinstance(data, dict):
        raise SeedError(f'{source}: expected a JSON object with "users" and "orgs"')
    unknown = sorted(set(data) - {"users", "orgs"})
    if unknown:
        raise SeedError(f'{source}: {unknown[0]}: unknown key (expected "users" and "orgs")')
    users = data.get("users")
    if not isinstance(users, dict) or not users:
        raise SeedError(f"{source}: users: expected an object of user name to password, with at least one user")
    for name, password in users.items():
        if not name or ":" in name or not isinstance(password, str):
            raise SeedError(f"{source}: users.{name}: expected a non-empty name without ':' and a string password")
    orgs = data.get("orgs", {})
    if not isinstance(orgs, dict):
        raise SeedError(f"{source}: orgs: expected an object of organisation name to a list of tokens or an object")
    seed = Seed(users=dict(users))
    for org, held in orgs.items():
        where = f"{source}: orgs.{org}"
        if isinstance(held, dict):
            entities, tokens, links = parse_org(held, where)
            seed.entities[org] = entities
            seed.token_keys[org] = links
        else:
            tokens = held
        seed.orgs[org] = check_tokens(tokens, where)
    return seed


ORG_FIELDS = (
    "apiproducts",
    "developers",
    "companies",
    "tokens",
    "authorizationcodes",
    "oauth1accesstokens",
    "oauth1requesttokens",
    "oauth1verifiers",
)

SeedCheck = Callable[[Any, str], Any]


def parse_org(data: dict[str, Any], where: str) -> tuple[dict[str, Any], list[Any], dict[str, str]]:
    """One organisation's entities, its tokens (those under keys first) and the key of each of those."""
    org = _fields(data, where, {}, {name: _list_of(_ORG_ITEMS[name]) for name in ORG_FIELDS})
    products = {product["name"] for product in org.get("apiproducts", [])}
    _unique(org.get("apiproducts", []), "name", f"{where}.apiproducts")
    tokens: list[Any] = []
    links: dict[str, str] = {}
    seen: set[str] = set()
    keys: set[str] = set()
    app_ids: set[str] = set()
    owners = [("developers", developer) for developer in org.get("developers", [])]
    owners += [("companies", company) for company in org.get("companies", [])]
    _unique(org.get("developers", []), "email", f"{where}.developers", fold=True)
    _unique(org.get("developers", []), "developerId", f"{where}.developers")
    _unique(org.get("companies", []), "name", f"{where}.companies")
    counters = {"developers": 0, "companies": 0}
    for kind, owner in owners:
        owner_where = f"{where}.{kind}[{counters[kind]}]"
        counters[kind] += 1
        _unique(owner.get("apps", []), "name", f"{owner_where}.apps")
        for a, app in enumerate(owner.get("apps", [])):
            app_where = f"{owner_where}.apps[{a}]"
            if "appId" in app:
                if app["appId"] in app_ids:
                    raise SeedError(f"{app_where}.appId: listed twice in the organisation")
                app_ids.add(app["appId"])
            for c, credential in enumerate(app.get("credentials", [])):
                key_where = f"{app_where}.credentials[{c}]"
                key = credential["consumerKey"]
                if key in keys:
                    raise SeedError(f"{key_where}.consumerKey: listed twice in the organisation")
                keys.add(key)
                for p, ref in enumerate(credential.get("apiProducts", [])):
                    if ref["apiproduct"] not in products:
                        raise SeedError(f"{key_where}.apiProducts[{p}]: no such product in {where}.apiproducts")
                for t, token in enumerate(credential.pop("tokens", [])):
                    check_token(token, f"{key_where}.tokens[{t}]", seen)
                    if token.get("clientId", key) != key:
                        raise SeedError(
                            f"{key_where}.tokens[{t}].clientId: differs from the consumerKey it is listed under"
                        )
                    tokens.append(token)
                    links[token["token"]] = key
    for t, token in enumerate(org.get("tokens", [])):
        check_token(token, f"{where}.tokens[{t}]", seen)
    tokens += org.pop("tokens", [])
    _unique(org.get("authorizationcodes", []), "code", f"{where}.authorizationcodes")
    _unique(org.get("oauth1accesstokens", []), "token", f"{where}.oauth1accesstokens")
    _unique(org.get("oauth1requesttokens", []), "token", f"{where}.oauth1requesttokens")
    _unique(org.get("oauth1verifiers", []), "verifier", f"{where}.oauth1verifiers")
    return org, tokens, links


def _fields(value: Any, where: str, required: dict[str, SeedCheck], optional: dict[str, SeedCheck]) -> dict[str, Any]:
    """An object with ``required`` and ``optional`` fields, each checked; nothing else."""
    if not isinstance(value, dict):
        raise SeedError(f"{where}: expected an object")
    known = [*required, *optional]
    for name in value:
        if name not in known:
            raise SeedError(f"{where}.{name}: unknown field; expected {', '.join(known)}")
    checked: dict[str, Any] = {}
    for name in known:
        if name in value:
            checked[name] = (required.get(name) or optional[name])(value[name], f"{where}.{name}")
        elif name in required:
            raise SeedError(f'{where}: missing "{name}"')
    return checked


def _unique(items: list[dict[str, Any]], name: str, where: str, *, fold: bool = False) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if name in item:
            value = item[name].lower() if fold else item[name]
            if value in seen:
                raise SeedError(f"{where}[{index}].{name}: listed twice")
            seen.add(value)


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise SeedError(f"{where}: expected a non-empty string without '/'")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SeedError(f"{where}: expected a string")
    return value


def _millis(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SeedError(f"{where}: expected milliseconds since the epoch (a whole number)")
    return value


def _one_of(*choices: str) -> SeedCheck:
    def check(value: Any, where: str) -> str:
        if value not in choices:
            raise SeedError(f"{where}: expected {' or '.join(choices)}")
        return str(value)

    return check


def _list_of(item: SeedCheck) -> SeedCheck:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise SeedError(f"{where}: expected a list")
        return [item(element, f"{where}[{index}]") for index, element in enumerate(value)]

    return check


def _attribute(value: Any, where: str) -> dict[str, Any]:
    return _fields(value, where, {"name": _name, "value": _text}, {})


def _product_ref(value: Any, where: str) -> dict[str, Any]:
    """A key's product: its name, or ``{"apiproduct": name, "status": ...}``."""
    if isinstance(value, str):
        value = {"apiproduct": value}
    return _fields(value, where, {"apiproduct": _name}, {"status": _one_of("approved", "pending", "revoked")})


def _snapshot(value: Any, where: str) -> Any:
    """A token kept as given; ``check_tokens`` checks it with the organisation's other tokens."""
    return value


def _snapshot_with(field_name: str) -> SeedCheck:
    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SeedError(f"{where}: expected an object")
        if not isinstance(value.get(field_name), str) or not value[field_name]:
            raise SeedError(f'{where}: missing "{field_name}" (a non-empty string)')
        return value

    return check


_ATTRIBUTES = _list_of(_attribute)
_NAMES = _list_of(_name)

_CREDENTIAL = {
    "consumerSecret": _name,
    "status": _one_of("approved", "revoked"),
    "apiProducts": _list_of(_product_ref),
    "issuedAt": _millis,
    "expiresAt": _millis,
    "attributes": _ATTRIBUTES,
    "scopes": _NAMES,
    "tokens": _list_of(_snapshot),
}
_APP = {
    "appId": _name,
    "status": _one_of("approved", "revoked"),
    "callbackUrl": _text,
    "attributes": _ATTRIBUTES,
    "scopes": _NAMES,
    "credentials": _list_of(lambda value, where: _fields(value, where, {"consumerKey": _name}, _CREDENTIAL)),
}
_APPS = _list_of(lambda value, where: _fields(value, where, {"name": _name}, _APP))
_OWNER = {"status": _one_of("active", "inactive"), "attributes": _ATTRIBUTES, "apps": _APPS}
_ORG_ITEMS: dict[str, SeedCheck] = {
    "apiproducts": lambda value, where: _fields(
        value,
        where,
        {"name": _name},
        {
            "displayName": _text,
            "description": _text,
            "approvalType": _one_of("auto", "manual"),
            "scopes": _NAMES,
            "environments": _NAMES,
            "attributes": _ATTRIBUTES,
        },
    ),
    "developers": lambda value, where: _fields(
        value,
        where,
        {"email": _name, "firstName": _text, "lastName": _text, "userName": _text},
        {"developerId": _name, **_OWNER},
    ),
    "companies": lambda value, where: _fields(value, where, {"name": _name}, {"displayName": _text, **_OWNER}),
    "tokens": _snapshot,
    "authorizationcodes": _snapshot_with("code"),
    "oauth1accesstokens": _snapshot_with("token"),
    "oauth1requesttokens": _snapshot_with("token"),
    "oauth1verifiers": _snapshot_with("verifier"),
}


def check_tokens(tokens: Any, where: str) -> list[dict[str, Any]]:
    """A list of token snapshots, each with a distinct non-empty "token"; errors name the entry."""
    if not isinstance(tokens, list):
        raise SeedError(f"{where}: expected a list of token objects")
    seen: set[str] = set()
    for index, token in enumerate(tokens):
        check_token(token, f"{where}[{index}]", seen)
    return list(tokens)


def check_token(token: Any, entry: str, seen: set[str]) -> dict[str, Any]:
    """One token snapshot with a non-empty "token" not in ``seen`` (which it joins)."""
    if not isinstance(token, dict):
        raise SeedError(f"{entry}: expected a token object")
    value = token.get("token")
    if not isinstance(value, str) or not value:
        raise SeedError(f'{entry}: missing "token" (a non-empty string)')
    if value in seen:
        raise SeedError(f"{entry}: token is listed twice")
    seen.add(value)
    return token


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
