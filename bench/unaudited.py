"""The gateway with its audit log switched off, for the benchmark only: the cost of the audit itself.

This is not a mode of the product, and no config key reaches it: it runs ``gateway serve``
exactly, in this process, with the one audit writer replaced by one that commits nothing and
answers at once. Everything else is the gateway's own: the same application, listener, routes,
authentication, records made (and dropped), upstream client, log line and metrics. So the
difference between this row and the audited gateway's is what waiting for the two commits of
each call costs, and the difference between this row and the plain proxy's is what the rest of
the request path costs.

    python bench/unaudited.py serve --config FILE     (the arguments of `gateway serve`)
"""

from __future__ import annotations

import sys
from typing import Any

from gateway import runtime
from gateway.audit.record import AuditRecord
from gateway.cli import main


class NoWriter:
    """What the request path needs of ``gateway.audit.writer.AuditWriter``, writing nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.commits = 0
        self.last_failure: tuple[float, str] | None = None

    def queue_depth(self) -> int:
        return 0

    def problem(self) -> str | None:
        return None

    async def started(self) -> None:
        return None

    async def write(self, record: AuditRecord) -> None:
        return None

    async def close(self) -> None:
        return None


if __name__ == "__main__":
    runtime.AuditWriter = NoWriter  # type: ignore[misc,assignment]
    sys.exit(main(sys.argv[1:]))
