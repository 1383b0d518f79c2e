"""The request path's way to write: records go to the audit recorder process, and each
``write`` returns once its record's batch is committed.

The recorder (``gateway.audit.recorder``) owns the log's write connection and makes the group
commits; this side, in the event loop, frames each record onto their socketpair (the frames of
one loop iteration in one send) and releases each waiting request when its batch's result comes
back. Records are committed in the order they were written, so concurrent calls make one linear
chain. Durability is as before: nothing is answered before its commit, and a lone request
commits at once.

The writer also watches the process. If it dies, every record waiting for its commit fails
(``AuditStoreError``: the handler answers 503 and forwards nothing), ``problem()`` says why
(``/readyz``), the log says why, and it is started again after a pause that doubles from
``RESTART_MIN`` up to ``RESTART_MAX`` (back to the start once one has stayed up
``RESTART_SETTLED`` seconds). Until it is back, every write fails at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.chain import ChainKey, Head
from gateway.audit.frames import BATCH, FAILED, OK, READY, RECORD_ERROR, STATUS, FrameError, FrameReader, frame
from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditRecordError, AuditStoreError
from gateway.logs import Logger

OnCommit = Callable[[Head, int], None]
"""Called in the event loop after each commit with the new head and the records it added."""
OnBatch = Callable[[int, float, bool], None]
"""Called in the event loop after each batch: records, seconds the recorder took, committed or not."""

RESTART_MIN = 0.05
RESTART_MAX = 5.0
RESTART_SETTLED = 10.0
CLOSE_TIMEOUT = 30.0
"""How long ``close`` waits for the recorder to commit what it was sent before killing it."""


@dataclass(frozen=True)
class RecorderSpec:
    """Where the log is and how to append to it: what the recorder process is told first."""

    location: Path
    key: ChainKey
    busy_timeout: float = 5.0
    synchronous: str = "FULL"
    max_bytes: int = 0


class AuditWriter:
    """``await write(record)`` returns once the record is committed, or raises AuditStoreError
    (then it may not be: none of its batch was, or the recorder died before saying)."""

    def __init__(
        self,
        spec: RecorderSpec,
        *,
        on_commit: OnCommit | None = None,
        on_batch: OnBatch | None = None,
        log: Logger | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._spec = spec
        self._on_commit = on_commit
        self._on_batch = on_batch
        self._log = log
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._out: list[bytes] = []
        self._flushing = False
        self._transport: asyncio.Transport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._down: str | None = "the audit recorder is starting"
        self._file_problem: str | None = None
        self._closing = False
        self._open_failure: str | None = None
        self._changed = asyncio.Event()
        self.last_failure: tuple[float, str] | None = None
        """When (``time.monotonic()``) and why the latest batch failed; None once one succeeds."""
        self.commits = 0
        """Transactions committed so far (tests and metrics read it)."""
        self.restarts = 0
        """Times the recorder was started again after it died."""
        self._supervisor = self._loop.create_task(self._supervise(), name="audit-recorder")

    @property
    def pid(self) -> int | None:
        """The recorder's process id while it runs (tests kill it)."""
        return None if self._process is None else self._process.pid

    def queue_depth(self) -> int:
        """Records sent and waiting for their commit."""
        return len(self._waiting)

    def problem(self) -> str | None:
        """Why a write cannot work now: the recorder is down, or the log's file was removed or
        replaced; None while it can (for readiness)."""
        return self._down or self._file_problem

    async def started(self) -> None:
        """Wait until the recorder holds its connection; raises AuditStoreError if it cannot."""
        await self._ready

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked each time the writer's state changes (a
        batch answered, the recorder up or down): for tests, which must not sleep and poll."""
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def write(self, record: AuditRecord) -> None:
        if self._closing:
            raise AuditStoreError("the audit writer is not running")
        if self._down is not None:
            raise AuditStoreError(self._down)
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append(future)
        self._out.append(frame(tuple(record)))
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)
        await future

    def _flush(self) -> None:
        """One send for every record written in this turn of the loop."""
        self._flushing = False
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    async def close(self) -> None:
        """Commit what was sent, then let the recorder stop (killed if it does not in time)."""
        if self._closing:
            return
        self._closing = True
        self._flush()
        process, transport = self._process, self._transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()  # the recorder commits what it has, answers, and exits
        if process is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self._supervisor.cancel()
        try:
            await self._supervisor
        except asyncio.CancelledError:
            pass
        self._fail_waiting(AuditStoreError("the audit writer has stopped"))
        if not self._ready.done():
            self._ready.set_exception(AuditStoreError("the audit writer was closed before it started"))

    # Watching the recorder ------------------------------------------------------------------

    async def _supervise(self) -> None:
        pause = RESTART_MIN
        while not self._closing:
            began = time.monotonic()
            try:
                process = await self._spawn()
            except Exception as exc:  # whatever it is, the writer must not wait on a recorder that never came
                reason = f"could not be started: {type(exc).__name__}: {exc}"
            else:
                code = await process.wait()
                if self._closing:
                    return
                reason = _exit_reason(code)
            self._lost(f"the audit recorder process {reason}")
            if not self._ready.done():
                self._ready.set_exception(AuditStoreError(self._open_failure or self._down or reason))
                return  # it never started: the gateway does not start either
            if time.monotonic() - began >= RESTART_SETTLED:
                pause = RESTART_MIN
            if self._log is not None:
                self._log.error("audit_recorder_died", reason=reason, restart_in_s=pause)
            self._down = f"the audit recorder process {reason}; it is being restarted"
            self._notify()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)
            self.restarts += 1

    async def _spawn(self) -> asyncio.subprocess.Process:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.audit.recorder",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._process = process
        transport, _ = await self._loop.create_unix_connection(lambda: _Channel(self), sock=ours)
        self._transport = transport
        spec = self._spec
        transport.write(
            frame((str(spec.location), spec.key.secret, spec.busy_timeout, spec.synchronous, spec.max_bytes))
        )
        return process

    def _lost(self, reason: str, transport: asyncio.BaseTransport | None = None) -> None:
        """The recorder is gone: what waited for it fails, and nothing is sent until it is back.
        ``transport``: the connection that ended, if that is how it was noticed (an old one's
        end, noticed late, must not cut off its successor)."""
        if transport is not None and transport is not self._transport:
            return
        if self._transport is not None:
            self._transport.abort()
        self._transport = None
        if transport is None:
            self._process = None
        if self._down is None or transport is None:
            self._down = reason
        self._out.clear()
        self._fail_waiting(AuditStoreError(f"{reason} before confirming the commit"))
        self._notify()

    def _fail_waiting(self, error: AuditStoreError) -> None:
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)

    # What the recorder says -----------------------------------------------------------------

    def received(self, message: Any) -> None:
        kind = message[0]
        if kind == BATCH:
            self._batch_checked(*message[1:])
        elif kind == STATUS:
            self._file_problem = message[1]
        elif kind == READY:
            self._down = None
            if not self._ready.done():
                self._ready.set_result(None)
            elif self._log is not None:
                self._log.warning("audit_recorder_restarted", pid=self.pid, restarts=self.restarts)
            self._notify()
        elif kind == FAILED:
            self._open_failure = str(message[1])

    def _batch_checked(self, *fields: Any) -> None:
        count = fields[0]
        if not isinstance(count, int) or count > len(self._waiting):
            self._lost(f"the audit recorder process answered for {count} records; {len(self._waiting)} were waiting")
            return
        self._batch(*fields)

    def _batch(
        self,
        count: int,
        kind: int,
        message: str | None,
        head_id: int | None,
        head_hash: str | None,
        seconds: float,
        problem: str | None,
    ) -> None:
        self._file_problem = problem
        if kind != RECORD_ERROR:  # one bad record says nothing of the store
            self.last_failure = None if kind == OK else (time.monotonic(), str(message))
        if self._on_batch is not None:
            self._on_batch(count, seconds, kind == OK)
        error: AuditStoreError | None = None
        if kind != OK:
            error = (AuditRecordError if kind == RECORD_ERROR else AuditStoreError)(str(message))
        for _ in range(count):
            future = self._waiting.popleft()
            if future.done():
                continue  # its caller was cancelled
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        if kind == OK and head_id is not None and head_hash is not None:
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(Head(head_id, head_hash), count)
        self._notify()


class _Channel(asyncio.Protocol):
    """The gateway's end of the socketpair: frames in, handed to the writer as they complete."""

    def __init__(self, writer: AuditWriter) -> None:
        self._writer = writer
        self._frames = FrameReader()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """The recorder closed its end: it died (or, on close, finished). Writes fail from now."""
        self._writer._lost("the audit recorder process stopped", self._transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._frames.feed(data)
        except FrameError as exc:
            self._writer._lost(f"the audit recorder process sent what is not a frame ({exc})", self._transport)
            return
        for message in messages:
            self._writer.received(message)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"
