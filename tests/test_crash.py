"""Crash safety and graceful stop of the real `gateway serve` process.

SIGKILL mid-load must leave every answered delete with its committed outcome and every other
forwarded call as a visible `pending` intent; SIGTERM must drain the calls in flight (each
answered and recorded) while refusing new connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import USERS, basic, rows
from processes import START_TIMEOUT, Running, completed, started
from pytest_aiohttp import AiohttpServer
from raw_upstream import raw_upstream

WORKERS = 32
KILL_AFTER = 200
"""Responses to collect before the gateway is killed, with WORKERS more calls in flight."""
GENERATED = 2000
DRAINED = 8
"""Calls held in flight at the slow upstream while the gateway is told to stop."""


def write_config(tmp_path: Path, upstream: str, upstream_settings: str = "") -> Path:
    """A gateway config in front of ``upstream``, with JSON logs and its audit log in tmp_path."""
    user = USERS[0]  # myname / mypass, hashed with scrypt ln=10 so start-up stays quick
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[upstream]\nurl = '{upstream}'\n{upstream_settings}"
        "[audit]\ndatabase = 'audit.db'\n"
        "[logging]\nformat = 'json'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    return config


def token_path(token: str) -> str:
    return f"/v1/o/myorg/oauth2/accesstokens/{token}"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def trail(database: Path, token: str) -> list[tuple[str, str]]:
    """A token's records, oldest first, as (outcome, request_id)."""
    return [(row["outcome"], row["request_id"]) for row in rows(database, "token_sha256 = ?", (sha256(token),))]


def without_outcome(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Intents with no later record of the same request: what a crash leaves behind."""
    return [
        intent
        for intent in records
        if intent["outcome"] == "pending"
        and not any(later["request_id"] == intent["request_id"] and later["id"] > intent["id"] for later in records)
    ]


async def delete_until(gateway: Running, interrupt: Callable[[], Awaitable[None]]) -> tuple[dict[str, int], list[str]]:
    """WORKERS callers deleting distinct tokens; ``interrupt`` runs once KILL_AFTER have answers.

    Returns each answered token's status, and the tokens whose call failed (one per worker:
    each stops at its first failure, and once the gateway is killed every call fails).
    """
    tokens = (f"load{index}" for index in itertools.count())
    answered: dict[str, int] = {}
    failed: list[str] = []
    enough = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            token = next(tokens)
            try:
                async with session.delete(gateway.url + token_path(token), headers=basic("myname")) as response:
                    await response.read()
                    answered[token] = response.status
            except aiohttp.ClientError:
                failed.append(token)
                return
            if len(answered) >= KILL_AFTER:
                enough.set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=START_TIMEOUT)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(WORKERS)]
        waiting = asyncio.create_task(enough.wait())
        await asyncio.wait([waiting, *workers], timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert enough.is_set(), f"only {len(answered)} answers before the workers stopped: {failed}"
        await interrupt()
        await asyncio.gather(*workers)
    return answered, failed


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` with a deadline, for facts no event announces (rows in another process's file)."""
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {START_TIMEOUT} s: {what}") from None


@pytest.mark.skipif(
    not all(hasattr(signal, name) for name in ("SIGKILL", "SIGSTOP", "SIGCONT")), reason="no job-control signals here"
)
async def test_sigkill_under_load_leaves_answered_deletes_recorded_and_the_rest_pending(tmp_path: Path) -> None:
    """Killed mid-load: every 200 has its `deleted` record; unfinished calls stay `pending`, and are reported."""
    database = tmp_path / "audit.db"
    async with started("stub", "--port", "0", "--generate", str(GENERATED), cwd=tmp_path) as stub:
        config = write_config(tmp_path, stub.url)
        async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:

            async def crash() -> None:
                """Freeze the stub, so calls it has not answered stay between intent and outcome,
                and kill the gateway once one such intent is in the file: the pending case for
                sure, while the other calls are wherever the load has them."""
                stub.process.send_signal(signal.SIGSTOP)
                await until(lambda: bool(without_outcome(rows(database))), "an intent left without its outcome")
                gateway.process.kill()

            answered, failed = await delete_until(gateway, crash)
            assert -signal.SIGKILL == await gateway.exited()
        stub.process.send_signal(signal.SIGCONT)

        assert {200} == set(answered.values())
        assert WORKERS == len(failed)
        assert {token: ["pending", "deleted"] for token in answered} == {
            token: [outcome for outcome, _ in trail(database, token)] for token in answered
        }
        assert all(len({request_id for _, request_id in trail(database, token)}) == 1 for token in answered)
        # A call in flight at the kill left nothing (not yet audited), its intent alone (the
        # pending case: it may even have been deleted upstream), or both records (answer lost).
        unanswered = {token: [outcome for outcome, _ in trail(database, token)] for token in failed}
        assert all(outcomes in ([], ["pending"], ["pending", "deleted"]) for outcomes in unanswered.values()), (
            unanswered
        )
        records = rows(database)
        assert {sha256(token) for token in [*answered, *failed]} >= {row["token_sha256"] for row in records}
        orphans = without_outcome(records)
        assert {row["token_sha256"] for row in orphans} == {
            sha256(token) for token, outcomes in unanswered.items() if outcomes == ["pending"]
        }

        status, printed = await completed(
            "audit",
            "query",
            "--config",
            str(config),
            "--outcome",
            "pending",
            "--format",
            "jsonl",
            "--limit",
            "10000",
            cwd=tmp_path,
        )
        listed = [json.loads(line) for line in printed.splitlines()]
        assert 0 == status
        assert sorted(row["id"] for row in records if row["outcome"] == "pending") == sorted(
            row["id"] for row in listed
        )

        async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as restarted:
            warning = await restarted.logged("pending_intents_without_outcome")
            assert ("warning", len(orphans), orphans[0]["id"]) == (
                warning["level"],
                warning["count"],
                warning["first_id"],
            )
            fresh = f"load{GENERATED - 1}"
            async with aiohttp.ClientSession() as session:
                async with session.delete(restarted.url + token_path(fresh), headers=basic("myname")) as response:
                    assert (200, fresh) == (response.status, (await response.json(content_type=None))["token"])
            assert 0 == await restarted.stop(signal.SIGTERM)
        assert [len(orphans)] == [event["count"] for event in restarted.events("pending_intents_without_outcome")]
        assert ["pending", "deleted"] == [outcome for outcome, _ in trail(database, fresh)]

    status, printed = await completed("audit", "verify", "--config", str(config), cwd=tmp_path)
    assert (0, f"OK: {len(rows(database))} records verified") == (status, printed[: printed.find(" (")])


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
async def test_sigterm_drains_calls_in_flight_and_refuses_new_ones(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """SIGTERM with calls at the upstream: new connections are refused, the calls end answered and recorded, exit 0."""
    arrived: list[str] = []
    all_arrived, release = asyncio.Event(), asyncio.Event()

    def snapshot(token: str) -> bytes:
        return json.dumps({"token": token, "app": "app1", "clientId": "client1"}).encode()

    async def slow_delete(request: web.Request) -> web.Response:
        """Holds every call until the test has seen the gateway stop listening."""
        token = request.match_info["token"]
        arrived.append(token)
        if len(arrived) == DRAINED:
            all_arrived.set()
        await release.wait()
        return web.Response(body=snapshot(token), content_type="application/json")

    upstream = web.Application()
    upstream.router.add_delete("/v1/o/{org}/oauth2/accesstokens/{token}", slow_delete)
    server = await aiohttp_server(upstream)
    config = write_config(tmp_path, str(server.make_url("")).rstrip("/"))
    tokens = [f"drain{index}" for index in range(DRAINED)]

    async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=START_TIMEOUT)) as session:

            async def delete(token: str) -> tuple[int, bytes]:
                async with session.delete(gateway.url + token_path(token), headers=basic("myname")) as response:
                    return response.status, await response.read()

            calls = [asyncio.create_task(delete(token)) for token in tokens]
            async with asyncio.timeout(START_TIMEOUT):
                await all_arrived.wait()
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.logged("stopping")
            host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(host, int(port))
            release.set()
            answers = await asyncio.gather(*calls)
        assert 0 == await gateway.exited()

    assert sorted(tokens) == sorted(arrived)
    assert [(200, snapshot(token)) for token in tokens] == answers
    database = tmp_path / "audit.db"
    for token in tokens:
        records = rows(database, "token_sha256 = ?", (sha256(token),))
        assert [("pending", None, None), ("deleted", 200, "app1")] == [
            (row["outcome"], row["upstream_status"], row["app"]) for row in records
        ]
    assert [] == without_outcome(rows(database))


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM on this platform")
async def test_sigterm_waits_for_a_trickling_upstream_no_longer_than_its_total_timeout(tmp_path: Path) -> None:
    """An upstream sending a byte now and then (never past read_timeout) cannot hold the stop: the call
    ends at total_timeout with 504, its outcome `unknown` is recorded, and the process exits 0."""
    settings = "connect_timeout = 0.5\nread_timeout = 1.0\ntotal_timeout = 2.0\n"
    async with raw_upstream(b"HTTP/1.1 200 OK\r\n", trickled=b"X-Slow: 1\r\n" * 1000, every=0.2) as upstream:
        config = write_config(tmp_path, upstream.url, settings)
        async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=START_TIMEOUT)) as session:

                async def delete() -> tuple[int, Any]:
                    async with session.delete(gateway.url + token_path("slow"), headers=basic("myname")) as response:
                        return response.status, await response.json()

                call = asyncio.create_task(delete())
                async with asyncio.timeout(START_TIMEOUT):
                    await upstream.arrived.wait()
                gateway.process.send_signal(signal.SIGTERM)
                status, body = await call
            assert 0 == await gateway.exited()

    assert (504, "gateway.upstream_unavailable") == (status, body["code"])
    assert body["message"].startswith(
        "The upstream did not answer in time: no complete answer within the total timeout"
    )
    records = rows(tmp_path / "audit.db", "token_sha256 = ?", (sha256("slow"),))
    assert [("pending", None), ("unknown", "upstream.total_timeout")] == [
        (row["outcome"], row["error_code"]) for row in records
    ]
