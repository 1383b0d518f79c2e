"""The audit store's interface: what the gateway needs from wherever records are kept.

It knows nothing of HTTP. Reading is asynchronous (``AuditStore``); appending goes through a
``BatchAppender`` owned by the writer thread (``gateway.audit.writer``), which chains records
in commit order. SQLite is the one backend today; a second one (a fleet-wide PostgreSQL-protocol
store) is one more pair of classes with these methods.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from gateway.audit.chain import Head
from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord, Row


class AuditStoreError(Exception):
    """The store cannot do what was asked (file unwritable, disk full, locked, corrupt...)."""


class AuditRecordError(AuditStoreError):
    """A batch holds a record the store cannot take (its own fault, not the store's): the writer
    then appends the batch's records one by one, so only that record's caller fails."""


class BatchAppender(Protocol):
    max_batch: int

    def append(self, records: Sequence[AuditRecord]) -> Head:
        """Chain ``records`` after the current head and make them durable in one transaction,
        or raise AuditStoreError and keep none of them. Blocking: runs in the writer thread."""

    def problem(self) -> str | None:
        """Why appending cannot work now, without trying (safe from any thread)."""

    def close(self) -> None: ...


class AuditStore(Protocol):
    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        """Records matching ``selection``, newest first."""

    async def get(self, record_id: int) -> AuditRecord | None: ...

    async def head(self) -> Head: ...

    def rows(self, selection: AuditFilter | None = None, size: int = 5000) -> AsyncGenerator[list[Row], None]:
        """Every matching record, oldest first, as rows in ``FIELDS`` order, streamed in
        batches (``limit`` is ignored)."""

    async def pending_without_outcome(self) -> list[AuditRecord]:
        """Intents whose outcome was never recorded (the gateway stopped in between)."""

    async def unsettled(self) -> list[AuditRecord]:
        """Intents without an outcome, and ``unknown`` outcomes not reconciled since."""

    async def close(self) -> None: ...
