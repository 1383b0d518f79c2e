"""One structured event per request, and no secret in any log line or audit row."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
from pathlib import Path

import structlog
from helpers import SAMPLE, SAMPLE_PATH, GatewayFactory, basic, make_config

from gateway.logs import configure_logging, flush_logs

SECRETS = (SAMPLE, "mypass", "1h11770Z", "wrong-Pa55word", base64.b64encode(b"myname:mypass").decode())


async def test_one_json_event_per_request(tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO) -> None:
    client = await gateway(make_config(tmp_path))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    await client.delete(SAMPLE_PATH, headers=basic("myname", "wrong-Pa55word"))
    flush_logs()
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert ["request", "request"] == [event["event"] for event in events]
    ok, denied = events
    assert {
        "method": "DELETE",
        "actor": "myname",
        "org": "myorg",
        "token_hint": "c7vC",
        "status": 200,
        "outcome": "deleted",
        "upstream_status": 200,
        "level": "info",
    }.items() <= ok.items()
    assert {"status": 401, "outcome": "denied", "error_code": "gateway.unauthorized"}.items() <= denied.items()
    for event in events:
        assert len(event["request_id"]) == 22 and event["latency_ms"] >= 0 and event["timestamp"].endswith("Z")


async def test_no_secret_in_logs_or_audit_rows(
    tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO
) -> None:
    """Tokens, refresh tokens, passwords and Authorization values never appear in clear."""
    configure_logging("json", "debug", log_output)
    client = await gateway(make_config(tmp_path))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    await client.delete(SAMPLE_PATH, headers=basic("myname"))
    await client.delete(SAMPLE_PATH, headers=basic("myname", "wrong-Pa55word"))
    await client.delete(SAMPLE_PATH + "/extra", headers=basic("myname"))
    await client.delete(f"/v1/o/myorg/oauth2/accesstoken/{SAMPLE}", headers=basic("myname"))
    await client.get(SAMPLE_PATH, headers=basic("myname"))
    flush_logs()
    with sqlite3.connect(tmp_path / "audit.db") as db:
        audit_rows = json.dumps(db.execute("SELECT * FROM audit_events").fetchall())
    assert log_output.getvalue()
    for secret in SECRETS:
        assert secret not in log_output.getvalue()
        assert secret not in audit_rows


class TestLineBuffer:
    def test_info_waits_for_a_flush_and_errors_do_not(self, log_output: io.StringIO) -> None:
        """Routine lines are written in chunks; a warning or error writes everything before it at once."""
        log = structlog.get_logger().bind()
        log.info("first")
        assert "" == log_output.getvalue()
        log.error("broken")
        assert ["first", "broken"] == [json.loads(line)["event"] for line in log_output.getvalue().splitlines()]

    def test_a_full_buffer_is_written(self, log_output: io.StringIO) -> None:
        log = structlog.get_logger().bind()
        for index in range(256):
            log.info("line", index=index)
        assert 256 == len(log_output.getvalue().splitlines())
