"""The frames the gateway and its audit recorder process exchange over their socketpair.

A frame is a 4-byte big-endian length, then the value in ``marshal``'s format: the standard
library's, written and read in C, and exact for what a record holds (text, lone surrogates
included, integers of any size, floats, None). ``marshal`` is only for a peer one trusts: both
ends are this package, over a socketpair no other process holds, and nothing is written to disk.

    gateway -> recorder   HELLO first (where the log is, the chain key, the settings), then
                          one record per frame, in the order the chain will take them
    recorder -> gateway   READY or FAILED once; then one BATCH per commit (its records are the
                          oldest still waiting), and STATUS when the log's file changes
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
"""A frame longer than this is not one of ours: the stream is out of step, and is given up."""

READY, FAILED, BATCH, STATUS = 0, 1, 2, 3
"""What the recorder says (the first item of its frames)."""
OK, STORE_ERROR, RECORD_ERROR = 0, 1, 2
"""How a batch went: committed; not committed (the store failed); one record it cannot take."""


class FrameError(Exception):
    """The byte stream is not a sequence of frames (out of step, or not from our peer)."""


def frame(value: Any) -> bytes:
    data = marshal.dumps(value)
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Whole frames out of a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        values: list[Any] = []
        start, end = 0, len(buffer)
        while end - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise FrameError(f"a frame of {length} bytes: the stream is out of step")
            if end - start - HEADER.size < length:
                break
            body = start + HEADER.size
            try:
                values.append(marshal.loads(buffer[body : body + length]))
            except (EOFError, ValueError, TypeError) as exc:
                raise FrameError(f"a frame that cannot be read: {exc}") from None
            start = body + length
        del buffer[:start]
        return values
