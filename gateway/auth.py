"""Who is calling, and may they do this? HTTP Basic credentials checked against ``[[users]]``.

Password hashes are slow on purpose, so a successful check is remembered as a keyed BLAKE2b MAC
of the whole Authorization header, under a key that lives only in this process: a repeat caller
costs one MAC (under a microsecond) and one dict lookup, and neither the password nor the header
is kept in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import MultiMapping

from gateway.basic import Credentials, MalformedCredentials, parse_basic
from gateway.config import ALL_ORGS, ConfigError, UserConfig
from gateway.passwords import ScryptHash, parse_hash, verify_password
from gateway.throttle import LoginThrottle

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


class Throttled(AuthenticationError):
    """Too many failed logins from this address or for this user; the credentials were not checked."""

    def __init__(self, retry_after: int, claimed: str | None) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s", claimed)
        self.retry_after = retry_after


class AmbiguousCredentials(Exception):
    """More than one Authorization header. The gateway would check one and the upstream might
    read another (passthrough forwards both), so neither is checked: the request is refused."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} Authorization headers; send exactly one")


def authorization(headers: MultiMapping[str]) -> str | None:
    """The request's one Authorization header, if any; raises AmbiguousCredentials for several."""
    values = headers.getall("Authorization", [])
    if len(values) > 1:
        raise AmbiguousCredentials(len(values))
    return values[0] if values else None


@dataclass(frozen=True, slots=True)
class _Account:
    user: User
    password: ScryptHash


class Authenticator:
    def __init__(self, accounts: Iterable[tuple[User, ScryptHash]], throttle: LoginThrottle | None = None) -> None:
        self.throttle = throttle or LoginThrottle(0, 1.0)
        self._accounts = {user.name: _Account(user, password) for user, password in accounts}
        self._key = os.urandom(32)
        self._verified: dict[bytes, User] = {}
        self._tag_of_user: dict[str, bytes] = {}
        self._in_flight: dict[bytes, asyncio.Future[User | None]] = {}
        # An unknown user's password is still checked against a real hash (which it cannot
        # match, and which is refused anyway), so timing does not reveal who exists.
        self._decoy = next((account.password for account in self._accounts.values()), None)

    @classmethod
    def from_config(cls, users: Iterable[UserConfig], source: str, throttle: LoginThrottle | None = None) -> Authenticator:
        accounts = []
        for index, user in enumerate(users):
            try:
                password = parse_hash(user.password_hash)
            except ValueError as exc:
                raise ConfigError(source, f"users[{index}].password_hash", str(exc)) from None
            accounts.append((User(user.name, frozenset(user.orgs), frozenset(user.roles)), password))
        return cls(accounts, throttle)

    async def authenticate(self, header: str | None, client: str | None = None) -> User:
        """The user behind an Authorization header; raises AuthenticationError otherwise
        (Throttled, before any password check, when ``client`` or the user failed too often)."""
        tag = b""
        if header:
            tag = hashlib.blake2b(header.encode("utf-8", "surrogateescape"), key=self._key, digest_size=16).digest()
            user = self._verified.get(tag)
            if user is not None:
                return user
        try:
            credentials = parse_basic(header) if header else None
            problem = "missing credentials"
        except MalformedCredentials as exc:
            credentials, problem = None, str(exc)
        claimed = credentials.user if credentials is not None else None
        wait = self.throttle.retry_after(client, claimed)
        if wait is not None:
            raise Throttled(wait, claimed)
        if credentials is None:
            self.throttle.failed(client, None)
            raise AuthenticationError(problem)
        # Concurrent requests with the same header share one check: a burst of a new client's
        # first calls (or a flood of one wrong password) costs one slow hash, not one each.
        check = self._in_flight.get(tag)
        if check is None:
            # Counted now, not when the check's task first runs: the requests already queued
            # behind this one must see it.
            self.throttle.checking(client, credentials.user)
            check = asyncio.ensure_future(self._throttled_check(credentials, client))
            self._in_flight[tag] = check
            check.add_done_callback(lambda _: self._in_flight.pop(tag, None))
        user = await asyncio.shield(check)
        if user is None:
            raise AuthenticationError("wrong user name or password", claimed=credentials.user)
        self._remember(tag, user)
        return user

    async def _throttled_check(self, credentials: Credentials, client: str | None) -> User | None:
        """One password check (announced to the throttle by the caller), counted as a failure if it fails."""
        user = None
        try:
            user = await self._check(credentials)
        finally:
            self.throttle.checked(client, credentials.user, failed=user is None)
        return user

    async def _check(self, credentials: Credentials) -> User | None:
        account = self._accounts.get(credentials.user)
        stored = account.password if account else self._decoy
        if stored is None:
            return None
        matches = await asyncio.get_running_loop().run_in_executor(None, verify_password, credentials.password, stored)
        return account.user if account is not None and matches else None

    def _remember(self, tag: bytes, user: User) -> None:
        # One entry per user, so spelling variants of a header cannot grow the cache.
        previous = self._tag_of_user.get(user.name)
        if previous is not None:
            self._verified.pop(previous, None)
        self._tag_of_user[user.name] = tag
        self._verified[tag] = user
