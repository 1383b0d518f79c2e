"""Paths and query strings reach log lines (and 404 messages) masked: only the API's literal words
and the organisation in its place are kept; anything that could be a secret is `*`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import SAMPLE, GatewayFactory, basic, make_config

from gateway.logs import flush_logs
from gateway.redact import loggable_target

KEY = "fGytmxA5UDajPMdOA5E3bebiBOBPikOT"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        # The report's case: a client without its base path, the token in the third segment.
        (f"/oauth2/accesstokens/{SAMPLE}", "/oauth2/accesstokens/*"),
        (f"/o/myorg/oauth2/accesstokens/{SAMPLE}", "/o/*/oauth2/accesstokens/*"),
        (f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}/extra", "/v1/o/myorg/oauth2/accesstokens/*/*"),
        (
            f"/v1/organizations/myorg/oauth2/authorizationcodes/{SAMPLE}",
            "/v1/organizations/myorg/oauth2/authorizationcodes/*",
        ),
        (f"/v1/o/myorg/developers/dev@example.com/apps/app1/keys/{KEY}", "/v1/o/myorg/developers/*/apps/*/keys/*"),
        (
            f"/v1/o/myorg/developers/d/apps/a/keys/{KEY}/apiproducts/p",
            "/v1/o/myorg/developers/*/apps/*/keys/*/apiproducts/*",
        ),
        ("/v1/audits/organizations/myorg", "/v1/audits/organizations/myorg"),
        ("/v1/o/myorg/apps", "/v1/o/myorg/apps"),
        ("/v1/o/myorg", "/v1/o/myorg"),
        # The organisation is kept only in its place, and only if it is a valid name.
        (f"/v2/o/{SAMPLE}", "/*/o/*"),
        (f"/api/v1/o/{SAMPLE}/apps", "/*/v1/o/*/apps"),
        ("/v1/o/my%6Frg/apps", "/v1/o/*/apps"),
        (f"/v1/o/myorg/{SAMPLE}", "/v1/o/myorg/*"),
        (f"/{SAMPLE}", "/*"),
        # Encoded separators and dot segments do not smuggle anything through.
        (f"/v1/o/myorg/oauth2/accesstokens/a%2F{SAMPLE}", "/v1/o/myorg/oauth2/accesstokens/*"),
        (f"/v1/../{SAMPLE}", "/v1/*/*"),
        ("/", "/"),
        ("//v1//o/", "//v1//o/"),
        # Query strings: known names and literal values only.
        (
            f"/v1/o/myorg/oauth2/accesstokens/{SAMPLE}?action=revoke&cascade=true",
            "/v1/o/myorg/oauth2/accesstokens/*?action=revoke&cascade=true",
        ),
        (f"/v1/o/myorg/oauth2/revoke?app={KEY}&enduser=u1", "/v1/o/myorg/oauth2/revoke?app=*&enduser=*"),
        (f"/anything?access_token={SAMPLE}", "/*?*=*"),
        (f"/anything?{SAMPLE}", "/*?*"),
        (f"/anything?action={SAMPLE}&", "/*?action=*&"),
        ("/anything?", "/*?"),
        # However long, a line stays short.
        ("/x" * 100, "/*" * 15 + "/..."),
        ("/?" + "&".join(f"p{i}=v" for i in range(20)), "/?" + "&".join(["*=*"] * 8) + "&..."),
    ],
)
def test_loggable_target(target: str, logged: str) -> None:
    """Every part of a path or query that may be a secret is ``*``; the API's words and the
    organisation in its place are kept."""
    assert logged == loggable_target(target)


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        # The limits are inclusive: 16 segments (the empty one before the first "/" counts) and
        # 8 parameters are shown whole.
        ("/x" * 15, "/*" * 15),
        ("/?" + "&".join(f"p{i}=v" for i in range(8)), "/?" + "&".join(["*=*"] * 8)),
        # An organisation is a valid name of up to 255 characters, in any of its three places.
        ("/v1/o/" + "o" * 255 + "/apps", "/v1/o/" + "o" * 255 + "/apps"),
        ("/v1/o/" + "o" * 256 + "/apps", "/v1/o/*/apps"),
        ("/v1/organizations/-org/apps", "/v1/organizations/*/apps"),
        ("/v1/audits/organizations/bad%20org", "/v1/audits/organizations/*"),
        ("/v1/o/myörg/apps", "/v1/o/*/apps"),
        ("/v1/o/my.org~1/apps", "/v1/o/my.org~1/apps"),
        # Words are kept wherever they are, exactly as spelt; nothing else is.
        ("/v1/o/o/o/apps", "/v1/o/o/o/apps"),
        ("/V1/O/myorg", "/*/*/*"),
        ("/v1/%6F/myorg", "/v1/*/*"),
        ("/v1/o/myorg/./apps", "/v1/o/myorg/*/apps"),
        ("/v1/o/myorg/developers/a%40b.com", "/v1/o/myorg/developers/*"),
        ("/v1/o/myorg/e/test/keyvaluemaps/secretmap/entries/k", "/v1/o/myorg/e/*/keyvaluemaps/*/entries/*"),
        # Query parameters: a known name alone, known values only after a known name's "=", names
        # in their exact case; everything after the first "?" is the query.
        ("/x?expand", "/*?expand"),
        ("/x?expand=true", "/*?expand=true"),
        ("/x?foo=true", "/*?*=true"),
        ("/x?app=", "/*?app=*"),
        ("/x?startkey=1", "/*?*=*"),
        ("/x?startKey=1", "/*?startKey=*"),
        ("/x?action=revoke=x", "/*?action=*"),
        ("/v1/o/myorg/apps?count=5&start=abc", "/v1/o/myorg/apps?count=*&start=*"),
        ("/a?b?c", "/*?*"),
        ("?action=revoke", "?action=revoke"),
        ("", ""),
    ],
)
def test_loggable_target_at_its_edges(target: str, logged: str) -> None:
    """Limits, organisation names, literal words and query parameters at the edges of each rule."""
    assert logged == loggable_target(target)


async def test_a_token_in_an_unserved_path_is_neither_logged_nor_echoed(
    tmp_path: Path, gateway: GatewayFactory, log_output: io.StringIO
) -> None:
    """A client missing its base path sends the token where the old log kept three raw segments."""
    client = await gateway(make_config(tmp_path))
    response = await client.delete(f"/oauth2/accesstokens/{SAMPLE}?access_token={SAMPLE}", headers=basic("myname"))
    assert 404 == response.status
    assert {
        "code": "gateway.not_found",
        "message": "The gateway only serves the audited calls of the Apigee management API "
        "(DELETE /v1/o/{org}/oauth2/accesstokens/{token}, ...); not /oauth2/accesstokens/*?*=*",
        "contexts": [],
    } == await response.json()
    flush_logs()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert ["/oauth2/accesstokens/*?*=*"] == [line["path"] for line in lines if line["event"] == "request"]
    assert SAMPLE not in log_output.getvalue()
