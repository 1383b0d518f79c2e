"""Whatever arrives on the wire: never a 5xx, never an invalid call forwarded, nothing secret logged.

The property test drives a real gateway (its own event loop in a thread, so hypothesis can run
plain synchronous examples) with generated methods, paths and headers, sent as raw bytes.
"""

from __future__ import annotations

import base64
import io
from urllib.parse import quote

import pytest
from helpers import PASSWORDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threaded_gateway import Rig

from gateway.basic import MalformedCredentials, parse_basic
from gateway.logs import configure_logging, flush_logs
from gateway.refusal import Refusal
from gateway.route import route

GOOD_AUTH = "Basic " + base64.b64encode(f"myname:{PASSWORDS['myname']}".encode()).decode()


SEGMENTS = st.sampled_from(
    [
        "v1",
        "o",
        "organizations",
        "myorg",
        "otherorg",
        "oauth2",
        "accesstokens",
        "",
        ".",
        "..",
        "%2e%2e",
        "%2F",
        "%00",
        "%",
        "%zz",
        "abc",
        "a" * 300,
        "t" * 1100,
        "tok~en.1_2-3",
        "é",
        "%C3%A9",
        ";",
        "?x=1",
        "#frag",
    ]
)
NAMES = st.one_of(
    SEGMENTS,
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n "), min_size=1, max_size=12).map(
        lambda t: quote(t, safe="")
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
)
TOKEN_PATHS = st.builds(
    lambda alias, org, token, tail: f"/v1/{alias}/{org}/oauth2/accesstokens/{token}{tail}",
    st.sampled_from(["o", "organizations", "O", "orgs"]),
    NAMES,
    NAMES,
    st.sampled_from(["", "/", "//", "?a=b", "/.."]),
)
PATHS = st.one_of(TOKEN_PATHS, st.lists(NAMES, max_size=8).map(lambda parts: "/" + "/".join(parts)))
AUTHORIZATION = st.one_of(
    st.just(GOOD_AUTH),
    st.binary(max_size=40).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.sampled_from(["Basic", "Basic ", "Bearer abc", "basic " + GOOD_AUTH[6:], "Basic " + "A" * 10_000]),
    st.none(),
)
METHODS = st.sampled_from(["DELETE", "DELETE", "DELETE", "GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH", "BREW"])
HEADER_NAMES = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-XYZ"), min_size=1, max_size=20)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def forwardable(path: str, authorization: str | None) -> bool:
    """What the gateway may forward: a valid token path of an org myname may act on, with myname's
    credentials (the scheme's case is free, RFC 9110 section 11.1: ``basic`` is ``Basic``)."""
    try:
        routed = route("DELETE", path)
        credentials = parse_basic(authorization) if authorization is not None else None
    except (Refusal, MalformedCredentials):
        return False
    return routed.problem is None and routed.org == "myorg" and credentials == ("myname", PASSWORDS["myname"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=METHODS,
    path=PATHS,
    authorization=AUTHORIZATION,
    extra=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
    body=st.binary(max_size=64),
)
def test_generated_requests_never_get_5xx_nor_forward_anything_invalid(
    rig: Rig, method: str, path: str, authorization: str | None, extra: dict[str, str], body: bytes
) -> None:
    headers = {"Host": "gateway", **extra, "Content-Length": str(len(body))}
    if authorization is not None:
        headers["Authorization"] = authorization
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    before = len(rig.forwarded)
    status = rig.send(head.encode("utf-8") + b"\r\n" + body)
    assert status < 500, (method, path, status)
    for forwarded_path, forwarded_auth in rig.forwarded[before:]:
        assert forwardable(forwarded_path, forwarded_auth), (method, forwarded_path)
        assert forwarded_path == path and method == "DELETE"


def test_an_oversized_header_is_refused_and_its_text_never_logged(rig: Rig) -> None:
    """aiohttp itself refuses a header over 16 KiB, and its error quotes the header: the log must not."""
    log = io.StringIO()
    configure_logging("json", "info", log)
    try:
        secret = "Basic " + base64.b64encode(b"myname:hunter2-secret").decode() + "A" * 20_000
        status = rig.send(
            f"DELETE /v1/o/myorg/oauth2/accesstokens/abc HTTP/1.1\r\nHost: g\r\nAuthorization: {secret}\r\n\r\n".encode()
        )
        assert 400 == status
        assert 400 == rig.send(b"NOT HTTP AT ALL\r\n\r\n")
        assert 401 == rig.send(
            b"DELETE /v1/o/myorg/oauth2/accesstokens/abc HTTP/1.1\r\nHost: g\r\n\r\n"
        )  # still serving
    finally:
        flush_logs()
        configure_logging("json", "info")
    output = log.getvalue()
    assert '"event":"Error handling request from 127.0.0.1 (LineTooLong)"' in output
    assert base64.b64encode(b"myname:hunter2-secret").decode()[:20] not in output
    assert "Traceback" not in output and "AAAAAAAA" not in output


@pytest.mark.parametrize(
    "headers",
    [
        "Host: gateway\r\nHost: other\r\n",
        "Host: gateway\r\nContent-Length: 0\r\nContent-Length: 0\r\n",
        "Host: gateway\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Host: gateway\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ],
    ids=["two-hosts", "two-lengths", "length-and-chunked", "chunked-twice"],
)
def test_duplicate_framing_headers_are_refused_before_the_gateway(rig: Rig, headers: str) -> None:
    """The headers whose duplicates change how a request is read are aiohttp's parser's to refuse (docs/operations.md, Security)."""
    before = len(rig.forwarded)
    request = f"DELETE /v1/o/myorg/oauth2/accesstokens/abc HTTP/1.1\r\n{headers}Authorization: {GOOD_AUTH}\r\n\r\n"
    assert 400 == rig.send(request.encode() + b"0\r\n\r\n")
    assert before == len(rig.forwarded)
