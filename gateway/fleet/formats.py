"""Fleet records for people and tools: the local formats with the instance first."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import orjson

from gateway.audit.formats import TABLE_COLUMNS, as_json, as_row, row_json, write_columns
from gateway.audit.record import FIELDS, Row
from gateway.fleet.store import Located

_INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def readable(item: Located) -> dict[str, object]:
    values: dict[str, object] = {"instance": item.instance, **as_json(item.record)}
    if item.record.snapshot is not None:
        values["snapshot"] = orjson.loads(item.record.snapshot)
    return values


def write_table(items: Sequence[Located], out: TextIO) -> None:
    header = ["instance", *(name for name, _ in TABLE_COLUMNS)]
    rows = [
        [item.instance, *("-" if (v := value(item.record)) is None else str(v) for _, value in TABLE_COLUMNS)]
        for item in items
    ]
    write_columns(header, rows, out)


def write_json(items: Sequence[Located], out: TextIO) -> None:
    out.write(orjson.dumps([readable(item) for item in items], option=_INDENTED).decode())


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
