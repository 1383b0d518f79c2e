"""The audit store's interface: what the gateway needs from wherever records are kept.

It knows nothing of HTTP: it appends records and answers queries. SQLite is the one backend
today; a second one (a fleet-wide PostgreSQL-protocol store) is one more class with these
methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord


class AuditStoreError(Exception):
    """The store cannot do what was asked (file unwritable, disk full, locked, corrupt...)."""


class AuditStore(Protocol):
    max_batch: int
    """The most records one ``append`` takes."""

    async def append(self, records: Sequence[AuditRecord]) -> None:
        """Make ``records`` durable together, in order, or raise AuditStoreError and keep none."""

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        """Records matching ``selection``, newest first."""

    async def get(self, record_id: int) -> AuditRecord | None: ...

    async def close(self) -> None: ...
