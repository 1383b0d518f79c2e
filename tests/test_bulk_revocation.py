"""The bulk revocation (POST /oauth2/revoke) lists the tokens it will cut, page by page, against
the real stub, which pages Apigee's token search as Apigee does (at most 100 a page)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import GatewayFactory, basic, make_config, rows

from gateway.audit.fingerprint import fingerprint
from gateway.stub.seed import DEMO_APP_ID, SAMPLE_TOKEN, demo_data


async def test_every_token_of_the_app_is_listed_in_the_intent_over_several_pages(
    tmp_path: Path, gateway: GatewayFactory
) -> None:
    data = demo_data()
    [key] = data["orgs"]["myorg"]["developers"][0]["apps"][0]["credentials"]
    key["tokens"] += [{**SAMPLE_TOKEN, "token": f"bulkToken{i:04d}", "refreshToken": f"r{i}"} for i in range(230)]
    (tmp_path / "seed.json").write_text(json.dumps(data))
    client = await gateway(make_config(tmp_path, stub={"seed": "seed.json"}))
    response = await client.post(f"/v1/o/myorg/oauth2/revoke?app={DEMO_APP_ID}", headers=basic("myname"))
    assert (202, "231") == (response.status, await response.text())
    intent, outcome = rows(tmp_path / "audit.db")
    listed = json.loads(intent["snapshot"])
    expected = [SAMPLE_TOKEN["token"], *(f"bulkToken{i:04d}" for i in range(230))]
    assert [fingerprint(token) for token in expected] == [token["sha256"] for token in listed["tokens"]]
    assert (True, "pending") == (listed["complete"], intent["outcome"])
    assert {"app": DEMO_APP_ID, "submitted": 231} == json.loads(outcome["params"])
