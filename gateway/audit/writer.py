"""Group commit: one task owns every write, and concurrent requests share commits.

Requests hand their record to the writer and wait. While a transaction is being committed,
new records queue up; the next transaction takes all of them at once. A request is released
only after the commit that holds its record, so durability is the same as one commit per
record, but the cost of a commit (an fsync with ``synchronous = FULL``) is shared by everyone
who arrived during the previous one. No timer, no artificial delay: a lone request is committed
at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore, AuditStoreError

class AuditWriter:
    """The request path's only way to write: ``await write(record)`` returns once it is committed.

    Raises AuditStoreError when the record could not be made durable; then none of its batch was.
    """

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._waiting: list[tuple[AuditRecord, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")
        self.commits = 0
        """Transactions committed so far (tests and metrics read it)."""

    async def write(self, record: AuditRecord) -> None:
        if self._closing or self._task.done():
            raise AuditStoreError("the audit writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                size = self._store.max_batch
                batch, self._waiting = self._waiting[:size], self._waiting[size:]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: Sequence[tuple[AuditRecord, asyncio.Future[None]]]) -> None:
        try:
            await self._store.append([record for record, _ in batch])
        except Exception as exc:  # noqa: BLE001 - whatever it was, the waiting requests must hear of it
            reason = str(exc) if isinstance(exc, AuditStoreError) else f"audit store failed: {type(exc).__name__}"
            for _, future in batch:
                if not future.done():
                    future.set_exception(AuditStoreError(reason))
            return
        self.commits += 1
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        """Commit what is queued, then close the store."""
        self._closing = True
        self._wakeup.set()
        await self._task
        await self._store.close()
