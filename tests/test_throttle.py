"""Failed-login throttling: 429 with Retry-After, nothing forwarded, and one audit record per
window of refused attempts however long the flood."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from helpers import SAMPLE_PATH, AppClient, GatedExecutor, GatewayFactory, Peer, basic, make_config, rows

from gateway.auth import AuthenticationError, Authenticator, ChecksBusy, User
from gateway.passwords import hash_password, parse_hash
from gateway.throttle import MAX_TRACKED, CheckLimit, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limits_per_client_and_per_user() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60.0, clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1", "alice") is None
        throttle.failed("10.0.0.1", "alice")
    throttle.failed("10.0.0.2", "bob")
    clock.now += 10.2
    assert 50 == throttle.retry_after("10.0.0.1", None)  # the address is over its limit
    assert 50 == throttle.retry_after("10.0.0.2", "alice")  # and so is the user, from an address that failed too
    assert 50 == throttle.retry_after(None, "alice")  # or from no known address
    assert throttle.retry_after("10.0.0.2", "bob") is None  # others are not
    clock.now += 50
    assert throttle.retry_after("10.0.0.1", "alice") is None  # the window is over
    assert [("client", "10.0.0.1", 1), ("user", "alice", 2)] == [
        (summary.by, summary.subject, summary.count) for summary in throttle.ended()
    ]
    assert [] == throttle.ended()  # each window is taken once


def test_each_window_is_summarised_once() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 30.0, clock)
    throttle.failed("10.0.0.1", None)
    throttle.failed("10.0.0.1", None)
    for _ in range(500):
        assert 30 == throttle.retry_after("10.0.0.1", None)
    assert [] == throttle.ended()  # the window is not over yet
    clock.now += 30
    (summary,) = throttle.ended()
    assert ("client", "10.0.0.1", 500) == (summary.by, summary.subject, summary.count)
    assert summary.start < summary.end
    assert [] == throttle.ended() == throttle.drain()


def test_windows_without_refusals_leave_no_record_and_zero_turns_it_off() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 30.0, clock)
    throttle.failed("10.0.0.1", "alice")
    clock.now += 31
    assert [] == throttle.ended()
    off = LoginThrottle(0, 30.0, clock)
    for _ in range(100):
        off.failed("10.0.0.1", "alice")
    assert off.retry_after("10.0.0.1", "alice") is None


def test_invented_user_names_cannot_exhaust_memory() -> None:
    throttle = LoginThrottle(1, 30.0, Clock())
    for index in range(MAX_TRACKED + 10):
        throttle.failed("10.0.0.1", f"user{index}")
    assert 30 == throttle.retry_after("10.0.0.1", None)
    assert throttle.retry_after(None, f"user{MAX_TRACKED + 5}") is None  # past the cap, not tracked
    assert 30 == throttle.retry_after(None, "user5")


async def test_a_flood_of_wrong_passwords_is_refused_unforwarded_and_audited_once(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    config = make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 3, "window_seconds": 60})
    client = await gateway(config)
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/before", headers=basic("myname"))).status
    for _ in range(3):
        assert 401 == (await client.delete(SAMPLE_PATH, headers=basic("outsider", "guess"))).status
    for _ in range(40):
        response = await client.delete(SAMPLE_PATH, headers=basic("outsider", "guess"))
        assert 429 == response.status
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert {
            "code": "gateway.too_many_attempts",
            "message": f"Too many failed logins from this address or for this user; retry after {retry_after} s",
            "contexts": [],
        } == await response.json()
    # The right password is not even checked while the address is throttled...
    assert 429 == (await client.delete(SAMPLE_PATH, headers=basic("outsider"))).status
    # ... nor is the audit API open to it; but a caller already verified goes on.
    assert 429 == (await client.get("/audit/events", headers=basic("auditor"))).status
    assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/after", headers=basic("myname"))).status
    assert ["/v1/o/myorg/oauth2/accesstokens/before", "/v1/o/myorg/oauth2/accesstokens/after"] == [
        seen.path_qs for seen in peer.requests
    ]
    database = tmp_path / "audit.db"
    assert 3 == len(rows(database, "outcome = 'denied'"))  # the three real failures, one record each
    await client.close()  # shutting down audits the windows still open
    (summary,) = rows(database, "method = 'THROTTLE'")
    assert ("denied", "gateway.too_many_attempts", "127.0.0.1", None) == (
        summary["outcome"],
        summary["error_code"],
        summary["client_ip"],
        summary["actor"],
    )
    details = json.loads(summary["snapshot"])
    assert (42, "client") == (details["refused_attempts"], details["by"])
    assert details["window_start"] < details["window_end"]


async def test_throttling_can_be_turned_off(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    """max_failures = 0 lifts the limits per address and user (the bound on hashing overall is
    another key, raised here so that 20 checks in a row all run)."""
    limits = {"max_failures": 0, "max_checks_per_second": 1000}
    client = await gateway(make_config(tmp_path, upstream=peer.url, throttle=limits))
    for _ in range(20):
        assert 401 == (await client.delete(SAMPLE_PATH, headers=basic("outsider", "guess"))).status
    assert 200 == (await client.delete("/v1/o/otherorg/oauth2/accesstokens/x", headers=basic("outsider"))).status


async def test_a_burst_of_distinct_guesses_sent_at_once_is_throttled_too(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Found in review: failures were counted only once a check ended, so guesses sent together
    all passed the throttle and each cost a password hash. Checks under way count now."""
    client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 3}))
    statuses = await asyncio.gather(
        *(client.delete(SAMPLE_PATH, headers=basic("outsider", f"guess-{n}")) for n in range(50))
    )
    assert [401] * 3 + [429] * 47 == sorted(response.status for response in statuses)
    assert [] == peer.requests


@asynccontextmanager
async def from_address(last: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that connects from 127.0.0.``last`` (all of 127/8 is loopback): another caller."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{last}", 0))) as session:
        yield session


async def status(session: aiohttp.ClientSession, client: AppClient, headers: dict[str, str]) -> int:
    async with session.delete(client.make_url(SAMPLE_PATH), headers=headers) as response:
        return response.status


def summaries(database: Path) -> list[dict[str, Any]]:
    return [json.loads(row["snapshot"]) for row in rows(database, "method = 'THROTTLE'")]


class TestSharedChecks:
    """Issue 10, item 6: concurrent requests with one wrong password shared one check, only that
    check counted toward the throttle, and each wrote its own record (300 x 401, 300 records, no
    429): a flood could fill the audit log."""

    async def test_each_request_sharing_a_failed_check_counts(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer
    ) -> None:
        client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 3}))
        responses = await asyncio.gather(
            *(client.delete(SAMPLE_PATH, headers=basic("outsider", "guess")) for _ in range(300))
        )
        assert [401] * 3 + [429] * 297 == sorted(response.status for response in responses)
        assert [] == peer.requests
        database = tmp_path / "audit.db"
        assert 3 == len(rows(database, "outcome = 'denied' AND method = 'DELETE'"))
        await client.close()
        assert [("client", 297)] == [(summary["by"], summary["refused_attempts"]) for summary in summaries(database)]

    async def test_a_shared_check_still_lets_a_burst_of_right_passwords_in(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer
    ) -> None:
        """Joining a check costs no hash, so a new client's burst of first calls is not throttled."""
        client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 1}))
        responses = await asyncio.gather(
            *(client.delete(f"/v1/o/myorg/oauth2/accesstokens/t{n}", headers=basic("myname")) for n in range(20))
        )
        assert [200] * 20 == [response.status for response in responses]

    async def test_records_stay_within_the_allowance_whatever_the_addresses(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer
    ) -> None:
        """Each address gets its own failures; over all of them, max_denied_records per window.
        Past it, failures and whole windows of refusals are only counted, in one summary."""
        limits = {"max_failures": 2, "max_denied_records": 5, "max_checks_per_second": 1000}
        client = await gateway(make_config(tmp_path, upstream=peer.url, throttle=limits))
        for last in range(2, 12):
            async with from_address(last) as session:
                answers = [await status(session, client, basic(f"nobody{last}", f"guess{n}")) for n in range(3)]
                answers.append(await status(session, client, {}))
            assert [401, 401, 429, 429] == answers
        database = tmp_path / "audit.db"
        assert 5 == len(rows(database))
        # Legitimate calls are recorded as ever: the allowance is for failed logins only.
        assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
        assert 7 == len(rows(database))
        await client.close()
        [summary] = summaries(database)
        assert {
            "by": "all",
            "refused_attempts": 20,
            "unrecorded_failures": 15,
            "folded_windows": 10,
            "busy_refusals": 0,
        } == {
            key: summary[key]
            for key in ("by", "refused_attempts", "unrecorded_failures", "folded_windows", "busy_refusals")
        }
        assert summary["window_start"] < summary["window_end"]
        assert 8 == len(rows(database))

    def test_the_allowance_is_per_window_and_summarised_when_it_ends(self) -> None:
        clock = Clock()
        throttle = LoginThrottle(1, 60.0, clock, max_records=2)
        assert [True, True, False, False] == [throttle.may_record() for _ in range(4)]
        throttle.count_busy()
        throttle.failed("10.0.0.1", None)
        assert 60 == throttle.retry_after("10.0.0.1", None)
        clock.now += 59
        assert [] == throttle.ended()
        clock.now += 1
        [client, everything] = throttle.ended()
        assert ("client", "10.0.0.1", 1) == (client.by, client.subject, client.count)
        assert ("all", 0, {"unrecorded_failures": 2, "folded_windows": 0, "busy_refusals": 1}) == (
            everything.by,
            everything.count,
            everything.extra,
        )
        # A new window, a new allowance, of which the client's summary record took one.
        assert [True, False] == [throttle.may_record() for _ in range(2)]
        assert 1 == throttle.drain()[0].extra["unrecorded_failures"]

    def test_zero_allows_summaries_only(self) -> None:
        clock = Clock()
        throttle = LoginThrottle(1, 60.0, clock, max_records=0)
        assert not throttle.may_record()
        throttle.failed("10.0.0.1", None)
        throttle.retry_after("10.0.0.1", None)
        [everything] = throttle.drain()
        assert ("all", 1, {"unrecorded_failures": 1, "folded_windows": 1, "busy_refusals": 0}) == (
            everything.by,
            everything.count,
            everything.extra,
        )


class TestUserLockout:
    """Issue 10, item 8: ten wrong guesses from anywhere locked out any user who had not logged
    in since the last restart, whatever address the real user came from."""

    def test_an_address_without_failures_may_still_try_a_user_over_its_limit(self) -> None:
        throttle = LoginThrottle(2, 60.0, Clock())
        for _ in range(2):
            throttle.failed("10.0.0.1", "alice")
        assert 60 == throttle.retry_after("10.0.0.1", "alice")
        assert throttle.retry_after("10.0.0.2", "alice") is None
        throttle.checking("10.0.0.2", "alice")
        assert 60 == throttle.retry_after("10.0.0.2", "alice")  # one try at a time
        throttle.checked("10.0.0.2", "alice", failed=True)
        assert 60 == throttle.retry_after("10.0.0.2", "alice")  # a wrong guess counts against the address
        assert 60 == throttle.retry_after(None, "alice")  # no address, no exemption
        assert throttle.retry_after("10.0.0.3", "alice") is None

    async def test_the_real_user_gets_in_and_the_guessers_are_stopped(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer
    ) -> None:
        client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 3}))
        async with from_address(2) as guesser, from_address(3) as another:
            assert [401, 401, 401, 429] == [
                await status(guesser, client, basic("myname", f"guess{n}")) for n in range(4)
            ]
            assert 429 == await status(guesser, client, basic("myname"))  # its address is over its limit
            # A fresh address has one try at the user name; a wrong one stops it like the first.
            assert [401, 429, 429] == [
                await status(another, client, headers)
                for headers in (basic("myname", "x"), basic("myname", "y"), basic("myname"))
            ]
            # The real user, from an address without failures, gets in.
            assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
            assert 429 == await status(guesser, client, basic("myname", "guess9"))
        assert [SAMPLE_PATH] == [seen.path_qs for seen in peer.requests]


class TestHashingBound:
    """Issue 10, item 7: checks of distinct passwords from rotating addresses ran scrypt without
    bound (200 checks, 27 CPU-seconds in 20 s)."""

    def test_checks_past_the_rate_are_refused_with_the_time_to_wait(self) -> None:
        clock = Clock()
        limit = CheckLimit(1, 2.0, clock)
        assert [None, None, 1] == [limit.reserve() for _ in range(3)]
        clock.now += 0.5
        assert [None, 1] == [limit.reserve() for _ in range(2)]
        slow = CheckLimit(1, 0.25, clock)
        assert [None, 4] == [slow.reserve() for _ in range(2)]
        assert 3 == limit.refused + slow.refused

    async def test_at_most_so_many_checks_at_once_and_a_verified_caller_never_waits(self) -> None:
        clock = Clock()
        throttle = LoginThrottle(10, 60.0, clock)
        alice = User("alice", frozenset({"myorg"}), frozenset({"revoke"}))
        authenticator = Authenticator(
            [(alice, parse_hash(hash_password("alice-pass", log2_n=10)))], throttle, CheckLimit(2, 4.0, clock)
        )
        verified = "Basic " + base64_of("alice:alice-pass")
        assert "alice" == (await authenticator.authenticate(verified, "10.0.0.1")).name
        gate = GatedExecutor()
        asyncio.get_running_loop().set_default_executor(gate)
        guesses = [
            asyncio.ensure_future(authenticator.authenticate("Basic " + base64_of(f"alice:guess{n}"), f"10.0.{n}.1"))
            for n in range(10)
        ]
        await gate.until_running(2)
        busy = [guess for guess in guesses if guess.done()]
        assert 7 == len(busy)  # three of four checks a second were left; the rest are refused at once
        for refused in busy:
            error = refused.exception()
            assert isinstance(error, ChecksBusy) and (1, "alice") == (error.retry_after, error.claimed)
        # Both places are taken by slow hashes, and a verified caller is answered all the same.
        assert "alice" == (await authenticator.authenticate(verified, "10.0.0.1")).name
        gate.open()
        outcomes = await asyncio.gather(*guesses, return_exceptions=True)
        assert 3 == sum(type(outcome) is AuthenticationError for outcome in outcomes)
        assert (3, 2) == (gate.submitted, gate.peak)
        [everything] = throttle.drain()
        assert 7 == everything.extra["busy_refusals"]

    async def test_a_flood_from_rotating_addresses_gets_503_and_verified_callers_go_on(
        self, tmp_path: Path, gateway: GatewayFactory, peer: Peer
    ) -> None:
        limits = {"max_concurrent_checks": 1, "max_checks_per_second": 0.2}  # one check every 5 s
        client = await gateway(make_config(tmp_path, upstream=peer.url, throttle=limits))
        assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/first", headers=basic("myname"))).status

        async def guess(last: int) -> tuple[int, str | None, Any]:
            async with from_address(last) as session:
                async with session.delete(
                    client.make_url(SAMPLE_PATH), headers=basic("myname", f"guess{last}")
                ) as response:
                    return response.status, response.headers.get("Retry-After"), await response.json()

        answers = await asyncio.gather(*(guess(last) for last in range(2, 42)))
        for answer_status, retry_after, body in answers:
            assert (503, "gateway.login_busy") == (answer_status, body["code"])
            assert retry_after is not None and 1 <= int(retry_after) <= 5
            assert (
                body["message"]
                == f"Too many passwords are being checked; the credentials were not checked; retry after {retry_after} s"
            )
        assert 200 == (await client.delete("/v1/o/myorg/oauth2/accesstokens/second", headers=basic("myname"))).status
        database = tmp_path / "audit.db"
        assert 4 == len(rows(database))  # the two calls; the refusals are only counted
        await client.close()
        [summary] = summaries(database)
        assert ("all", 40) == (summary["by"], summary["busy_refusals"])


def base64_of(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
