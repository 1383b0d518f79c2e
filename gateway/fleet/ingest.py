"""One batch from one sidecar: checked against what the store holds, then written in one transaction.

The collector never takes a sidecar's word for continuity. Under a lock on the instance's row it
compares the batch with the instance's high-water mark: records it already holds must be
identical (same hash; a resent batch changes no record), the first new one must take the next id
and link to the held head, and every new one must link to the one before and, when the
collector can compute it (a plain chain, or a keyed one whose key it is given), match its hash.
A gap, a fork or a rewrite refuses the whole batch; the refusal is flagged and nothing is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import asyncpg
import orjson

from gateway.audit.chain import GENESIS, ChainKey, ChainWalker, Head
from gateway.audit.record import FIELDS, Row
from gateway.errors import GatewayError
from gateway.fleet import protocol
from gateway.fleet.schema import EVENTS, FLAGS, INSTANCES
from gateway.fleet.store import stored_row
from gateway.fleet.values import MAX_ID, chain_problem, row_problem

_ID, _PREV, _HASH = 0, len(FIELDS) - 2, len(FIELDS) - 1
_CHAIN_MODES = ("sha256", "hmac-sha256")
_COLUMNS = ", ".join(("instance", *FIELDS))
_SERIALIZATION_FAILURE = "40001"
Connection = Union[asyncpg.Connection, "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"]


class Refused(Exception):
    """The batch is refused: an HTTP error to answer, and for chain problems a flag to keep."""

    def __init__(self, error: GatewayError, message: str, record_id: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.record_id = record_id

    @property
    def flag(self) -> str | None:
        return protocol.FLAGGED.get(self.error.code)


@dataclass(frozen=True)
class Batch:
    fields: tuple[str, ...]
    mode: str
    key_check: str | None
    rows: list[Row]


@dataclass(frozen=True)
class Mark:
    head: Head
    accepted: int = 0
    duplicates: int = 0


def parse_batch(body: bytes, max_batch: int) -> Batch:
    """The batch in ``body``, or Refused saying what is wrong with it (naming the record)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(protocol.BAD_BATCH, f"The batch is not JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("records"), list)
        or not isinstance(data.get("fields"), list)
    ):
        raise Refused(protocol.BAD_BATCH, 'The batch must be an object with "fields", "chain" and "records"')
    fields = tuple(data["fields"])
    if fields != FIELDS:
        unknown = [str(name) for name in fields if name not in FIELDS]
        missing = [name for name in FIELDS if name not in fields]
        if unknown:
            raise Refused(
                protocol.UNKNOWN_FIELDS,
                f"The batch has record fields this collector does not know "
                f"({', '.join(unknown)}): upgrade the collector before the sidecars",
            )
        if missing:
            raise Refused(
                protocol.UNKNOWN_FIELDS,
                f"The batch lacks record fields this collector's store has ({', '.join(missing)}): upgrade the sidecar",
            )
        raise Refused(
            protocol.UNKNOWN_FIELDS, f"The batch's fields are not in the record's order ({', '.join(FIELDS)})"
        )
    chain = data.get("chain")
    if not isinstance(chain, dict):
        chain = {}
    problem = chain_problem(chain.get("mode"), chain.get("key_check"))
    if problem is not None:
        raise Refused(
            protocol.BAD_BATCH,
            f'"chain" must be {{"mode": one of {", ".join(_CHAIN_MODES)}, "key_check": its key check or null}}: '
            f"{problem}",
        )
    records = data["records"]
    if not records:
        raise Refused(protocol.BAD_BATCH, "The batch holds no record")
    if len(records) > max_batch:
        raise Refused(
            protocol.BATCH_TOO_LARGE, f"The batch holds {len(records)} records; at most {max_batch} are taken at once"
        )
    for position, row in enumerate(records):
        _check_row(position, row)
    return Batch(fields, chain["mode"], chain["key_check"], records)


def _check_row(position: int, row: Any) -> None:
    """Each value of the row as the sidecar's own log could hold it (``gateway.fleet.values``)."""
    if not isinstance(row, list) or len(row) != len(FIELDS):
        raise Refused(protocol.BAD_BATCH, f"Record {position} of the batch is not a list of {len(FIELDS)} values")
    problem = row_problem(row)
    if problem is not None:
        raise Refused(protocol.BAD_BATCH, f"Record {position} of the batch{_named(row)}: {problem}")


def _named(row: list[Any]) -> str:
    record_id = row[_ID]
    ok = isinstance(record_id, int) and not isinstance(record_id, bool)
    return f" (id {record_id})" if ok and 0 < record_id <= MAX_ID else ""


def check_chain(batch: Batch, held: Head, key: ChainKey | None) -> None:
    """Refused unless the batch's new records (after ``held``) continue the held chain.
    ``key``: how to compute hashes; None when the collector cannot (a keyed log without its key),
    then only links are checked."""
    rows = batch.rows
    first_id = rows[0][_ID]
    for offset, row in enumerate(rows):
        if row[_ID] != first_id + offset:
            raise Refused(
                protocol.CHAIN_GAP,
                f"The batch's ids are not consecutive: record {row[_ID]} follows record {rows[offset - 1][_ID]}",
                row[_ID],
            )
    new = [row for row in rows if row[_ID] > held.id]
    if not new:
        return
    if new[0][_ID] != held.id + 1:
        missing = held.id + 1, new[0][_ID] - 1
        span = f"record {missing[0]}" if missing[0] == missing[1] else f"records {missing[0]}-{missing[1]}"
        raise Refused(
            protocol.CHAIN_GAP,
            f"{span} missing: the collector holds up to record {held.id} and the batch starts at {new[0][_ID]}",
            new[0][_ID],
        )
    if key is not None:
        problem = ChainWalker(key, held).check(new)
        if problem is not None:
            bad = int(problem.split(":")[0].split()[1])
            if "does not link" in problem:
                raise Refused(protocol.CHAIN_FORK, _fork(bad, held), bad)
            raise Refused(protocol.CHAIN_REWRITE, f"{problem}: the record does not match its hash", bad)
        return
    previous = held.hash
    for row in new:
        if row[_PREV] != previous:
            raise Refused(protocol.CHAIN_FORK, _fork(row[_ID], held), row[_ID])
        previous = row[_HASH]


def _fork(record_id: int, held: Head) -> str:
    if record_id == held.id + 1:
        return (
            f"record {record_id} does not link to record {held.id} as the collector holds it: the sidecar's log "
            "forked from or rewrote what it shipped before"
        )
    return f"record {record_id} does not link to the record before it in the batch"


class Ingest:
    """Writes checked batches to the store. One instance's batches are serialised by a row lock;
    different instances' go on in parallel."""

    def __init__(self, pool: asyncpg.Pool, keys: dict[str, ChainKey], *, retries: int = 5) -> None:
        self._pool = pool
        self._keys = keys
        """Chain keys of keyed instances, from the collector's [[sidecars]]."""
        self._retries = retries

    async def mark(self, instance: str) -> Head:
        """The instance's high-water mark; counts as a contact (``last_seen``), also for a sidecar
        that has shipped nothing yet (an empty log): verify tells it from one never heard of."""
        async with self._pool.acquire() as db:
            row = await db.fetchrow(
                f"INSERT INTO {INSTANCES} (instance, head_hash) VALUES ($1, $2) ON CONFLICT (instance) "
                "DO UPDATE SET last_seen = now() RETURNING head_id, head_hash",
                instance,
                GENESIS,
            )
        assert row is not None
        return Head(int(row[0]), str(row[1]))

    async def write(self, instance: str, batch: Batch) -> Mark:
        """Store what is new in ``batch`` in one transaction, retried on serialization failures
        (CockroachDB, YugabyteDB); Refused (nothing stored) when it does not continue the chain."""
        for attempt in range(self._retries + 1):
            try:
                async with self._pool.acquire() as db, db.transaction():
                    return await self._write(db, instance, batch)
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) != _SERIALIZATION_FAILURE or attempt == self._retries:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def _write(self, db: Connection, instance: str, batch: Batch) -> Mark:
        await db.execute(
            f"INSERT INTO {INSTANCES} (instance, head_hash) VALUES ($1, $2) ON CONFLICT (instance) DO NOTHING",
            instance,
            GENESIS,
        )
        state = await db.fetchrow(
            f"SELECT head_id, head_hash, chain_mode, key_check, start_id FROM {INSTANCES} WHERE instance = $1 FOR UPDATE",
            instance,
        )
        assert state is not None
        held = Head(int(state["head_id"]), str(state["head_hash"]))
        key = self._key_for(instance, batch, state["chain_mode"], state["key_check"])
        rows = batch.rows
        duplicates = await self._compare_held(
            db, instance, [row for row in rows if row[_ID] <= held.id], state["start_id"]
        )
        starts_late = held.id == 0 and rows[0][_ID] > 1 and state["start_id"] is None
        if starts_late:
            # First contact with a sidecar whose log was pruned before it shipped: its chain is
            # taken from where the batch starts, and verify says so.
            held = Head(rows[0][_ID] - 1, rows[0][_PREV])
        check_chain(batch, held, key)
        new = [row for row in rows if row[_ID] > held.id]
        if not new:
            await db.execute(f"UPDATE {INSTANCES} SET last_seen = now() WHERE instance = $1", instance)
            return Mark(held, 0, duplicates)
        await db.copy_records_to_table(
            EVENTS, records=[(instance, *stored_row(row)) for row in new], columns=("instance", *FIELDS)
        )
        head = Head(new[-1][_ID], new[-1][_HASH])
        await db.execute(
            f"UPDATE {INSTANCES} SET head_id = $2, head_hash = $3, head_time = $4, chain_mode = $5, key_check = $6, "
            "last_seen = now(), last_batch = now(), start_id = coalesce(start_id, $7), start_hash = coalesce(start_hash, $8) "
            "WHERE instance = $1",
            instance,
            head.id,
            head.hash,
            new[-1][FIELDS.index("time")],
            batch.mode,
            batch.key_check,
            held.id if starts_late else (0 if state["start_id"] is None else None),
            held.hash if starts_late else GENESIS,
        )
        return Mark(head, len(new), duplicates)

    def _key_for(self, instance: str, batch: Batch, mode: str | None, key_check: str | None) -> ChainKey | None:
        """How to compute the instance's hashes, after checking that its chain did not change kind or key."""
        if mode is not None and (mode, key_check) != (batch.mode, batch.key_check):
            raise Refused(
                protocol.CHAIN_REWRITE,
                f"The instance's chain was {mode} (key check {key_check}); this batch's is "
                f"{batch.mode} (key check {batch.key_check}): its log was rebuilt or replaced",
            )
        configured = self._keys.get(instance)
        if configured is not None:
            if (configured.mode, configured.check) != (batch.mode, batch.key_check):
                raise Refused(
                    protocol.CHAIN_REWRITE,
                    f"The batch's chain ({batch.mode}) is not under the chain key the "
                    "collector holds for this instance",
                )
            return configured
        return ChainKey(None) if batch.mode == ChainKey(None).mode else None

    async def _compare_held(self, db: Connection, instance: str, resent: Sequence[Row], start: int | None) -> int:
        """Records at or below the mark must be held, and resent unchanged; returns how many were.
        One the store does not hold (before where the instance's chain starts here, or removed
        from the store) is not a duplicate: it cannot be compared, so it is refused as a fork."""
        if not resent:
            return 0
        held: dict[int, str] = {
            row[0]: row[1]
            for row in await db.fetch(
                f"SELECT id, hash FROM {EVENTS} WHERE instance = $1 AND id >= $2 AND id <= $3",
                instance,
                resent[0][_ID],
                resent[-1][_ID],
            )
        }
        for row in resent:
            stored = held.get(row[_ID])
            if stored is None:
                where = (
                    f"the instance's chain starts after record {start} here"
                    if start is not None and row[_ID] <= start
                    else "it is missing from the fleet store"
                )
                raise Refused(
                    protocol.CHAIN_FORK,
                    f"record {row[_ID]} is not held by the collector ({where}), so it cannot be compared: "
                    "the sidecar's log is not the one the collector holds",
                    row[_ID],
                )
            if stored != row[_HASH]:
                raise Refused(
                    protocol.CHAIN_FORK,
                    f"record {row[_ID]} is held with hash {stored}; the batch resends it "
                    f"with hash {row[_HASH]}: the sidecar's log forked or was rewritten",
                    row[_ID],
                )
        return len(resent)

    async def flag(self, instance: str, refused: Refused, peer: str | None) -> None:
        """Keep a chain refusal in the store, in a transaction of its own (the batch's rolled back).
        Once per problem: a sidecar retrying the same refused batch every back-off adds nothing."""
        kind = refused.flag
        if kind is None:
            return
        async with self._pool.acquire() as db:
            await db.execute(
                f"INSERT INTO {FLAGS} (instance, kind, record_id, detail, peer) SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS "
                f"(SELECT 1 FROM {FLAGS} WHERE instance = $1 AND kind = $2 AND record_id IS NOT DISTINCT FROM $3 AND detail = $4)",
                instance,
                kind,
                refused.record_id,
                refused.message,
                peer,
            )
