"""The fleet tier measured: collector ingest, shipping lag at full load, fleet queries at 10M records.

    python bench/fleet.py --database-url postgresql://postgres@127.0.0.1:5432/postgres [--records 10000000]

Each part runs against a database of its own, created on the server given and dropped after.

1. Ingest: a `gateway collect` process; 4 senders post pre-encoded, chained batches of 1,000
   records (4 instances x 50,000) as fast as it answers. Baseline: the same records COPYed
   straight into PostgreSQL by 4 connections (no HTTP, no checks). Target: >= 20,000 records/s.
2. Lag: a `gateway serve` process (its upstream a `gateway stub` process, as in bench/run.py)
   shipping to a collector while wrk (bench/delete.lua; this script's own client when wrk is
   missing) deletes tokens through it at concurrency 64 for 20 s; its /readyz shipping lag is
   sampled 4 times a second. The baseline, run first on the same stub: the same gateway without
   ``[ship]``, whose delete rate the shipping one's is a ratio of. Target: under 1 s at full load.
3. Queries: the fleet store filled with `--records` records (50 instances, 50 actors, 20 orgs,
   a year) straight in SQL, then the fleet questions through `FleetStore` as the CLI asks them,
   medians of 7: by token, by actor over a week, by instance (newest 100). Target: < 50 ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from gateway.audit.chain import EMPTY, ChainKey, chained
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import as_row
from gateway.audit.query import AuditFilter
from gateway.audit.record import FIELDS, AuditRecord, Row
from gateway.fleet import schema
from gateway.fleet.schema import EVENTS, INSTANCES
from gateway.fleet.shipper import encode_batch
from gateway.fleet.store import FleetStore, connect_pool, migrate, stored_row
from gateway.passwords import hash_password

PASSWORD = "bench-secret"
SNAPSHOT = (
    '{"apiProducts":["sandbox"],"app":"app1","clientId":"fGytmxA5UDajPMdOA5E3bebiBOBPikOT","token":"[redacted …c7vC]"}'
)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def fresh_database(url: str) -> str:
    name = f"fleet_bench_{uuid.uuid4().hex[:8]}"
    db = await asyncpg.connect(url)
    await db.execute(f"CREATE DATABASE {name}")
    await db.close()
    return with_database(url, name)


async def drop_database(url: str, database_url: str) -> None:
    db = await asyncpg.connect(url)
    await db.execute(f"DROP DATABASE IF EXISTS {urlsplit(database_url).path[1:]} WITH (FORCE)")
    await db.close()


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """A ``gateway`` command, once it says where it listens (stopped when it never does)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    while line := process.stdout.readline():
        for said in ("Listening on ", "listening on "):
            if said in line:
                return process, line.split(said)[1].split()[0]
    process.wait()
    raise SystemExit(f"{args[0]} did not start (exit status {process.returncode})")


def collector_config(folder: Path, database_url: str, instances: list[str]) -> Path:
    digest = hash_password(PASSWORD, log2_n=10)
    lines = [
        "[server]",
        "port = 0",
        "[collector]",
        f"database_url = {json.dumps(database_url)}",
        "pool_size = 4",
        "[logging]",
        'level = "warning"',
    ]
    for instance in instances:
        lines += ["[[sidecars]]", f"instance = {json.dumps(instance)}", f"password_hash = {json.dumps(digest)}"]
    path = folder / "collector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def records(instance: str, count: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            request_id=f"{instance}-{n:x}",
            time=f"2026-11-24T18:00:{n % 60:02d}.{n % 1000:03d}Z",
            actor=f"user{n % 50:02d}",
            client_ip="10.0.0.1",
            method="DELETE",
            org=f"org{n % 20:02d}",
            token_sha256=fingerprint(f"{instance}{n}"),
            token_hint="abcd",
            outcome="deleted" if n % 2 else "pending",
            upstream_status=200 if n % 2 else None,
            latency_ms=4.2 if n % 2 else None,
            app="app1" if n % 2 else None,
            snapshot=SNAPSHOT if n % 2 else None,
        )
        for n in range(count)
    ]


async def straight_copy(database_url: str, rows: dict[str, list[Row]], batch: int) -> float:
    """The baseline: the same records COPYed by 4 connections, a transaction per 1,000, no HTTP,
    no checks: what PostgreSQL on this host takes, which the collector's rate is a ratio of."""
    pool = await connect_pool(database_url, size=len(rows))
    await migrate(pool, database_url)

    async def copy(instance: str) -> None:
        async with pool.acquire() as db:
            for first in range(0, len(rows[instance]), batch):
                part = rows[instance][first : first + batch]
                async with db.transaction():
                    await db.copy_records_to_table(
                        EVENTS, records=[(instance, *stored_row(row)) for row in part], columns=("instance", *FIELDS)
                    )

    started = time.perf_counter()
    await asyncio.gather(*(copy(instance) for instance in rows))
    elapsed = time.perf_counter() - started
    await pool.close()
    return sum(len(part) for part in rows.values()) / elapsed


async def ingest(url: str, folder: Path) -> float:
    database_url = await fresh_database(url)
    instances = [f"bench-{n}" for n in range(4)]
    per_instance, batch = 50_000, 1000
    bodies, rows = {}, {}
    for instance in instances:
        linked, _ = chained(records(instance, per_instance), EMPTY, ChainKey(None))
        rows[instance] = [as_row(record) for record in linked]
        bodies[instance] = [
            encode_batch({"mode": "sha256", "key_check": None}, rows[instance][i : i + batch])
            for i in range(0, per_instance, batch)
        ]
    process, base = start(["collect", "--config", str(collector_config(folder, database_url, instances))], folder)
    try:
        async with aiohttp.ClientSession() as session:

            async def send(instance: str) -> None:
                headers = {
                    "Authorization": aiohttp.encode_basic_auth(instance, PASSWORD),
                    "Content-Type": "application/json",
                }
                for body in bodies[instance]:
                    async with session.post(
                        f"{base}/fleet/v1/instances/{instance}/records", data=body, headers=headers
                    ) as response:
                        assert response.status == 200, await response.text()

            # The first request of each pays for its password check: not part of the rate.
            for instance in instances:
                async with session.get(
                    f"{base}/fleet/v1/instances/{instance}",
                    headers={"Authorization": aiohttp.encode_basic_auth(instance, PASSWORD)},
                ) as response:
                    assert response.status == 200
            started = time.perf_counter()
            await asyncio.gather(*(send(instance) for instance in instances))
            elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait()
        await drop_database(url, database_url)
    database_url = await fresh_database(url)
    try:
        baseline = await straight_copy(database_url, rows, batch)
    finally:
        await drop_database(url, database_url)
    rate = len(instances) * per_instance / elapsed
    print(
        f"ingest: {len(instances) * per_instance:,} records in {elapsed:.2f} s: {rate:,.0f} records/s through the "
        f"collector vs {baseline:,.0f} records/s COPYed straight ({rate / baseline:.2f}x; "
        f"{len(instances)} senders, batches of {batch})",
        flush=True,
    )
    return rate


def sidecar_config(folder: Path, stub_url: str, collector_url: str | None) -> Path:
    """A gateway on ``stub_url``; shipping to ``collector_url`` when given."""
    folder.mkdir()
    lines = [
        "[server]",
        "port = 0",
        "[audit]",
        'database = "audit.db"',
        "reserve_mb = 0",
        "[upstream]",
        f"url = {json.dumps(stub_url)}",
        "[logging]",
        'level = "warning"',
        "[[users]]",
        'name = "myname"',
        f"password_hash = {json.dumps(hash_password('mypass', log2_n=10))}",
        'orgs = ["myorg"]',
    ]
    if collector_url:
        lines += [
            "[ship]",
            f"url = {json.dumps(collector_url)}",
            'instance = "bench-sidecar"',
            'password_env = "BENCH_SHIP_PASSWORD"',
        ]
    path = folder / "gw.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def deletes(base: str, seconds: float, concurrency: int, first: int) -> tuple[float, list[tuple[float, int]]]:
    """wrk's DELETEs at ``base`` (this script's own client when wrk is missing): the rate, and
    the /readyz shipping lag sampled 4 times a second (none when the gateway does not ship)."""
    samples: list[tuple[float, int]] = []
    auth = aiohttp.encode_basic_auth("myname", "mypass")
    deadline = time.monotonic() + seconds
    done = 0

    async def sample() -> None:
        # A session of its own: the deletes keep every connection of theirs busy.
        async with aiohttp.ClientSession() as probe:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                async with probe.get(f"{base}/readyz") as response:
                    shipping = (await response.json()).get("shipping")
                if shipping is not None:
                    samples.append((shipping["lag_seconds"], shipping["lag_records"]))

    started = time.monotonic()
    if shutil.which("wrk"):  # the load generator of bench/run.py: the gateway's full delete rate
        load = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{round(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(Path(__file__).with_name("delete.lua")),
            base,
            "--",
            str(first),
            "/v1/o/myorg/oauth2/accesstokens/load",
            auth,
            stdout=subprocess.PIPE,
        )
        output, _ = await asyncio.gather(load.communicate(), sample())
        summary = json.loads(output[0].decode().strip().splitlines()[-1])
        if summary["status_errors"] or summary["timeouts"]:
            raise SystemExit(f"lag: the deletes failed: {summary}")
        done = summary["requests"]
    else:
        counter = iter(range(first, 10**12))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    path = f"{base}/v1/o/myorg/oauth2/accesstokens/load{next(counter)}"
                    async with session.delete(path, headers={"Authorization": auth}) as response:
                        assert response.status == 200, await response.text()
                        done += 1

            await asyncio.gather(sample(), *(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started), samples


async def lag(url: str, folder: Path, seconds: float = 20.0, concurrency: int = 64) -> None:
    """The same gateway twice on one stub: without ``[ship]`` (the baseline), then shipping."""
    database_url = await fresh_database(url)
    processes: list[subprocess.Popen[str]] = []
    try:
        collector, collector_url = start(
            ["collect", "--config", str(collector_config(folder, database_url, ["bench-sidecar"]))], folder
        )
        processes.append(collector)
        # The upstream in a process of its own, as in bench/run.py: the gateway's full rate is its own.
        stub, stub_url = start(["stub", "--port", "0", "--generate", "1000000000"], folder)
        processes.append(stub)
        rates = {}
        for name, ships_to in (("without shipping", None), ("shipping", collector_url)):
            config = sidecar_config(folder / name.replace(" ", "-"), stub_url, ships_to)
            sidecar, base = start(
                ["serve", "--config", str(config)], config.parent, env={**os.environ, "BENCH_SHIP_PASSWORD": PASSWORD}
            )
            processes.append(sidecar)
            rates[name], samples = await deletes(base, seconds, concurrency, first=len(rates) * 10**8)
            settle_started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                while ships_to:
                    async with session.get(f"{base}/readyz") as response:
                        if (await response.json())["shipping"]["lag_records"] == 0:
                            break
                    await asyncio.sleep(0.05)
            settle = time.monotonic() - settle_started
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()
        await drop_database(url, database_url)
    lag_seconds = sorted(s for s, _ in samples)
    lag_records = sorted(r for _, r in samples)
    shipping, baseline = rates["shipping"], rates["without shipping"]
    print(
        f"lag: {shipping:,.0f} deletes/s shipping vs {baseline:,.0f} without ({shipping / baseline:.2f}x), "
        f"{seconds:.0f} s each at concurrency {concurrency}; shipping lag p50 {statistics.median(lag_seconds):.3f} s, "
        f"p99 {lag_seconds[int(len(lag_seconds) * 0.99)]:.3f} s, max {lag_seconds[-1]:.3f} s; records behind "
        f"p50 {statistics.median(lag_records):.0f}, max {lag_records[-1]}; caught up {settle:.2f} s after the load stopped",
        flush=True,
    )


FILL = f"""INSERT INTO {EVENTS} (instance, {", ".join(FIELDS)})
SELECT 'host-' || lpad((g % 50)::text, 2, '0'), g / 50 + 1, 'r' || g,
       to_char(timestamp '2026-01-01' + (g * (31536000.0 / $1)) * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       'user' || lpad(((g * 7) % 50)::text, 2, '0'), '10.0.0.1', 'DELETE', 'org' || lpad(((g * 3) % 20)::text, 2, '0'),
       encode(sha256(('tok' || (g / 2))::bytea), 'hex'), 'abcd',
       CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'deleted' END, CASE WHEN g % 2 = 0 THEN NULL ELSE 200 END, NULL,
       CASE WHEN g % 2 = 0 THEN NULL ELSE 4.2 END, CASE WHEN g % 2 = 0 THEN NULL ELSE 'app1' END, NULL,
       CASE WHEN g % 2 = 0 THEN NULL ELSE '{SNAPSHOT}' END, NULL, 'token.delete', 'access_token', NULL, NULL,
       md5(g::text) || md5(g::text), md5((g + 1)::text) || md5(g::text)
FROM generate_series($2::bigint, $3::bigint) AS g"""


async def queries(url: str, count: int, keep: str | None) -> None:
    database_url = keep or await fresh_database(url)
    pool = await connect_pool(database_url, size=2)
    await migrate(pool, database_url)
    async with pool.acquire() as db:
        held = await db.fetchval(f"SELECT count(*) FROM {EVENTS}")
        if held != count:
            indexes = [s for s in schema._v1() if s.startswith("CREATE INDEX") and EVENTS in s]
            await db.execute(f"TRUNCATE {EVENTS}, {INSTANCES}")
            for statement in indexes:
                await db.execute(f"DROP INDEX IF EXISTS {statement.split()[2]}")
            started = time.perf_counter()
            step = 1_000_000
            for first in range(0, count, step):
                await db.execute(FILL, count, first, min(first + step, count) - 1, timeout=None)
            print(f"queries: filled {count:,} records in {time.perf_counter() - started:.0f} s", flush=True)
            started = time.perf_counter()
            for statement in indexes:
                await db.execute(statement, timeout=None)
            await db.execute(f"ANALYZE {EVENTS}", timeout=None)
            size = await db.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
            print(f"queries: indexed in {time.perf_counter() - started:.0f} s; database {size}", flush=True)
    await pool.close()
    store = await FleetStore.open(database_url)
    try:
        token = fingerprint(f"tok{count // 4}")
        cases = {
            "by token (fleet-wide)": (store, AuditFilter(token_sha256=token)),
            "by actor over a week (fleet-wide)": (
                store,
                AuditFilter(actor="user07", since="2026-06-01T00:00:00.000Z", until="2026-06-08T00:00:00.000Z"),
            ),
            "by instance (newest 100)": (store.scoped("host-07"), AuditFilter()),
        }
        for name, (scoped, selection) in cases.items():
            times, found = [], 0
            for _ in range(7):
                started = time.perf_counter()
                found = len(await scoped.located(selection))
                times.append((time.perf_counter() - started) * 1000)
            print(f"query {name}: median {statistics.median(times):.2f} ms ({found} records)", flush=True)
    finally:
        await store.close()
        if keep is None:
            await drop_database(url, database_url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server where databases may be created",
    )
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--keep", metavar="URL", help="a database to fill once and reuse for the queries")
    parser.add_argument("--only", choices=("ingest", "lag", "queries"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "ingest"):
            await ingest(args.database_url, Path(folder))
        if args.only in (None, "lag"):
            await lag(args.database_url, Path(folder))
        if args.only in (None, "queries"):
            await queries(args.database_url, args.records, args.keep)


if __name__ == "__main__":
    asyncio.run(main())
