"""Audit log at scale: 1,000,000 records generated into a file, then the questions people ask.

Prints the median time of `audit query` by token, by actor + time range and by org + outcome
(each must answer in under 50 ms), and the rates of `audit verify` (over 200,000 records/s)
and `audit export` (over 100,000 records/s).

    python bench/query.py [--records 1000000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import RecordStream
from gateway.audit.query import AuditFilter
from gateway.audit.record import AuditRecord, utc_timestamp
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit.verify import verify_log

ACTORS = [f"user{i:02d}" for i in range(50)]
ORGS = [f"org{i:02d}" for i in range(20)]
START = 1_767_225_600.0  # 2026-01-01
YEAR = 365 * 86400
SNAPSHOT = (
    '{"apiProducts":["sandbox"],"app":"app1","clientId":"fGytmxA5UDajPMdOA5E3bebiBOBPikOT","token":"[redacted …c7vC]"}'
)


def generate(path: Path, count: int) -> None:
    """Intent and outcome pairs, as the gateway writes them, a year's worth."""
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey(), synchronous="NORMAL")
    rng = random.Random(7)
    batch: list[AuditRecord] = []
    for pair in range(count // 2):
        moment = START + pair * YEAR / (count // 2)
        token = f"tok{pair:012d}"
        common = {
            "request_id": f"r{pair:x}",
            "actor": rng.choice(ACTORS),
            "client_ip": "10.0.0.1",
            "method": "DELETE",
            "org": rng.choice(ORGS),
            "token_sha256": fingerprint(token),
            "token_hint": token[-4:],
        }
        outcome = rng.choices(["deleted", "not_found", "denied", "upstream_error"], [90, 6, 3, 1])[0]
        batch.append(AuditRecord(time=utc_timestamp(moment), outcome="pending", **common))  # type: ignore[arg-type]
        batch.append(
            AuditRecord(
                time=utc_timestamp(moment + 0.004),
                outcome=outcome,
                upstream_status=200,
                latency_ms=4.2,
                app="app1",
                client_id="c1",
                snapshot=SNAPSHOT,
                **common,
            )
        )  # type: ignore[arg-type]
        if len(batch) >= appender.max_batch:
            appender.append(batch)
            batch = []
    if batch:
        appender.append(batch)
    appender.close()


async def measure(path: Path, count: int) -> None:
    store = await SQLiteAuditStore.open(path)
    questions = {
        "by token": AuditFilter(token_sha256=fingerprint(f"tok{count // 4:012d}")),
        "by actor + 7-day range": AuditFilter(
            actor="user07", since=utc_timestamp(START + 100 * 86400), until=utc_timestamp(START + 107 * 86400)
        ),
        "by org + outcome": AuditFilter(org="org03", outcome="not_found"),
    }
    for name, selection in questions.items():
        timings = []
        for _ in range(7):
            started = time.perf_counter()
            found = await store.query(selection)
            timings.append((time.perf_counter() - started) * 1000)
        print(
            f"audit query {name:24s} {statistics.median(timings):7.2f} ms median of 7 ({len(found)} records, limit 100)"
        )
    started = time.perf_counter()
    verdict = await verify_log(store, ChainKey())
    elapsed = time.perf_counter() - started
    print(
        f"audit verify              {verdict.checked / elapsed:10,.0f} records/s ({verdict.checked:,} in {elapsed:.1f} s, {'intact' if verdict.problem is None else verdict.problem})"
    )
    with open(os.devnull, "w") as sink:
        for fmt in ("jsonl", "csv"):
            stream = RecordStream(fmt, sink, for_terminal=False)  # as `audit export > FILE` writes
            started = time.perf_counter()
            exported = 0
            async for batch in store.rows():
                stream.write_rows(batch)
                exported += len(batch)
            elapsed = time.perf_counter() - started
            print(f"audit export --format {fmt:5s} {exported / elapsed:10,.0f} records/s")
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this file instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-query-bench-") as workdir:
        path = args.keep or Path(workdir) / "audit.db"
        if not path.exists():
            started = time.perf_counter()
            generate(path, args.records)
            print(
                f"generated {args.records:,} records in {time.perf_counter() - started:.0f} s ({path.stat().st_size / 1e6:.0f} MB)"
            )
        asyncio.run(measure(path, args.records))


if __name__ == "__main__":
    main()
