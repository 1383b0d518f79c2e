"""The stub's OAuth 2.0 access tokens, per organisation, kept in the form they were given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from gateway.stub.model import now_ms
from gateway.stub.seed import LOAD_PREFIX, load_token

APPROVED = "approved"
REVOKED = "revoked"


class TokenStore:
    """Tokens per organisation, each kept as given so it is returned in the same form.

    Besides the seeded tokens, each organisation may hold ``generated`` load-test tokens named
    ``load0``, ``load1``, ...: made on first use, so millions cost memory only once deleted or
    changed. A token is linked to the consumer key it was issued under: the key it was seeded
    or created under, else its ``clientId``. Its refresh token's status is kept beside it (the
    snapshot has no field for it), for ``cascade``.
    """

    def __init__(
        self, orgs: dict[str, list[dict[str, Any]]], generated: int = 0, keys: dict[str, dict[str, str]] | None = None
    ) -> None:
        self._orgs: dict[str, dict[str, dict[str, Any]]] = {}
        self._generated = generated
        self._deleted_generated: dict[str, set[int]] = {}
        self._keys: dict[str, dict[str, str]] = {}
        self._refresh: dict[str, dict[str, str]] = {}
        for org, tokens in orgs.items():
            self.add(org, tokens)
        for org, links in (keys or {}).items():
            self._keys.setdefault(org, {}).update(links)

    def add(self, org: str, tokens: Iterable[dict[str, Any]], key: str | None = None) -> None:
        """Hold ``tokens`` in ``org`` (made if new); a token already held is replaced.

        ``key``: the consumer key they were issued under, when their ``clientId`` does not say.
        """
        known = self._orgs.setdefault(org, {})
        links = self._keys.setdefault(org, {})
        for token in tokens:
            known[token["token"]] = token
            self._refresh.get(org, {}).pop(token["token"], None)
            if key is None:
                links.pop(token["token"], None)
            else:
                links[token["token"]] = key

    def get(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).get(token)
        if seeded is not None:
            return seeded
        index = self._generated_index(org, token)
        return None if index is None else load_token(token)

    def delete(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).pop(token, None)
        if seeded is not None:
            self._keys.get(org, {}).pop(token, None)
            self._refresh.get(org, {}).pop(token, None)
            return seeded
        index = self._generated_index(org, token)
        if index is None:
            return None
        self._deleted_generated.setdefault(org, set()).add(index)
        return load_token(token)

    def held(self, org: str, token: str) -> dict[str, Any] | None:
        """The token, to be changed in place: a generated one is made a held one first."""
        snapshot = self.get(org, token)
        if snapshot is not None and token not in self._orgs.get(org, {}):
            index = self._generated_index(org, token)
            assert index is not None
            self._deleted_generated.setdefault(org, set()).add(index)
            self._orgs[org][token] = snapshot
        return snapshot

    def tokens(self, org: str) -> list[dict[str, Any]]:
        """The organisation's held tokens, oldest first (generated ones only once changed)."""
        return list(self._orgs.get(org, {}).values())

    def orgs(self) -> list[str]:
        return list(self._orgs)

    def key_of(self, org: str, snapshot: dict[str, Any]) -> str | None:
        """The consumer key the token was issued under, if anything says."""
        key = self._keys.get(org, {}).get(snapshot.get("token", ""))
        client_id = snapshot.get("clientId")
        return key if key is not None else client_id if isinstance(client_id, str) else None

    def set_status(self, org: str, token: str, status: str, *, cascade: bool = False) -> dict[str, Any] | None:
        """Approve or revoke a token (and with ``cascade`` its refresh token); None if it is not held."""
        snapshot = self.held(org, token)
        if snapshot is None:
            return None
        snapshot["status"] = status
        touch(snapshot)
        if cascade:
            self._refresh.setdefault(org, {})[token] = status
        return snapshot

    def refresh_status(self, org: str, token: str) -> str:
        return self._refresh.get(org, {}).get(token, APPROVED)

    def _generated_index(self, org: str, token: str) -> int | None:
        """The index of a live generated token, or None."""
        digits = token.removeprefix(LOAD_PREFIX)
        if not self._generated or org not in self._orgs or digits == token or not digits.isdigit():
            return None
        index = int(digits)
        if str(index) != digits or index >= self._generated or index in self._deleted_generated.get(org, ()):
            return None
        return index


def touch(snapshot: dict[str, Any]) -> None:
    """Record a change in the snapshot's own ``lastModifiedAt``, where it has one."""
    if "lastModifiedAt" in snapshot:
        snapshot["lastModifiedAt"] = now_ms()


STORE = web.AppKey("stub_store", TokenStore)
