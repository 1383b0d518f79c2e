"""Failed-login throttling: 429 with Retry-After, nothing forwarded, and one audit record per
window of refused attempts however long the flood."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import SAMPLE_PATH, GatewayFactory, Peer, basic, make_config, rows
from gateway.throttle import MAX_TRACKED, LoginThrottle


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
    clock.now += 10.2
    assert 50 == throttle.retry_after("10.0.0.1", None)           # the address is over its limit
    assert 50 == throttle.retry_after("10.0.0.2", "alice")        # and so is the user, from anywhere
    assert throttle.retry_after("10.0.0.2", "bob") is None        # others are not
    clock.now += 50
    assert throttle.retry_after("10.0.0.1", "alice") is None      # the window is over
    assert [("client", "10.0.0.1", 1), ("user", "alice", 1)] == [
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
        summary["outcome"], summary["error_code"], summary["client_ip"], summary["actor"]
    )
    details = json.loads(summary["snapshot"])
    assert (42, "client") == (details["refused_attempts"], details["by"])
    assert details["window_start"] < details["window_end"]


async def test_throttling_can_be_turned_off(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 0}))
    for _ in range(20):
        assert 401 == (await client.delete(SAMPLE_PATH, headers=basic("outsider", "guess"))).status
    assert 200 == (await client.delete("/v1/o/otherorg/oauth2/accesstokens/x", headers=basic("outsider"))).status


async def test_a_burst_of_distinct_guesses_sent_at_once_is_throttled_too(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Found in review: failures were counted only once a check ended, so guesses sent together
    all passed the throttle and each cost a password hash. Checks under way count now."""
    client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 3}))
    statuses = await asyncio.gather(*(
        client.delete(SAMPLE_PATH, headers=basic("outsider", f"guess-{n}")) for n in range(50)
    ))
    assert [401] * 3 + [429] * 47 == sorted(response.status for response in statuses)
    assert [] == peer.requests
