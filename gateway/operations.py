"""The operations the gateway audits, declared as data: method, path, role, what they act on.

Every audited call goes through the same steps (``gateway.handler``); what differs between
operations is only what is declared here. A new operation is one more entry, plus, where its
answer needs reading in its own way, a small function (``gateway.outcome``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.auth import REVOKE

ORG_PREFIX = r"/v1/(?:o|organizations)/(?P<org>[^/]*)/"
"""Both spellings Apigee accepts for an organisation's base path."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
MAX_ORG_LENGTH = 255
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")


def is_org_name(text: str) -> bool:
    """Whether ``text`` is a name the gateway accepts as an organisation: plain unreserved
    characters, so that what is forwarded is exactly what was checked and recorded."""
    return len(text) <= MAX_ORG_LENGTH and _NAME.fullmatch(text) is not None


def is_name(text: str, limit: int) -> bool:
    """The same rule for a value in the path (a token, a key), up to ``limit`` characters."""
    return len(text) <= limit and _NAME.fullmatch(text) is not None


@dataclass(frozen=True)
class Operation:
    """One kind of call the gateway forwards and audits."""

    name: str
    """What the call does, as the metrics and the log name it (``token``)."""
    method: str
    path: str
    """Below the organisation, with ``{placeholders}``: ``oauth2/accesstokens/{token}``. The
    last placeholder takes the rest of the path, so a stray ``/`` is refused as an invalid
    value rather than missed as another path."""
    role: str
    secret: str
    """The placeholder whose value is a secret: kept as fingerprint and hint, never in clear."""
    secret_label: str
    """How refusals name it: "access token"."""
    verb: str
    """What the role lets a user do here, as a refusal says it: "revoke tokens"."""
    effect: str
    """What the call does upstream, as an answer about its fate says it: "deletion"."""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PLACEHOLDER.split(self.path)
        regex = ""
        for index, part in enumerate(parts):
            if index % 2 == 0:
                regex += re.escape(part)
            else:
                last = index == len(parts) - 2 and parts[-1] == ""
                regex += f"(?P<{part}>{'.*' if last else '[^/]*'})"
        object.__setattr__(self, "pattern", re.compile(ORG_PREFIX + regex, re.DOTALL))

    @property
    def template(self) -> str:
        return f"{self.method} /v1/o/{{org}}/{self.path}"


TOKEN_DELETE = Operation(
    name="token",
    method="DELETE",
    path="oauth2/accesstokens/{token}",
    role=REVOKE,
    secret="token",
    secret_label="access token",
    verb="revoke tokens",
    effect="deletion",
)

OPERATIONS: tuple[Operation, ...] = (TOKEN_DELETE,)
"""Every audited operation, in the order routes are tried."""
