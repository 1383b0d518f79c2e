"""Makes audit records durable, one at a time, before the request path moves on."""

from __future__ import annotations

import asyncio

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore


class AuditWriter:
    """The request path's only way to write: ``await write(record)`` returns once it is committed.

    Raises AuditStoreError when the record could not be made durable.
    """

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._lock = asyncio.Lock()

    async def write(self, record: AuditRecord) -> None:
        async with self._lock:
            await self._store.append([record])

    async def close(self) -> None:
        async with self._lock:
            await self._store.close()
