"""The shipper's read (``rows_after``): a batch of records as one value built by SQLite, which must
give exactly the rows the row-by-row walk (``rows``) gives, whatever the records hold.

It exists for speed: read a row at a time in the gateway's busy process, each row waited for the
GIL and the shipping lag grew past a second (bench/fleet.py). The collector recomputes every
hash from the values shipped, so one value read differently (a double rounded to 15 digits, a
string taken for a number) would make the fleet flag an honest log as rewritten.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from audit_support import make_log, make_version_4_log, tamper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.chain import ChainKey
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit.store import AuditStoreError

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
"""Any text SQLite can hold: control characters, NUL, U+2028, quotes, backslashes, astral planes."""
REALS = st.floats(allow_nan=False) | st.sampled_from([0.1 + 0.2, 5e-324, 9.541593769323089e-306, -0.0, 1e16])
"""Every double, and the ones SQLite's own JSON and quote() give back wrong."""


def _record(n: int, text: str, real: float | None, status: int | None) -> AuditRecord:
    return AuditRecord(
        request_id=f"r{n}{text}",
        time=f"2026-01-01T00:00:{n % 60:02d}.000Z",
        actor=text,
        client_ip="10.0.0.1",
        method="DELETE",
        org=text or None,
        token_sha256=None,
        token_hint=text[:4],
        outcome="deleted" if n % 2 else "pending",
        upstream_status=status,
        latency_ms=real,
        snapshot=text,
        params=text or None,
    )


async def _batch(path: Path, after: int, limit: int) -> list[Row]:
    store = await SQLiteAuditStore.open(path)
    try:
        return await store.rows_after(after, limit)
    finally:
        await store.close()


async def _both_reads(path: Path, after: int, limit: int) -> tuple[list[Row], list[Row]]:
    store = await SQLiteAuditStore.open(path)
    try:
        walked = [tuple(row) async for batch in store.rows(AuditFilter(after_id=after)) for row in batch]
        return await store.rows_after(after, limit), walked[:limit]
    finally:
        await store.close()


def _same(batch: list[Row], walked: list[Row]) -> None:
    assert walked == batch
    for ours, theirs in zip(batch, walked, strict=True):
        assert [type(value) for value in theirs] == [type(value) for value in ours]
        for value, other in zip(ours, theirs, strict=True):
            if isinstance(value, float):
                assert math.copysign(1.0, value) == math.copysign(1.0, other)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.tuples(TEXT, st.none() | REALS, st.none() | st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=12
    ),
    after=st.integers(0, 13),
    limit=st.integers(1, 14),
)
def test_the_batch_read_gives_the_rows_the_walk_gives(
    tmp_path_factory: pytest.TempPathFactory,
    values: list[tuple[str, float | None, int | None]],
    after: int,
    limit: int,
) -> None:
    path = tmp_path_factory.mktemp("log") / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    appender.append([_record(n, *value) for n, value in enumerate(values)])
    appender.close()

    batch, walked = asyncio.run(_both_reads(path, after, limit))

    _same(batch, walked)
    assert [row[0] for row in batch] == list(range(after + 1, min(len(values), after + limit) + 1))


@pytest.mark.parametrize(("after", "limit"), [(0, 1000), (37, 200), (63, 64), (64, 1), (299, 10), (300, 5)])
def test_a_batch_of_many_chunks_reads_whole_and_in_order(tmp_path: Path, after: int, limit: int) -> None:
    path = tmp_path / "audit.db"
    make_log(path, 300)

    batch, walked = asyncio.run(_both_reads(path, after, limit))

    _same(batch, walked)
    assert [row[0] for row in batch] == list(range(after + 1, min(300, after + limit) + 1))


def test_the_batch_read_keeps_values_a_tampered_file_holds_in_the_wrong_column(tmp_path: Path) -> None:
    """A real in an INTEGER column, text in the REAL one, a number-like string: each read as the
    walk reads it (the chain then tells the tampering; the read must not hide or invent it)."""
    path = tmp_path / "audit.db"
    make_log(path, 4)
    tamper(
        path,
        "UPDATE audit_events SET upstream_status = 4.000000000000001 WHERE id = 1",
        "UPDATE audit_events SET latency_ms = 'fast' WHERE id = 2",
        "UPDATE audit_events SET actor = '1.5e3', token_hint = '[1]' WHERE id = 3",
        "UPDATE audit_events SET latency_ms = 1e999 WHERE id = 4",
    )

    batch, walked = asyncio.run(_both_reads(path, 0, 10))

    _same(batch, walked)
    status, latency, actor = FIELDS.index("upstream_status"), FIELDS.index("latency_ms"), FIELDS.index("actor")
    assert (4.000000000000001, "fast", "1.5e3", math.inf) == (
        batch[0][status],
        batch[1][latency],
        batch[2][actor],
        batch[3][latency],
    )


def test_the_batch_read_reads_a_log_of_an_older_version_as_the_walk_does(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    make_version_4_log(path, [_record(n, "x", 1.25 * n, 200) for n in range(1, 8)])

    batch, walked = asyncio.run(_both_reads(path, 2, 3))

    _same(batch, walked)
    assert [3, 4, 5] == [row[0] for row in batch]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET snapshot = x'00' WHERE id = 2",
        "UPDATE audit_events SET actor = x'37616263' WHERE id = 2",  # binary JSON for "abc" (SQLite 3.45+)
        "UPDATE audit_events SET latency_ms = x'0b' WHERE id = 2",
        "UPDATE audit_events SET upstream_status = x'1b0b' WHERE id = 3",
    ],
)
def test_a_blob_no_gateway_writes_is_read_as_the_walk_reads_it(tmp_path: Path, statement: str) -> None:
    """As bytes: never refused by one SQLite and taken for binary JSON by a newer one."""
    path = tmp_path / "audit.db"
    make_log(path, 4)
    tamper(path, statement)

    batch, walked = asyncio.run(_both_reads(path, 0, 10))

    _same(batch, walked)
    assert 1 == sum(isinstance(value, bytes) for row in batch for value in row)


async def _every_read_error(path: Path) -> list[str]:
    store = await SQLiteAuditStore.open(path)
    reads: list[Callable[[], Awaitable[object]]] = [
        lambda: store.rows_after(0, 10),
        lambda: _walk(store),
        lambda: store.query(AuditFilter()),
        lambda: store.get(2),
    ]
    errors = []
    try:
        for read in reads:
            with pytest.raises(AuditStoreError) as raised:
                await read()
            errors.append(str(raised.value))
    finally:
        await store.close()
    return errors


async def _walk(store: SQLiteAuditStore) -> list[Row]:
    return [tuple(row) async for batch in store.rows(AuditFilter()) for row in batch]


def test_text_that_is_not_utf_8_is_an_error_naming_the_file_and_never_quoting_the_record(tmp_path: Path) -> None:
    """The shipper logs it and tries again; the text (here "client_secret=s3cr3t" and a stray
    byte) may be a secret, so no message repeats it."""
    path = tmp_path / "audit.db"
    make_log(path, 3)
    tamper(path, f"UPDATE audit_events SET actor = CAST(x'{b'client_secret=s3cr3t'.hex()}ff' AS TEXT) WHERE id = 2")

    errors = asyncio.run(_every_read_error(path))

    assert 4 == len(errors)
    for error in errors:
        assert error.startswith(f"cannot read {path}: ")
        assert "s3cr3t" not in error and "UTF-8" in error


def test_the_columns_read_as_exact_reals_are_every_numeric_column_but_the_id(tmp_path: Path) -> None:
    from gateway.audit.json_batches import NUMERIC_FIELDS

    path = tmp_path / "audit.db"
    make_log(path, 1)
    with sqlite3.connect(path) as db:
        declared = {
            column: kind
            for table in ("audit_records", "audit_intents")
            for _, column, kind, *_ in db.execute(f"PRAGMA table_info({table})")
        }
    assert sorted(NUMERIC_FIELDS) == sorted(c for c, kind in declared.items() if kind != "TEXT" and c != "id")


NEWER_SQLITE = """
import asyncio, math, random, struct, sys
import pysqlite3.dbapi2
sys.modules["sqlite3"] = sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from audit_support import tamper
from gateway.audit.chain import ChainKey
from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare

random.seed(7)
reals = [struct.unpack("d", struct.pack("Q", random.getrandbits(64)))[0] for _ in range(3000)]
reals = [x for x in reals if not math.isnan(x)] + [1e300, 3.2651638451114462e-295, 5e-324, 0.1 + 0.2, 1e999, 0.0]

def log(name, values):
    path = Path(sys.argv[1]) / name
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    for first in range(0, len(values), 500):
        appender.append([
            AuditRecord(f"r{n}", "2026-01-01T00:00:00.000Z", "a", None, "DELETE", "o", None, None, "deleted",
                        upstream_status=200, latency_ms=x)
            for n, x in enumerate(values[first:first + 500], first)
        ])
    appender.close()
    return path

async def both(path):
    store = await SQLiteAuditStore.open(path)
    try:
        walked = [tuple(row) async for batch in store.rows(AuditFilter()) for row in batch]
        return walked, await store.rows_after(0, 100000)
    finally:
        await store.close()

def wrong(path):
    walked, batch = asyncio.run(both(path))
    assert len(walked) == len(batch)
    return [(w[0], repr(w), repr(b)) for w, b in zip(walked, batch) if w != b or list(map(type, w)) != list(map(type, b))]

doubles = log("doubles.db", reals)
blobs = log("blobs.db", [1.5] * 10)
tamper(blobs, "UPDATE audit_events SET snapshot = x'00' WHERE id = 5", "UPDATE audit_events SET actor = x'37616263' WHERE id = 9")
print(pysqlite3.dbapi2.sqlite_version, wrong(doubles)[:3], wrong(blobs)[:3])
"""


def test_a_newer_sqlite_reads_the_batch_as_the_walk_does_too(tmp_path: Path) -> None:
    """On SQLite 3.51 (pysqlite3-binary) ``printf('%!.20e')`` gets some doubles wrong, and a BLOB
    passed to json_array() is read as binary JSON: 3,000 random doubles and two BLOBs, read both
    ways, must agree there as they do on Python's own SQLite."""
    done = subprocess.run(
        [sys.executable, "-c", NEWER_SQLITE, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    version, wrong = done.stdout.split(" ", 1)
    assert tuple(int(part) for part in version.split(".")) >= (3, 45)
    assert "[] []\n" == wrong


def test_a_chunk_counts_text_in_bytes_so_a_nul_or_wide_characters_cannot_swell_it(tmp_path: Path) -> None:
    """length() of text stops at a NUL and counts characters: 8 snapshots of a NUL and 1 MiB were
    counted as nothing and came back as one value of 8 MiB, whose decoding held the GIL 0.3 s."""
    from gateway.audit.json_batches import CHUNK_TEXT, batch_sql

    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    big = ["\x00" + "x" * CHUNK_TEXT, "é" * (CHUNK_TEXT // 2)]
    appender.append([_record(n, "a", None, None)._replace(snapshot=big[n % 2]) for n in range(8)])
    appender.close()
    with sqlite3.connect(path) as db:
        chunks = db.execute(batch_sql(f"SELECT {', '.join(FIELDS)} FROM audit_events ORDER BY id LIMIT 100")).fetchall()

    assert 8 == len(chunks)
    assert max(len(chunk) for chunk, _ in chunks) < 2 * CHUNK_TEXT
    batch, walked = asyncio.run(_both_reads(path, 0, 100))
    _same(batch, walked)
