"""The stub's tokens, per organisation, kept in the form they were given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from gateway.stub.seed import LOAD_PREFIX, load_token


class TokenStore:
    """Tokens per organisation, each kept as given so it is returned in the same form.

    Besides the seeded tokens, each organisation may hold ``generated`` load-test tokens named
    ``load0``, ``load1``, ...: made on first use, so millions cost memory only once deleted.
    """

    def __init__(self, orgs: dict[str, list[dict[str, Any]]], generated: int = 0) -> None:
        self._orgs: dict[str, dict[str, dict[str, Any]]] = {}
        self._generated = generated
        self._deleted_generated: dict[str, set[int]] = {}
        for org, tokens in orgs.items():
            self.add(org, tokens)

    def add(self, org: str, tokens: Iterable[dict[str, Any]]) -> None:
        """Hold ``tokens`` in ``org`` (made if new); a token already held is replaced."""
        known = self._orgs.setdefault(org, {})
        for token in tokens:
            known[token["token"]] = token

    def get(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).get(token)
        if seeded is not None:
            return seeded
        index = self._generated_index(org, token)
        return None if index is None else load_token(token)

    def delete(self, org: str, token: str) -> dict[str, Any] | None:
        seeded = self._orgs.get(org, {}).pop(token, None)
        if seeded is not None:
            return seeded
        index = self._generated_index(org, token)
        if index is None:
            return None
        self._deleted_generated.setdefault(org, set()).add(index)
        return load_token(token)

    def _generated_index(self, org: str, token: str) -> int | None:
        """The index of a live generated token, or None."""
        digits = token.removeprefix(LOAD_PREFIX)
        if not self._generated or org not in self._orgs or digits == token or not digits.isdigit():
            return None
        index = int(digits)
        if str(index) != digits or index >= self._generated or index in self._deleted_generated.get(org, ()):
            return None
        return index


STORE = web.AppKey("stub_store", TokenStore)
