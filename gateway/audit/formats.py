"""Audit records rendered for people (table) and for tools (json, jsonl, csv)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from gateway.audit.record import FIELDS, AuditRecord

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


def write_table(records: Sequence[AuditRecord], out: TextIO) -> None:
    """Aligned columns of the fields people scan for; ``audit show`` has the rest."""
    rows = [[_cell(value(record)) for _, value in TABLE_COLUMNS] for record in records]
    header = [name for name, _ in TABLE_COLUMNS]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for line in (header, ["-" * width for width in widths], *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() + "\n")


def write_json(records: Iterable[AuditRecord], out: TextIO) -> None:
    json.dump([record.to_json() for record in records], out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_jsonl(records: Iterable[AuditRecord], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n")


def write_csv(records: Iterable[AuditRecord], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for record in records:
        writer.writerow(["" if (value := getattr(record, name)) is None else value for name in FIELDS])


WRITERS: dict[str, Callable[[Sequence[AuditRecord], TextIO], None]] = {
    "table": write_table,
    "json": write_json,
    "jsonl": write_jsonl,
    "csv": write_csv,
}


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
