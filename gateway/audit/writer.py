"""Group commit: one thread owns the audit log's write connection, and requests share commits.

A request puts its record on a queue and awaits a future. The writer thread takes everything
queued, appends it as one transaction, and releases every waiting request with a single
call back into the event loop once the commit is durable. While it commits, new records queue
up for the next transaction. So durability is the same as one commit per record (nothing is
answered before its commit), but an fsync is shared by everyone who arrived during the
previous one, and no timer or artificial delay is involved: a lone request commits at once.

The thread starts the next transaction the moment the last one ends, without waiting for the
event loop to come round, which on a busy host is what keeps commit latency low.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStoreError

BatchAppender = Callable[[Sequence[AuditRecord]], None]
"""Makes a batch durable as one transaction, or raises AuditStoreError and keeps none of it.

Runs in the writer thread; built there by the factory given to AuditWriter, so a backend's
connection lives and dies in the thread that uses it.
"""

OpenAppender = Callable[[], tuple[BatchAppender, Callable[[], None]]]
_STOP = None
_Waiting = tuple[AuditRecord, asyncio.Future[None]]


class AuditWriter:
    """The request path's only way to write: ``await write(record)`` returns once it is committed.

    Raises AuditStoreError when the record could not be made durable; then none of its batch was.
    """

    def __init__(self, open_appender: OpenAppender, *, max_batch: int) -> None:
        """``open_appender`` runs in the writer thread and returns (append, close)."""
        self._max_batch = max_batch
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(open_appender,), name="audit-writer", daemon=True)
        self._running = True
        self.commits = 0
        """Transactions committed so far (tests and metrics read it)."""
        self._thread.start()

    async def started(self) -> None:
        """Wait until the writer thread holds its connection; raises what opening it raised."""
        await self._ready

    async def write(self, record: AuditRecord) -> None:
        if not self._running:
            raise AuditStoreError("the audit writer is not running")
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((record, future))
        await future

    async def close(self) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        if self._running:
            self._running = False
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)

    # The writer thread --------------------------------------------------------------------

    def _run(self, open_appender: OpenAppender) -> None:
        try:
            append, close = open_appender()
        except BaseException as exc:  # noqa: BLE001 - reported to whoever awaits started()
            self._running = False
            self._loop.call_soon_threadsafe(_settle, self._ready, exc)
            return
        self._loop.call_soon_threadsafe(_settle, self._ready, None)
        try:
            while self._drain(append):
                pass
        finally:
            close()
            self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Records that raced with close() are refused, never left waiting."""
        leftovers: list[asyncio.Future[None]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item[1])
        if leftovers:
            self._loop.call_soon_threadsafe(_release, leftovers, AuditStoreError("the audit writer has stopped"))

    def _drain(self, append: BatchAppender) -> bool:
        """Commit one batch; False once told to stop (after committing what came before)."""
        first = self._queue.get()
        batch: list[_Waiting] = []
        stopping = first is _STOP
        if first is not _STOP:
            batch.append(first)
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stopping = True
                break
            batch.append(item)
        if batch:
            error: BaseException | None = None
            try:
                append([record for record, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the waiting requests must hear of it
                reason = str(exc) if isinstance(exc, AuditStoreError) else f"audit store failed: {type(exc).__name__}"
                error = AuditStoreError(reason)
            else:
                self.commits += 1
            self._loop.call_soon_threadsafe(_release, [future for _, future in batch], error)
        return not stopping


def _release(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle(future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(AuditStoreError(str(error)) if isinstance(error, AuditStoreError) else error)
