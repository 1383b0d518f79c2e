"""Logging the chain's head now and then, so operators can anchor it outside the host.

A head hash copied elsewhere (a log collector, a ticket, another machine) lets
``gateway audit verify --expect-head HASH`` prove later that nothing up to that record was
cut off or rewritten, even by someone able to rewrite the whole database file.
"""

from __future__ import annotations

import time

from gateway.audit.chain import Head
from gateway.logs import Logger


class HeadLogger:
    """An ``on_commit`` callback: logs the head every N records or M seconds, whichever first."""

    def __init__(self, log: Logger, *, every_records: int, every_seconds: float) -> None:
        self._log = log
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._since = 0
        self._last = time.monotonic()

    def __call__(self, head: Head, added: int) -> None:
        self._since += added
        now = time.monotonic()
        if self._since >= self._every_records or now - self._last >= self._every_seconds:
            self._log.info("audit_head", record_id=head.id, hash=head.hash, records_since_last=self._since)
            self._since, self._last = 0, now
