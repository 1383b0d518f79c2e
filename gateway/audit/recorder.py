"""The audit recorder: the process that owns the audit log's write connection.

``python -m gateway.audit.recorder FD``: the gateway (``gateway.audit.writer``) starts it with
one end of a socketpair as file descriptor FD and sends, in frames (``gateway.audit.frames``),
where the log is, then the records to append. It appends them with group commit: whatever
arrived while the last commit was being made is chained and committed as the next batch, in the
order it arrived, and each batch's result goes back once its COMMIT is durable. The gateway
answers no request before that.

A process of its own, not a thread: the commit, the chain's hashes and the binding of values
take no share of the event loop's interpreter lock. It stops when the gateway closes its end
(after committing what came before); it ignores SIGINT and SIGTERM, which are the gateway's to
act on (a Ctrl-C reaches the whole process group: the gateway then drains its requests, whose
outcomes this process must still commit). If the gateway dies, the closed socket stops it too.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.audit.backends import open_appender
from gateway.audit.chain import ChainKey
from gateway.audit.frames import BATCH, FAILED, OK, READY, RECORD_ERROR, STATUS, STORE_ERROR, FrameReader, frame
from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditRecordError, AuditStoreError, BatchAppender

RECEIVE_BYTES = 1 << 20
IDLE_CHECK = 1.0
"""Seconds without records after which the log's file is checked (removed, replaced), so the
gateway's readiness says so even when no call comes."""


class Recorder:
    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._frames = FrameReader()
        self._waiting: list[Any] = []
        self._ended = False
        self._problem: str | None = None
        self._block_for: float | None = None
        """How long a blocking receive waits: forever for the first frame, then ``IDLE_CHECK``."""

    def run(self) -> int:
        hello = self._next_frame()
        if hello is None:
            return 0  # the gateway went away before saying anything
        location, secret, busy_timeout, synchronous, max_bytes = hello
        try:
            appender = open_appender(
                Path(location),
                ChainKey(secret),
                busy_timeout=busy_timeout,
                synchronous=synchronous,
                max_bytes=max_bytes,
            )
        except AuditStoreError as exc:
            self._send((FAILED, str(exc)))
            return 3
        try:
            self._send((READY, appender.max_batch))
            self._serve(appender)
        finally:
            appender.close()
        return 0

    def _next_frame(self) -> Any:
        while not self._waiting and not self._ended:
            self._receive(block=True)
        return self._waiting.pop(0) if self._waiting else None

    def _receive(self, *, block: bool) -> bool:
        """Take what the socket holds; False when nothing came (or, not blocking, nothing was there)."""
        # A timeout of 0 makes the socket non-blocking (MSG_DONTWAIT would still wait out a
        # timeout: Python polls first); blocking, it wakes up to check the file now and then.
        self._channel.settimeout(self._block_for if block else 0.0)
        try:
            data = self._channel.recv(RECEIVE_BYTES)
        except (BlockingIOError, TimeoutError):
            return False
        except ConnectionError:
            data = b""
        if not data:
            self._ended = True
            return False
        self._waiting += self._frames.feed(data)
        return True

    def _serve(self, appender: BatchAppender) -> None:
        self._block_for = IDLE_CHECK
        while True:
            if not self._waiting and not self._ended and not self._receive(block=True):
                if not self._ended:
                    self._idle(appender)
                    continue
            while self._receive(block=False):  # everything already sent joins this batch
                pass
            if not self._waiting and self._ended:
                return
            while self._waiting:
                batch = self._waiting[: appender.max_batch]
                del self._waiting[: appender.max_batch]
                self._commit(appender, [AuditRecord._make(values) for values in batch])

    def _idle(self, appender: BatchAppender) -> None:
        problem = appender.problem()
        if problem != self._problem:
            self._problem = problem
            self._send((STATUS, problem))

    def _commit(self, appender: BatchAppender, records: Sequence[AuditRecord]) -> None:
        started = time.perf_counter()
        kind, message, head = _append(appender, records)
        if kind == RECORD_ERROR and len(records) > 1:
            # One record the store cannot take must not fail the others: each goes alone.
            for record in records:
                self._commit(appender, [record])
            return
        if kind != OK:
            self._problem = appender.problem()
        head_id, head_hash = (head.id, head.hash) if head is not None else (None, None)
        self._send(
            (BATCH, len(records), kind, message, head_id, head_hash, time.perf_counter() - started, self._problem)
        )

    def _send(self, value: Any) -> None:
        self._channel.settimeout(None)
        self._channel.sendall(frame(value))


def _append(appender: BatchAppender, records: Sequence[AuditRecord]) -> tuple[int, str | None, Any]:
    try:
        return OK, None, appender.append(records)
    except AuditRecordError as exc:
        return RECORD_ERROR, str(exc), None
    except AuditStoreError as exc:
        return STORE_ERROR, str(exc), None
    except Exception as exc:
        return STORE_ERROR, f"audit store failed: {type(exc).__name__}", None


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        channel = socket.socket(fileno=int(argv[0]))
    except (IndexError, ValueError, OSError):
        print("usage: python -m gateway.audit.recorder FD (started by the gateway, not by hand)", file=sys.stderr)
        return 2
    try:
        return Recorder(channel).run()
    except (BrokenPipeError, ConnectionError):
        return 0  # the gateway went away: nothing is left to answer
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
