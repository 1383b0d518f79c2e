"""The stub's data: the demo seed of DESIGN.md and seed files given with ``--seed``."""

from __future__ import annotations

import json
import random
import string
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
    """Who may call the stub and which tokens exist, per organisation, in the order given."""

    users: dict[str, str]
    orgs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    generated: int = 0
    """How many load-test tokens (``load0``, ``load1``, ...) each organisation also holds."""


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


def demo_seed(extra_tokens: int = 5) -> Seed:
    """The default data: the documented sample token plus a few generated ones."""
    tokens = [dict(SAMPLE_TOKEN)] + [generated_token(i) for i in range(extra_tokens)]
    return Seed(users={DEMO_USER: DEMO_PASSWORD}, orgs={DEMO_ORG: tokens})


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
    """Check the shape of seed data, naming the first entry that is wrong."""
    if not isinstance(data, dict):
        raise SeedError(f"{source}: expected a JSON object with \"users\" and \"orgs\"")
    unknown = sorted(set(data) - {"users", "orgs"})
    if unknown:
        raise SeedError(f"{source}: {unknown[0]}: unknown key (expected \"users\" and \"orgs\")")
    users = data.get("users")
    if not isinstance(users, dict) or not users:
        raise SeedError(f"{source}: users: expected an object of user name to password, with at least one user")
    for name, password in users.items():
        if not name or ":" in name or not isinstance(password, str):
            raise SeedError(f"{source}: users.{name}: expected a non-empty name without ':' and a string password")
    orgs = data.get("orgs", {})
    if not isinstance(orgs, dict):
        raise SeedError(f"{source}: orgs: expected an object of organisation name to a list of tokens")
    checked = {org: check_tokens(tokens, f"{source}: orgs.{org}") for org, tokens in orgs.items()}
    return Seed(users=dict(users), orgs=checked)


def check_tokens(tokens: Any, where: str) -> list[dict[str, Any]]:
    """A list of token snapshots, each with a distinct non-empty "token"; errors name the entry."""
    if not isinstance(tokens, list):
        raise SeedError(f"{where}: expected a list of token objects")
    seen: set[str] = set()
    for index, token in enumerate(tokens):
        entry = f"{where}[{index}]"
        if not isinstance(token, dict):
            raise SeedError(f"{entry}: expected a token object")
        value = token.get("token")
        if not isinstance(value, str) or not value:
            raise SeedError(f"{entry}: missing \"token\" (a non-empty string)")
        if value in seen:
            raise SeedError(f"{entry}: token is listed twice")
        seen.add(value)
    return list(tokens)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
