"""OCSF export of what issue 12 records: each action's API Activity (by its verb, as the table in
docs/fleet.md says), its resource type and name, its parameters, and a success as a Success.
Records made by a real gateway in front of the stub, exported by the real command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from docs_markdown import code_spans, read
from helpers import PASSWORDS, ROOT, SAMPLE, GatewayFactory, basic, make_config, rows

from gateway.cli import main
from gateway.fleet.ocsf import CLASS_UID, VERBS
from gateway.operations import OPERATIONS
from gateway.passwords import hash_password
from gateway.stub.seed import DEMO_APP, DEMO_DEVELOPER

USERS = [
    {
        "name": name,
        "password_hash": hash_password(PASSWORDS[name], log2_n=10),
        "orgs": orgs,
        "roles": ["revoke", "audit", "read"],
    }
    for name, orgs in (("myname", ["myorg"]), ("outsider", ["otherorg"]))
]


def documented_activities() -> dict[str, tuple[int, str, int]]:
    """docs/fleet.md's table: verb -> (activity_id, activity_name, type_uid)."""
    table = read(ROOT / "docs" / "fleet.md", "docs/fleet.md").table(
        "Verb of the action", "Actions", "`activity_id`", "`activity_name`", "`type_uid`"
    )
    return {code_spans(verb)[0]: (int(number), name, int(uid)) for verb, _, number, name, uid in table.rows}


def test_the_documented_activities_are_the_exports() -> None:
    assert {verb: (number, name, CLASS_UID * 100 + number) for verb, (number, name) in VERBS.items()} == (
        documented_activities()
    )


@pytest.mark.parametrize("action", sorted({operation.action for operation in OPERATIONS} | {"read"}))
def test_every_recorded_action_has_a_documented_activity_other_than_other(action: str) -> None:
    verb = action.rpartition(".")[2]
    assert verb in documented_activities(), f"{action}: no row for {verb!r} in docs/fleet.md"
    assert 99 != documented_activities()[verb][0]


async def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """`gateway audit export --format ocsf` of the test's log (in a thread: it runs its own loop)."""
    capsys.readouterr()  # the gateway's own log lines so far
    assert 0 == await asyncio.to_thread(
        main, ["audit", "export", "--db", str(tmp_path / "audit.db"), "--format", "ocsf"]
    )
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_issue_12_records_export_with_their_activity_resource_and_params(
    tmp_path: Path, gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await gateway(make_config(tmp_path, users=USERS, audit={"reads": True}))
    developer = f"/v1/o/myorg/developers/{DEMO_DEVELOPER}"
    calls = [
        ("POST", f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}?action=revoke&cascade=true", "myname"),
        ("POST", f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}?action=approve", "myname"),
        ("POST", f"/v1/o/myorg/oauth2/revoke?app={DEMO_APP}", "myname"),
        ("POST", f"{developer}/apps/{DEMO_APP}?action=revoke", "myname"),
        ("POST", f"{developer}?action=inactive", "myname"),
        ("GET", f"{developer}/apps", "myname"),
        ("DELETE", f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}", "outsider"),  # refused: another org
        ("DELETE", f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}", "myname"),
    ]
    for method, path, user in calls:
        response = await client.request(method, path, headers={**basic(user), "Accept": "application/json"})
        await response.read()
    records = rows(tmp_path / "audit.db")
    events = await exported(tmp_path, capsys)
    activities = documented_activities()
    assert len(records) == len(events)
    seen = set()
    for record, event in zip(records, events, strict=True):
        assert record["action"] is not None, record
        number, name, type_uid = activities[record["action"].rpartition(".")[2]]
        seen.add(record["action"])
        assert (number, name, type_uid, f"API Activity: {name}") == (
            event["activity_id"],
            event["activity_name"],
            event["type_uid"],
            event["type_name"],
        ), record["action"]
        assert (record["action"], record["method"]) == (event["api"]["operation"], event["http_request"]["http_method"])
        resource = event["resources"][0]
        assert (record["resource_type"], record["resource"]) == (resource["type"], resource["name"])
        params = json.loads(record["params"]) if record["params"] is not None else None
        assert params == event["api"]["request"].get("data")
        status = {"succeeded": "Success", "deleted": "Success", "pending": "Unknown"}.get(record["outcome"], "Failure")
        assert status == event["status"], record["outcome"]
    assert {
        "token.revoke",
        "token.approve",
        "tokens.revoke",
        "app.revoke",
        "developer.inactive",
        "read",
        "token.delete",
    } == seen
    cascade = next(event for event in events if event["api"]["operation"] == "token.revoke")
    assert {"cascade": "true"} == cascade["api"]["request"]["data"]
    refused = next(event for event in events if event["actor"]["user"]["name"] == "outsider")
    assert (4, 600304, "Failure", "forbidden") == (
        refused["activity_id"],
        refused["type_uid"],
        refused["status"],
        refused["status_detail"],
    )
