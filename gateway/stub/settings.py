"""What a stub run can be told, beyond its data: the choices where Apigee's documentation wavers."""

from __future__ import annotations

from dataclasses import dataclass

ACTION_STATUSES = (204, 200)
"""Apigee's older reference answers ``?action=`` calls with 204, its current spec with 200;
apigee-edge-js accepts only 204, so 204 is the default."""


@dataclass(frozen=True)
class StubSettings:
    action_status: int = 204
    """The status of every ``?action=`` call (approve, revoke, active, inactive): 204 with no
    body, or 200 with the changed entity."""
    revoke_delay: float = 1.0
    """Seconds after a bulk ``POST /oauth2/revoke`` answered 202 before its tokens turn revoked."""
    token_lifetime: float = 1799.0
    """Seconds a bearer token from ``POST /oauth/token`` is accepted (Apigee's is 1799)."""

    def __post_init__(self) -> None:
        if self.action_status not in ACTION_STATUSES:
            raise ValueError(f"action_status: expected 204 or 200, got {self.action_status}")
        if not 0 <= self.revoke_delay < float("inf") or not 0 <= self.token_lifetime < float("inf"):
            raise ValueError("revoke_delay and token_lifetime: expected a number of seconds, 0 or more")
