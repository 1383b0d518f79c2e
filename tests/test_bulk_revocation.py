"""The bulk revocation (POST /oauth2/revoke) lists the tokens it will cut, page by page, against
the real stub, which pages Apigee's token search as Apigee does (at most 100 a page)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
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


# A hostile upstream's token search (issue 12 follow-up) ------------------------------------------------


def _search_page(mode: str, start: str | None) -> dict[str, Any]:
    """A page of ``/oauth2/search`` as a hostile (or broken) upstream answers it."""
    at = int(start or 0)
    if mode == "endless":  # full pages of new tokens, forever
        return {"list": [f"endless{at + i:06d}" for i in range(100)], "meta": {"next": str(at + 100)}}
    if mode == "repeated":  # the same page, whatever is asked
        return {"list": ["same0001", "same0002"], "meta": {"next": "1"}}
    if mode == "junk":  # entries that are no tokens, and a next that always moves on
        return {"list": [at, None, {"token": "x"}], "meta": {"next": str(at + 1)}}
    return {"list": [f"tiny{at:06d}"], "meta": {"next": str(at + 1)}}  # one token a page


async def hostile_search(aiohttp_server: Any, mode: str, delay: float = 0.0) -> str:
    async def search(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.json_response(_search_page(mode, request.query.get("start")))

    async def revoke(request: web.Request) -> web.Response:
        return web.Response(status=202, text="7")

    app = web.Application()
    app.router.add_get("/v1/o/myorg/oauth2/search", search)
    app.router.add_post("/v1/o/myorg/oauth2/revoke", revoke)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("mode", "delay", "listed", "truncated"),
    [
        ("endless", 0.0, 10_000, "more than 10000 tokens"),
        ("repeated", 0.0, 2, "the upstream repeated a page"),
        ("junk", 0.0, 0, "the upstream repeated a page"),
        ("tiny", 0.0, 200, "more than 200 pages"),
        ("tiny", 0.05, None, "the listing took more than 0.5 s (upstream.enumeration_timeout)"),
    ],
)
async def test_a_search_that_never_ends_is_cut_short_said_so_and_the_revocation_still_forwarded(
    tmp_path: Path,
    gateway: GatewayFactory,
    aiohttp_server: Any,
    mode: str,
    delay: float,
    listed: int | None,
    truncated: str,
) -> None:
    """Endless pages, the same page again, pages of junk, one token a page, or slow pages: the listing
    stops (tokens, pages, ``upstream.enumeration_timeout``, a page that does not advance), the intent says
    it is incomplete and why, and the revocation is forwarded and recorded."""
    url = await hostile_search(aiohttp_server, mode, delay)
    wait = 0.5 if delay else 30.0  # only the slow pages are to meet the time bound
    client = await gateway(make_config(tmp_path, upstream={"url": url, "enumeration_timeout": wait}))
    async with asyncio.timeout(60):
        response = await client.post("/v1/o/myorg/oauth2/revoke?app=someApp", headers=basic("myname"))
        assert (202, "7") == (response.status, await response.text())
    intent, outcome = rows(tmp_path / "audit.db")
    snapshot = json.loads(intent["snapshot"])
    assert (False, truncated) == (snapshot["complete"], snapshot["truncated"])
    if listed is not None:
        assert listed == len(snapshot["tokens"])
    else:
        assert 0 < len(snapshot["tokens"]) < 20
    assert ("pending", "succeeded", {"app": "someApp", "submitted": 7}) == (
        intent["outcome"],
        outcome["outcome"],
        json.loads(outcome["params"]),
    )
