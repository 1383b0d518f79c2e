"""Real Apigee clients from npm (apigee-edge-js, apigeetool), unmodified, pointed at a real gateway
whose upstream is the stub: each audited call leaves its records (read back with
``gateway audit query --action ... --format json``), reads and other writes are passed through.
And a token flow over plain HTTP through the gateway.

The clients' user holds the roles revoke, read and manage in the gateway, and is a user of the stub
(the gateway forwards the caller's Basic credentials). The two clients' flows run concurrently.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import GatewayFactory, make_config, rows
from npm_clients import ORG, PASSWORD, SEED, USER, Clients, Edge, Tool, developer, find_node, install

from gateway.audit.fingerprint import fingerprint
from gateway.passwords import hash_password
from gateway.stub import make_stub_app
from gateway.stub.seed import parse_seed
from gateway.stub.settings import StubSettings

GATEWAY_USERS = [
    {
        "name": USER,
        "password_hash": hash_password(PASSWORD, log2_n=10),
        "orgs": [ORG],
        "roles": ["revoke", "read", "manage"],
    }
]
BASIC = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "Accept": "application/json",
}


@pytest.fixture(scope="session")
def clients() -> Clients:
    return install(find_node())


@dataclass
class Front:
    """A gateway on loopback in front of a stub."""

    url: str
    stub: str
    database: Path

    async def stub_json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(f"{self.stub}{path}") as response:
            assert 200 == response.status
            return await response.json()

    async def journal(self) -> list[tuple[str, str]]:
        return [(entry["method"], entry["path"]) for entry in (await self.stub_json("/_stub/requests"))["requests"]]

    async def audited(self, action: str) -> list[dict[str, Any]]:
        """The records of ``action``, oldest first, as ``gateway audit query`` prints them."""
        return await self.query("--action", action)

    async def query(self, *filters: str) -> list[dict[str, Any]]:
        """``gateway audit query --format json`` with these filters: the records, oldest first."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "audit",
            "query",
            "--db",
            str(self.database),
            *filters,
            "--format",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        assert (0, b"") == (process.returncode, err)
        return sorted(json.loads(out), key=lambda record: record["id"])


@pytest.fixture
async def front(aiohttp_server: Any, gateway: GatewayFactory, tmp_path: Path) -> Front:
    stub = make_stub_app(parse_seed(SEED, source="npm seed"), admin=True, settings=StubSettings(revoke_delay=0.05))
    stub_url = str((await aiohttp_server(stub)).make_url("")).rstrip("/")
    client = await gateway(make_config(tmp_path, upstream=stub_url, users=GATEWAY_USERS))
    return Front(str(client.make_url("")).rstrip("/"), stub_url, tmp_path / "audit.db")


def pairs(records: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str, int | None]]:
    """Each record as (outcome, method, resource, actor, upstream status)."""
    return [
        (record["outcome"], record["method"], record["resource"], record["actor"], record["upstream_status"])
        for record in records
    ]


def call(outcome: str, method: str, resource: str, status: int) -> list[tuple[str, str, str, str, int | None]]:
    """An audited call's two records: the intent, then its outcome."""
    return [("pending", method, resource, USER, None), (outcome, method, resource, USER, status)]


async def edge_flow(edge: Edge, front: Front) -> dict[str, str]:
    """apigee-edge-js, /v1/organizations: connect, a developer (passed through), an app and a key
    (audited), then the key revoked, the app revoked and deleted, and a second app deleted by its id."""
    email = "edge@example.com"
    assert (0, {"ok": True, "result": {}}) == await edge("connect")
    status, made = await edge("developers.create", email=email, firstName="Edge", lastName="Js", userName="edge")
    assert (0, "active") == (status, made["result"]["status"]), made
    status, app = await edge("developerapps.create", email=email, appName="edgeapp", apiProduct="prod1")
    assert 0 == status, app
    status, added = await edge(
        "appcredentials.add", email=email, appName="edgeapp", apiProduct="prod2", consumerKey="EDGEKEY0123456789"
    )
    assert (0, "EDGEKEY0123456789") == (status, added["result"]["consumerKey"]), added
    assert (0, {"ok": True, "result": ""}) == await edge(
        "appcredentials.revoke", email=email, appName="edgeapp", key="EDGEKEY0123456789"
    )
    assert (0, {"ok": True, "result": ""}) == await edge("developerapps.revoke", email=email, appName="edgeapp")
    state = developer(await front.stub_json(f"/_stub/orgs/{ORG}"), email)
    assert state is not None
    [held] = state["apps"]
    assert ("revoked", {"revoked"}) == (
        held["status"],
        {c["status"] for c in held["credentials"] if c["consumerKey"] == "EDGEKEY0123456789"},
    )
    status, deleted = await edge("developerapps.del", email=email, appName="edgeapp")
    assert (0, "edgeapp") == (status, deleted["result"]["name"]), deleted
    status, second = await edge("developerapps.create", email=email, appName="edgeapp2", apiProduct="prod1")
    assert 0 == status, second
    status, gone = await edge("apps.del", id=second["result"]["appId"])
    assert (0, "edgeapp2") == (status, gone["result"]["name"]), gone
    state = developer(await front.stub_json(f"/_stub/orgs/{ORG}"), email)
    assert state is not None and [] == state["apps"]
    return {"edgeapp": app["result"]["credentials"][0]["consumerKey"], "edgeapp2": second["result"]["appId"]}


async def tool_flow(tool: Tool, front: Front) -> str:
    """apigeetool, /v1/o: a developer (passed through), an app and a key (audited), both deleted."""
    email = "tool@example.com"
    made = await tool(
        "createDeveloper", "--email", email, "--firstName", "Tool", "--lastName", "Dev", "--userName", "tool"
    )
    assert (0, {}, "") == (made.status, made.json(), made.stderr)
    app = await tool("createApp", "--email", email, "--name", "toolapp", "--apiProducts", "prod1,prod2")
    assert 0 == app.status, app.stderr
    key = await tool(
        "createAppKey",
        "--developerId",
        email,
        "--appName",
        "toolapp",
        "--key",
        "TOOLKEY0123456789",
        "--secret",
        "TOOLSECRET0123456789",
        "--apiProducts",
        "prod1",
    )
    assert (0, "TOOLKEY0123456789") == (key.status, key.json()["consumerKey"]), key.stderr
    deleted_app = await tool("deleteApp", "--email", email, "--name", "toolapp")
    assert (0, "toolapp") == (deleted_app.status, deleted_app.json()["name"]), deleted_app.stderr
    deleted = await tool("deleteDeveloper", "--email", email)
    assert (0, email) == (deleted.status, deleted.json()["email"]), deleted.stderr
    assert developer(await front.stub_json(f"/_stub/orgs/{ORG}"), email) is None
    again = await tool("deleteDeveloper", "--email", email)
    assert 6 == again.status
    assert f"Error: DeveloperId {email} does not exist in organization {ORG}" == again.stderr.splitlines()[0]
    return str(app.json()["credentials"][0]["consumerKey"])


async def test_both_clients_through_the_gateway_leave_their_audit_trail(
    clients: Clients, front: Front, tmp_path: Path
) -> None:
    (tmp_path / "edge").mkdir()
    (tmp_path / "tool").mkdir()
    edge_keys, tool_key = await asyncio.gather(
        edge_flow(Edge(clients, front.url, tmp_path / "edge"), front),
        tool_flow(Tool(clients, front.url, tmp_path / "tool"), front),
    )

    edge_base, tool_base = "developers/edge@example.com/apps", "developers/tool@example.com/apps"
    actions = (
        "app.create",
        "key.create",
        "key.update",
        "key.revoke",
        "app.revoke",
        "app.delete",
        "developer.delete",
    )
    *found, by_key = await asyncio.gather(
        *(front.audited(action) for action in actions), front.query("--client-id", "EDGEKEY0123456789")
    )
    trail = dict(zip(actions, found, strict=True))

    def of(records: list[dict[str, Any]], resource_start: str) -> list[dict[str, Any]]:
        return [record for record in records if (record["resource"] or "").startswith(resource_start)]

    assert call("succeeded", "POST", edge_base, 201) + call("succeeded", "POST", edge_base, 201) == pairs(
        of(trail["app.create"], edge_base)
    )
    assert call("succeeded", "POST", tool_base, 201) == pairs(of(trail["app.create"], tool_base))
    for base, app, key in ((edge_base, "edgeapp", "EDGEKEY0123456789"), (tool_base, "toolapp", "TOOLKEY0123456789")):
        created, updated = of(trail["key.create"], base), of(trail["key.update"], base)
        assert call("succeeded", "POST", f"{base}/{app}/keys/create", 201) == pairs(created)
        assert call("succeeded", "POST", f"{base}/{app}/keys/{{key}}", 200) == pairs(updated)
        assert [fingerprint(key)] * 4 == [record["token_sha256"] for record in created + updated]
        assert [fingerprint(key)] * 2 == [record["client_id"] for record in (created[1], updated[1])]
    assert call("succeeded", "POST", f"{edge_base}/edgeapp/keys/{{key}}", 204) == pairs(trail["key.revoke"])
    # What was done with one key, found by the key (its fingerprint is what the log holds).
    assert ["key.create", "key.update", "key.revoke"] == [record["action"] for record in by_key]
    assert call("succeeded", "POST", f"{edge_base}/edgeapp", 204) == pairs(trail["app.revoke"])
    pre_image = trail["app.revoke"][0]
    assert (None, "edgeapp", "approved") == (  # the app as it was, read first
        pre_image["params"],
        pre_image["snapshot"]["name"],
        pre_image["snapshot"]["status"],
    )
    assert call("deleted", "DELETE", f"{edge_base}/edgeapp", 200) + call(
        "deleted", "DELETE", f"apps/{edge_keys['edgeapp2']}", 200
    ) == pairs(of(trail["app.delete"], edge_base) + of(trail["app.delete"], "apps/"))
    assert call("deleted", "DELETE", f"{tool_base}/toolapp", 200) == pairs(of(trail["app.delete"], tool_base))
    assert call("deleted", "DELETE", "developers/tool@example.com", 200) + call(
        "not_found", "DELETE", "developers/tool@example.com", 404
    ) == pairs(trail["developer.delete"])
    # Nothing else was audited: the connect, the developers created and the reads were passed through.
    assert sum(len(records) for records in trail.values()) == len(rows(front.database))
    journal = await front.journal()
    assert ("GET", f"/v1/organizations/{ORG}/") in journal
    assert ("POST", f"/v1/organizations/{ORG}/developers") in journal and ("POST", f"/v1/o/{ORG}/developers") in journal
    secrets = [edge_keys["edgeapp"], tool_key, "EDGEKEY0123456789", "TOOLKEY0123456789", "TOOLSECRET0123456789"]
    text = json.dumps(trail)
    assert [] == [secret for secret in secrets if secret in text]


async def test_a_token_flow_over_plain_http_through_the_gateway(front: Front) -> None:
    """Search an app's tokens, revoke and approve one, revoke them all by app, delete one: every call
    through the gateway over plain HTTP, the stub's state read back through it, each change audited."""
    base = f"/v1/organizations/{ORG}"
    async with aiohttp.ClientSession(front.url, headers=BASIC) as session:
        developer_body = {"email": "flow@example.com", "firstName": "F", "lastName": "L", "userName": "flow"}
        async with session.post(f"{base}/developers", json=developer_body) as response:
            assert 201 == response.status
        async with session.post(f"{base}/developers/flow@example.com/apps", json={"name": "flowapp"}) as response:
            assert 201 == response.status
            app_id = (await response.json())["appId"]
        async with aiohttp.ClientSession() as admin:
            async with admin.post(f"{front.stub}/_stub/orgs/{ORG}/apps/{app_id}/tokens", json={"count": 3}) as made:
                tokens = [token["token"] for token in (await made.json())["tokens"]]

        async def status_of(token: str) -> str:
            async with session.get(f"{base}/oauth2/accesstokens/{token}") as response:
                assert 200 == response.status
                return str((await response.json())["status"])

        async with session.get(f"{base}/oauth2/search", params={"app": app_id}) as response:
            assert (200, tokens) == (response.status, (await response.json())["list"])
        for action, status in (("revoke", "revoked"), ("approve", "approved")):
            async with session.post(f"{base}/oauth2/accesstokens/{tokens[0]}?action={action}&cascade=true") as response:
                assert (204, b"") == (response.status, await response.read())
            assert status == await status_of(tokens[0])
        async with session.post(f"{base}/oauth2/revoke?app={app_id}") as response:
            assert (202, b"3") == (response.status, await response.read())
        async with asyncio.timeout(10):
            while (await front.stub_json(f"/_stub/orgs/{ORG}"))["pendingRevocations"]:
                await asyncio.sleep(0.01)
        assert ["revoked"] * 3 == [await status_of(token) for token in tokens]
        async with session.delete(f"{base}/oauth2/accesstokens/{tokens[1]}") as response:
            assert (200, tokens[1]) == (response.status, (await response.json())["token"])

    revoked, approved, bulk, deleted = await asyncio.gather(
        *(front.audited(action) for action in ("token.revoke", "token.approve", "tokens.revoke", "token.delete"))
    )
    token = "oauth2/accesstokens/{token}"
    assert call("succeeded", "POST", token, 204) == pairs(revoked)
    assert call("succeeded", "POST", token, 204) == pairs(approved)
    assert call("succeeded", "POST", "oauth2/revoke", 202) == pairs(bulk)
    assert call("deleted", "DELETE", token, 200) == pairs(deleted)
    assert [fingerprint(tokens[0])] * 4 + [fingerprint(tokens[1])] * 2 == [
        record["token_sha256"] for record in revoked + approved + deleted
    ]
    assert [{"cascade": "true"}] * 4 == [record["params"] for record in revoked + approved]
    assert ["flowapp"] * 3 == [record["app"] for record in (revoked[1], approved[1], deleted[1])]
    assert [fingerprint(token) for token in tokens] == [listed["sha256"] for listed in bulk[0]["snapshot"]["tokens"]]
    assert {"app": app_id, "submitted": 3} == bulk[1]["params"]
    # The reads (search, each token) were passed through, not audited: 2 x (app, 2 actions, bulk, delete).
    assert 10 == len(rows(front.database))
    assert [] == [secret for secret in tokens if secret in json.dumps(revoked + approved + bulk + deleted)]
