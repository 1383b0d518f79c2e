"""Records read as JSON that SQLite builds: the shipper's read in a busy process.

Read a row at a time, every row is a step of the statement, and after each step the reading
thread waits for the GIL that the gateway's event loop holds: under full load 1,000 rows took
0.1 to 2.7 s, and the shipping lag grew past a second. Built by SQLite as JSON, up to
``CHUNK`` records (or about ``CHUNK_TEXT`` bytes of text) are one value and one step; a large
batch's values are then decoded in a worker thread, one at a time, so the event loop waits at
most one value's decoding (a small batch is decoded at once: the trip costs more).

The rows must be exactly the ones the row walk gives, since the collector recomputes every hash
from them. SQLite's JSON keeps only 15 digits of a real, and its ``printf`` is not exact on every
version, so a real travels as the two integers that make it (``mantissa * 2**exponent``, found
with exact operations: a division by a power of two). A BLOB (never written by the gateway: the
file was edited) would be refused (SQLite 3.40) or read as binary JSON (3.45+): a chunk holding
one says so, and the caller reads those records row by row instead.
"""

from __future__ import annotations

import math
from operator import itemgetter

import orjson

from gateway.audit.record import FIELDS, Row

CHUNK = 128
"""Records per JSON value, at most: a few steps per batch."""
INLINE_BYTES = 256 * 1024
"""Chunks smaller than this together (about a millisecond of decoding) are decoded where they
are read: a trip to a worker thread costs more than that on a busy event loop."""
CHUNK_TEXT = 1 << 20
"""Bytes of snapshots and parameters per JSON value, about (a record that alone holds more
is a value of its own): values far below SQLite's 1 GB limit, and a hold of the GIL of a few
milliseconds for each one's decoding, where a batch of large snapshots decoded whole held it for
a third of a second."""
NUMERIC_FIELDS = ("upstream_status", "latency_ms")
"""The columns besides ``id`` that may hold a real number (the REAL column, and the INTEGER one
keeping a real it could not convert)."""
_EXPONENT = "(max(CAST(floor(log2(abs({0}))) AS INTEGER), -1021) - 53)"
"""A power of two at least 2**53 times smaller than the real (clamped so that it stays a
double): dividing by it gives an integer below 2**56, exactly, even if ``log2`` is one off."""
_REAL = (
    "CASE WHEN {0} = 0 OR abs({0}) > 1.7976931348623157e308 THEN json_array(printf('%!.20e', {0})) "
    f"ELSE json_array(CAST({{0}} / power(2, {_EXPONENT}) AS INTEGER), {_EXPONENT}) END"
)
"""Zero and the infinities, which ``printf`` writes exactly, as text; every other real as the
two integers."""
_first = itemgetter(0)
_NUMERIC = [FIELDS.index(field) for field in NUMERIC_FIELDS]


def _value(field: str) -> str:
    if field == "id":
        return field
    if field in NUMERIC_FIELDS:
        return f"CASE typeof({field}) WHEN 'real' THEN {_REAL.format(field)} WHEN 'blob' THEN NULL ELSE {field} END"
    return f"CASE typeof({field}) WHEN 'blob' THEN NULL ELSE {field} END"


def batch_sql(rows_sql: str) -> str:
    """The statement reading ``rows_sql`` (a SELECT of ``FIELDS`` in id order, which may end in
    a LIMIT) as JSON values of ``CHUNK`` records each, with a flag per chunk: it holds a BLOB."""
    values = ", ".join(_value(field) for field in FIELDS)
    blobs = " OR ".join(f"typeof({field}) = 'blob'" for field in FIELDS if field != "id")
    # Bytes, not characters: JSON's size follows them, and length() of text stops at a NUL.
    text = "coalesce(length(CAST(snapshot AS BLOB)), 0) + coalesce(length(CAST(params AS BLOB)), 0)"
    return (
        f"SELECT CAST(json_group_array(json_array({values})) AS BLOB), max({blobs}) "
        f"FROM (SELECT *, sum({text}) OVER (ORDER BY id) AS text_so_far FROM ({rows_sql})) "
        f"GROUP BY id / {CHUNK}, (text_so_far - 1) / {CHUNK_TEXT}"
    )


class NotValidText(ValueError):
    """A record's text is not valid UTF-8 (the file was edited); never quoted, it may be a secret."""


def decode(chunks: list[tuple[bytes, int]]) -> list[Row] | None:
    """The rows ``batch_sql`` read, in id order; None when a chunk holds a BLOB."""
    if any(blob for _, blob in chunks):
        return None
    rows: list[Row] = []
    for chunk, _ in chunks:
        try:
            records = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            raise NotValidText("a record holds text that is not valid UTF-8") from None
        for record in records:
            for index in _NUMERIC:
                value = record[index]
                if type(value) is list:
                    record[index] = float(value[0]) if len(value) == 1 else math.ldexp(value[0], value[1])
            rows.append(tuple(record))
    rows.sort(key=_first)  # in id order already; sorted whatever SQLite's plan
    return rows
