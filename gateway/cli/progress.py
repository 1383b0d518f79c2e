"""A running count on standard error, so a long `audit` command does not look hung.

Only for a person at a terminal: on a pipe, a file or a log the line is never written, so
scripts and cron jobs see exactly the command's own output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

DEFAULT_INTERVAL = 0.1
"""Seconds between redraws: fast enough to look live, rare enough to cost nothing."""


class Progress:
    """One line, rewritten in place: ``verify: 1,234,567 of 2,000,000 records, 61% (412,000/s)``.

    Callers report counts as often as they like (per batch, per call): the line is redrawn at
    most once per ``interval``, so the cost is one clock read per report. Closing (or leaving
    the ``with`` block, error or not) clears the line, so whatever the command prints next
    starts on a clean line; the count itself is the command's summary to give.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        unit: str = "records",
        total: int | None = None,
        enabled: bool = True,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``enabled=False`` silences it even on a terminal (when stdout shares that terminal)."""
        self.enabled = enabled and stream.isatty()
        self.label, self.unit, self.total = label, unit, total
        self.done = 0
        self._stream, self._interval, self._clock = stream, interval, clock
        self._started = self._next_draw = clock()
        self._width = 0

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` so far (of ``total``, when it becomes known); redrawn if the interval has passed."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = self._clock()
        if now < self._next_draw:
            return
        self._next_draw = now + self._interval
        self._draw(self._line(now - self._started))

    def note(self, text: str) -> None:
        """Say what is under way when there is nothing to count (one long SQL statement)."""
        if self.enabled:
            self._draw(f"{self.label}: {text}")

    def close(self) -> None:
        """Clear the line, if one was drawn."""
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _line(self, elapsed: float) -> str:
        line = f"{self.label}: {self.done:,}"
        if self.total is not None:
            line += f" of {self.total:,}"
        line += f" {self.unit}"
        if self.total and self.done <= self.total:
            line += f", {100 * self.done // self.total}%"
        if elapsed >= self._interval:  # a rate over less time is noise
            rate = self.done / elapsed
            line += f" ({rate:,.0f}/s)" if rate >= 10 else f" ({rate:.1f}/s)"
        return line

    def _draw(self, line: str) -> None:
        # Pad over the longer line before it; the lines are short enough not to wrap.
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(line))
