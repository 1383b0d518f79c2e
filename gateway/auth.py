"""Who is calling, and may they do this? HTTP Basic credentials checked against ``[[users]]``.

Password hashes are slow on purpose, so a successful check is remembered as a keyed BLAKE2b MAC
of the whole Authorization header, under a key that lives only in this process: a repeat caller
costs one MAC (under a microsecond) and one dict lookup, and neither the password nor the header
is kept in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from multidict import MultiMapping

from gateway import errors
from gateway.audit import records
from gateway.audit.record import Outcome
from gateway.basic import Credentials, MalformedCredentials, parse_basic
from gateway.call import Call
from gateway.config import ALL_ORGS, ConfigError, UserConfig
from gateway.passwords import ScryptHash, parse_hash, verify_password
from gateway.refusal import Refusal
from gateway.throttle import CheckLimit, LoginThrottle

REVOKE = "revoke"
"""Credential changes: the audited operations (``gateway.operations``)."""
AUDIT = "audit"
"""Reading the trail (``/audit/events``)."""
READ = "read"
"""Other GET and HEAD calls, passed through."""
MANAGE = "manage"
"""Other writes, passed through."""
GLOBAL = "global"
"""Calls on paths outside any organisation (``/v1/users/...``), with read or manage."""


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
    """Too many failed logins from this address or for this user: the credentials were not
    checked (or, for a request that shared another's check, were wrong once more)."""

    def __init__(self, retry_after: int, claimed: str | None) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s", claimed)
        self.retry_after = retry_after


class ChecksBusy(AuthenticationError):
    """Too many passwords are being checked, over all callers; this one was not checked."""

    def __init__(self, retry_after: int, claimed: str | None) -> None:
        super().__init__(f"too many password checks under way; retry after {retry_after} s", claimed)
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
    def __init__(
        self,
        accounts: Iterable[tuple[User, ScryptHash]],
        throttle: LoginThrottle | None = None,
        checks: CheckLimit | None = None,
    ) -> None:
        self.throttle = throttle or LoginThrottle(0, 1.0)
        self.checks = checks
        """The bound on password hashing over all callers; None: unbounded."""
        self._key = os.urandom(32)
        self._accounts: dict[str, _Account] = {}
        self._verified: dict[bytes, _Account] = {}
        self._tag_of_user: dict[str, bytes] = {}
        self._in_flight: dict[bytes, asyncio.Future[_Account | None]] = {}
        self._decoy: ScryptHash | None = None
        self.replace(accounts)

    @staticmethod
    def accounts_from_config(users: Iterable[UserConfig], source: str) -> list[tuple[User, ScryptHash]]:
        """``[[users]]`` as accounts; a hash that does not parse is a ConfigError naming its key."""
        accounts = []
        for index, user in enumerate(users):
            try:
                password = parse_hash(user.password_hash)
            except ValueError as exc:
                raise ConfigError(source, f"users[{index}].password_hash", str(exc)) from None
            accounts.append((User(user.name, frozenset(user.orgs), frozenset(user.roles)), password))
        return accounts

    def replace(self, accounts: Iterable[tuple[User, ScryptHash]]) -> int:
        """Take a new set of users at once (on SIGHUP); returns how many there are.

        A user whose password hash, orgs and roles are unchanged keeps its verified headers; a
        changed or removed user's stop working now. Checks under way are no longer shared with
        later requests, and one that ends for a user who changed meanwhile is done again.
        """
        fresh: dict[str, _Account] = {}
        for user, password in accounts:
            account = _Account(user, password)
            kept = self._accounts.get(user.name)
            fresh[user.name] = kept if kept == account else account
        self._accounts = fresh
        self._verified = {
            tag: account for tag, account in self._verified.items() if fresh.get(account.user.name) is account
        }
        self._tag_of_user = {name: tag for name, tag in self._tag_of_user.items() if tag in self._verified}
        self._in_flight = {}
        # An unknown user's password is still checked against a real hash (which it cannot
        # match, and which is refused anyway), so timing does not reveal who exists.
        self._decoy = next((account.password for account in fresh.values()), None)
        return len(fresh)

    async def authenticate(self, header: str | None, client: str | None = None) -> User:
        """The user behind an Authorization header; raises AuthenticationError otherwise:
        Throttled, before any password check, when ``client`` or the user failed too often;
        ChecksBusy when too many passwords are being checked over all callers."""
        tag = b""
        if header:
            tag = hashlib.blake2b(header.encode("utf-8", "surrogateescape"), key=self._key, digest_size=16).digest()
            verified = self._verified.get(tag)
            if verified is not None:
                return verified.user
        try:
            credentials = parse_basic(header) if header else None
            problem = "missing credentials"
        except MalformedCredentials as exc:
            credentials, problem = None, str(exc)
        claimed = credentials.user if credentials is not None else None
        # Concurrent requests with the same header share one check: a burst of a new client's
        # first calls (or a flood of one wrong password) costs one slow hash, not one each. A
        # request that joins a check costs nothing, so only the first passes the limits first.
        check = self._in_flight.get(tag) if credentials is not None else None
        if check is None:
            wait = self.throttle.retry_after(client, claimed)
            if wait is not None:
                raise Throttled(wait, claimed)
        if credentials is None:
            self.throttle.failed(client, None)
            raise AuthenticationError(problem)
        joined = check is not None
        if check is None:
            check = self._start_check(tag, credentials, client)
        account = await asyncio.shield(check)
        if account is None:
            if joined:
                # The check counted one failure, its starter's; each request that joined it is
                # a failure of its own, refused like any other once its address is over the limit.
                wait = self.throttle.retry_after(client, credentials.user)
                if wait is not None:
                    raise Throttled(wait, credentials.user)
                self.throttle.failed(client, credentials.user)
            raise AuthenticationError("wrong user name or password", claimed=credentials.user)
        if self._accounts.get(account.user.name) is not account:
            # The users were replaced while this was checked: check again against the new ones.
            return await self.authenticate(header, client)
        self._remember(tag, account)
        return account.user

    def _start_check(self, tag: bytes, credentials: Credentials, client: str | None) -> asyncio.Future[_Account | None]:
        if self.checks is not None:
            wait = self.checks.reserve()
            if wait is not None:
                self.throttle.count_busy()
                raise ChecksBusy(wait, credentials.user)
        # Counted now, not when the check's task first runs: the requests already queued
        # behind this one must see it.
        self.throttle.checking(client, credentials.user)
        check = asyncio.ensure_future(self._throttled_check(credentials, client))
        self._in_flight[tag] = check
        check.add_done_callback(partial(self._forget, tag))
        return check

    def _forget(self, tag: bytes, check: asyncio.Future[_Account | None]) -> None:
        if self._in_flight.get(tag) is check:  # not a later check of the same header, after a replace
            del self._in_flight[tag]

    async def _throttled_check(self, credentials: Credentials, client: str | None) -> _Account | None:
        """One password check (announced to the throttle by the caller), counted as a failure if it fails."""
        account = None
        try:
            account = await self._check(credentials)
        finally:
            self.throttle.checked(client, credentials.user, failed=account is None)
        return account

    async def _check(self, credentials: Credentials) -> _Account | None:
        account = self._accounts.get(credentials.user)
        stored = account.password if account else self._decoy
        if stored is None:
            return None
        place = self.checks.place() if self.checks is not None else contextlib.nullcontext()
        async with place:
            matches = await asyncio.get_running_loop().run_in_executor(
                None, verify_password, credentials.password, stored
            )
        return account if account is not None and matches else None

    def _remember(self, tag: bytes, account: _Account) -> None:
        # One entry per user, so spelling variants of a header cannot grow the cache.
        previous = self._tag_of_user.get(account.user.name)
        if previous is not None:
            self._verified.pop(previous, None)
        self._tag_of_user[account.user.name] = tag
        self._verified[tag] = account


async def authenticate(authenticator: Authenticator, request: web.BaseRequest, call: Call) -> User:
    """The authenticate step: the caller's user, or a Refusal saying why not.

    Every route authenticates this way. A refusal carries the record it deserves; the token
    path writes it (a failed login only within the throttle's allowance of records, see
    ``gateway.throttle``), the audit API only logs it.
    """
    try:
        user = await authenticator.authenticate(authorization(request.headers), request.remote)
    except AmbiguousCredentials as exc:
        # Refused before any check, but a failed login all the same: counted against the address,
        # and recorded only within the allowance, so that no flood of them can fill the log.
        throttle = authenticator.throttle
        wait = throttle.retry_after(request.remote, None)
        if wait is not None:
            raise _refused(call, errors.TOO_MANY_ATTEMPTS, None, errors.too_many_attempts(wait)) from None
        throttle.failed(request.remote, None)
        refusal = errors.BAD_REQUEST.response(str(exc))
        raise _refused(call, errors.BAD_REQUEST, Outcome.REJECTED, refusal, limited=True) from None
    except Throttled as exc:
        # Counted, and audited once per window by the throttle's summary.
        call.actor = exc.claimed
        raise _refused(call, errors.TOO_MANY_ATTEMPTS, None, errors.too_many_attempts(exc.retry_after)) from None
    except ChecksBusy as exc:
        # Counted in the throttle's summary too: a flood of them must not fill the audit log.
        call.actor = exc.claimed
        raise _refused(call, errors.LOGIN_BUSY, None, errors.login_busy(exc.retry_after)) from None
    except AuthenticationError as exc:
        call.actor = exc.claimed
        raise _refused(call, errors.UNAUTHORIZED, Outcome.DENIED, errors.unauthorized(), limited=True) from None
    call.actor = user.name
    return user


def _refused(
    call: Call, error: errors.GatewayError, outcome: Outcome | None, response: web.Response, *, limited: bool = False
) -> Refusal:
    call.error_code = error.code
    record = records.refusal(call, outcome, error.code) if outcome is not None else None
    return Refusal(response, record=record, limited=limited)
