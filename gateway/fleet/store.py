"""The fleet store: every sidecar's records in PostgreSQL (or an engine speaking its protocol).

``FleetStore`` offers the readers of ``SQLiteAuditStore`` (``query``, ``get``, ``head``, ``rows``,
``stats``, ``first_id``, ``size``, ``chain_mode``, ``pruned_hash``, ``checkpoint_before``,
``close``) with one more dimension, the instance: a store ``scoped`` to one instance answers
exactly as that sidecar's own log would; an unscoped one answers across the fleet, and
``located`` / ``fleet_rows`` say which instance each record came from.

PostgreSQL text cannot hold U+0000, which an SQLite log can (a user name claimed in refused
credentials, say). Such a value, and one starting with U+0001, is stored as U+0001 followed by
its JSON string (``to_text`` / ``from_text``), so every record is kept exactly and its hash
still checks; filters are encoded the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.audit.chain import EMPTY, Head
from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.audit.sql import COMPARISONS, EQUALITY_FILTERS, STATS_EXPRESSIONS
from gateway.audit.store import AuditStoreError
from gateway.fleet.schema import (
    CREATE_VERSIONS,
    EVENTS,
    FLAGS,
    INSTANCES,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSIONS,
    missing_fields,
)

_RECORD_COLUMNS = ", ".join(AuditRecord._fields)
_ROW_COLUMNS = ", ".join(FIELDS)
STATS_GROUPS = {**STATS_EXPRESSIONS, "instance": "instance"}
_ESCAPED = "\x01"
_TEXT_COLUMNS = frozenset(
    index for index, field in enumerate(FIELDS) if field not in ("id", "upstream_status", "latency_ms")
)


def to_text(value: Any) -> Any:
    """A value as the store keeps it: text with U+0000 (or starting with U+0001) escaped."""
    if isinstance(value, str) and ("\x00" in value or value.startswith(_ESCAPED)):
        return _ESCAPED + json.dumps(value)
    return value


def from_text(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_ESCAPED):
        return json.loads(value[1:])
    return value


def stored_row(row: Sequence[Any]) -> tuple[Any, ...]:
    # One scan of the row's text finds the rare value to escape: a call per value was a sixth
    # of the collector's time.
    text = "".join([value for value in row if type(value) is str])
    if "\x00" not in text and _ESCAPED not in text:
        return tuple(row)
    return tuple(to_text(value) for value in row)


def _decoded(values: Sequence[Any]) -> tuple[Any, ...]:
    """A row as read, with any escaped text restored (one pass; most rows have none)."""
    if any(isinstance(value, str) and value.startswith(_ESCAPED) for value in values):
        return tuple(from_text(value) for value in values)
    return tuple(values)


@dataclass(frozen=True, slots=True)
class Located:
    """A record of the fleet, with the instance it came from."""

    instance: str
    record: AuditRecord


@dataclass(frozen=True, slots=True)
class InstanceState:
    instance: str
    head: Head
    head_time: str | None
    start: Head
    """Where the instance's chain starts in the store (EMPTY: at its genesis)."""
    chain_mode: str | None
    key_check: str | None
    first_seen: datetime
    last_seen: datetime
    """Its last authenticated contact (a batch, or the shipper asking for its mark)."""
    quiet_seconds: float
    """Seconds since ``last_seen``, by the database's clock (which wrote it): a reader on a host
    whose clock is off must not find every instance silent, or none."""


@dataclass(frozen=True, slots=True)
class Flag:
    instance: str
    time: datetime
    kind: str
    record_id: int | None
    detail: str


class StoreVersionError(AuditStoreError):
    """The store's schema is not the one this code reads or writes."""


def describe(url: str) -> str:
    """A database URL without anything secret, for messages."""
    head, _, rest = url.partition("://")
    return f"{head}://{rest.rpartition('@')[2]}" if rest else url


async def connect_pool(url: str, *, password: str | None = None, size: int = 4) -> asyncpg.Pool:
    """A connection pool, or AuditStoreError naming the database (never its password)."""
    try:
        pool = await asyncpg.create_pool(url, password=password, min_size=1, max_size=size, command_timeout=60)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, OverflowError) as exc:
        # OverflowError: a port out of range given as a parameter (``?port=99999``).
        raise AuditStoreError(f"cannot connect to the fleet store {describe(url)}: {_reason(exc)}") from None
    assert pool is not None
    return pool


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def migrate(pool: asyncpg.Pool, url: str) -> int:
    """Bring the schema to ``SCHEMA_VERSION``, each migration in its own transaction; the version
    it had before. A newer schema, or a record field no migration adds, stops with a clear error."""
    missing = missing_fields()
    if missing:
        raise StoreVersionError(
            f"the audit record has fields no fleet migration adds ({', '.join(missing)}): "
            "add one to gateway.fleet.schema.MIGRATIONS"
        )
    async with pool.acquire() as db:
        await db.execute(CREATE_VERSIONS)
        before = int(await db.fetchval(f"SELECT coalesce(max(version), 0) FROM {VERSIONS}"))
        if before > SCHEMA_VERSION:
            raise StoreVersionError(
                f"the fleet store {describe(url)} has schema version {before}, newer than this "
                f"gateway's {SCHEMA_VERSION}: upgrade the gateway"
            )
        for migration in MIGRATIONS[before:]:
            async with db.transaction():
                # The version row first: a second collector migrating at the same time fails on
                # its key, rolls back, and finds the work done when it starts again.
                await db.execute(
                    f"INSERT INTO {VERSIONS} (version, description) VALUES ($1, $2)",
                    migration.version,
                    migration.description,
                )
                for statement in migration.statements():
                    await db.execute(statement)
    return before


async def schema_version(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as db:
        exists = await db.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSIONS)
        if not exists:
            return 0
        return int(await db.fetchval(f"SELECT coalesce(max(version), 0) FROM {VERSIONS}"))


class FleetStore:
    """Reads the fleet store; ``instance`` (``scoped``) narrows every answer to one sidecar."""

    def __init__(self, pool: asyncpg.Pool, url: str, instance: str | None = None, *, owns_pool: bool = True) -> None:
        self._pool = pool
        self.url = url
        self.instance = instance
        self._owns_pool = owns_pool

    @property
    def path(self) -> str:
        """What messages name this store by (the SQLite store's is its file)."""
        where = describe(self.url)
        return where if self.instance is None else f"{where} (instance {self.instance})"

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @classmethod
    async def open(
        cls, url: str, *, password: str | None = None, instance: str | None = None, pool_size: int = 4
    ) -> FleetStore:
        """For reading: the schema must be the one this code knows (the collector migrates it)."""
        pool = await connect_pool(url, password=password, size=pool_size)
        try:
            version = await schema_version(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await pool.close()
            raise AuditStoreError(f"cannot read the fleet store {describe(url)}: {_reason(exc)}") from None
        if version != SCHEMA_VERSION:
            await pool.close()
            if version == 0:
                raise StoreVersionError(
                    f"{describe(url)} holds no fleet store: start `gateway collect` on it once to create it"
                )
            if version < SCHEMA_VERSION:
                raise StoreVersionError(
                    f"the fleet store {describe(url)} has schema version {version}; start this "
                    f"version's `gateway collect` on it once to migrate it to {SCHEMA_VERSION}"
                )
            raise StoreVersionError(
                f"the fleet store {describe(url)} has schema version {version}, newer than this "
                f"gateway's {SCHEMA_VERSION}: upgrade the gateway"
            )
        return cls(pool, url, instance)

    def scoped(self, instance: str | None) -> FleetStore:
        """The same store, narrowed to one instance (sharing the connections)."""
        return FleetStore(self._pool, self.url, instance, owns_pool=False)

    # Readers of the audit store -----------------------------------------------------------

    async def query(self, selection: AuditFilter) -> list[AuditRecord]:
        """Records matching ``selection``, newest first (within the scope)."""
        return [located.record for located in await self.located(selection)]

    async def located(self, selection: AuditFilter, after: tuple[str, str, int] | None = None) -> list[Located]:
        """Like ``query``, with each record's instance. ``after`` is a keyset cursor
        (time, instance, id) of the fleet-wide order: newest first, then instance, then id."""
        where, params = self._where(selection)
        if after is not None:
            where, params = _and(where, params, "(time, instance, id) < ($%d, $%d, $%d)", list(after))
        limit = ""
        if selection.limit is not None:
            params.append(selection.limit)
            limit = f"LIMIT ${len(params)}"
        rows = await self._fetch(
            f"SELECT instance, {_RECORD_COLUMNS} FROM {EVENTS} {where} ORDER BY time DESC, instance DESC, id DESC {limit}",
            params,
        )
        return [Located(row[0], AuditRecord._make(row[1:])) for row in rows]

    async def get(self, record_id: int) -> AuditRecord | None:
        rows = await self._fetch(
            f"SELECT {_RECORD_COLUMNS} FROM {EVENTS} WHERE instance = $1 AND id = $2", [self._one_instance(), record_id]
        )
        return AuditRecord._make(rows[0]) if rows else None

    async def head(self) -> Head:
        rows = await self._fetch(
            f"SELECT id, hash FROM {EVENTS} WHERE instance = $1 ORDER BY id DESC LIMIT 1", [self._one_instance()]
        )
        return Head(int(rows[0][0]), str(rows[0][1])) if rows else EMPTY

    async def chain_mode(self) -> tuple[str, str | None]:
        """The kind of chain the instance's sidecar said it keeps, and its key check."""
        rows = await self._fetch(
            f"SELECT chain_mode, key_check FROM {INSTANCES} WHERE instance = $1", [self._one_instance()]
        )
        if not rows or rows[0][0] is None:
            return "sha256", None
        return str(rows[0][0]), rows[0][1]

    async def pruned_hash(self, record_id: int) -> str | None:
        for record in await self._checkpoints():
            details = json.loads(record.snapshot or "{}")
            if details.get("pruned_through_id") == record_id:
                return str(details["last_pruned_hash"])
        return None

    async def checkpoint_before(self, first_id: int) -> AuditRecord | None:
        for record in await self._checkpoints():
            if record.snapshot and json.loads(record.snapshot).get("pruned_through_id") == first_id - 1:
                return record
        return None

    async def _checkpoints(self) -> list[AuditRecord]:
        rows = await self._fetch(
            f"SELECT {_RECORD_COLUMNS} FROM {EVENTS} WHERE instance = $1 AND outcome = 'pruned' ORDER BY id DESC",
            [self._one_instance()],
        )
        return [AuditRecord._make(row) for row in rows]

    async def first_id(self) -> int | None:
        rows = await self._fetch(f"SELECT min(id) FROM {EVENTS} WHERE instance = $1", [self._one_instance()])
        return None if rows[0][0] is None else int(rows[0][0])

    async def size(self) -> int:
        """Records held: of the instance in scope, or of the whole fleet."""
        if self.instance is None:
            rows = await self._fetch(f"SELECT coalesce(sum(head_id - coalesce(start_id, 0)), 0) FROM {INSTANCES}", [])
            return int(rows[0][0])
        first = await self.first_id()
        return 0 if first is None else (await self.head()).id - first + 1

    async def rows(self, selection: AuditFilter | None = None, size: int = 5000) -> AsyncGenerator[list[Row], None]:
        """Matching records as rows in ``FIELDS`` order, oldest first (by instance, then id)."""
        async for batch in self.fleet_rows(selection, size):
            yield [row[1:] for row in batch]

    async def fleet_rows(
        self, selection: AuditFilter | None = None, size: int = 5000
    ) -> AsyncGenerator[list[Row], None]:
        """Matching records as rows of (instance, *FIELDS), by instance then id, a batch at a
        time: keyset pages, so no transaction stays open however long the walk takes."""
        where, params = self._where(selection or AuditFilter())
        position: tuple[str, int] = ("", 0)
        while True:
            paged, paged_params = _and(where, list(params), "(instance, id) > ($%d, $%d)", list(position))
            paged_params.append(size)
            batch = await self._fetch(
                f"SELECT instance, {_ROW_COLUMNS} FROM {EVENTS} {paged} ORDER BY instance, id LIMIT ${len(paged_params)}",
                paged_params,
            )
            if not batch:
                return
            yield batch
            if len(batch) < size:
                return
            position = (batch[-1][0], batch[-1][1])

    async def stats(
        self, by: str, selection: AuditFilter, *, include_intents: bool = False
    ) -> list[tuple[str | None, int]]:
        expression = STATS_GROUPS[by]
        where, params = self._where(selection)
        if not include_intents:
            where, params = _and(where, params, "outcome != 'pending'", [])
        rows = await self._fetch(
            f"SELECT {expression} AS grouped, count(*) FROM {EVENTS} {where} GROUP BY grouped ORDER BY 2 DESC, 1",
            params,
        )
        return [(None if row[0] is None else str(row[0]), int(row[1])) for row in rows]

    # The fleet ------------------------------------------------------------------------------

    async def instances(self) -> list[InstanceState]:
        clause, params = ("WHERE instance = $1", [self.instance]) if self.instance is not None else ("", [])
        rows = await self._fetch(
            f"SELECT instance, head_id, head_hash, head_time, start_id, start_hash, chain_mode, key_check, first_seen, "
            f"last_seen, extract(epoch FROM now() - last_seen)::float8 FROM {INSTANCES} {clause} ORDER BY instance",
            params,
        )
        return [
            InstanceState(
                row[0],
                Head(int(row[1]), str(row[2])),
                row[3],
                Head(int(row[4]), str(row[5])) if row[4] is not None else EMPTY,
                row[6],
                row[7],
                row[8],
                row[9],
                float(row[10]),
            )
            for row in rows
        ]

    async def unmarked(self) -> list[tuple[str, int]]:
        """Instances (in scope) with records but no mark in ``fleet_instances``, and how many
        records each: the collector never writes one without the other, so an edit of the store."""
        clause, params = ("WHERE instance = $1", [self.instance]) if self.instance is not None else ("", [])
        rows = await self._fetch(
            f"SELECT instance, count(*) FROM {EVENTS} {clause} GROUP BY instance HAVING NOT EXISTS "
            f"(SELECT 1 FROM {INSTANCES} i WHERE i.instance = {EVENTS}.instance) ORDER BY instance",
            params,
        )
        return [(str(row[0]), int(row[1])) for row in rows]

    async def flags(self) -> list[Flag]:
        clause, params = ("WHERE instance = $1", [self.instance]) if self.instance is not None else ("", [])
        rows = await self._fetch(
            f"SELECT instance, time, kind, record_id, detail FROM {FLAGS} {clause} ORDER BY time, id", params
        )
        return [Flag(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    # Helpers -------------------------------------------------------------------------------

    def _one_instance(self) -> str:
        if self.instance is None:
            raise AuditStoreError("a fleet record is identified by its instance and id: give --instance")
        return self.instance

    def _where(self, selection: AuditFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []

        def add(clause: str, *values: Any) -> None:
            params.extend(values)
            clauses.append(clause % tuple(range(len(params) - len(values) + 1, len(params) + 1)))

        if self.instance is not None:
            add("instance = $%d", self.instance)
        for column in EQUALITY_FILTERS:
            value = getattr(selection, column)
            if value is not None:
                add(f"{column} = $%d", to_text(value))
        if selection.client_id is not None:  # its fingerprint, or the key itself in records before schema 4
            add("client_id IN ($%d, $%d)", fingerprint(selection.client_id), to_text(selection.client_id))
        for name, condition in COMPARISONS:
            value = getattr(selection, name)
            if value is not None:
                add(condition.format("$%d"), value)
        if selection.before is not None:
            add("(time, id) < ($%d, $%d)", *selection.before)
        if selection.orgs is not None:
            add("org = ANY($%d::text[])", [to_text(org) for org in sorted(selection.orgs)])
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.acquire() as db:
                return [_decoded(tuple(row.values())) for row in await db.fetch(sql, *params)]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise AuditStoreError(f"cannot read the fleet store {describe(self.url)}: {_reason(exc)}") from None


def _and(where: str, params: list[Any], clause: str, values: list[Any]) -> tuple[str, list[Any]]:
    """``where`` with one more condition, its ``$%d`` placeholders numbered after ``params``."""
    numbered = clause % tuple(range(len(params) + 1, len(params) + len(values) + 1))
    return (f"{where} AND {numbered}" if where else f"WHERE {numbered}"), [*params, *values]
