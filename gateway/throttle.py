"""Failed-login throttling: a flood of wrong passwords costs neither CPU nor audit space.

Failed logins (missing, malformed or wrong credentials) are counted per client address and per
claimed user name, in fixed windows that start at the first failure. Past ``max_failures`` in a
window, further attempts from that address, or for that user, are refused with 429 until the
window ends, before any password is checked: a flood cannot make the gateway compute hashes.

Refused attempts are audited, but not one record each (a flood would grow the log without
bound): when a window ends, its count of refused attempts becomes one ``denied`` record.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import errors
from gateway.audit.record import AuditRecord, Outcome, utc_timestamp

MAX_TRACKED = 100_000
"""Windows kept at once. Past this, new user names are not tracked (addresses still are), so
a flood of invented user names cannot exhaust memory."""


@dataclass(slots=True)
class _Window:
    ends: float
    started: float
    """Wall-clock start, for the audit record."""
    failures: int = 0
    refused: int = 0
    checking: int = 0
    """Password checks under way: counted as failures-to-be, so a burst of distinct guesses
    sent at once cannot all pass before the first one fails."""


@dataclass(frozen=True, slots=True)
class RefusedAttempts:
    """One window's refused attempts, for its single audit record."""

    by: str
    """"client" (``subject`` is an address) or "user" (``subject`` is the claimed user name)."""
    subject: str
    count: int
    start: str
    end: str


class LoginThrottle:
    def __init__(self, max_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.refused = 0
        """Attempts refused so far (for metrics)."""

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def retry_after(self, client: str | None, user: str | None) -> int | None:
        """Whole seconds until this attempt may be made, if the address or the user is over its
        limit (the attempt is then counted as refused); None when it may go ahead."""
        if not self.enabled:
            return None
        now = self._clock()
        for key in _keys(client, user):
            window = self._windows.get(key)
            if window is not None and window.ends > now and window.failures + window.checking >= self.max_failures:
                window.refused += 1
                self.refused += 1
                return max(1, math.ceil(window.ends - now))
        return None

    def failed(self, client: str | None, user: str | None) -> None:
        for window in self._current(client, user):
            window.failures += 1

    def checking(self, client: str | None, user: str | None) -> None:
        """A password check starts; ``checked`` must follow."""
        for window in self._current(client, user):
            window.checking += 1

    def checked(self, client: str | None, user: str | None, *, failed: bool) -> None:
        for key in _keys(client, user):
            window = self._windows.get(key)
            if window is not None and window.checking:
                window.checking -= 1
        if failed:
            self.failed(client, user)

    def _current(self, client: str | None, user: str | None) -> list[_Window]:
        """The open windows of the address and the user, opened if need be."""
        if not self.enabled:
            return []
        now = self._clock()
        windows = []
        for key in _keys(client, user):
            window = self._windows.get(key)
            if window is None or window.ends <= now:
                if window is None and len(self._windows) >= MAX_TRACKED and key[0] == "user":
                    continue
                window = self._windows[key] = _Window(ends=now + self.window_seconds, started=time.time())
            windows.append(window)
        return windows

    def ended(self) -> list[RefusedAttempts]:
        """Forget the windows that are over; the refused attempts of each, to be audited."""
        now = self._clock()
        over = [key for key, window in self._windows.items() if window.ends <= now]
        return self._take(over, now)

    def drain(self) -> list[RefusedAttempts]:
        """Every window's refused attempts so far (at shutdown, so none go unrecorded)."""
        return self._take(list(self._windows), self._clock())

    def _take(self, keys: list[tuple[str, str]], now: float) -> list[RefusedAttempts]:
        taken = []
        for key in keys:
            window = self._windows.pop(key)
            if window.refused:
                lasted = min(window.ends, now) - (window.ends - self.window_seconds)
                end = window.started + lasted
                taken.append(RefusedAttempts(key[0], key[1], window.refused, utc_timestamp(window.started), utc_timestamp(end)))
        return taken


def _keys(client: str | None, user: str | None) -> list[tuple[str, str]]:
    keys = []
    if client is not None:
        keys.append(("client", client))
    if user is not None:
        keys.append(("user", user))
    return keys


def as_record(attempts: RefusedAttempts) -> AuditRecord:
    """The one ``denied`` record of a window's refused attempts (``method`` THROTTLE)."""
    details = {"refused_attempts": attempts.count, "by": attempts.by, "window_start": attempts.start, "window_end": attempts.end}
    return AuditRecord(
        request_id=f"throttle-{os.urandom(8).hex()}",
        time=utc_timestamp(),
        actor=attempts.subject if attempts.by == "user" else None,
        client_ip=attempts.subject if attempts.by == "client" else None,
        method="THROTTLE",
        org=None,
        token_sha256=None,
        token_hint=None,
        outcome=Outcome.DENIED.value,
        error_code=errors.TOO_MANY_ATTEMPTS.code,
        snapshot=json.dumps(details, separators=(",", ":")),
    )
