"""Operating the gateway: /healthz, /readyz flipping with real faults, /metrics after real traffic,
and request ids shared by the caller, the logs, the upstream and the audit log."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SAMPLE_PATH, AppClient, GatewayFactory, Peer, basic, make_config, rows, write_locked
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families
from raw_upstream import raw_upstream

from gateway.audit.chain import ChainKey
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.health import SharedCheck
from gateway.logs import flush_logs
from gateway.runtime import RUNTIME


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: AppClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert 200 == response.status
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text())


async def test_healthz_needs_nothing(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path))
    response = await client.get("/healthz")
    assert (200, {"status": "ok"}) == (response.status, await response.json())


async def test_metrics_move_with_real_traffic(tmp_path: Path, gateway: GatewayFactory) -> None:
    database = tmp_path / "audit.db"
    prepare(database, key=ChainKey(), writable=True)
    appender = SQLiteAppender(database, ChainKey())
    appender.append(
        [
            AuditRecord(
                request_id="crashed",
                time="2026-01-01T00:00:00.000Z",
                actor="alice",
                client_ip=None,
                method="DELETE",
                org="myorg",
                token_sha256="0" * 64,
                token_hint="0000",
                outcome="pending",
            )
        ]
    )
    appender.close()
    client = await gateway(make_config(tmp_path, throttle={"max_failures": 2}, audit={"busy_timeout": 0.1}))
    pending_check = client.app[RUNTIME].pending_check
    assert pending_check is not None
    await pending_check
    before = await scrape(client)
    assert 1 == before[("gateway_pending_intents_at_start", ())]
    assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
    assert 404 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
    for expected in (401, 401, 429, 429):
        assert expected == (await client.delete(SAMPLE_PATH, headers=basic("myname", "wrong"))).status
    assert 404 == (await client.get("/v2/o/myorg/apps", headers=basic("myname"))).status
    after = await scrape(client)

    def requests(route: str, status: str, outcome: str) -> float:
        return after.get(("gateway_requests_total", (("outcome", outcome), ("route", route), ("status", status))), 0)

    assert (1, 1, 2, 2, 1) == (
        requests("token", "200", "deleted"),
        requests("token", "404", "not_found"),
        requests("token", "401", "denied"),
        requests("token", "429", "none"),
        requests("other", "404", "none"),
    )
    assert 2 == after[("gateway_upstream_seconds_count", ())]  # only the two forwarded calls
    assert 2 == after[("gateway_logins_throttled_total", ())]
    assert 0 == after[("gateway_intents_in_flight", ())] == after[("gateway_audit_queue_depth", ())]
    written = len(rows(database)) - 1  # the crashed intent was there before
    assert written == 6 == after[("gateway_audit_batch_records_sum", ())]  # 2 x (intent + outcome) + 2 denied
    assert after[("gateway_audit_commits_total", ())] == after[("gateway_audit_commit_seconds_count", ())] >= 1
    assert 0 == after[("gateway_audit_write_failures_total", ())]
    with write_locked(database):
        await client.delete("/v1/o/myorg/oauth2/accesstokens/other", headers=basic("myname"))
    assert 1 == (await scrape(client))[("gateway_audit_write_failures_total", ())]


async def test_metrics_on_a_port_of_their_own(tmp_path: Path, gateway: GatewayFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = await gateway(make_config(tmp_path, server={"host": "127.0.0.1"}, metrics={"port": port}))
    assert 404 == (await client.get("/metrics")).status  # not on the callers' listener
    async with client.session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert 200 == response.status
        assert "gateway_requests_total" in await response.text()


class Upstream:
    """A TCP listener that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(close_at_once, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    listener = Upstream()
    await listener.start()
    yield listener
    await listener.stop()


async def readiness(client: AppClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


async def test_readiness_flips_with_the_upstream_and_the_audit_lock(
    tmp_path: Path, gateway: GatewayFactory, upstream: Upstream
) -> None:
    client = await gateway(
        make_config(tmp_path, upstream=f"http://127.0.0.1:{upstream.port}", audit={"busy_timeout": 0.1})
    )
    client.app[RUNTIME].readiness.cache_seconds = 0.0  # every probe looks again
    assert (200, {"status": "ready", "checks": {"audit": "ok", "upstream": "ok"}}) == await readiness(client)

    await upstream.stop()
    status, body = await readiness(client)
    assert (503, "not_ready", "ok") == (status, body["status"], body["checks"]["audit"])
    assert body["checks"]["upstream"].startswith(f"cannot connect to 127.0.0.1:{upstream.port}: ")
    await upstream.start()
    assert 200 == (await readiness(client))[0]

    database = tmp_path / "audit.db"
    with write_locked(database):
        status, body = await readiness(client)
    assert (503, {"audit": f"cannot write to {database}: database is locked", "upstream": "ok"}) == (
        status,
        body["checks"],
    )
    assert 200 == (await readiness(client))[0]


async def test_readiness_flips_when_the_database_is_made_read_only(
    tmp_path: Path, gateway: GatewayFactory, upstream: Upstream
) -> None:
    client = await gateway(make_config(tmp_path, upstream=f"http://127.0.0.1:{upstream.port}"))
    client.app[RUNTIME].readiness.cache_seconds = 0.0
    database = tmp_path / "audit.db"
    if os.geteuid() == 0:  # root ignores permissions; the immutable attribute stops it
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(database)], capture_output=True).returncode != 0:
            pytest.skip("running as root where the immutable attribute cannot be set")
        restore = [chattr, "-i", str(database)]
    else:
        database.chmod(0o444)
        restore = ["chmod", "644", str(database)]
    try:
        status, body = await readiness(client)
    finally:
        subprocess.run(restore, check=True)
    assert 503 == status
    assert str(body["checks"]["audit"]).startswith(f"cannot write to {database}: ")
    assert (200, "ready") == ((await readiness(client))[0], (await readiness(client))[1]["status"])


PROBES = 300


async def test_concurrent_readiness_probes_open_one_upstream_connection(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    """The stampede of the report: 300 probes at once (which opened 148 upstream connections) share one check."""
    async with raw_upstream(b"HTTP/1.1 204 No Content\r\n\r\n") as upstream:
        client = await gateway(make_config(tmp_path, upstream=upstream.url))
        # Every probe's connection is open before any request is sent, so all arrive together.
        probes = [await asyncio.open_connection(client.host, client.port) for _ in range(PROBES)]
        for _, writer in probes:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        answers = [await reader.read() for reader, _ in probes]
        for _, writer in probes:
            writer.close()
        # A last connection of our own, accepted after every probe's: once it is served, all are counted.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(upstream.url.rsplit(":", 1)[1]))
        writer.write(b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n")
        await reader.read()
        writer.close()
        assert 1 == upstream.connections - 1
    assert [b"HTTP/1.1 200 OK"] * PROBES == [answer.split(b"\r\n", 1)[0] for answer in answers]


class TestSharedCheck:
    async def test_callers_arriving_during_a_run_share_it(self) -> None:
        """However many wait at once, the check runs once, and each gets its result."""
        runs: list[int] = []
        started, release = asyncio.Event(), asyncio.Event()

        async def check() -> str | None:
            runs.append(len(runs))
            started.set()
            await release.wait()
            return "down"

        shared = SharedCheck(check)
        callers = [asyncio.create_task(shared.result(fresh_for=0.0)) for _ in range(50)]
        await started.wait()
        release.set()
        assert ["down"] * 50 == await asyncio.gather(*callers)
        assert [0] == runs

    async def test_a_caller_that_goes_away_does_not_cancel_the_run(self) -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def check() -> str | None:
            started.set()
            await release.wait()
            return None

        shared = SharedCheck(check)
        leaving, staying = (asyncio.create_task(shared.result(fresh_for=0.0)) for _ in range(2))
        await started.wait()
        leaving.cancel()
        release.set()
        assert None is await staying
        assert leaving.cancelled()

    async def test_a_result_is_reused_while_fresh_then_checked_again(self) -> None:
        runs: list[int] = []

        async def check() -> str | None:
            runs.append(len(runs))
            return f"run {len(runs)}"

        shared = SharedCheck(check)
        assert ("run 1", "run 1") == (await shared.result(fresh_for=60.0), await shared.result(fresh_for=60.0))
        assert "run 2" == await shared.result(fresh_for=0.0)


async def test_request_ids_are_kept_forwarded_returned_and_logged(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, log_output: io.StringIO
) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    made = await client.delete("/v1/o/myorg/oauth2/accesstokens/a", headers=basic("myname"))
    kept = await client.delete(
        "/v1/o/myorg/oauth2/accesstokens/b", headers={**basic("myname"), "X-Request-ID": "trace-42.a"}
    )
    forged = await client.delete(
        "/v1/o/myorg/oauth2/accesstokens/c", headers={**basic("myname"), "X-Request-ID": 'x" evil=1'}
    )
    refused = await client.delete("/v1/o/myorg/oauth2/accesstokens/d", headers={"X-Request-ID": "trace-43"})
    own = [row["request_id"] for row in rows(tmp_path / "audit.db", "outcome != 'pending'")]
    assert [own[0], "trace-42.a", own[2], "trace-43"] == [
        r.headers["X-Request-ID"] for r in (made, kept, forged, refused)
    ]
    assert [own[0], "trace-42.a", own[2]] == [seen.headers["X-Request-ID"] for seen in peer.requests]
    assert "trace-42.a" not in own  # the audit pairs intent and outcome by the gateway's own, unique id
    flush_logs()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if '"event":"request"' in line]
    assert [(own[0], None), ("trace-42.a", own[1]), (own[2], None), ("trace-43", own[3])] == [
        (line["request_id"], line.get("audit_request_id")) for line in lines
    ]


async def test_of_several_request_ids_the_first_is_used_and_only_it_goes_upstream(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Unlike Authorization, a second X-Request-ID cannot make the gateway and the upstream disagree:
    the gateway sends its own choice alone, so caller, log, upstream and audit see one id."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    headers = CIMultiDict([*basic("myname").items(), ("X-Request-ID", "first-1"), ("X-Request-ID", "second-2")])
    response = await client.delete("/v1/o/myorg/oauth2/accesstokens/a", headers=headers)
    assert (200, "first-1") == (response.status, response.headers["X-Request-ID"])
    assert [("X-Request-ID", "first-1")] == [
        (name, value) for name, value in peer.requests[0].raw_headers if name.lower() == "x-request-id"
    ]
