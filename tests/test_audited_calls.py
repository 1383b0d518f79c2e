"""Every audited operation (``gateway.operations.OPERATIONS``), one case each, through a real gateway
in front of the real stub: the answer byte for byte, the intent and outcome records field by field,
Apigee's errors, refusals by role and organisation, an unwritable intent, and pre-images.

A new operation is covered by adding its case to ``CASES``: ``test_every_operation_has_a_case``
fails until it has one.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from helpers import AppClient, GatewayFactory, make_config, rows, wire_request, write_locked
from yarl import URL

from gateway.audit.fingerprint import fingerprint
from gateway.logs import flush_logs
from gateway.operations import OPERATIONS, Operation
from gateway.passwords import hash_password
from gateway.route import route
from gateway.stub import make_stub_app
from gateway.stub.seed import parse_seed
from gateway.stub.settings import StubSettings

ORG = "myorg"
PASSWORDS = {
    "myname": "mypass",
    "auditor": "auditor-pass",
    "outsider": "outsider-pass",
    "reader": "reader-pass",
    "manager": "manager-pass",
    "globe": "globe-pass",
    "admin": "admin-pass",
}
_ROLES: dict[str, tuple[list[str], list[str]]] = {
    "myname": (["myorg"], ["revoke"]),
    "auditor": (["*"], ["audit", "read", "manage"]),  # everything but revoke
    "outsider": (["otherorg"], ["revoke", "read", "manage"]),  # everything, in another organisation
    "reader": (["myorg"], ["read"]),
    "manager": (["myorg"], ["manage"]),
    "globe": (["*"], ["read", "global"]),
    "admin": (["myorg"], ["revoke", "read", "manage"]),  # may do anything in myorg: only the audit stands in the way
}
USERS = [
    {"name": name, "password_hash": hash_password(PASSWORDS[name], log2_n=10), "orgs": orgs, "roles": roles}
    for name, (orgs, roles) in _ROLES.items()
]

DEV, DEV_ID, APP, APP_ID = "dev@example.com", "5f0c7a52-2b0e-4a55-9d1e-0c1d2e3f4a5b", "app1", "app-id-0001"
KEY, SECRET = "devKey0A1b2C3d4E5f6G7h8I9j0K1l2m", "devSecret0A1b2C3"
COMPANY, CAPP, CAPP_ID = "acme", "capp", "app-id-0002"
CKEY, CSECRET = "coKey0A1b2C3d4E5f6G7h8I9j0K1l2mX", "coSecret0A1b2C3d"
NEWKEY, NEWSECRET = "newKey0A1b2C3d4E5f6G7h8I9j0K1l2m", "newSecret0A1b2C3"
TOKEN, REFRESH = "accessToken0A1b2C3d4E5f6G", "refreshToken0A1b2C3d"
CODE = "authCode0A1b2C3d4E5f"
O1A, O1A_CONSUMER_SECRET, O1A_SECRET = "oauth1Access0A1b2C3d4E5", "o1ConsumerSecret0A1b2", "o1AccessSecret0A1b2C3"
O1R, O1R_SECRET = "oauth1Request0A1b2C3d4E", "o1RequestSecret0A1b2C"
VERIFIER = "o1Verifier0A1b2C3d4E5"
SECRETS: tuple[str, ...] = (KEY, SECRET, CKEY, CSECRET, NEWKEY, NEWSECRET, TOKEN, REFRESH, CODE, O1A)
SECRETS += (O1A_CONSUMER_SECRET, O1A_SECRET, O1R, O1R_SECRET, VERIFIER)
"""Every credential the stub holds or is sent: none may appear in clear in any audit record."""


def _scope_of(state: dict[str, Any], *, held: str, name: str) -> Any:
    return next(t["scope"] for t in state[held] if t["token"] == name)


TOKEN_SNAPSHOT = {
    "apiProducts": ["prod1"],
    "app": APP,
    "appUserId": "alice",
    "attributes": [{"name": "tier", "value": "gold"}],
    "clientId": KEY,
    "expiresAt": 1700001800000,
    "issuedAt": 1700000000000,
    "refreshToken": REFRESH,
    "scope": "read",
    "status": "approved",
    "token": TOKEN,
    "tokenType": "BearerToken",
}
SEED = {
    "users": {name: PASSWORDS[name] for name in ("myname", "reader", "manager", "globe", "admin")},
    "orgs": {
        ORG: {
            "apiproducts": [{"name": "prod1"}, {"name": "prod2"}],
            "developers": [
                {
                    "email": DEV,
                    "developerId": DEV_ID,
                    "firstName": "Dev",
                    "lastName": "One",
                    "userName": "dev",
                    "apps": [
                        {
                            "name": APP,
                            "appId": APP_ID,
                            "credentials": [
                                {
                                    "consumerKey": KEY,
                                    "consumerSecret": SECRET,
                                    "apiProducts": ["prod1"],
                                    "tokens": [TOKEN_SNAPSHOT],
                                }
                            ],
                        }
                    ],
                }
            ],
            "companies": [
                {
                    "name": COMPANY,
                    "displayName": "Acme",
                    "apps": [
                        {
                            "name": CAPP,
                            "appId": CAPP_ID,
                            "credentials": [{"consumerKey": CKEY, "consumerSecret": CSECRET, "apiProducts": ["prod1"]}],
                        }
                    ],
                }
            ],
            "authorizationcodes": [{"code": CODE, "client_id": KEY, "status": "active", "scope": "read"}],
            "oauth1accesstokens": [
                {"token": O1A, "consumerSecret": O1A_CONSUMER_SECRET, "secret": O1A_SECRET, "status": "approved"}
            ],
            "oauth1requesttokens": [{"token": O1R, "secret": O1R_SECRET, "status": "approved"}],
            "oauth1verifiers": [{"verifier": VERIFIER, "requestToken": O1R, "status": "approved"}],
        }
    },
}

JSON = {"Accept": "application/json"}


def auth(user: str) -> dict[str, str]:
    """Basic credentials of a test user, asking for JSON (the stub answers some errors in XML otherwise)."""
    encoded = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", **JSON}


# The cases: what each operation is called with, and what the stub answers ----------------------------


@dataclass(frozen=True)
class Failure:
    """Apigee's error for a variant of the call: what changes, and what the stub answers."""

    status: int
    code: str
    outcome: str
    values: Mapping[str, str] = field(default_factory=dict)
    """Placeholders replaced (an unknown token, key, app...)."""
    query: Mapping[str, str] | None = None
    """The query in place of the case's (None: the case's)."""
    body: Any = ...
    """The body in place of the case's (...: the case's)."""


@dataclass(frozen=True)
class Case:
    """One operation, called so that it succeeds on the seed."""

    status: int
    values: Mapping[str, str]
    """The path's placeholders (and names an ``echo`` template uses)."""
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    echo: str | None = None
    """A path below the organisation whose GET, straight to the stub, answers the call's exact bytes:
    read before the call (a deletion answers the resource as it was) or after (a change answers it as
    it is). None: the answer is ``fixed``."""
    echo_before: bool = False
    fixed: bytes = b""
    fixed_type: str | None = None
    app: str | None = None
    """The record's ``app``."""
    client_id: str | None = None
    """The consumer key the outcome names, raw (the record holds its fingerprint)."""
    secret: str | None = None
    """The credential the call acts on, raw (the record holds its fingerprint and hint)."""
    effect: Callable[[dict[str, Any]], object] | None = None
    """What to read of the stub's state once the call is done, and ``changed``, what it must be."""
    changed: object = None
    failures: tuple[Failure, ...] = ()


def _developer(state: dict[str, Any], email: str = DEV) -> dict[str, Any] | None:
    return next((d for d in state["developers"] if d["email"] == email), None)


def _owner(state: dict[str, Any], owner: str) -> dict[str, Any] | None:
    if owner == "developers":
        return _developer(state)
    return next((c for c in state["companies"] if c["name"] == COMPANY), None)


def _app(state: dict[str, Any], owner: str, name: str) -> dict[str, Any] | None:
    holder = _owner(state, owner)
    return None if holder is None else next((a for a in holder["apps"] if a["name"] == name), None)


def _key(state: dict[str, Any], owner: str, app: str, key: str) -> dict[str, Any] | None:
    found = _app(state, owner, app)
    return None if found is None else next((c for c in found["credentials"] if c["consumerKey"] == key), None)


def _token(state: dict[str, Any], token: str) -> dict[str, Any] | None:
    return next((t for t in state["tokens"] if t["token"] == token), None)


def _held(kind: str, name: str) -> Callable[[dict[str, Any]], object]:
    """The status of an authorization code, OAuth 1.0a token or verifier, None once gone."""
    field_name = {"authorizationcodes": "code", "oauth1verifiers": "verifier"}.get(kind, "token")
    return lambda state: next((t.get("status") for t in state[kind] if t[field_name] == name), None)


def _deletion_of_a_held_secret(path: str, held: str, secret: str, unknown: Failure) -> Case:
    """The DELETE of an authorization code, an OAuth 1.0a token or verifier: answered as it was, then gone."""
    placeholder = path.rsplit("{", 1)[1].rstrip("}")
    return Case(
        200,
        {placeholder: secret},
        echo=path,
        echo_before=True,
        secret=secret,
        effect=_held(held, secret),
        changed=None,
        failures=(unknown,),
    )


def _token_cases() -> dict[str, Case]:
    token = {"token": TOKEN}
    unknown_token = Failure(
        404, "keymanagement.service.invalid_account_name", "not_found", values={"token": "noSuchToken0A1b2C3d4"}
    )
    cases = {
        "DELETE oauth2/accesstokens/{token}": Case(
            200,
            token,
            echo="oauth2/accesstokens/{token}",
            echo_before=True,
            app=APP,
            client_id=KEY,
            secret=TOKEN,
            effect=lambda state: _token(state, TOKEN),
            changed=None,
            failures=(unknown_token,),
        ),
        "POST oauth2/accesstokens/{token}?action=revoke": Case(
            204,
            token,
            query={"cascade": "true"},
            app=APP,
            client_id=KEY,
            secret=TOKEN,
            effect=lambda state: (_token(state, TOKEN) or {}).get("refreshTokenStatus"),
            changed="revoked",
            failures=(unknown_token,),
        ),
        "POST oauth2/accesstokens/{token}?action=approve": Case(
            204,
            token,
            app=APP,
            client_id=KEY,
            secret=TOKEN,
            effect=lambda state: (_token(state, TOKEN) or {}).get("status"),
            changed="approved",
            failures=(unknown_token,),
        ),
        "POST oauth2/accesstokens/{token}": Case(
            200,
            token,
            body={"scope": "read write"},
            echo="oauth2/accesstokens/{token}",
            app=APP,
            client_id=KEY,
            secret=TOKEN,
            effect=lambda state: (_token(state, TOKEN) or {}).get("snapshot", {}).get("scope"),
            changed="read write",
            failures=(
                unknown_token,
                Failure(400, "stub.invalid_request", "rejected", body=["not", "an", "object"]),
            ),
        ),
        "POST oauth2/revoke": Case(
            202,
            {},
            query={"app": APP_ID},
            fixed=b"1",
            fixed_type="application/json",
            failures=(
                Failure(404, "keymanagement.service.app_id_not_found", "not_found", query={"app": "noSuchApp"}),
                Failure(400, "keymanagement.service.parameters_missing", "rejected", query={}),
            ),
        ),
        "DELETE oauth2/authorizationcodes/{code}": _deletion_of_a_held_secret(
            "oauth2/authorizationcodes/{code}",
            "authorizationcodes",
            CODE,
            Failure(
                404,
                "keymanagement.service.invalid_request-authorization_code_invalid",
                "not_found",
                values={"code": "noSuchCode0A1b2C3d4"},
            ),
        ),
    }
    for kind, name, code in (
        ("accesstokens", O1A, "keymanagement.service.oauth10_access_token_doesnotexist"),
        ("requesttokens", O1R, "keymanagement.service.oauth10_request_token_doesnot_exist"),
    ):
        path, held = f"oauth1/{kind}/{{token}}", f"oauth1{kind}"
        unknown = Failure(404, code, "not_found", values={"token": "noSuchOauth1Token0A1b"})
        cases[f"DELETE {path}"] = _deletion_of_a_held_secret(path, held, name, unknown)
        for action, status in (("revoke", "revoked"), ("approve", "approved")):
            cases[f"POST {path}?action={action}"] = Case(
                204, {"token": name}, secret=name, effect=_held(held, name), changed=status, failures=(unknown,)
            )
        cases[f"POST {path}"] = Case(
            200,
            {"token": name},
            body={"scope": "read write"},
            echo=path,
            secret=name,
            effect=partial(_scope_of, held=held, name=name),
            changed="read write",
            failures=(unknown, Failure(400, "stub.invalid_request", "rejected", body={"scope": 42})),
        )
    cases["DELETE oauth1/verifiers/{verifier}"] = _deletion_of_a_held_secret(
        "oauth1/verifiers/{verifier}",
        "oauth1verifiers",
        VERIFIER,
        Failure(
            404,
            "keymanagement.service.oauth10_verifier_doesnot_exist",
            "not_found",
            values={"verifier": "noSuchVerifier0A1b2"},
        ),
    )
    return cases


def _app_cases(owner: str, placeholder: str, values: dict[str, str], key: str) -> dict[str, Case]:
    """The calls on an owner's apps and keys: ``developers/{developer}`` or ``companies/{company}``."""
    below = f"{owner}/{{{placeholder}}}"
    app_path, key_path = f"{below}/apps/{{app}}", f"{below}/apps/{{app}}/keys/{{key}}"
    product_path = f"{key_path}/apiproducts/{{product}}"
    app = values["app"]
    unknown_key = Failure(
        404, "keymanagement.service.InvalidClientIdForGivenApp", "not_found", values={"key": "noSuchKey0A1b2C3d4E5"}
    )
    unknown_app = Failure(404, "developer.service.AppDoesNotExist", "not_found", values={"app": "noSuchApp"})
    not_on_key = Failure(
        500, "keymanagement.service.apiproduct_not_associated", "upstream_error", values={"product": "prod2"}
    )
    not_an_object = Failure(400, "stub.invalid_request", "rejected", body=["not", "an", "object"])
    on_key: dict[str, Any] = {"app": app, "client_id": key, "secret": key}

    def key_status(state: dict[str, Any]) -> object:
        return (_key(state, owner, app, key) or {}).get("status")

    def products(state: dict[str, Any]) -> object:
        found = _key(state, owner, app, key)
        return None if found is None else {ref["apiproduct"]: ref["status"] for ref in found["apiProducts"]}

    def app_status(state: dict[str, Any]) -> object:
        return (_app(state, owner, app) or {}).get("status")

    def callback(state: dict[str, Any]) -> object:
        return (_app(state, owner, app) or {}).get("callbackUrl")

    cases = {
        f"POST {key_path}?action=revoke": Case(
            204, values, **on_key, effect=key_status, changed="revoked", failures=(unknown_key,)
        ),
        f"POST {key_path}?action=approve": Case(
            204, values, **on_key, effect=key_status, changed="approved", failures=(unknown_key,)
        ),
        f"DELETE {key_path}": Case(
            200,
            values,
            echo=key_path,
            echo_before=True,
            **on_key,
            effect=lambda state: _key(state, owner, app, key),
            changed=None,
            failures=(unknown_key,),
        ),
        f"POST {below}/apps/{{app}}/keys/create": Case(
            201,
            {**values, "new": NEWKEY},
            body={"consumerKey": NEWKEY, "consumerSecret": NEWSECRET},
            echo=f"{below}/apps/{{app}}/keys/{{new}}",
            app=app,
            client_id=NEWKEY,
            secret=NEWKEY,
            effect=lambda state: (_key(state, owner, app, NEWKEY) or {}).get("status"),
            changed="approved",
            failures=(
                Failure(
                    409,
                    "keymanagement.service.consumer_key_already_exists",
                    "rejected",
                    body={"consumerKey": key, "consumerSecret": NEWSECRET},
                ),
                Failure(400, "stub.invalid_request", "rejected", body={"consumerSecret": NEWSECRET}),
                unknown_app,
            ),
        ),
        f"POST {product_path}?action=revoke": Case(
            204, values, **on_key, effect=products, changed={"prod1": "revoked"}, failures=(unknown_key, not_on_key)
        ),
        f"POST {product_path}?action=approve": Case(
            204, values, **on_key, effect=products, changed={"prod1": "approved"}, failures=(unknown_key, not_on_key)
        ),
        f"DELETE {product_path}": Case(
            200, values, echo=key_path, **on_key, effect=products, changed={}, failures=(unknown_key, not_on_key)
        ),
        f"POST {app_path}?action=revoke": Case(
            204, values, app=app, effect=app_status, changed="revoked", failures=(unknown_app,)
        ),
        f"POST {app_path}?action=approve": Case(
            204, values, app=app, effect=app_status, changed="approved", failures=(unknown_app,)
        ),
        f"DELETE {app_path}": Case(
            200,
            values,
            echo=app_path,
            echo_before=True,
            app=app,
            effect=lambda state: _app(state, owner, app),
            changed=None,
            failures=(unknown_app,),
        ),
        f"POST {below}/apps": Case(
            201,
            {**values, "new": "newapp"},
            body={"name": "newapp", "apiProducts": ["prod1"]},
            echo=f"{below}/apps/{{new}}",
            effect=lambda state: (_app(state, owner, "newapp") or {}).get("status"),
            changed="approved",
            failures=(
                Failure(409, "developer.service.AppAlreadyExists", "rejected", body={"name": app}),
                Failure(
                    400,
                    "keymanagement.service.apiproduct_doesnot_exist",
                    "rejected",
                    body={"name": "newapp", "apiProducts": ["noSuchProduct"]},
                ),
            ),
        ),
    }
    for method in ("POST", "PUT"):
        url = f"https://{method.lower()}.example.com/cb"
        cases[f"{method} {app_path}"] = Case(
            200,
            values,
            body={"callbackUrl": url},
            echo=app_path,
            app=app,
            effect=callback,
            changed=url,
            failures=(unknown_app, not_an_object),
        )
        cases[f"{method} {key_path}"] = Case(
            200,
            values,
            body={"apiProducts": ["prod2"]},
            echo=key_path,
            **on_key,
            effect=products,
            changed={"prod1": "approved", "prod2": "approved"},
            failures=(
                unknown_key,
                Failure(
                    400,
                    "keymanagement.service.apiproduct_doesnot_exist",
                    "rejected",
                    body={"apiProducts": ["noSuchProduct"]},
                ),
            ),
        )
    return cases


def _owner_cases(owner: str, placeholder: str, name: str, unknown: Failure) -> dict[str, Case]:
    """A developer's or company's status and deletion."""
    path, values = f"{owner}/{{{placeholder}}}", {placeholder: name}

    def status(state: dict[str, Any]) -> object:
        return (_owner(state, owner) or {}).get("status")

    def attributes(state: dict[str, Any]) -> object:
        return (_owner(state, owner) or {}).get("attributes")

    tier = [{"name": "tier", "value": "platinum"}]
    return {
        f"PUT {path}": Case(
            200, values, body={"attributes": tier}, echo=path, effect=attributes, changed=tier, failures=(unknown,)
        ),
        f"POST {path}?action=inactive": Case(204, values, effect=status, changed="inactive", failures=(unknown,)),
        f"POST {path}?action=active": Case(204, values, effect=status, changed="active", failures=(unknown,)),
        f"DELETE {path}": Case(
            200,
            values,
            echo=path,
            echo_before=True,
            effect=lambda state: _owner(state, owner),
            changed=None,
            failures=(unknown,),
        ),
    }


CASES: dict[str, Case] = {
    **_token_cases(),
    **_app_cases("developers", "developer", {"developer": DEV, "app": APP, "key": KEY, "product": "prod1"}, KEY),
    **_app_cases("companies", "company", {"company": COMPANY, "app": CAPP, "key": CKEY, "product": "prod1"}, CKEY),
    "DELETE apps/{app_id}": Case(
        200,
        {"app_id": APP_ID},
        echo="apps/{app_id}",
        echo_before=True,
        effect=lambda state: _app(state, "developers", APP),
        changed=None,
        failures=(Failure(404, "developer.service.AppIdDoesNotExist", "not_found", values={"app_id": "noSuchAppId"}),),
    ),
    **_owner_cases(
        "developers",
        "developer",
        DEV,
        Failure(
            404, "developer.service.DeveloperIdDoesNotExist", "not_found", values={"developer": "nobody@example.com"}
        ),
    ),
    **_owner_cases(
        "companies",
        "company",
        COMPANY,
        Failure(404, "developer.service.CompanyDoesNotExist", "not_found", values={"company": "noSuchCompany"}),
    ),
}


def name_of(operation: Operation) -> str:
    """The key of an operation's case: method, path below the organisation, and its ``?action=``."""
    action = f"?action={operation.query_action}" if operation.query_action else ""
    return f"{operation.method} {operation.path}{action}"


def fill(template: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        template = template.replace(f"{{{name}}}", value)
    return template


def target(
    operation: Operation, values: Mapping[str, str], query: Mapping[str, str], base: str = f"/v1/o/{ORG}"
) -> str:
    """The request target, as a client sends it: ``/v1/o/{org}/...?action=...&...``."""
    parameters = {**({"action": operation.query_action} if operation.query_action else {}), **query}
    return f"{base}/{fill(operation.path, values)}" + (f"?{urlencode(parameters)}" if parameters else "")


def resource(operation: Operation, values: Mapping[str, str]) -> str:
    """The record's ``resource``: the path below the organisation, the credential left as its placeholder."""
    return fill(operation.path, {name: value for name, value in values.items() if name != operation.secret})


SECRET_FIELDS = frozenset(
    {
        "token",
        "refreshToken",
        "consumerKey",
        "consumerSecret",
        "clientId",
        "client_id",
        "secret",
        "verifier",
        "requestToken",
    }
)


def redacted(document: Any, secret: str | None = None) -> Any:
    """What the audit log must keep of an Apigee entity: every secret field, and the credential the call
    acts on wherever it is, as ``[redacted …last4]`` (``[redacted]`` under 16 characters)."""

    def hide(value: str) -> str:
        return f"[redacted …{value[-4:]}]" if len(value) >= 16 else "[redacted]"

    if isinstance(document, dict):
        return {
            name: hide(value) if name in SECRET_FIELDS and isinstance(value, str) else redacted(value, secret)
            for name, value in document.items()
        }
    if isinstance(document, list):
        return [redacted(value, secret) for value in document]
    return hide(document) if secret is not None and document == secret else document


# The rig: a stub, a gateway in front of it, and a session straight to the stub -------------------------


@dataclass
class Rig:
    gateway: AppClient
    stub: str
    session: aiohttp.ClientSession
    database: Path

    async def direct(self, method: str, below_org: str) -> tuple[int, str | None, bytes]:
        """A call straight to the stub, as myname: status, Content-Type and bytes."""
        async with self.session.request(method, f"{self.stub}/v1/o/{ORG}/{below_org}", headers=auth("myname")) as got:
            return got.status, got.headers.get("Content-Type"), await got.read()

    async def call(
        self, method: str, path: str, *, user: str = "myname", body: Any = None
    ) -> tuple[int, str | None, bytes]:
        """A call through the gateway: status, Content-Type and bytes."""
        data = None if body is None else json.dumps(body).encode()
        headers = auth(user) | ({"Content-Type": "application/json"} if data is not None else {})
        response = await self.gateway.request(method, path, headers=headers, data=data)
        return response.status, response.headers.get("Content-Type"), await response.read()

    async def journal(self) -> list[tuple[str, str]]:
        """What reached the stub since the journal was last emptied: method and raw target."""
        async with self.session.get(f"{self.stub}/_stub/requests") as response:
            return [(entry["method"], entry["path"]) for entry in (await response.json())["requests"]]

    async def forget(self) -> None:
        async with self.session.delete(f"{self.stub}/_stub/requests") as response:
            assert 204 == response.status

    async def state(self) -> dict[str, Any]:
        async with self.session.get(f"{self.stub}/_stub/orgs/{ORG}") as response:
            assert 200 == response.status
            return await response.json()  # type: ignore[no-any-return]

    async def fault(self, fault: dict[str, Any]) -> None:
        async with self.session.put(f"{self.stub}/_stub/fault", json=fault) as response:
            assert 200 == response.status

    def records(self) -> list[dict[str, Any]]:
        return rows(self.database)


INSTANT = StubSettings(revoke_delay=0)
"""A bulk revocation takes effect at once."""


@pytest.fixture
async def make_rig(aiohttp_server: Any, gateway: GatewayFactory, tmp_path: Path) -> Any:
    sessions: list[aiohttp.ClientSession] = []

    async def make(settings: StubSettings = INSTANT, **sections: dict[str, Any]) -> Rig:
        stub = make_stub_app(parse_seed(SEED, source="matrix seed"), admin=True, settings=settings)
        server = await aiohttp_server(stub)
        url = str(server.make_url("")).rstrip("/")
        client = await gateway(make_config(tmp_path, upstream=url, users=USERS, **sections))
        sessions.append(aiohttp.ClientSession())
        return Rig(client, url, sessions[-1], tmp_path / "audit.db")

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def rig(make_rig: Any) -> Rig:
    return await make_rig()  # type: ignore[no-any-return]


def parsed(row: dict[str, Any]) -> dict[str, Any]:
    """A record's fields a test compares, its JSON columns parsed."""
    shown = {name: row[name] for name in COMPARED}
    for name in ("snapshot", "params"):
        shown[name] = None if row[name] is None else json.loads(row[name])
    return shown


COMPARED = (
    "actor",
    "method",
    "org",
    "token_sha256",
    "token_hint",
    "token",
    "outcome",
    "upstream_status",
    "error_code",
    "app",
    "client_id",
    "snapshot",
    "action",
    "resource_type",
    "resource",
    "params",
)


def expected_record(
    operation: Operation, values: Mapping[str, str], secret: str | None, **fields: Any
) -> dict[str, Any]:
    return {
        "actor": "myname",
        "method": operation.method,
        "org": ORG,
        "token_sha256": None if secret is None else fingerprint(secret),
        "token_hint": None if secret is None else (secret[-4:] if len(secret) >= 16 else ""),
        "token": None,
        "upstream_status": None,
        "error_code": None,
        "app": None,
        "client_id": None,
        "snapshot": None,
        "action": operation.action,
        "resource_type": operation.resource_type,
        "resource": resource(operation, values),
        "params": None,
        **fields,
    }


def assert_no_secret_in_clear(records: list[dict[str, Any]]) -> None:
    text = json.dumps(records)
    assert [] == [secret for secret in SECRETS if secret in text]


def _names_a_key(operation: Operation) -> bool:
    return operation.secret == "key" or operation.body_secret == "consumerKey"


def outcome_of_success(operation: Operation) -> str:
    return "deleted" if operation.method == "DELETE" else "succeeded"


# The matrix -----------------------------------------------------------------------------------------


def test_every_operation_has_a_case() -> None:
    """A new operation in gateway.operations fails here until its case is added to CASES."""
    assert [] == [name_of(operation) for operation in OPERATIONS if name_of(operation) not in CASES]
    assert [] == sorted(set(CASES) - {name_of(operation) for operation in OPERATIONS})


@pytest.mark.parametrize("base", [f"/v1/o/{ORG}", f"/v1/organizations/{ORG}"], ids=["o", "organizations"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_success_is_answered_exactly_and_recorded(rig: Rig, operation: Operation, base: str) -> None:
    """The stub's answer byte for byte; an intent (with the pre-image, if the answer carries none)
    and an outcome naming the action, resource, parameters and credential; the stub changed. Both
    spellings of the organisation's base path (apigeetool's and apigee-edge-js's) alike."""
    case = CASES[name_of(operation)]
    path = target(operation, case.values, case.query, base)
    pre_image = None
    if operation.pre_image is not None:
        status, _, read = await rig.direct("GET", fill(operation.pre_image, case.values))
        assert 200 == status
        pre_image = redacted(json.loads(read), case.secret)
    echo = await rig.direct("GET", fill(case.echo, case.values)) if case.echo and case.echo_before else None
    await rig.forget()

    answer = await rig.call(operation.method, path, body=case.body)

    first = [("GET", f"{base}/{fill(operation.pre_image, case.values)}")] if operation.pre_image else []
    if operation.enumerate_tokens:
        first = [("GET", f"{base}/oauth2/search?{urlencode({**case.query, 'limit': 100})}")]
    assert [*first, (operation.method, path)] == await rig.journal()
    if case.echo is not None:
        echo = echo or await rig.direct("GET", fill(case.echo, case.values))
        assert (case.status, echo[1], echo[2]) == answer
    else:
        assert (case.status, case.fixed_type, case.fixed) == answer

    params = {name: case.query[name] for name in operation.params if name in case.query} or None
    if isinstance(case.body, dict):
        params = {**(params or {}), "body": redacted(case.body, case.secret)}
    intent_snapshot = pre_image
    if operation.enumerate_tokens:
        intent_snapshot = {"tokens": [{"sha256": fingerprint(TOKEN), "hint": TOKEN[-4:]}], "complete": True}
    answered = json.loads(answer[2]) if answer[2] and case.echo else None
    records = rig.records()
    assert [
        expected_record(
            operation, case.values, case.secret, outcome="pending", snapshot=intent_snapshot, params=params
        ),
        expected_record(
            operation,
            case.values,
            case.secret,
            outcome=outcome_of_success(operation),
            upstream_status=case.status,
            app=case.app,
            client_id=None if case.client_id is None else fingerprint(case.client_id),
            snapshot=None if answered is None else redacted(answered, case.secret),
            params={**(params or {}), "submitted": 1} if operation.enumerate_tokens else params,
        ),
    ] == [parsed(row) for row in records]
    assert records[0]["request_id"] == records[1]["request_id"]
    assert_no_secret_in_clear(records)
    if case.effect is not None:
        assert case.changed == case.effect(await rig.state())


ACTIONS_ANSWERED = [operation for operation in OPERATIONS if operation.query_action is not None]


@pytest.mark.parametrize("operation", ACTIONS_ANSWERED, ids=name_of)
async def test_an_action_answered_200_with_the_entity_keeps_it_as_the_outcome_s_snapshot(
    make_rig: Any, operation: Operation
) -> None:
    """Apigee's current spec answers ``?action=`` calls 200 with the changed entity (the stub's
    ``action_status = 200``): passed through byte for byte, and kept, redacted, in the outcome."""
    rig = await make_rig(StubSettings(action_status=200))
    case = CASES[name_of(operation)]
    answer = await rig.call(operation.method, target(operation, case.values, case.query))
    assert (200, *(await rig.direct("GET", fill(operation.pre_image or "", case.values)))[1:]) == answer
    entity = answer[2]
    intent, outcome = rig.records()
    assert intent["snapshot"] is not None
    assert (
        "succeeded",
        200,
        None,
        redacted(json.loads(entity), case.secret),
        case.app,
        None if case.client_id is None else fingerprint(case.client_id),
    ) == (
        outcome["outcome"],
        outcome["upstream_status"],
        outcome["error_code"],
        json.loads(outcome["snapshot"]),
        outcome["app"],
        outcome["client_id"],
    )


FAILURES = [
    pytest.param(operation, failure, id=f"{name_of(operation)} {failure.status}")
    for operation in OPERATIONS
    for failure in CASES[name_of(operation)].failures
]


@pytest.mark.parametrize(("operation", "failure"), FAILURES)
async def test_apigee_s_error_is_passed_through_and_recorded(rig: Rig, operation: Operation, failure: Failure) -> None:
    """Apigee's error reaches the caller byte for byte (the same call straight to the stub answers the
    same), and the outcome carries its status and code; a pre-image that could not be read is noted."""
    case = CASES[name_of(operation)]
    values = {**case.values, **failure.values}
    query = case.query if failure.query is None else failure.query
    body = case.body if failure.body is ... else failure.body
    path = target(operation, values, query)
    secret = case.secret
    if operation.secret is not None:
        secret = values[operation.secret]
    elif operation.body_secret is not None:
        secret = body.get(operation.body_secret) if isinstance(body, dict) else None

    answer = await rig.call(operation.method, path, body=body)
    straight = await rig.session.request(
        operation.method,
        rig.stub + path,
        headers=auth("myname") | ({"Content-Type": "application/json"} if body is not None else {}),
        data=None if body is None else json.dumps(body).encode(),
    )
    assert (straight.status, straight.headers.get("Content-Type"), await straight.read()) == answer
    assert failure.status == answer[0]
    assert failure.code == json.loads(answer[2])["code"]

    params: dict[str, Any] = {name: query[name] for name in operation.params if name in query}
    if isinstance(body, dict):
        params["body"] = redacted(body, secret)
    intent_snapshot = None
    if operation.pre_image is not None:
        pre_read = (await rig.direct("GET", fill(operation.pre_image, values)))[2]
        if failure.status == 404:
            params["pre_image"] = "missing: the upstream answered 404 to reading the resource first"
        else:
            intent_snapshot = redacted(json.loads(pre_read), secret)
    if operation.enumerate_tokens:
        params["pre_image"] = f"missing: the upstream answered {failure.status} to listing the tokens"
    records = rig.records()
    assert [
        expected_record(operation, values, secret, outcome="pending", snapshot=intent_snapshot, params=params or None),
        expected_record(
            operation,
            values,
            secret,
            outcome=failure.outcome,
            upstream_status=failure.status,
            error_code=failure.code,
            app=values["app"] if "{app}" in operation.path else None,
            client_id=fingerprint(secret) if secret is not None and _names_a_key(operation) else None,
            params=params or None,
        ),
    ] == [parsed(row) for row in records]
    assert_no_secret_in_clear(records)


def _refusal(message: str, code: str = "gateway.forbidden") -> dict[str, Any]:
    return {"code": code, "message": message, "contexts": []}


@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_a_user_without_the_role_or_the_organization_is_refused_and_nothing_is_forwarded(
    rig: Rig, operation: Operation
) -> None:
    """auditor holds every role but revoke; outsider every role, in another organisation: 403 for
    both, a ``forbidden`` record each, and the stub's journal shows that nothing reached it."""
    case = CASES[name_of(operation)]
    path = target(operation, case.values, case.query)
    await rig.forget()
    answers = [await rig.call(operation.method, path, user=user, body=case.body) for user in ("auditor", "outsider")]
    assert [] == await rig.journal()
    message = f"may not {operation.verb} of organization {ORG} (role revoke)"
    assert [
        (403, _refusal(f"User auditor {message}")),
        (403, _refusal(f"User outsider {message}")),
    ] == [(status, json.loads(body)) for status, _, body in answers]
    params = {name: case.query[name] for name in operation.params if name in case.query} or None
    secret = case.secret if operation.secret is not None else None  # a refused call's body is never read
    assert [
        expected_record(
            operation,
            case.values,
            secret,
            actor=user,
            outcome="forbidden",
            error_code="gateway.forbidden",
            params=params,
        )
        for user in ("auditor", "outsider")
    ] == [parsed(row) for row in rig.records()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_an_intent_that_cannot_be_written_is_503_and_nothing_is_forwarded(
    make_rig: Any, operation: Operation
) -> None:
    """The audit log locked by another process past busy_timeout: 503, the call never reaches the
    stub (only the read of what it would change does), and nothing is recorded."""
    rig = await make_rig(audit={"busy_timeout": 0.05})
    case = CASES[name_of(operation)]
    path = target(operation, case.values, case.query)
    before = await rig.state()
    await rig.forget()
    with write_locked(rig.database):
        status, _, body = await rig.call(operation.method, path, body=case.body)
    assert (503, "gateway.audit_unavailable") == (status, json.loads(body)["code"])
    assert [] == [(method, seen) for method, seen in await rig.journal() if method != "GET"]
    assert before == await rig.state()
    assert [] == rig.records()


PRE_IMAGED = [operation for operation in OPERATIONS if operation.pre_image is not None]


@pytest.mark.parametrize("operation", PRE_IMAGED, ids=name_of)
async def test_a_failed_pre_read_does_not_block_the_call_and_is_noted(rig: Rig, operation: Operation) -> None:
    """The stub fails the read of the resource (503 once): the call still goes through, and both
    records say why the intent has no pre-image."""
    case = CASES[name_of(operation)]
    path = target(operation, case.values, case.query)
    await rig.fault({"kind": "status", "status": 503, "body": '{"code": "busy"}', "times": 1})
    await rig.forget()
    status, _, _ = await rig.call(operation.method, path, body=case.body)
    assert case.status == status
    assert [("GET", f"/v1/o/{ORG}/{fill(operation.pre_image or '', case.values)}"), (operation.method, path)] == (
        await rig.journal()
    )
    note = "missing: the upstream answered 503 to reading the resource first"
    intent, outcome = rig.records()
    assert (None, note, "pending") == (intent["snapshot"], json.loads(intent["params"])["pre_image"], intent["outcome"])
    assert (note, outcome_of_success(operation)) == (json.loads(outcome["params"])["pre_image"], outcome["outcome"])


async def test_a_bulk_revocation_lists_every_token_it_cuts_page_by_page(rig: Rig) -> None:
    """More tokens than one page of /oauth2/search holds (100): the intent lists the fingerprints of
    exactly the tokens the search returned, page after page; the outcome the number Apigee's 202 gave;
    and the stub then revokes them all (cascade: their refresh tokens too), and only them."""
    async with rig.session.post(f"{rig.stub}/_stub/orgs/{ORG}/apps/{APP_ID}/tokens", json={"count": 150}) as made:
        issued = [TOKEN, *(token["token"] for token in (await made.json())["tokens"])]
    async with rig.session.post(f"{rig.stub}/_stub/orgs/{ORG}/apps/{CAPP_ID}/tokens", json={"count": 2}) as made:
        others = [token["token"] for token in (await made.json())["tokens"]]
    await rig.forget()

    status, _, body = await rig.call("POST", f"/v1/o/{ORG}/oauth2/revoke?app={APP_ID}&cascade=true")

    assert (202, b"151") == (status, body)
    assert [
        ("GET", f"/v1/o/{ORG}/oauth2/search?app={APP_ID}&limit=100"),
        ("GET", f"/v1/o/{ORG}/oauth2/search?app={APP_ID}&limit=100&start={issued[100]}"),
        ("POST", f"/v1/o/{ORG}/oauth2/revoke?app={APP_ID}&cascade=true"),
    ] == await rig.journal()
    intent, outcome = rig.records()
    listed = [{"sha256": fingerprint(token), "hint": token[-4:]} for token in issued]
    assert {"tokens": listed, "complete": True} == json.loads(intent["snapshot"])
    assert {"app": APP_ID, "cascade": "true"} == json.loads(intent["params"])
    assert ("succeeded", 202, None, None) == (
        outcome["outcome"],
        outcome["upstream_status"],
        outcome["error_code"],
        outcome["snapshot"],
    )
    assert {"app": APP_ID, "cascade": "true", "submitted": 151} == json.loads(outcome["params"])
    assert_no_secret_in_clear([intent, outcome])
    async with asyncio.timeout(10):
        while (state := await rig.state())["pendingRevocations"]:
            await asyncio.sleep(0.01)
    statuses = {token["token"]: (token["status"], token["refreshTokenStatus"]) for token in state["tokens"]}
    assert dict.fromkeys(issued, ("revoked", "revoked")) == {token: statuses[token] for token in issued}
    assert {"approved"} == {statuses[token][0] for token in others}


async def test_a_bulk_revocation_by_end_user_lists_that_user_s_tokens(rig: Rig) -> None:
    async with rig.session.post(
        f"{rig.stub}/_stub/orgs/{ORG}/apps/{CAPP_ID}/tokens", json={"count": 2, "enduser": "alice"}
    ) as made:
        alice = [TOKEN, *(token["token"] for token in (await made.json())["tokens"])]
    status, _, body = await rig.call("POST", f"/v1/o/{ORG}/oauth2/revoke?enduser=alice")
    assert (202, b"3") == (status, body)
    intent, outcome = rig.records()
    assert [fingerprint(token) for token in alice] == [
        token["sha256"] for token in json.loads(intent["snapshot"])["tokens"]
    ]
    assert {"enduser": "alice", "submitted": 3} == json.loads(outcome["params"])


# Calls passed through --------------------------------------------------------------------------------


@pytest.mark.parametrize("reads", [False, True], ids=["reads-logged", "reads-audited"])
async def test_a_read_is_passed_through_exactly_and_audited_only_if_asked(make_rig: Any, reads: bool) -> None:
    """A GET by a user with ``read``: the stub's bytes, and no record, unless ``audit.reads``: then one
    ``read`` record, its path masked; a read of a credential named and fingerprinted as a write on it
    would be (its resource with the secret as placeholder), never stored in clear."""
    rig = await make_rig(audit={"reads": reads})
    for below, masked, kind, secret in (
        (f"developers/{DEV}", f"/v1/o/{ORG}/developers/*", "path", None),
        (f"oauth2/accesstokens/{TOKEN}", "oauth2/accesstokens/{token}", "access_token", TOKEN),
        (
            f"developers/{DEV}/apps/{APP}/keys/{KEY}?expand=true",
            f"developers/{DEV}/apps/{APP}/keys/{{key}}",
            "consumer_key",
            KEY,
        ),
    ):
        await rig.forget()
        answer = await rig.call("GET", f"/v1/o/{ORG}/{below}", user="reader")
        assert [("GET", f"/v1/o/{ORG}/{below}")] == await rig.journal()
        assert (200, *(await rig.direct("GET", below))[1:]) == answer
        records = rig.records()
        if reads:
            assert {
                "actor": "reader",
                "method": "GET",
                "org": ORG,
                "outcome": "succeeded",
                "upstream_status": 200,
                "action": "read",
                "resource_type": kind,
                "resource": masked,
                "token_sha256": None if secret is None else fingerprint(secret),
                "snapshot": None,
            } == {
                name: records[-1][name]
                for name in (
                    "actor",
                    "method",
                    "org",
                    "outcome",
                    "upstream_status",
                    "action",
                    "resource_type",
                    "resource",
                    "token_sha256",
                    "snapshot",
                )
            }
        else:
            assert [] == records
    assert len(rig.records()) == (3 if reads else 0)
    assert_no_secret_in_clear(rig.records())


async def test_a_write_by_a_manager_is_passed_through_exactly_and_not_audited(make_rig: Any) -> None:
    rig = await make_rig(audit={"reads": True})
    await rig.forget()
    new = {"email": "new@example.com", "firstName": "New", "lastName": "One", "userName": "new"}
    answer = await rig.call("POST", f"/v1/o/{ORG}/developers", user="manager", body=new)
    assert [("POST", f"/v1/o/{ORG}/developers")] == await rig.journal()
    assert (201, *(await rig.direct("GET", "developers/new@example.com"))[1:]) == answer
    assert "New" == json.loads(answer[2])["firstName"]
    assert [] == rig.records()


@pytest.mark.parametrize(
    ("user", "method", "path", "message"),
    [
        (
            "myname",
            "GET",
            f"/v1/o/{ORG}/developers",
            f"User myname may not read resources of organization {ORG} (role read)",
        ),
        (
            "manager",
            "GET",
            f"/v1/o/{ORG}/developers",
            f"User manager may not read resources of organization {ORG} (role read)",
        ),
        (
            "reader",
            "PUT",
            f"/v1/o/{ORG}/apiproducts/prod1",
            f"User reader may not change resources of organization {ORG} (role manage)",
        ),
        (
            "outsider",
            "GET",
            f"/v1/o/{ORG}/developers",
            f"User outsider may not read resources of organization {ORG} (role read)",
        ),
        (
            "reader",
            "GET",
            "/v1/users/someone@example.com",
            "User reader may not call paths outside an organization (role global)",
        ),
        (
            "manager",
            "DELETE",
            "/v1/users/someone@example.com",
            "User manager may not call paths outside an organization (role global)",
        ),
    ],
)
async def test_a_call_passed_through_needs_its_role_and_is_refused_unforwarded(
    rig: Rig, user: str, method: str, path: str, message: str
) -> None:
    await rig.forget()
    status, _, body = await rig.call(method, path, user=user, body={"firstName": "X"} if method == "PUT" else None)
    assert (403, _refusal(message)) == (status, json.loads(body))
    assert [] == await rig.journal()
    assert [] == rig.records()  # logged, not audited


async def test_a_path_outside_any_organization_is_passed_through_with_the_role_global(rig: Rig) -> None:
    await rig.forget()
    answer = await rig.call("GET", "/v1/users/someone@example.com", user="globe")
    assert [("GET", "/v1/users/someone@example.com")] == await rig.journal()
    async with rig.session.get(f"{rig.stub}/v1/users/someone@example.com", headers=auth("globe")) as straight:
        assert (straight.status, straight.headers.get("Content-Type"), await straight.read()) == answer
    assert 404 == answer[0]  # the stub does not emulate users: its own answer, passed through


# The refusals of gateway.route ------------------------------------------------------------------------


async def raw_call(
    rig: Rig, method: str, path: str, body: Any = None, user: str = "admin"
) -> tuple[int, dict[str, Any]]:
    """A call whose path is sent exactly as given (no normalisation by the client), by default by
    a user who may also pass any call through: what is refused here would otherwise go up unaudited."""
    data = None if body is None else json.dumps(body).encode()
    url = URL(str(rig.gateway.make_url("")).rstrip("/") + path, encoded=True)
    async with rig.gateway.session.request(method, url, headers=auth(user), data=data) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_an_unknown_action_on_an_audited_call_is_refused_and_recorded(rig: Rig, operation: Operation) -> None:
    """``?action=`` the gateway does not know, on any audited call (a DELETE or creation too, which
    Apigee might carry out ignoring it): 400, recorded, never forwarded unaudited."""
    case = CASES[name_of(operation)]
    plain = Operation(operation.action, operation.method, operation.path, "", "", "")  # no ?action= of its own
    await rig.forget()
    status, body = await raw_call(
        rig, operation.method, target(plain, case.values, {**case.query, "action": "destroy"}), case.body
    )
    assert (400, "gateway.bad_request") == (status, body["code"])
    assert body["message"].startswith("Unknown action 'destroy' here; ")
    assert [] == await rig.journal()
    [record] = rig.records()
    assert ("rejected", "gateway.bad_request", "admin") == (record["outcome"], record["error_code"], record["actor"])


REPEATED = [
    pytest.param(operation, name, id=f"{name_of(operation)} {name}")
    for operation in OPERATIONS
    for name in (("action",) if operation.query_action else ()) + operation.params
]


@pytest.mark.parametrize(("operation", "name"), REPEATED)
async def test_a_parameter_the_gateway_reads_given_twice_is_refused(rig: Rig, operation: Operation, name: str) -> None:
    """``?action=revoke&action=approve``: the gateway would record one, the upstream might do the other."""
    case = CASES[name_of(operation)]
    path = target(operation, case.values, case.query)
    value = operation.query_action if name == "action" else case.query.get(name, "x")
    once_more = f"{name}={value}" if name == "action" or name in case.query else f"{name}={value}&{name}={value}"
    await rig.forget()
    status, body = await raw_call(rig, operation.method, f"{path}{'&' if '?' in path else '?'}{once_more}", case.body)
    assert (400, "gateway.bad_request") == (status, body["code"])
    assert f"Parameter {name!r} is given more than once" in body["message"]
    assert [] == await rig.journal()
    [record] = rig.records()
    assert ("rejected", operation.action) == (record["outcome"], record["action"])


TRICKS = ("a%2Fb", "a%2fb", "a%5Cb", "a%00b", "..", ".", "%2e%2e", "a%2Eb", "a;v=1")


@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_path_tricks_and_non_canonical_paths_are_refused_and_recorded(rig: Rig, operation: Operation) -> None:
    """In every value of the path: an encoded '/' or '\\', a NUL, a dot segment; and the whole path with a
    trailing or doubled '/': 400 naming the part, recorded, nothing forwarded."""
    case = CASES[name_of(operation)]
    query = urlencode({**({"action": operation.query_action} if operation.query_action else {}), **case.query})
    below = fill(operation.path, case.values)
    paths = [f"/v1/o/{ORG}/{below}/", f"/v1/o/{ORG}//{below}", f"/v1/o/{ORG}/{below.replace('/', '//', 1)}"]
    for placeholder in re.findall(r"\{(\w+)\}", operation.path):
        paths += [f"/v1/o/{ORG}/{fill(operation.path, {**case.values, placeholder: trick})}" for trick in TRICKS]
    await rig.forget()
    answers = [await raw_call(rig, operation.method, f"{path}?{query}" if query else path, case.body) for path in paths]
    assert [] == await rig.journal()
    assert [(400, "gateway.bad_request")] * len(paths) == [(status, body["code"]) for status, body in answers]
    assert ["rejected"] * len(paths) == [record["outcome"] for record in rig.records()]


NOT_CREDENTIALS = {
    ("POST", "/v1/o/myorg/developers"): "creates a developer, who holds no key until an app is made",
    ("POST", "/v1/o/myorg/companies"): "creates a company, which holds no key until an app is made",
    ("POST", "/oauth/token"): "the login server, outside /v1",
}
ACTIONS = ("revoke", "approve", "active", "inactive")


def test_every_credential_change_the_stub_emulates_is_an_audited_operation() -> None:
    """Each route of the stub (a stranger: only its routes are read) that is not a GET either routes to an
    audited operation (with or without an ``?action=``) or is named above as changing no credential."""
    stub = make_stub_app(parse_seed(SEED, source="matrix seed"))
    sample = {"alias": "o", "org": ORG, "developer": DEV, "company": COMPANY, "app": APP, "app_id": APP_ID}
    sample |= {"key": KEY, "product": "prod1", "token": TOKEN, "code": CODE, "verifier": VERIFIER, "tail": "x"}
    unaudited = []
    for resource_route in stub.router.routes():
        canonical = resource_route.resource.canonical if resource_route.resource is not None else ""
        if resource_route.method in ("GET", "HEAD") or "{tail" in canonical:
            continue
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda found: sample[found.group(1)], canonical)
        if (resource_route.method, path) in NOT_CREDENTIALS:
            continue
        queries = ("", *(f"?action={action}" for action in ACTIONS))
        if not any(route(resource_route.method, path + query).operation.audited for query in queries):
            unaudited.append(f"{resource_route.method} {path}")
    assert [] == unaudited


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/o/{ORG}/developers;v=1/{DEV}/apps/{APP}?action=revoke",
        f"/v1/o/{ORG}/developers/{DEV}/apps;v=1/{APP}/keys/{KEY}?action=revoke",
        f"/v1/o/{ORG}/oauth2;v=1/accesstokens/{TOKEN}?action=revoke",
        f"/v1/o/{ORG}/developers/{DEV};v=1?action=inactive",
    ],
)
async def test_a_path_parameter_that_could_hide_an_audited_call_is_refused(rig: Rig, path: str) -> None:
    """Java servlet containers (Apigee's management server among them) drop ';...' from a path segment
    before matching it: ``developers;v=1/...`` is ``developers/...`` upstream, and would pass here as a
    call the gateway does not audit. 400, recorded, nothing forwarded."""
    await rig.forget()
    status, body = await raw_call(rig, "POST", path)
    assert (400, "gateway.bad_request") == (status, body["code"])
    assert [] == await rig.journal()
    assert ["rejected"] == [record["outcome"] for record in rig.records()]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/%61pps/{APP}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}%3Faction=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}%23/keys/{KEY}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}??action=revoke"),
        ("POST", f"/v1/o/{ORG}/oauth2/%61ccesstokens/{TOKEN}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/%6Beys/{KEY}/apiproducts/prod1?action=revoke"),
        ("DELETE", f"/v1/o/{ORG}/%64evelopers/{DEV}"),
        ("DELETE", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/keys/{KEY[:-1]}%{ord(KEY[-1]):02X}"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/%61pp1?action=revoke"),
    ],
)
async def test_a_percent_encoded_letter_digit_or_mark_is_refused(rig: Rig, method: str, path: str) -> None:
    """``%61pps`` is ``apps`` to the upstream (the stub and servlet containers decode before matching);
    ``%3F`` and ``%23`` become a query or a fragment behind a proxy that decodes the path, and ``??action``
    is ``action`` to a lenient parser,
    but no audited path here: it would pass through unaudited. Percent-encoding a letter, digit or
    ``-._~`` is never needed (RFC 3986 2.3): 400, recorded, nothing forwarded, and the stub unchanged."""
    before = await rig.state()
    await rig.forget()
    status, body = await raw_call(rig, method, path)
    assert (400, "gateway.bad_request") == (status, body["code"])
    assert [] == await rig.journal()
    assert before == await rig.state()
    assert ["rejected"] == [record["outcome"] for record in rig.records()]


# Other spellings of an audited call (hostile review, issue 12) -----------------------------------------


def spellings(operation: Operation, case: Case) -> list[tuple[str, str]]:
    """Ways of writing ``operation`` that the gateway could miss but an upstream may act on as it (or
    as another audited call): a fragment anywhere, a fixed segment or a parameter name in another case,
    a ``_method`` override, another method on the same path. Each is (method, raw target)."""
    query = urlencode({**({"action": operation.query_action} if operation.query_action else {}), **case.query})
    q = f"?{query}" if query else ""
    below = fill(operation.path, case.values)
    base = f"/v1/o/{ORG}"
    found: list[tuple[str, str]] = [
        (operation.method, f"{base}/{below}#{q}"),
        (operation.method, f"{base}/{below}{q}{'&' if q else '?'}x=#frag"),
        (operation.method, f"/v1/O/{ORG}/{below}{q}"),
        (operation.method, f"/v1/Organizations/{ORG}/{below}{q}"),
        (operation.method, f"{base}/{below}{q}{'&' if q else '?'}_method={operation.method}"),
        ("PATCH", f"{base}/{below}{q}"),
    ]
    for name in re.findall(r"\{(\w+)\}", operation.path):
        for tail in ("#", "#x"):
            found.append(
                (operation.method, f"{base}/{fill(operation.path, {**case.values, name: case.values[name] + tail})}{q}")
            )
    for word in {part for part in operation.path.split("/") if part and not part.startswith("{")}:
        found.append((operation.method, f"{base}/{below.replace(word, word.capitalize(), 1)}{q}"))
    for name in ("action", *operation.params):
        if name == "action" and operation.query_action is None:
            continue
        value = operation.query_action if name == "action" else case.query.get(name, "true")
        rest = urlencode({key: value for key, value in case.query.items() if key != name})
        found.append((operation.method, f"{base}/{below}?{name.upper()}={value}{'&' + rest if rest else ''}"))
    return found


@pytest.mark.parametrize("operation", OPERATIONS, ids=name_of)
async def test_every_other_spelling_of_an_audited_call_is_refused_and_recorded(rig: Rig, operation: Operation) -> None:
    """A '#' (``DELETE .../accesstokens/tok#x``: the upstream's client drops the rest), a fixed segment or
    parameter in another case, ``_method``, or PATCH on an audited path: 400, recorded under the caller,
    nothing forwarded, the stub unchanged. Sent on the wire as written (a client would strip the '#')."""
    case = CASES[name_of(operation)]
    body = b"" if case.body is None else json.dumps(case.body).encode()
    headers = auth("admin") | ({"Content-Type": "application/json"} if body else {})
    before = await rig.state()
    await rig.forget()
    tried = spellings(operation, case)
    answers = [await wire_request(rig.gateway, method, path, headers, body) for method, path in tried]
    assert [] == await rig.journal()
    assert before == await rig.state()
    assert [(method, path, 400, "gateway.bad_request") for method, path in tried] == [
        (method, path, status, json.loads(payload)["code"])
        for (method, path), (status, payload) in zip(tried, answers, strict=True)
    ]
    assert [("rejected", "admin")] * len(tried) == [(record["outcome"], record["actor"]) for record in rig.records()]
    assert_no_secret_in_clear(rig.records())


@pytest.mark.parametrize(
    "header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL", "X-Rewrite-URL"]
)
@pytest.mark.parametrize(
    "path",
    [f"/v1/o/{ORG}/oauth2/accesstokens/{TOKEN}?action=approve", f"/v1/o/{ORG}/apiproducts"],
    ids=["audited", "passed"],
)
async def test_a_method_override_is_refused_and_recorded(rig: Rig, header: str, path: str) -> None:
    """A POST that asks to be taken as a DELETE: some proxies and frameworks honour it, and the gateway
    would record an approval while the token is deleted. 400, recorded, nothing forwarded."""
    await rig.forget()
    value = f"/v1/o/{ORG}/oauth2/accesstokens/{TOKEN}" if header.endswith("URL") else "DELETE"
    status, payload = await wire_request(rig.gateway, "POST", path, auth("admin") | {header: value})
    assert (400, "gateway.bad_request") == (status, json.loads(payload)["code"])
    assert f"override ({header}) is refused" in json.loads(payload)["message"]
    assert [] == await rig.journal()
    assert ["rejected"] == [record["outcome"] for record in rig.records()]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/o/{ORG}/developers/{DEV}"),  # no action: not an update Apigee documents
        ("PATCH", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}?action=revoke"),
        ("PUT", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers?action=inactive"),
        ("POST", f"/v1/o/{ORG}/apps/{APP_ID}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/attributes?action=revoke"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/keys/{KEY}/apiproducts/prod1"),
        ("PUT", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/keys/{KEY}/apiproducts/prod1"),
        ("POST", f"/v1/o/{ORG}/oauth2/accesstokens"),
        ("POST", f"/v1/o/{ORG}/oauth2/refreshtokens/{REFRESH}?action=revoke"),
        ("POST", f"/v1/o/{ORG}/oauth1/verifiers/{VERIFIER}"),
        ("PUT", f"/v1/o/{ORG}/companies/{COMPANY}/apps/{CAPP}/keys/{CKEY}/apiproducts/prod1"),
        ("POST", f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/keys"),
        ("PUT", f"/v1/o/{ORG}/companies/{COMPANY}/apps/{CAPP}/keys/"),
    ],
)
async def test_a_credential_write_the_gateway_does_not_audit_is_refused(rig: Rig, method: str, path: str) -> None:
    """Writes under developers, companies, apps and OAuth tokens that could change a credential and are
    no audited operation: ``?action=`` on another method or path, another method on an audited path, any
    other token write. 400, recorded, nothing forwarded (a manager could otherwise pass them through)."""
    before = await rig.state()
    await rig.forget()
    status, payload = await wire_request(rig.gateway, method, path, auth("admin"))
    assert (400, "gateway.bad_request") == (status, json.loads(payload)["code"])
    assert [] == await rig.journal()
    assert before == await rig.state()
    assert ["rejected"] == [record["outcome"] for record in rig.records()]


RECORD_FIELDS = ("org", "action", "resource_type", "resource", "params", "outcome", "error_code", "token_sha256")


@pytest.mark.parametrize(
    ("user", "method", "below"),
    [
        ("reader", "GET", f"developers/{DEV}"),
        ("reader", "GET", f"oauth2/accesstokens/{TOKEN}"),
        ("reader", "GET", f"developers/{DEV}/apps/{APP}/keys/{KEY}"),
        ("reader", "GET", f"oauth2/authorizationcodes/{CODE}"),
        ("reader", "GET", f"oauth1/verifiers/{VERIFIER}"),
        ("myname", "DELETE", "oauth1/verifiers/noSuchVerifier0A1b2"),
        ("admin", "POST", f"developers/{DEV}?_method=DELETE"),
        ("reader", "DELETE", f"developers/{DEV}/apps/{APP}"),
        ("myname", "POST", f"developers/{DEV}?action=inactive"),
    ],
)
async def test_both_spellings_of_the_organization_make_the_same_record(
    make_rig: Any, user: str, method: str, below: str
) -> None:
    """``/v1/o/{org}`` and ``/v1/organizations/{org}``: the same record fields (reads, refusals and
    audited calls alike), whichever the caller used."""
    rig = await make_rig(audit={"reads": True})
    for base in (f"/v1/o/{ORG}", f"/v1/organizations/{ORG}"):
        await wire_request(rig.gateway, method, f"{base}/{below}", auth(user))
        if method == "POST" and "action=inactive" in below:
            await wire_request(rig.gateway, method, f"{base}/{below.replace('inactive', 'active')}", auth(user))
    records = [{name: record[name] for name in RECORD_FIELDS} for record in rig.records()]
    half = len(records) // 2
    assert half > 0
    assert records[:half] == records[half:]
    assert_no_secret_in_clear(rig.records())


@pytest.mark.parametrize(
    ("below", "resource_type", "resource", "secret"),
    [
        (f"oauth2/accesstokens/{TOKEN}", "access_token", "oauth2/accesstokens/{token}", TOKEN),
        (f"oauth2/authorizationcodes/{CODE}", "authorization_code", "oauth2/authorizationcodes/{code}", CODE),
        (f"oauth1/accesstokens/{O1A}", "oauth1_access_token", "oauth1/accesstokens/{token}", O1A),
        (f"oauth1/requesttokens/{O1R}", "oauth1_request_token", "oauth1/requesttokens/{token}", O1R),
        (
            f"companies/{COMPANY}/apps/{CAPP}/keys/{CKEY}",
            "consumer_key",
            f"companies/{COMPANY}/apps/{CAPP}/keys/{{key}}",
            CKEY,
        ),
        (f"oauth1/verifiers/{VERIFIER}", "oauth1_verifier", "oauth1/verifiers/{verifier}", VERIFIER),
        (
            "oauth1/verifiers/noSuchVerifier0A1b2",
            "oauth1_verifier",
            "oauth1/verifiers/{verifier}",
            "noSuchVerifier0A1b2",
        ),
    ],
)
async def test_a_recorded_read_of_a_secret_fingerprints_it_like_a_write(
    make_rig: Any, log_output: io.StringIO, below: str, resource_type: str, resource: str, secret: str | None
) -> None:
    """``audit.reads``: a GET of a token, key, code or verifier is recorded with the secret as its
    fingerprint and hint and the resource as a write on it names it; nothing secret in the record or
    the log line, whatever the stub answers (200 or 404)."""
    rig = await make_rig(audit={"reads": True})
    status, _ = await wire_request(rig.gateway, "GET", f"/v1/o/{ORG}/{below}", auth("reader"))
    [record] = rig.records()
    assert (resource_type, resource, "read") == (record["resource_type"], record["resource"], record["action"])
    assert (None if secret is None else fingerprint(secret)) == record["token_sha256"]
    assert (None if secret is None else secret[-4:]) == record["token_hint"]
    assert_no_secret_in_clear(rig.records())
    flush_logs()
    logged = log_output.getvalue()
    assert '"event": "request"' in logged or '"event":"request"' in logged
    assert [] == [value for value in (*SECRETS, "noSuchVerifier0A1b2") if value in logged]
    assert status in (200, 404)


@pytest.mark.parametrize("base", ["/v1/mint/organizations", "/v1/mint/o", "/v1/audits/organizations"])
async def test_a_path_naming_an_organization_elsewhere_is_scoped_to_it(rig: Rig, base: str) -> None:
    """``/v1/mint/organizations/{org}/...`` names an organisation as ``/v1/o/{org}`` does: a reader of
    myorg may read there (forwarded), one of another organisation may not (403, nothing forwarded)."""
    await rig.forget()
    status, _ = await wire_request(rig.gateway, "GET", f"{base}/{ORG}/developers", auth("reader"))
    assert status != 403
    assert [("GET", f"{base}/{ORG}/developers")] == await rig.journal()
    await rig.forget()
    status, payload = await wire_request(rig.gateway, "GET", f"{base}/{ORG}/developers", auth("outsider"))
    assert (403, f"User outsider may not read resources of organization {ORG} (role read)") == (
        status,
        json.loads(payload)["message"],
    )
    assert [] == await rig.journal()


@pytest.mark.parametrize(
    ("below", "secret", "status", "answer"),
    [
        (f"oauth1/verifiers/{VERIFIER}", VERIFIER, 404, {"code": f"verifier.{VERIFIER}.doesnotexist"}),
        (f"oauth1/accesstokens/{O1A}", O1A, 404, {"code": "x" * 190 + O1A}),
        (f"oauth2/accesstokens/{TOKEN}", TOKEN, 200, {"message": f"token {TOKEN} deleted", TOKEN: [f"<{TOKEN}>"]}),
        (f"oauth1/requesttokens/{O1R}", O1R, 200, {"note": f"was {O1R}"}),
    ],
)
async def test_a_secret_quoted_back_by_the_upstream_is_never_stored(
    aiohttp_server: Any, gateway: GatewayFactory, tmp_path: Path, below: str, secret: str, status: int, answer: Any
) -> None:
    """A hostile upstream quoting the credential the call acts on in its error code, a message, a field's
    name or a list: the record keeps it redacted (an error code hidden before it is cut to length)."""

    async def quoting(request: web.Request) -> web.Response:
        return web.json_response(answer, status=status)

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", quoting)
    url = str((await aiohttp_server(upstream)).make_url("")).rstrip("/")
    client = await gateway(make_config(tmp_path, upstream=url, users=USERS))
    response = await client.delete(f"/v1/o/{ORG}/{below}", headers=auth("myname"))
    assert status == response.status
    records = rows(tmp_path / "audit.db")
    assert ["pending", "not_found" if status == 404 else "deleted"] == [record["outcome"] for record in records]
    assert secret not in json.dumps(records)
    assert "[redacted" in json.dumps(records, ensure_ascii=False)


@pytest.mark.parametrize(
    ("method", "below", "form"),
    [
        ("POST", f"developers/{DEV}/apps/{APP}", "action=revoke"),
        ("PUT", f"developers/{DEV}/apps/{APP}", "callbackUrl=x&Action=revoke"),
        ("POST", f"oauth2/accesstokens/{TOKEN}", "action=revoke&cascade=true"),
        ("POST", "apiproducts", "name=p&app=x"),
    ],
)
async def test_a_parameter_the_gateway_reads_in_a_form_body_is_refused(
    rig: Rig, method: str, below: str, form: str
) -> None:
    """Java servlets read the fields of an ``application/x-www-form-urlencoded`` body as query
    parameters: ``action=revoke`` there makes an update a revocation upstream. 400, recorded, not sent."""
    before = await rig.state()
    await rig.forget()
    headers = auth("admin") | {"Content-Type": "application/x-www-form-urlencoded"}
    status, payload = await wire_request(rig.gateway, method, f"/v1/o/{ORG}/{below}", headers, form.encode())
    assert (400, "gateway.bad_request") == (status, json.loads(payload)["code"])
    assert "in a form body" in json.loads(payload)["message"]
    assert [] == await rig.journal()
    assert before == await rig.state()
    assert ["rejected"] == [record["outcome"] for record in rig.records()]


async def test_an_audited_call_with_an_encoded_body_is_refused(rig: Rig) -> None:
    """A gzip body the gateway cannot read: a key created with it would be recorded without its
    fingerprint, an update without what it asked. 400, recorded, nothing forwarded."""
    body = gzip.compress(json.dumps({"consumerKey": NEWKEY, "consumerSecret": NEWSECRET}).encode())
    headers = auth("admin") | {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    await rig.forget()
    path = f"/v1/o/{ORG}/developers/{DEV}/apps/{APP}/keys/create"
    status, payload = await wire_request(rig.gateway, "POST", path, headers, body)
    assert (400, "gateway.bad_request") == (status, json.loads(payload)["code"])
    assert [] == await rig.journal()
    assert [("rejected", "key.create")] == [(record["outcome"], record["action"]) for record in rig.records()]
