"""GET /audit/events: role and org scoping, filters, bad values, and stable keyset pagination."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from audit_support import make_log, record
from helpers import AppClient, GatewayFactory, basic, make_config

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.sqlite_file import SQLiteAppender
from gateway.logs import configure_logging, flush_logs


async def started(tmp_path: Path, gateway: GatewayFactory, records: int = 20) -> AppClient:
    make_log(tmp_path / "audit.db", records)  # odd ids are myorg, even ids otherorg
    return await gateway(make_config(tmp_path))


async def ids(client: AppClient, user: str, **params: Any) -> list[int]:
    response = await client.get("/audit/events", params=params, headers=basic(user))
    assert 200 == response.status, await response.text()
    return [event["id"] for event in (await response.json())["events"]]


async def test_roles_and_orgs_scope_what_is_seen(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await started(tmp_path, gateway)
    assert list(range(20, 0, -1)) == await ids(client, "auditor")
    assert list(range(19, 0, -2)) == await ids(client, "myname")
    assert [19, 17, 15] == await ids(client, "myname", limit="3")
    anonymous = await client.get("/audit/events")
    assert (401, 'Basic realm="apigee-audit-gateway"') == (anonymous.status, anonymous.headers["WWW-Authenticate"])
    no_role = await client.get("/audit/events", headers=basic("outsider"))
    assert (
        403,
        {
            "code": "gateway.forbidden",
            "message": "User outsider may not read the audit trail (role audit)",
            "contexts": [],
        },
    ) == (no_role.status, await no_role.json())
    other = await client.get("/audit/events", params={"org": "otherorg"}, headers=basic("myname"))
    assert (403, "User myname may not read the audit trail of organization otherorg") == (
        other.status,
        (await other.json())["message"],
    )


async def test_one_record_by_id(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await started(tmp_path, gateway)
    response = await client.get("/audit/events/3", headers=basic("myname"))
    event = await response.json()
    assert (200, 3, "myorg", {"app": "app1"}) == (response.status, event["id"], event["org"], event["snapshot"])
    assert 64 == len(event["hash"]) and 64 == len(event["prev_hash"])
    hidden = await client.get("/audit/events/4", headers=basic("myname"))
    assert (404, "No audit record 4 that user myname may read") == (hidden.status, (await hidden.json())["message"])
    assert 404 == (await client.get("/audit/events/99", headers=basic("auditor"))).status
    assert 400 == (await client.get("/audit/events/abc", headers=basic("auditor"))).status


async def test_filters(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await started(tmp_path, gateway)
    assert [7] == await ids(client, "auditor", token_sha256=f"{7:064x}")
    assert [4, 3] == await ids(client, "auditor", since="2026-01-03", until="2026-01-05")
    assert [] == await ids(client, "auditor", outcome="not_found")
    assert [20, 18] == await ids(client, "auditor", org="otherorg", limit="2")
    assert [20] == await ids(client, "auditor", actor="alice", app="app1", client_id="c1", limit="1")


async def test_filter_by_raw_token(tmp_path: Path, gateway: GatewayFactory) -> None:
    client = await gateway(make_config(tmp_path))
    appender = SQLiteAppender(tmp_path / "audit.db", ChainKey())
    appender.append([record(1)._replace(token_sha256=fingerprint("rawTokenValue12345678"))])
    appender.close()
    assert [1] == await ids(client, "auditor", token="rawTokenValue12345678")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "Invalid parameter limit: '0' is not a positive whole number"),
        ({"limit": "5000"}, "Invalid parameter limit: '5000' is over the maximum of 1000"),
        ({"since": "last week"}, "Invalid parameter since: 'last week' is neither an ISO 8601 time"),
        ({"outcome": "gone"}, "Invalid parameter outcome: 'gone' is not an outcome"),
        ({"cursor": "!!"}, "Invalid parameter cursor: '!!' is not a cursor given by a previous page"),
        ({"token_sha256": "abc"}, "Invalid parameter token_sha256: 'abc' is not a SHA-256 fingerprint"),
        ({"colour": "red"}, "Unknown parameter colour; expected one of org, token, token_sha256"),
        (
            {"token": "x", "token_sha256": "0" * 64},
            "Parameters that mean the same filter: give token or token_sha256, not both",
        ),
    ],
)
async def test_bad_filter_values_get_400_naming_the_parameter(
    tmp_path: Path, gateway: GatewayFactory, params: dict[str, str], message: str
) -> None:
    client = await started(tmp_path, gateway, records=1)
    response = await client.get("/audit/events", params=params, headers=basic("auditor"))
    body = await response.json()
    assert (400, "gateway.bad_request") == (response.status, body["code"])
    assert body["message"].startswith(message), body["message"]


async def test_pages_have_no_duplicates_or_gaps_while_records_arrive(tmp_path: Path, gateway: GatewayFactory) -> None:
    """Paging 7 at a time through 50 records while new ones are appended between pages."""
    client = await started(tmp_path, gateway, records=50)
    appender = SQLiteAppender(tmp_path / "audit.db", ChainKey())
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        response = await client.get("/audit/events", params=params, headers=basic("auditor"))
        page = await response.json()
        seen += [event["id"] for event in page["events"]]
        appender.append([record(28)._replace(time=f"2026-02-01T00:00:{pages:02d}.000Z")])  # newer than any page
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    appender.close()
    assert list(range(50, 0, -1)) == seen
    assert 8 == pages


class TestReadsLeaveATrace:
    """Issue 10, item 25: reads of the trail left no log line at all, granted or refused, and
    refused reads did not count toward the throttle."""

    async def test_every_read_is_logged_with_who_asked_what_and_got_how_much(
        self, tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO
    ) -> None:
        client = await started(tmp_path, gateway)
        raw = "rawTokenValue12345678"
        reads = [
            ("auditor", None, "/audit/events", {"token": raw, "actor": "alice"}, 200),
            ("myname", None, "/audit/events", {"org": "myorg", "limit": "3"}, 200),
            ("myname", None, "/audit/events/3", {}, 200),
            ("myname", None, "/audit/events/4", {}, 404),
            ("auditor", "wrong", "/audit/events", {"since": "1d"}, 401),
            ("outsider", None, "/audit/events", {}, 403),
            ("auditor", None, "/audit/events", {"tokn": raw}, 400),
            ("auditor", None, "/audit/events", {"token_sha256": raw}, 400),
            ("auditor", None, "/audit/events", {"client_id": "consumerKey123", "token_sha256": "A" * 64}, 200),
        ]
        request_ids = []
        for user, password, path, params, expected in reads:
            response = await client.get(path, params=params, headers=basic(user, password))
            assert expected == response.status
            request_ids.append(response.headers["X-Request-ID"])
        flush_logs()
        logged = [json.loads(line) for line in log_output.getvalue().splitlines()]
        lines = [event for event in logged if event["event"] == "audit_read"]
        assert request_ids == [line["request_id"] for line in lines]
        assert [
            ("auditor", "/audit/events", None, {"token_sha256": fingerprint(raw), "actor": "alice"}, 0, 200, None),
            ("myname", "/audit/events", None, {"org": "myorg", "limit": "3"}, 3, 200, None),
            ("myname", "/audit/events/{id}", 3, {}, 1, 200, None),
            ("myname", "/audit/events/{id}", 4, {}, 0, 404, "gateway.not_found"),
            ("auditor", "/audit/events", None, {"since": "1d"}, None, 401, "gateway.unauthorized"),
            ("outsider", "/audit/events", None, {}, None, 403, "gateway.forbidden"),
            ("auditor", "/audit/events", None, {"tokn": None}, None, 400, "gateway.bad_request"),
            ("auditor", "/audit/events", None, {"token_sha256": None}, None, 400, "gateway.bad_request"),
            (
                "auditor",
                "/audit/events",
                None,
                {"client_id_sha256": fingerprint("consumerKey123"), "token_sha256": "a" * 64},
                0,
                200,
                None,
            ),
        ] == [
            (
                line["actor"],
                line["path"],
                line["record_id"],
                line["filters"],
                line["records"],
                line["status"],
                line["error_code"],
            )
            for line in lines
        ]
        assert all("info" == line["level"] and "127.0.0.1" == line["client_ip"] for line in lines)
        assert raw not in log_output.getvalue() and "consumerKey123" not in log_output.getvalue()

    async def test_refused_reads_count_toward_the_throttle(self, tmp_path: Path, gateway: GatewayFactory) -> None:
        make_log(tmp_path / "audit.db", 2)
        client = await gateway(make_config(tmp_path, throttle={"max_failures": 3}))
        assert 200 == (await client.get("/audit/events", params={"org": "myorg"}, headers=basic("myname"))).status
        assert 403 == (await client.get("/audit/events", headers=basic("outsider"))).status
        assert 401 == (await client.get("/audit/events/1", headers=basic("auditor", "wrong"))).status
        assert 403 == (await client.get("/audit/events", params={"org": "otherorg"}, headers=basic("myname"))).status
        # Three refusals from this address: a login not yet verified is now refused unchecked,
        # on every route; callers already verified go on.
        assert 429 == (await client.get("/audit/events", headers=basic("auditor"))).status
        assert (
            429 == (await client.delete("/v1/o/otherorg/oauth2/accesstokens/x", headers=basic("outsider", "x"))).status
        )
        assert 200 == (await client.get("/audit/events", headers=basic("myname"))).status

    async def test_probes_are_logged_at_debug_level_only(
        self, tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO
    ) -> None:
        """Orchestrators probe every few seconds: their lines are for debugging, not for the log."""
        configure_logging("json", "debug", log_output)
        client = await gateway(make_config(tmp_path))
        for path in ("/healthz", "/readyz", "/metrics"):
            assert 200 == (await client.get(path)).status
        flush_logs()
        probes = [json.loads(line) for line in log_output.getvalue().splitlines()]
        assert [("request", "debug", path) for path in ("/healthz", "/readyz", "/metrics")] == [
            (event["event"], event["level"], event["path"]) for event in probes if event.get("path")
        ]
        quiet = io.StringIO()
        configure_logging("json", "info", quiet)
        assert 200 == (await client.get("/healthz")).status
        flush_logs()
        assert "" == quiet.getvalue()
