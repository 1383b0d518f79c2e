"""Audit records rendered for people (table) and for tools (json, jsonl, csv).

jsonl and csv are written a batch of rows at a time, so ``audit export`` streams millions of
records in constant memory; json (one array) and the table need the whole list.

Callers choose some of what is recorded (a claimed user name, an upstream's app name), and
what is printed may reach a terminal or a spreadsheet: the table escapes control and format
characters (``gateway.terminal``); JSON writes them as JSON escapes, so it stays exact; CSV
neutralises cells a spreadsheet would run as formulas.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import orjson

from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.audit.records import exact_loads, json_default, json_text
from gateway.terminal import printable, printable_json

TABLE_COLUMNS: tuple[tuple[str, Callable[[AuditRecord], object]], ...] = (
    ("id", lambda r: r.id),
    ("time", lambda r: r.time),
    ("outcome", lambda r: r.outcome),
    ("actor", lambda r: r.actor),
    ("org", lambda r: r.org),
    ("token", lambda r: f"…{r.token_hint}" if r.token_hint else None),
    ("app", lambda r: r.app),
    ("status", lambda r: r.upstream_status),
    ("error", lambda r: r.error_code),
    ("client", lambda r: r.client_ip),
    ("request_id", lambda r: r.request_id),
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""OWASP's list: a CSV cell starting with one of these is a formula to Excel, LibreOffice and
Google Sheets (``=HYPERLINK(...)``, ``@SUM(...)``, ``-2+3+cmd|' /C calc'!A0``)."""


_FORMULA_START = frozenset(FORMULA_STARTS)


def spreadsheet_safe(row: Row) -> list[object]:
    """The row with each text cell a spreadsheet would run prefixed with ``'``, which shows it
    as text; numbers and every other cell are left exact."""
    # The cheapest test found: an export runs it on every cell of millions of rows.
    return [f"'{value}" if value.__class__ is str and value[:1] in _FORMULA_START else value for value in row]


class RecordStream:
    """Writes records in a streaming format (jsonl or csv), a batch of rows at a time."""

    def __init__(self, format: str, out: TextIO, *, for_terminal: bool = True) -> None:
        """``for_terminal=False`` writes jsonl as orjson makes it, with the format characters
        JSON leaves raw (C1, bidi...): for a file or a pipe, where scanning for them would cost
        a fifth of an export's speed. JSON escapes the C0 controls either way."""
        if format not in STREAMING:
            raise ValueError(f"{format!r} cannot be streamed; use one of {', '.join(STREAMING)}")
        self._out = out
        self._escape = printable_json if for_terminal else _unchanged
        self._csv = csv.writer(out) if format == "csv" else None
        if self._csv is not None:
            self._csv.writerow(FIELDS)

    def write_rows(self, rows: Iterable[Row]) -> None:
        """Rows in ``FIELDS`` order, as ``AuditStore.rows`` gives them (the csv module writes None as empty)."""
        if self._csv is not None:
            self._csv.writerows(map(spreadsheet_safe, rows))
        else:
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            self._out.write(
                self._escape(
                    "".join(dumps(row_json(row), default=json_default, option=newline).decode() for row in rows)
                )
            )

    def write_all(self, records: Iterable[AuditRecord]) -> None:
        self.write_rows(map(as_row, records))


def _unchanged(text: str) -> str:
    return text


def as_row(record: AuditRecord) -> Row:
    """The record in ``FIELDS`` order (its id first)."""
    return (record[-1], *record[:-1])


_SNAPSHOT = FIELDS.index("snapshot")
_PARAMS = FIELDS.index("params")


def row_json(row: Row) -> dict[str, object]:
    """The record as JSON output shows it (CLI and HTTP API): the snapshot and params as JSON, not text."""
    values: dict[str, object] = dict(zip(FIELDS, row, strict=True))
    # Already JSON text (written by orjson or json): embedded as it is, not parsed again. A cell
    # of another type (a BLOB written behind the gateway's back) is shown as the type it is.
    for index, name in ((_SNAPSHOT, "snapshot"), (_PARAMS, "params")):
        if isinstance(row[index], str):
            values[name] = orjson.Fragment(row[index])
    return values


def as_json(record: AuditRecord) -> dict[str, object]:
    return row_json(as_row(record))


def write_table(records: Sequence[AuditRecord], out: TextIO) -> None:
    """Aligned columns of the fields people scan for; ``audit show`` has the rest."""
    rows = [[_cell(value(record)) for _, value in TABLE_COLUMNS] for record in records]
    header = [name for name, _ in TABLE_COLUMNS]
    write_columns(header, rows, out)


def write_columns(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Aligned columns, each cell with its control and format characters escaped."""
    header, rows = [printable(cell) for cell in header], [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, ["-" * width for width in widths], *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")


def write_json(records: Iterable[AuditRecord], out: TextIO) -> None:
    out.write(
        printable_json(json_text([readable_record(record) for record in records], option=orjson.OPT_INDENT_2)) + "\n"
    )


def write_record(record: AuditRecord, out: TextIO) -> None:
    """One record, whole, as indented JSON (``audit show``)."""
    out.write(printable_json(json_text(readable_record(record), option=orjson.OPT_INDENT_2)) + "\n")


_INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def readable_record(record: AuditRecord) -> dict[str, object]:
    """For people: the snapshot parsed, so that it is indented with the rest.

    A snapshot orjson cannot handle (an integer beyond 64 bits, nesting past 254 levels) is
    embedded as stored, unindented; one that is not JSON at all (an edited file) as a string.
    """
    values = as_json(record)
    if record.snapshot is not None:
        try:
            values["snapshot"] = exact_loads(record.snapshot)
        except (ValueError, RecursionError):
            values["snapshot"] = record.snapshot  # not JSON (an edited file): shown as the text it is
    return values


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _write_streamed(format: str) -> Callable[[Sequence[AuditRecord], TextIO], None]:
    def write(records: Sequence[AuditRecord], out: TextIO) -> None:
        RecordStream(format, out).write_all(records)

    return write


STREAMING = ("jsonl", "csv")
WRITERS: dict[str, Callable[[Sequence[AuditRecord], TextIO], None]] = {
    "table": write_table,
    "json": write_json,
    "jsonl": _write_streamed("jsonl"),
    "csv": _write_streamed("csv"),
}


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
