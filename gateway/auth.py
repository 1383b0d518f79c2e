"""Who is calling, and may they do this? HTTP Basic credentials checked against ``[[users]]``.

Password hashes are slow on purpose, so a successful check is remembered as an HMAC of the
whole Authorization header under a key that lives only in this process: a repeat caller costs
one HMAC and one dict lookup, and neither the password nor the header is kept in clear.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.basic import MalformedCredentials, parse_basic
from gateway.config import ALL_ORGS, ConfigError, UserConfig
from gateway.passwords import ScryptHash, parse_hash, verify_password

REVOKE = "revoke"
AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    orgs: frozenset[str]
    roles: frozenset[str]

    def may(self, role: str, org: str | None) -> bool:
        """True when the user holds ``role`` for ``org`` (``None``: for at least one org)."""
        if role not in self.roles:
            return False
        return org is None or ALL_ORGS in self.orgs or org in self.orgs


class AuthenticationError(Exception):
    """Credentials missing, malformed or wrong. ``claimed`` is the user name sent, if any."""

    def __init__(self, reason: str, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


@dataclass(frozen=True, slots=True)
class _Account:
    user: User
    password: ScryptHash


class Authenticator:
    def __init__(self, accounts: Iterable[tuple[User, ScryptHash]]) -> None:
        self._accounts = {user.name: _Account(user, password) for user, password in accounts}
        self._key = os.urandom(32)
        self._verified: dict[bytes, User] = {}
        self._tag_of_user: dict[str, bytes] = {}
        # An unknown user's password is still checked against a real hash (which it cannot
        # match, and which is refused anyway), so timing does not reveal who exists.
        self._decoy = next((account.password for account in self._accounts.values()), None)

    @classmethod
    def from_config(cls, users: Iterable[UserConfig], source: str) -> Authenticator:
        accounts = []
        for index, user in enumerate(users):
            try:
                password = parse_hash(user.password_hash)
            except ValueError as exc:
                raise ConfigError(source, f"users[{index}].password_hash", str(exc)) from None
            accounts.append((User(user.name, frozenset(user.orgs), frozenset(user.roles)), password))
        return cls(accounts)

    async def authenticate(self, header: str | None) -> User:
        """The user behind an Authorization header; raises AuthenticationError otherwise."""
        if not header:
            raise AuthenticationError("missing credentials")
        tag = hmac.digest(self._key, header.encode("utf-8", "surrogateescape"), "sha256")
        user = self._verified.get(tag)
        if user is not None:
            return user
        try:
            credentials = parse_basic(header)
        except MalformedCredentials as exc:
            raise AuthenticationError(str(exc)) from None
        account = self._accounts.get(credentials.user)
        stored = account.password if account else self._decoy
        matches = stored is not None and await asyncio.get_running_loop().run_in_executor(
            None, verify_password, credentials.password, stored
        )
        if account is None or not matches:
            raise AuthenticationError("wrong user name or password", claimed=credentials.user)
        self._remember(tag, account.user)
        return account.user

    def _remember(self, tag: bytes, user: User) -> None:
        # One entry per user, so spelling variants of a header cannot grow the cache.
        previous = self._tag_of_user.get(user.name)
        if previous is not None:
            self._verified.pop(previous, None)
        self._tag_of_user[user.name] = tag
        self._verified[tag] = user
