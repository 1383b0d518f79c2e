"""The fleet store's schema: columns derived from the audit record, versioned, migrated in order.

The events table holds one column per field of ``gateway.audit.record.FIELDS``, typed from the
record's own annotations, plus the ``instance`` the record came from; a record is identified by
``(instance, id)``. ``fleet_schema`` lists the migrations applied. When the record gains a field,
a migration that adds its column goes at the end of ``MIGRATIONS`` (``add_fields``): until one
does, ``missing_fields()`` names it and the collector refuses to start, and the test suite fails.
A sidecar that ships fields the store does not know is refused (``collector.unknown_fields``),
never truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args, get_type_hints

from gateway.audit.record import FIELDS, AuditRecord

EVENTS = "fleet_events"
INSTANCES = "fleet_instances"
FLAGS = "fleet_flags"
VERSIONS = "fleet_schema"

_SQL_TYPES: dict[type, str] = {str: "TEXT", int: "BIGINT", float: "DOUBLE PRECISION"}
_ALWAYS_SET = frozenset({"id", "prev_hash", "hash"})
"""Optional in a record being made, always set once it is in a chain (as every shipped one is)."""


def column(field: str) -> str:
    """``field``'s column definition, from the record's annotation (``int | None`` -> ``BIGINT``)."""
    annotation = get_type_hints(AuditRecord)[field]
    parts = get_args(annotation) or (annotation,)
    optional = type(None) in parts
    (python_type,) = [part for part in parts if part is not type(None)]
    not_null = " NOT NULL" if field in _ALWAYS_SET or not optional else ""
    return f"{field} {_SQL_TYPES[python_type]}{not_null}"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[], Sequence[str]]
    adds: tuple[str, ...] = ()
    """The record fields whose columns this migration adds."""


V1_FIELDS = (
    "id",
    "request_id",
    "time",
    "actor",
    "client_ip",
    "method",
    "org",
    "token_sha256",
    "token_hint",
    "outcome",
    "upstream_status",
    "error_code",
    "latency_ms",
    "app",
    "client_id",
    "snapshot",
    "token",
    "prev_hash",
    "hash",
)
"""The record's fields when the fleet store was made: version 1's columns, fixed forever."""


def _v1() -> list[str]:
    columns = ",\n    ".join(column(field) for field in V1_FIELDS)
    return [
        f"""CREATE TABLE {EVENTS} (
    instance TEXT NOT NULL,
    {columns},
    PRIMARY KEY (instance, id)
)""",
        # The questions of the local log (token; actor over time; org and outcome; time), plus instance.
        f"CREATE INDEX {EVENTS}_token ON {EVENTS} (token_sha256, time)",
        f"CREATE INDEX {EVENTS}_actor ON {EVENTS} (actor, time)",
        f"CREATE INDEX {EVENTS}_org ON {EVENTS} (org, outcome, time)",
        f"CREATE INDEX {EVENTS}_time ON {EVENTS} (time)",
        f"CREATE INDEX {EVENTS}_instance_time ON {EVENTS} (instance, time)",
        f"""CREATE TABLE {INSTANCES} (
    instance TEXT PRIMARY KEY,
    head_id BIGINT NOT NULL DEFAULT 0,
    head_hash TEXT NOT NULL,
    head_time TEXT,
    start_id BIGINT,
    start_hash TEXT,
    chain_mode TEXT,
    key_check TEXT,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_batch TIMESTAMPTZ
)""",
        f"""CREATE TABLE {FLAGS} (
    id BIGSERIAL PRIMARY KEY,
    instance TEXT NOT NULL,
    time TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind TEXT NOT NULL,
    record_id BIGINT,
    detail TEXT NOT NULL,
    peer TEXT
)""",
        f"CREATE INDEX {FLAGS}_instance ON {FLAGS} (instance, time)",
    ]


def add_fields(*fields: str) -> Callable[[], list[str]]:
    """The statements of a migration that adds record fields as columns (typed from the record)."""
    return lambda: [f"ALTER TABLE {EVENTS} ADD COLUMN {column(field)}" for field in fields]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events, instances and flags; indexes by token, actor, org, time and instance", _v1, V1_FIELDS),
    Migration(
        2,
        "what a call does and acts on: action, resource_type, resource, params",
        lambda: [
            *add_fields("action", "resource_type", "resource", "params")(),
            f"CREATE INDEX {EVENTS}_action ON {EVENTS} (action, time)",
        ],
        ("action", "resource_type", "resource", "params"),
    ),
)
"""In order; ``MIGRATIONS[i].version == i + 1``. Never edit one that has shipped: add the next."""
SCHEMA_VERSION = MIGRATIONS[-1].version
CREATE_VERSIONS = f"""CREATE TABLE IF NOT EXISTS {VERSIONS} (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def stored_fields() -> tuple[str, ...]:
    """The record fields the schema at ``SCHEMA_VERSION`` has columns for, in ``FIELDS`` order."""
    added = {field for migration in MIGRATIONS for field in migration.adds}
    return tuple(field for field in FIELDS if field in added)


def missing_fields() -> tuple[str, ...]:
    """Record fields no migration adds: a record change that forgot its migration."""
    added = {field for migration in MIGRATIONS for field in migration.adds}
    return tuple(field for field in FIELDS if field not in added)
