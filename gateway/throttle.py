"""Login limits: a flood of bad logins costs neither much CPU nor much audit space.

Three limits, all applied before any password is checked:

- **Failed logins per client address and per claimed user name** (``LoginThrottle``), in fixed
  windows that start at the first failure. Past ``max_failures`` in a window, further attempts
  from that address, or for that user, are refused with 429 until the window ends. Every failed
  attempt counts, those that shared another request's password check included. One exception
  keeps guessers from locking the real user out: an address with no failure of its own in its
  window still gets its password checked for a user name that is over its limit (a wrong guess
  then counts against that address, which is stopped like any other).
- **Password checks overall** (``CheckLimit``): at most so many at once and so many a second,
  whatever the addresses; past that, 503 with Retry-After. Verified callers are served from a
  cache and never wait for it.
- **Audit records of failed logins**: one per failed login, so at most ``max_failures`` per
  address and window, and at most ``max_records`` per window over all addresses. Attempts
  refused with 429 are audited as one record per window of each address (or user name), and
  those records draw on the same allowance. Past it, attempts are only counted, and each window
  of the allowance ends with one summary record of all it could not record on its own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gateway import errors
from gateway.audit import records
from gateway.audit.record import AuditRecord, utc_timestamp

MAX_TRACKED = 100_000
"""Windows kept at once. Past this, new user names are not tracked (addresses still are), so
a flood of invented user names cannot exhaust memory."""
ALL = "all"
"""``RefusedAttempts.by`` of the summary of everything the allowance could not record alone."""


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

    def over(self, limit: int) -> bool:
        return self.failures + self.checking >= limit


@dataclass(slots=True)
class _Allowance:
    """One window of the audit records that failed logins may write, over all addresses."""

    ends: float
    started: float
    spent: int = 0
    unrecorded: int = 0
    """Failed logins answered 401 without a record of their own."""
    folded: int = 0
    """Refused attempts of windows whose own summary record did not fit."""
    folded_windows: int = 0
    busy: int = 0
    """Attempts refused because too many passwords were being checked (``CheckLimit``)."""

    @property
    def empty(self) -> bool:
        """Nothing went unrecorded: no summary is needed."""
        return not (self.unrecorded or self.folded or self.busy)


@dataclass(frozen=True, slots=True)
class RefusedAttempts:
    """One window's refused attempts, for its single audit record."""

    by: str
    """"client" (``subject`` is an address), "user" (``subject`` is the claimed user name), or
    "all" (the allowance's summary: ``subject`` is "*")."""
    subject: str
    count: int
    start: str
    end: str
    extra: dict[str, int] = field(default_factory=dict)
    """For "all": what the allowance counted without recording it alone."""


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_records: int | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_records = max_records
        """Audit records failed logins may write per window over all addresses; None: no bound."""
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._allowance: _Allowance | None = None
        self._closed: list[RefusedAttempts] = []
        self.refused = 0
        """Attempts refused so far (for metrics)."""

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def retry_after(self, client: str | None, user: str | None) -> int | None:
        """Whole seconds until this attempt may be made, if the address or the user is over its
        limit (the attempt is then counted as refused); None when it may go ahead.

        A user over its limit does not stop an address that has no failure (and no check under
        way) in its own window: otherwise anyone could lock any user out by guessing."""
        if not self.enabled:
            return None
        now = self._clock()
        by_client = self._live(("client", client), now) if client is not None else None
        if by_client is not None and by_client.over(self.max_failures):
            return self._refuse(by_client, now)
        by_user = self._live(("user", user), now) if user is not None else None
        if by_user is not None and by_user.over(self.max_failures):
            clean = client is not None and (by_client is None or not (by_client.failures or by_client.checking))
            if not clean:
                return self._refuse(by_user, now)
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

    def may_record(self) -> bool:
        """Whether a failed login may have an audit record of its own; if not, it is counted in
        the allowance's summary record instead."""
        now = self._clock()
        if self._spend(now):
            return True
        self._current_allowance(now).unrecorded += 1
        return False

    def count_busy(self) -> None:
        """An attempt refused because too many passwords were being checked: counted, not recorded alone."""
        self._current_allowance(self._clock()).busy += 1

    def _live(self, key: tuple[str, str], now: float) -> _Window | None:
        window = self._windows.get(key)
        return window if window is not None and window.ends > now else None

    def _refuse(self, window: _Window, now: float) -> int:
        window.refused += 1
        self.refused += 1
        return max(1, math.ceil(window.ends - now))

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

    def _current_allowance(self, now: float) -> _Allowance:
        """The allowance's open window; one that is over is closed into its summary first."""
        allowance = self._allowance
        if allowance is not None and allowance.ends <= now:
            self._close_allowance(now)
            allowance = None
        if allowance is None:
            allowance = self._allowance = _Allowance(ends=now + self.window_seconds, started=time.time())
        return allowance

    def _spend(self, now: float) -> bool:
        allowance = self._current_allowance(now)
        if self.max_records is not None and allowance.spent >= self.max_records:
            return False
        allowance.spent += 1
        return True

    def _close_allowance(self, now: float) -> None:
        allowance, self._allowance = self._allowance, None
        if allowance is None or allowance.empty:
            return
        extra = {
            "unrecorded_failures": allowance.unrecorded,
            "folded_windows": allowance.folded_windows,
            "busy_refusals": allowance.busy,
        }
        start, end = _span(allowance.started, allowance.ends, self.window_seconds, now)
        self._closed.append(RefusedAttempts(ALL, "*", allowance.folded, start, end, extra))

    def ended(self) -> list[RefusedAttempts]:
        """Forget the windows that are over; the refused attempts of each, to be audited."""
        now = self._clock()
        over = [key for key, window in self._windows.items() if window.ends <= now]
        taken = self._take(over, now)
        if self._allowance is not None and self._allowance.ends <= now:
            self._close_allowance(now)
        closed, self._closed = self._closed, []
        return taken + closed

    def drain(self) -> list[RefusedAttempts]:
        """Every window's refused attempts so far (at shutdown, so none go unrecorded)."""
        now = self._clock()
        taken = self._take(list(self._windows), now)
        self._close_allowance(now)
        closed, self._closed = self._closed, []
        return taken + closed

    def _take(self, keys: list[tuple[str, str]], now: float) -> list[RefusedAttempts]:
        taken = []
        for key in keys:
            window = self._windows.pop(key)
            if not window.refused:
                continue
            if not self._spend(now):
                allowance = self._current_allowance(now)
                allowance.folded += window.refused
                allowance.folded_windows += 1
                continue
            start, end = _span(window.started, window.ends, self.window_seconds, now)
            taken.append(RefusedAttempts(key[0], key[1], window.refused, start, end))
        return taken


def _span(started: float, ends: float, length: float, now: float) -> tuple[str, str]:
    """A window's wall-clock start and end (its end is now, if it is cut short by shutdown)."""
    lasted = min(ends, now) - (ends - length)
    return utc_timestamp(started), utc_timestamp(started + lasted)


def _keys(client: str | None, user: str | None) -> list[tuple[str, str]]:
    keys = []
    if client is not None:
        keys.append(("client", client))
    if user is not None:
        keys.append(("user", user))
    return keys


class CheckLimit:
    """Password checks over all callers: at most ``concurrent`` at once and ``per_second`` a
    second (with bursts of up to ``per_second`` at once), whatever their addresses.

    A check takes its share of the per-second budget before it may wait for a place, so no more
    than a second's worth ever waits, and anything beyond is refused at once with a time to
    retry: a flood from rotating addresses costs at most the configured CPU.
    """

    def __init__(self, concurrent: int, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._burst = max(1.0, per_second)
        self._tokens = self._burst
        self._clock = clock
        self._updated = clock()
        self._places = asyncio.Semaphore(concurrent)
        self.refused = 0
        """Checks refused so far (for metrics)."""

    def reserve(self) -> int | None:
        """Take one check's share of the budget: None when taken; otherwise whole seconds
        until one is free (the check is then refused)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        self.refused += 1
        return max(1, math.ceil((1 - self._tokens) / self.per_second))

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """One of the ``concurrent`` places to hash in, awaited if all are taken."""
        async with self._places:
            yield


def as_record(attempts: RefusedAttempts) -> AuditRecord:
    """The one ``denied`` record of a window's refused attempts (``method`` THROTTLE)."""
    return records.throttled(
        attempts.by,
        attempts.subject,
        attempts.count,
        attempts.start,
        attempts.end,
        errors.TOO_MANY_ATTEMPTS.code,
        attempts.extra,
    )
