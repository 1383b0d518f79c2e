"""Refusals (401, 403, 400, 404, 405) never reach the upstream, and the audited ones are recorded."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest
from helpers import SAMPLE, SAMPLE_PATH, GatedExecutor, GatewayFactory, Peer, basic, make_config, rows
from multidict import CIMultiDict
from yarl import URL

from gateway.audit.fingerprint import fingerprint
from gateway.auth import AuthenticationError, Authenticator, User
from gateway.passwords import hash_password, parse_hash

_P = ParamSpec("_P")
_T = TypeVar("_T")


class CountingExecutor(ThreadPoolExecutor):
    """A standard thread pool that counts what it is given to run."""

    submitted = 0

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def raw_basic(payload: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(payload).decode()}


@pytest.mark.parametrize(
    ("headers", "claimed"),
    [
        ({}, None),
        (basic("myname", "wrong"), "myname"),
        (basic("myname", ""), "myname"),
        (raw_basic(b"nobody:mypass"), "nobody"),
        ({"Authorization": "Basic"}, None),
        ({"Authorization": "Bearer " + SAMPLE}, None),
        ({"Authorization": "Basic !!!notbase64"}, None),
        (raw_basic(b"no-colon-here"), None),
        (raw_basic(b":empty-user"), None),
        (raw_basic(b"\xffname:pass"), None),
        ({"Authorization": "Basic " + "A" * 10_000}, None),
    ],
    ids=[
        "missing",
        "wrong-password",
        "empty-password",
        "unknown-user",
        "no-credentials",
        "bearer",
        "bad-base64",
        "no-colon",
        "empty-user",
        "not-utf8",
        "10kb-header",
    ],
)
async def test_bad_credentials_get_401_and_are_audited(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, headers: dict[str, str], claimed: str | None
) -> None:
    """Every kind of bad credential: 401 with WWW-Authenticate, a 'denied' record, nothing forwarded."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=headers)
    assert 401 == response.status
    assert 'Basic realm="apigee-audit-gateway"' == response.headers["WWW-Authenticate"]
    assert {
        "code": "gateway.unauthorized",
        "message": "Missing or invalid Basic credentials",
        "contexts": [],
    } == await response.json()
    assert [] == peer.requests
    [record] = rows(tmp_path / "audit.db")
    expected = {
        "outcome": "denied",
        "actor": claimed,
        "org": "myorg",
        "token_sha256": fingerprint(SAMPLE),
        "token_hint": "c7vC",
        "error_code": "gateway.unauthorized",
        "upstream_status": None,
    }
    assert expected == {key: record[key] for key in expected}


@pytest.mark.parametrize(
    "values",
    [
        [basic("myname")["Authorization"], basic("outsider")["Authorization"]],
        [basic("myname")["Authorization"], basic("myname")["Authorization"]],
        [basic("myname", "wrong")["Authorization"], basic("myname")["Authorization"]],
        [basic("myname")["Authorization"], ""],
    ],
    ids=["two-users", "the-same-twice", "wrong-then-right", "right-then-empty"],
)
async def test_several_authorization_headers_get_400_and_are_audited_as_rejected(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, values: list[str]
) -> None:
    """The gateway would check one and the upstream might read another: neither is checked, nothing forwarded."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    headers = CIMultiDict(("Authorization", value) for value in values)
    response = await client.delete(SAMPLE_PATH, headers=headers)
    assert 400 == response.status
    assert {
        "code": "gateway.bad_request",
        "message": "2 Authorization headers; send exactly one",
        "contexts": [],
    } == await response.json()
    assert [] == peer.requests
    [record] = rows(tmp_path / "audit.db")
    expected = {
        "outcome": "rejected",
        "actor": None,
        "org": "myorg",
        "token_sha256": fingerprint(SAMPLE),
        "error_code": "gateway.bad_request",
    }
    assert expected == {key: record[key] for key in expected}
    # The audit API refuses them alike (its refusals are answered, not audited).
    headers = CIMultiDict([("Authorization", basic("auditor")["Authorization"])] * 2)
    response = await client.get("/audit/events", headers=headers)
    assert (400, "2 Authorization headers; send exactly one") == (response.status, (await response.json())["message"])


@pytest.mark.parametrize(
    ("user", "path", "message"),
    [
        ("outsider", SAMPLE_PATH, "User outsider may not revoke tokens of organization myorg (role revoke)"),
        ("auditor", SAMPLE_PATH, "User auditor may not revoke tokens of organization myorg (role revoke)"),
        (
            "myname",
            "/v1/o/otherorg/oauth2/accesstokens/" + SAMPLE,
            "User myname may not revoke tokens of organization otherorg (role revoke)",
        ),
    ],
    ids=["other-org", "no-revoke-role", "org-not-granted"],
)
async def test_users_without_the_right_get_403(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, user: str, path: str, message: str
) -> None:
    """Valid credentials without the revoke role or the org: 403, audited as 'forbidden', not forwarded."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(path, headers=basic(user))
    assert 403 == response.status
    assert {"code": "gateway.forbidden", "message": message, "contexts": []} == await response.json()
    assert [] == peer.requests
    [record] = rows(tmp_path / "audit.db")
    assert ("forbidden", user, "gateway.forbidden") == (record["outcome"], record["actor"], record["error_code"])


@pytest.mark.parametrize(
    ("path", "part"),
    [
        ("/v1/o/myorg/oauth2/accesstokens/abc%2Fdef", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/..", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/%2e%2e", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/abc%00def", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/abc/", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/", "access token"),
        ("/v1/o/myorg/oauth2/accesstokens/" + "a" * 1025, "access token"),
        ("/v1/o/my%2Forg/oauth2/accesstokens/abc", "organization name"),
        ("/v1/o/../oauth2/accesstokens/abc", "organization name"),
        ("/v1/o//oauth2/accesstokens/abc", "organization name"),
    ],
)
async def test_path_tricks_get_400_and_are_not_forwarded(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, path: str, part: str
) -> None:
    """Encoded slashes, dot segments, NULs and overlong names are refused from the raw path."""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.session.delete(
        URL(str(client.make_url("")).rstrip("/") + path, encoded=True), headers=basic("myname")
    )
    assert 400 == response.status
    body = await response.json()
    assert "gateway.bad_request" == body["code"]
    assert body["message"].startswith(f"Invalid {part} in path")
    assert [] == peer.requests
    [record] = rows(tmp_path / "audit.db")
    assert ("rejected", "myname") == (record["outcome"], record["actor"])


async def test_without_pass_through_other_paths_get_404_naming_the_path(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """With upstream.pass_through = false, other management paths are not the gateway's
    business: 404, not forwarded, not audited."""
    client = await gateway(make_config(tmp_path, upstream={"url": peer.url, "pass_through": False}))
    response = await client.get("/v1/o/myorg/environments", headers=basic("myname"))
    assert 404 == response.status
    assert {
        "code": "gateway.not_found",
        "message": "The gateway only serves the audited calls of the Apigee management API "
        "(DELETE /v1/o/{org}/oauth2/accesstokens/{token}, ...); not /v1/o/myorg/environments",
        "contexts": [],
    } == await response.json()
    assert [] == peer.requests
    assert [] == rows(tmp_path / "audit.db")


async def test_paths_outside_the_api_get_404_whatever_the_setting(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.get("/v2/o/myorg/environments", headers=basic("myname"))
    assert (404, "gateway.not_found") == (response.status, (await response.json())["code"])
    assert [] == peer.requests


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH"])
async def test_without_pass_through_other_methods_on_the_token_path_get_405(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, method: str
) -> None:
    client = await gateway(make_config(tmp_path, upstream={"url": peer.url, "pass_through": False}))
    response = await client.request(method, SAMPLE_PATH, headers=basic("myname"))
    assert 405 == response.status
    assert "DELETE, POST" == response.headers["Allow"]
    assert "gateway.method_not_allowed" == (await response.json())["code"]
    assert [] == peer.requests


@pytest.mark.parametrize(
    ("method", "role"), [("GET", "read"), ("HEAD", "read"), ("PUT", "manage"), ("PATCH", "manage")]
)
async def test_passing_other_calls_through_takes_read_or_manage(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer, method: str, role: str
) -> None:
    """myname may revoke but neither read nor manage: other calls are refused, not forwarded. (Another
    write on an audited path is no pass-through: it is refused 400 whoever asks, see test_audited_calls.)"""
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    path = SAMPLE_PATH if role == "read" else "/v1/o/myorg/apiproducts/p1"
    response = await client.request(method, path, headers=basic("myname"))
    assert 403 == response.status
    if method != "HEAD":
        verb = "read resources" if role == "read" else "change resources"
        assert f"User myname may not {verb} of organization myorg (role {role})" == (await response.json())["message"]
    assert [] == peer.requests
    assert [] == rows(tmp_path / "audit.db")  # a refused pass-through call is logged, not audited


async def test_oversized_body_gets_413(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> None:
    client = await gateway(make_config(tmp_path, upstream=peer.url))
    response = await client.delete(SAMPLE_PATH, headers=basic("myname"), data=b"x" * (64 * 1024 + 1))
    assert 413 == response.status
    assert "gateway.payload_too_large" == (await response.json())["code"]
    assert [] == peer.requests
    assert ["rejected"] == [row["outcome"] for row in rows(tmp_path / "audit.db")]


class TestAuthenticator:
    @staticmethod
    def make() -> Authenticator:
        alice = User("alice", frozenset({"myorg"}), frozenset({"revoke"}))
        return Authenticator([(alice, parse_hash(hash_password("alice-pass", log2_n=10)))])

    async def test_verified_credentials_are_not_hashed_again(self) -> None:
        """After one success, the same header is accepted without running the slow hash."""
        authenticator = self.make()
        header = basic("myname", "unused")["Authorization"].replace(
            base64.b64encode(b"myname:unused").decode(), base64.b64encode(b"alice:alice-pass").decode()
        )
        assert "alice" == (await authenticator.authenticate(header)).name
        refusing = ThreadPoolExecutor(1)
        refusing.shutdown()
        asyncio.get_running_loop().set_default_executor(refusing)
        assert "alice" == (await authenticator.authenticate(header)).name
        with pytest.raises(RuntimeError, match="after shutdown"):
            await authenticator.authenticate(raw_basic(b"alice:other")["Authorization"])

    async def test_unknown_user_is_checked_against_a_real_hash(self) -> None:
        """An unknown user costs the same hash as a known one, and is then refused."""
        authenticator = self.make()
        refusing = ThreadPoolExecutor(1)
        refusing.shutdown()
        asyncio.get_running_loop().set_default_executor(refusing)
        with pytest.raises(RuntimeError, match="after shutdown"):
            await authenticator.authenticate(raw_basic(b"mallory:x")["Authorization"])

    async def test_concurrent_first_calls_share_one_hash(self) -> None:
        """A burst of identical new credentials runs the slow hash once, not once per request."""
        authenticator = self.make()
        counting = CountingExecutor(2)
        asyncio.get_running_loop().set_default_executor(counting)
        good, bad = raw_basic(b"alice:alice-pass")["Authorization"], raw_basic(b"alice:nope")["Authorization"]
        outcomes = await asyncio.gather(
            *(authenticator.authenticate(header) for header in [good] * 20 + [bad] * 20), return_exceptions=True
        )
        assert ["alice"] * 20 == [user.name if isinstance(user, User) else user for user in outcomes[:20]]
        assert all(isinstance(error, AuthenticationError) for error in outcomes[20:])
        assert 2 == counting.submitted

    async def test_replacing_the_users_keeps_only_the_unchanged_ones_verified(self) -> None:
        """On SIGHUP: an unchanged user is not hashed again; a changed or removed one's cached
        credentials stop working at once."""
        alice = User("alice", frozenset({"myorg"}), frozenset({"revoke"}))
        bob = User("bob", frozenset({"myorg"}), frozenset({"revoke"}))
        carol = User("carol", frozenset({"myorg"}), frozenset({"revoke"}))
        hashes = {name: parse_hash(hash_password(f"{name}-pass", log2_n=10)) for name in ("alice", "bob", "carol")}
        authenticator = Authenticator([(alice, hashes["alice"]), (bob, hashes["bob"]), (carol, hashes["carol"])])
        for name in ("alice", "bob", "carol"):
            await authenticator.authenticate(raw_basic(f"{name}:{name}-pass".encode())["Authorization"])
        counting = CountingExecutor(1)
        asyncio.get_running_loop().set_default_executor(counting)
        audit_bob = User("bob", frozenset({"myorg"}), frozenset({"audit"}))
        assert 2 == authenticator.replace([(alice, hashes["alice"]), (audit_bob, hashes["bob"])])
        assert alice == await authenticator.authenticate(raw_basic(b"alice:alice-pass")["Authorization"])
        assert 0 == counting.submitted
        assert audit_bob == await authenticator.authenticate(raw_basic(b"bob:bob-pass")["Authorization"])  # new roles
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(raw_basic(b"carol:carol-pass")["Authorization"])
        assert 2 == counting.submitted

    async def test_a_check_under_way_when_the_users_change_is_done_again(self) -> None:
        """A password right for the old hash but checked while the users were replaced must not get in."""
        alice = User("alice", frozenset({"myorg"}), frozenset({"revoke"}))
        authenticator = Authenticator([(alice, parse_hash(hash_password("old-pass", log2_n=10)))])
        gate = GatedExecutor()
        asyncio.get_running_loop().set_default_executor(gate)
        old = asyncio.ensure_future(authenticator.authenticate(raw_basic(b"alice:old-pass")["Authorization"]))
        await gate.until_running(1)
        authenticator.replace([(alice, parse_hash(hash_password("new-pass", log2_n=10)))])
        gate.open()
        with pytest.raises(AuthenticationError):
            await old
        assert 2 == gate.submitted
        assert alice == await authenticator.authenticate(raw_basic(b"alice:new-pass")["Authorization"])
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate(raw_basic(b"alice:old-pass")["Authorization"])

    async def test_wrong_password_names_the_claimed_user(self) -> None:
        with pytest.raises(AuthenticationError) as error:
            await self.make().authenticate(raw_basic(b"alice:nope")["Authorization"])
        assert ("wrong user name or password", "alice") == (error.value.reason, error.value.claimed)


async def test_a_flood_of_several_authorization_headers_is_throttled_and_bounded(
    tmp_path: Path, gateway: GatewayFactory, peer: Peer
) -> None:
    """Found in review: each request with two Authorization headers wrote a rejected record
    before any throttle or allowance (2,000 requests, 2,000 records). They are failed logins."""
    config = make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 5, "max_denied_records": 3})
    client = await gateway(config)
    headers = CIMultiDict([("Authorization", basic("myname")["Authorization"])] * 2)
    statuses = [(await client.delete(SAMPLE_PATH, headers=headers)).status for _ in range(30)]
    assert [400] * 5 + [429] * 25 == statuses
    assert [] == peer.requests
    assert 3 == len(rows(tmp_path / "audit.db", "outcome = 'rejected'"))
