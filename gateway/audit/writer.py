"""Group commit: one thread owns the audit log's write connection, and requests share commits.

A request puts its record on a queue and awaits a future. The writer thread takes everything
queued, chains it after the current head and appends it as one transaction, then releases every
waiting request with a single call back into the event loop once the commit is durable. While
it commits, new records queue up for the next transaction. So durability is the same as one
commit per record (nothing is answered before its commit), but an fsync is shared by everyone
who arrived during the previous one, and no timer or artificial delay is involved: a lone
request commits at once. Because one thread appends in queue order, concurrent requests still
make one linear chain.

The thread starts the next transaction the moment the last one ends, without waiting for the
event loop to come round, which on a busy host is what keeps commit latency low.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from gateway.audit.chain import Head
from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditRecordError, AuditStoreError, BatchAppender

OpenAppender = Callable[[], BatchAppender]
"""Runs in the writer thread, so a backend's connection lives and dies in the thread using it."""
OnCommit = Callable[[Head, int], None]
"""Called in the event loop after each commit with the new head and the records it added."""
OnBatch = Callable[[int, float, bool], None]
"""Called in the writer thread after each batch: records, seconds taken, committed or not."""

_STOP = None
_Waiting = tuple[AuditRecord, asyncio.Future[None]]


class AuditWriter:
    """The request path's only way to write: ``await write(record)`` returns once it is committed.

    Raises AuditStoreError when the record could not be made durable; then none of its batch was.
    """

    def __init__(
        self, open_appender: OpenAppender, *, on_commit: OnCommit | None = None, on_batch: OnBatch | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._on_commit = on_commit
        self._on_batch = on_batch
        self.last_failure: tuple[float, str] | None = None
        """When (``time.monotonic()``) and why the latest batch failed; None once one succeeds."""
        self._appender: BatchAppender | None = None
        self._thread = threading.Thread(target=self._run, args=(open_appender,), name="audit-writer", daemon=True)
        self._running = True
        self.commits = 0
        """Transactions committed so far (tests and metrics read it)."""
        self._thread.start()

    def queue_depth(self) -> int:
        """Records waiting for the next commit."""
        return self._queue.qsize()

    def problem(self) -> str | None:
        """Why the next append cannot work (its file was removed or replaced), for readiness."""
        appender = self._appender
        return None if appender is None else appender.problem()

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

    def _committed(self, futures: list[asyncio.Future[None]], error: AuditStoreError | None, head: Head | None) -> None:
        """In the event loop: release the batch's requests, then report the new head."""
        for future in futures:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    kind = AuditRecordError if isinstance(error, AuditRecordError) else AuditStoreError
                    future.set_exception(kind(str(error)))
        if head is not None:
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(head, len(futures))

    # The writer thread --------------------------------------------------------------------

    def _run(self, open_appender: OpenAppender) -> None:
        try:
            appender = open_appender()
        except BaseException as exc:
            self._running = False
            self._loop.call_soon_threadsafe(_settle, self._ready, exc)
            return
        self._appender = appender
        self._loop.call_soon_threadsafe(_settle, self._ready, None)
        try:
            while self._drain(appender):
                pass
        finally:
            appender.close()
            self._fail_leftovers()

    def _drain(self, appender: BatchAppender) -> bool:
        """Commit one batch; False once told to stop (after committing what came before)."""
        first = self._queue.get()
        batch: list[_Waiting] = [] if first is _STOP else [first]
        stopping = first is _STOP
        while not stopping and len(batch) < appender.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
        if batch:
            started = time.perf_counter()
            error, head = self._append(appender, [record for record, _ in batch])
            if not isinstance(error, AuditRecordError):  # one bad record says nothing of the store
                self.last_failure = None if error is None else (time.monotonic(), str(error))
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started, error is None)
            if isinstance(error, AuditRecordError) and len(batch) > 1:
                # One record the store cannot take must not fail the others: each goes alone.
                for item in batch:
                    single_error, single_head = self._append(appender, [item[0]])
                    self._loop.call_soon_threadsafe(self._committed, [item[1]], single_error, single_head)
            else:
                self._loop.call_soon_threadsafe(self._committed, [future for _, future in batch], error, head)
        return not stopping

    @staticmethod
    def _append(appender: BatchAppender, records: list[AuditRecord]) -> tuple[AuditStoreError | None, Head | None]:
        try:
            return None, appender.append(records)
        except AuditStoreError as exc:
            return exc, None
        except Exception as exc:
            return AuditStoreError(f"audit store failed: {type(exc).__name__}"), None

    def _fail_leftovers(self) -> None:
        """Records that raced with close() are refused, never left waiting."""
        leftovers = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item[1])
        if leftovers:
            self._loop.call_soon_threadsafe(
                self._committed, leftovers, AuditStoreError("the audit writer has stopped"), None
            )


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
