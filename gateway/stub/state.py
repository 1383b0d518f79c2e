"""Everything one running stub holds: its organisations, their tokens, logins and pending work."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.stub.model import (
    NEVER,
    App,
    Company,
    Credential,
    Developer,
    Org,
    Owner,
    Product,
    ProductRef,
    new_id,
    new_org,
    now_ms,
    org_missing,
    random_text,
    stamped,
)
from gateway.stub.oauth import Logins
from gateway.stub.seed import Seed
from gateway.stub.settings import StubSettings
from gateway.stub.store import TokenStore

SEED_USER = "defaultUser"
"""Who Apigee says created what the seed holds."""


class State:
    """A stub's data, made afresh from a seed so that two stubs never share it."""

    def __init__(self, seed: Seed, settings: StubSettings) -> None:
        self.settings = settings
        self.users = dict(seed.users)
        self.tokens = TokenStore(copy.deepcopy(seed.orgs), seed.generated, seed.token_keys)
        self.orgs: dict[str, Org] = {}
        for name in [*seed.orgs, *seed.entities]:
            if name not in self.orgs:
                self.orgs[name] = build_org(name, copy.deepcopy(seed.entities.get(name, {})))
        self.logins = Logins(self.users, settings.token_lifetime)
        self.pending = Pending()

    def org(self, name: str) -> Org:
        found = self.orgs.get(name)
        if found is None:
            raise org_missing(name)
        return found

    def add_tokens(self, org: str, tokens: list[dict[str, Any]], key: str | None = None) -> None:
        """Hold ``tokens`` in ``org``, making the organisation if it is new."""
        self.orgs.setdefault(org, new_org(org))
        self.tokens.add(org, tokens, key)

    def app_of(self, org: str, snapshot: dict[str, Any], apps_by_key: dict[str, App]) -> App | None:
        """The app a token was issued to, through its consumer key; None if no app holds it."""
        key = self.tokens.key_of(org, snapshot)
        return None if key is None else apps_by_key.get(key)


class Pending:
    """Work promised for later (a bulk revocation's effect), cancelled when the stub stops."""

    def __init__(self) -> None:
        self._handles: dict[asyncio.TimerHandle, str] = {}

    def later(self, delay: float, work: Callable[[], None], *, org: str) -> None:
        """Run ``work`` in ``delay`` seconds; ``org`` is the organisation it is for, for ``count``."""
        loop = asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []

        def run() -> None:
            self._handles.pop(holder[0], None)
            work()

        holder.append(loop.call_later(delay, run))
        self._handles[holder[0]] = org

    def count(self, org: str) -> int:
        """How much work for ``org`` is still to run."""
        return sum(1 for owner in self._handles.values() if owner == org)

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()


def build_org(name: str, spec: dict[str, Any]) -> Org:
    """An organisation from its checked seed entry (``gateway.stub.seed.parse_org``)."""
    org = new_org(name)
    for product in spec.get("apiproducts", []):
        org.products[product["name"]] = Product(
            **stamped(SEED_USER),
            name=product["name"],
            display_name=product.get("displayName", product["name"]),
            description=product.get("description", ""),
            approval_type=product.get("approvalType", "auto"),
            attributes=product.get("attributes", []),
            environments=product.get("environments", []),
            scopes=product.get("scopes", []),
        )
    for entry in spec.get("developers", []):
        developer = Developer(
            **stamped(SEED_USER),
            status=entry.get("status", "active"),
            attributes=entry.get("attributes", []),
            email=entry["email"],
            developer_id=entry.get("developerId") or new_id(),
            first_name=entry["firstName"],
            last_name=entry["lastName"],
            user_name=entry["userName"],
        )
        org.add_developer(developer)
        _add_apps(org, developer, entry.get("apps", []))
    for entry in spec.get("companies", []):
        company = Company(
            **stamped(SEED_USER),
            status=entry.get("status", "active"),
            attributes=entry.get("attributes", []),
            name=entry["name"],
            display_name=entry.get("displayName", entry["name"]),
        )
        org.add_company(company)
        _add_apps(org, company, entry.get("apps", []))
    org.authorization_codes = {code["code"]: code for code in spec.get("authorizationcodes", [])}
    org.oauth1_access_tokens = {token["token"]: token for token in spec.get("oauth1accesstokens", [])}
    org.oauth1_request_tokens = {token["token"]: token for token in spec.get("oauth1requesttokens", [])}
    org.oauth1_verifiers = {entry["verifier"]: entry for entry in spec.get("oauth1verifiers", [])}
    return org


def _add_apps(org: Org, owner: Owner, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        owner_field, owner_id = (
            ("developerId", owner.developer_id) if isinstance(owner, Developer) else ("companyName", owner.label())
        )
        app = App(
            **stamped(SEED_USER),
            name=entry["name"],
            app_id=entry.get("appId") or new_id(),
            owner_field=owner_field,
            owner_id=owner_id,
            status=entry.get("status", "approved"),
            attributes=entry.get("attributes", []),
            callback_url=entry.get("callbackUrl", ""),
            scopes=entry.get("scopes", []),
            credentials=[_credential(key) for key in entry.get("credentials", [])],
        )
        org.add_app(owner, app)


def _credential(entry: dict[str, Any]) -> Credential:
    return Credential(
        consumer_key=entry["consumerKey"],
        consumer_secret=entry.get("consumerSecret") or random_text(16),
        issued_at=entry.get("issuedAt", now_ms()),
        expires_at=entry.get("expiresAt", NEVER),
        status=entry.get("status", "approved"),
        products=[ProductRef(ref["apiproduct"], ref.get("status", "approved")) for ref in entry.get("apiProducts", [])],
        attributes=entry.get("attributes", []),
        scopes=entry.get("scopes", []),
    )


STATE = web.AppKey("stub_state", State)
