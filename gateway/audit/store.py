"""The audit store's interface: everything the gateway and its commands need from wherever
records are kept, and nothing of how.

It knows nothing of HTTP. Reading is asynchronous (``AuditStore``); appending goes through a
``BatchAppender``, blocking, owned by the audit recorder process (``gateway.audit.recorder``) or by a
maintenance command, which chains records in commit order. ``gateway.audit.backends.open_store``
is the one way to get a store: callers are typed against these protocols, and only the backend
module names its engine.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.audit.chain import Head
from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord, Row
from gateway.audit.sql import STATS_EXPRESSIONS

STATS_GROUPS = tuple(STATS_EXPRESSIONS)
"""What ``stats`` can count records by."""


class AuditStoreError(Exception):
    """The store cannot do what was asked (file unwritable, disk full, locked, corrupt...)."""


class AuditRecordError(AuditStoreError):
    """A batch holds a record the store cannot take (its own fault, not the store's): the writer
    then appends the batch's records one by one, so only that record's caller fails."""


class ChainModeMismatch(AuditStoreError):
    """The log's chain is not of the kind, or not under the key, the caller holds.

    For the gateway it is a configuration error; for ``verify`` it may be tampering (a keyed log
    rewritten as unkeyed, or under another key), which is why it is a class of its own."""


@dataclass(frozen=True)
class PrunePlan:
    """What pruning before a time removes: worked out alone for ``--dry-run``, and again inside
    the prune's own transaction, so what is removed is what the plan said at that moment."""

    before: str
    first_id: int | None
    """The oldest record kept now (None: the log is empty)."""
    last_removed: int | None
    """The newest record that goes (None: nothing goes)."""
    removed: int
    kept: int
    oldest: str | None = None
    """Times of the first and last record that go."""
    newest: str | None = None

    @property
    def everything(self) -> bool:
        return self.removed > 0 and self.kept == 0


@dataclass(frozen=True)
class PruneResult:
    removed: int
    checkpoint: AuditRecord | None


class BatchAppender(Protocol):
    max_batch: int

    def append(self, records: Sequence[AuditRecord]) -> Head:
        """Chain ``records`` after the current head and make them durable in one transaction,
        or raise AuditStoreError and keep none of them. Blocking: runs in the recorder process."""

    def problem(self) -> str | None:
        """Why appending cannot work now, without trying (safe from any thread)."""

    def plan_prune(self, before: str) -> PrunePlan:
        """What ``prune(before)`` would remove now, removing nothing."""

    def prune(self, before: str, *, actor: str, client_ip: str | None = None) -> PruneResult:
        """Remove the records older than ``before`` from the start of the log, and append the
        checkpoint that keeps the rest verifiable."""

    def fold_wal(self) -> None:
        """Give back to the disk the room a prune freed, where the engine can."""

    def close(self) -> None: ...


class AuditStore(Protocol):
    path: Path
    """Where the log is, for messages."""

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        """Records matching ``selection``, newest first."""

    async def get(self, record_id: int) -> AuditRecord | None: ...

    async def head(self) -> Head: ...

    async def first_id(self) -> int | None:
        """The oldest record kept (None: an empty log)."""

    async def size(self) -> int:
        """Records from the first kept one to the head."""

    def rows(self, selection: AuditFilter | None = None, size: int = 5000) -> AsyncGenerator[list[Row], None]:
        """Every matching record, oldest first, as rows in ``FIELDS`` order, streamed in
        batches (``limit`` is ignored)."""

    async def rows_after(self, after_id: int, limit: int) -> list[Row]:
        """Up to ``limit`` records after id ``after_id``, oldest first, as ``rows`` gives them:
        in as few steps as the engine allows, since the shipper reads in a busy process."""

    async def stats(
        self, by: str, selection: AuditFilter, *, include_intents: bool = False
    ) -> list[tuple[str | None, int]]:
        """Record counts grouped by one of ``STATS_GROUPS``, largest first."""

    async def chain_mode(self) -> tuple[str, str | None]:
        """The kind of chain the log says it keeps, and its key check: the log's word only."""

    async def checkpoint_before(self, first_id: int) -> AuditRecord | None:
        """The prune checkpoint that accounts for the records before ``first_id``."""

    async def pruned_hash(self, record_id: int) -> str | None:
        """The hash of a pruned record, as the checkpoint of the prune that ended at it gives it."""

    async def pending_without_outcome(self) -> list[AuditRecord]:
        """Intents whose outcome was never recorded (the gateway stopped in between)."""

    async def unsettled(self) -> list[AuditRecord]:
        """Intents without an outcome, and ``unknown`` outcomes not reconciled since."""

    async def later_outcome_for_token(self, token_sha256: str, after_id: int) -> AuditRecord | None:
        """The first ``deleted`` or ``not_found`` record for a token after ``after_id``."""

    async def write_problem(self) -> str | None:
        """Why a write would fail right now (checked by trying one, changing nothing); None if
        it would not. For readiness: a log made read-only or locked shows at once."""

    def appender(self, *, synchronous: str = "FULL", max_bytes: int = 0) -> BatchAppender:
        """A new appender on this log (blocking; call it in the thread that will use it)."""

    async def close(self) -> None: ...
