"""Fleet records for people and tools: the local formats with the instance first."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import orjson

from gateway.audit.formats import TABLE_COLUMNS, as_row, readable_record, row_json, write_columns
from gateway.audit.record import FIELDS, Row
from gateway.audit.records import json_text
from gateway.fleet.store import Located
from gateway.terminal import printable_json


def readable(item: Located) -> dict[str, object]:
    """As the local ``audit query --format json`` shows a record (a snapshot that is not JSON as
    its text, never an error), with the instance first."""
    return {"instance": item.instance, **readable_record(item.record)}


def write_record(item: Located, out: TextIO) -> None:
    """One record, whole, as indented JSON (``audit show --store``)."""
    out.write(printable_json(json_text(readable(item), option=orjson.OPT_INDENT_2)) + "\n")


def write_table(items: Sequence[Located], out: TextIO) -> None:
    header = ["instance", *(name for name, _ in TABLE_COLUMNS)]
    rows = [
        [item.instance, *("-" if (v := value(item.record)) is None else str(v) for _, value in TABLE_COLUMNS)]
        for item in items
    ]
    write_columns(header, rows, out)


def write_json(items: Sequence[Located], out: TextIO) -> None:
    out.write(printable_json(json_text([readable(item) for item in items], option=orjson.OPT_INDENT_2)) + "\n")


class LocatedStream:
    """jsonl or csv of (instance, *FIELDS) rows, a batch at a time."""

    def __init__(self, format: str, out: TextIO) -> None:
        self._out = out
        self._csv = csv.writer(out) if format == "csv" else None
        if self._csv is not None:
            self._csv.writerow(("instance", *FIELDS))

    def write_rows(self, rows: Iterable[Row]) -> None:
        if self._csv is not None:
            self._csv.writerows(rows)
        else:
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            self._out.write(
                "".join(dumps({"instance": row[0], **row_json(row[1:])}, option=newline).decode() for row in rows)
            )


Writer = Callable[[Sequence[Located], TextIO], None]


def write_streamed(format: str) -> Writer:
    def write(items: Sequence[Located], out: TextIO) -> None:
        LocatedStream(format, out).write_rows((item.instance, *as_row(item.record)) for item in items)

    return write


WRITERS: dict[str, Writer] = {
    "table": write_table,
    "json": write_json,
    "jsonl": write_streamed("jsonl"),
    "csv": write_streamed("csv"),
}
