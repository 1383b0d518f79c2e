"""Routing (``gateway.route.route``), called directly on raw targets: what each valid call routes
to, which shapes are refused at once (404, 405), and which are routed with a problem, refused
only once the caller is known (so the refusal is audited under their name)."""

from __future__ import annotations

import pytest

from gateway.operations import OPERATIONS, TOKEN_DELETE, Operation
from gateway.refusal import Refusal
from gateway.route import Routed, route

ALLOWED = "letters, digits, '-', '.', '_' and '~', starting with a letter or digit (no '/' and no percent-encoding)"
BAD_ORG = f"Invalid organization name in path: expected 1-255 {ALLOWED}"
BAD_TOKEN = f"Invalid access token in path: expected 1-1024 {ALLOWED}"
TOKENS = "/v1/o/myorg/oauth2/accesstokens/"


def refusal(method: str, target: str) -> Refusal:
    """The refusal of a gateway that serves the audited calls alone (``upstream.pass_through = false``)."""
    with pytest.raises(Refusal) as refused:
        route(method, target, pass_through=False)
    return refused.value


def seen(routed: Routed) -> tuple[Operation, str | None, str | None, str | None]:
    return routed.operation, routed.org, routed.secret, routed.problem


def body(refused: Refusal) -> bytes:
    assert isinstance(refused.response.body, bytes)
    return refused.response.body


class TestValidCalls:
    @pytest.mark.parametrize(
        ("target", "org", "token"),
        [
            (f"{TOKENS}taFM3LHUTQAFhL0dIFg81XhRc7vC", "myorg", "taFM3LHUTQAFhL0dIFg81XhRc7vC"),
            ("/v1/organizations/myorg/oauth2/accesstokens/abc", "myorg", "abc"),
            (f"{TOKENS}abc?cascade=true&x=%2F", "myorg", "abc"),
            (f"{TOKENS}abc?", "myorg", "abc"),
            (f"{TOKENS}0a.b_c~d-e", "myorg", "0a.b_c~d-e"),
            (f"{TOKENS}x", "myorg", "x"),
            ("/v1/o/My.Org-1_x~/oauth2/accesstokens/abc", "My.Org-1_x~", "abc"),
            ("/v1/o/9/oauth2/accesstokens/abc", "9", "abc"),
            (f"/v1/o/{'o' * 255}/oauth2/accesstokens/abc", "o" * 255, "abc"),
            (f"{TOKENS}{'t' * 1024}", "myorg", "t" * 1024),
        ],
        ids=[
            "sample",
            "organizations-alias",
            "query",
            "empty-query",
            "every-allowed-character",
            "one-character",
            "org-characters",
            "org-digit",
            "longest-org",
            "longest-token",
        ],
    )
    def test_a_valid_deletion_routes_to_the_token_operation(self, target: str, org: str, token: str) -> None:
        """The organisation and the token are read from the raw path; the target (query included)
        is kept exactly as received, to be forwarded unchanged."""
        routed = route("DELETE", target)
        assert (TOKEN_DELETE, target, org, token, None) == (
            routed.operation,
            routed.target,
            routed.org,
            routed.secret,
            routed.problem,
        )


class TestProblems:
    @pytest.mark.parametrize(
        "org",
        [
            "",
            "-org",
            ".org",
            "_org",
            "~org",
            "my%20org",
            "my%2Forg",
            "%6Dyorg",
            "..",
            "%2e%2e",
            "my org",
            "myörg",
            "my\x00org",
            "o" * 256,
        ],
        ids=lambda org: repr(org[:12]),
    )
    def test_an_invalid_organisation_is_routed_with_its_problem(self, org: str) -> None:
        """The path has the operation's shape: routed, so the refusal is audited, but with neither
        organisation nor token taken from it."""
        target = f"/v1/o/{org}/oauth2/accesstokens/abc"
        assert (TOKEN_DELETE, None, None, BAD_ORG) == seen(route("DELETE", target))

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "a/b",
            "abc/",
            "a%2Fb",
            "..",
            ".",
            "%2e%2e",
            ".abc",
            "-abc",
            "_abc",
            "a%00b",
            "a\x00b",
            "a\nb",
            "a b",
            "tökén",
            "a+b",
            "a=",
            "t" * 1025,
        ],
        ids=lambda token: repr(token[:12]),
    )
    def test_an_invalid_token_is_routed_with_its_problem(self, token: str) -> None:
        """A token with a separator, an escape, a dot segment or over 1024 characters is no token:
        the organisation is known, the token is not taken."""
        target = TOKENS + token
        assert (TOKEN_DELETE, "myorg", None, BAD_TOKEN) == seen(route("DELETE", target))

    def test_the_organisation_is_checked_first(self) -> None:
        """With both invalid, the problem named is the organisation's."""
        target = "/v1/o/bad%20org/oauth2/accesstokens/bad%2Ftoken"
        assert (TOKEN_DELETE, None, None, BAD_ORG) == seen(route("DELETE", target))

    def test_the_query_is_not_part_of_the_token(self) -> None:
        """What follows ``?`` is the query, whatever it holds; only the path is checked."""
        target = f"{TOKENS}abc?token=a/b%00"
        assert (TOKEN_DELETE, "myorg", "abc", None) == seen(route("DELETE", target))


class TestRefusals:
    @pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "HEAD", "OPTIONS", "delete", "Delete"])
    @pytest.mark.parametrize(
        "target",
        [f"{TOKENS}abc", f"{TOKENS}abc?x=1", "/v1/organizations/myorg/oauth2/accesstokens/abc", f"{TOKENS}a%2Fb"],
    )
    def test_another_method_on_an_operation_s_path_is_405_with_allow(self, method: str, target: str) -> None:
        """Without pass-through, the path is served, the method is not (methods are
        case-sensitive): 405 naming what is (the token's DELETE, and the POSTs of its actions)."""
        refused = refusal(method, target)
        assert (405, "DELETE, POST", "application/json") == (
            refused.response.status,
            refused.response.headers["Allow"],
            refused.response.content_type,
        )
        assert (
            b'{"code": "gateway.method_not_allowed", "message": "'
            + f"{method} is not allowed here; the gateway only forwards DELETE, POST".encode()
            + b'", "contexts": []}'
        ) == body(refused)
        assert (None, None, False) == (refused.record, refused.if_unrecorded, refused.limited)

    @pytest.mark.parametrize(
        ("target", "shown"),
        [
            ("/", "/"),
            ("", ""),
            ("/v1/o/myorg", "/v1/o/myorg"),
            ("/v1/o/myorg/oauth2/accesstokens", "/v1/o/myorg/oauth2/accesstokens"),
            ("/v1/o/myorg/oauth2/refreshtokens/secret", "/v1/o/myorg/oauth2/refreshtokens/*"),
            ("/v1/myorg/oauth2/accesstokens/secret", "/v1/*/oauth2/accesstokens/*"),
            ("/v2/o/myorg/oauth2/accesstokens/secret", "/*/o/*/oauth2/accesstokens/*"),
            ("/V1/o/myorg/oauth2/accesstokens/secret", "/*/o/*/oauth2/accesstokens/*"),
            ("/v1/O/myorg/oauth2/accesstokens/secret", "/v1/*/*/oauth2/accesstokens/*"),
            ("/v1/o/myorg/oauth2/AccessTokens/secret", "/v1/o/myorg/oauth2/*/*"),
            ("/oauth2/accesstokens/secret?access_token=secret", "/oauth2/accesstokens/*?*=*"),
        ],
    )
    def test_an_unserved_path_is_404_masked(self, target: str, shown: str) -> None:
        """Without pass-through, any other path is 404 for every method, naming what is served
        and the path with anything that may be a secret masked (it may be logged on its way back)."""
        served = "the audited calls of the Apigee management API (DELETE /v1/o/{org}/oauth2/accesstokens/{token}, ...)"
        for method in ("DELETE", "GET"):
            refused = refusal(method, target)
            assert (404, "application/json", None) == (
                refused.response.status,
                refused.response.content_type,
                refused.response.headers.get("Allow"),
            )
            assert (
                b'{"code": "gateway.not_found", "message": "'
                + f"The gateway only serves {served}; not {shown}".encode()
                + b'", "contexts": []}'
            ) == body(refused)


class TestPassThrough:
    @pytest.mark.parametrize(
        ("method", "target", "action", "org"),
        [
            ("GET", f"{TOKENS}abc", "read", "myorg"),
            ("HEAD", "/v1/organizations/myorg/apps", "read", "myorg"),
            ("PUT", "/v1/o/myorg/apiproducts/p1", "manage", "myorg"),
            ("GET", "/v1/audits/organizations/myorg", "read", "myorg"),
            ("GET", "/v1/users/alice@example.com", "read", None),
            ("GET", "/v1/mint/organizations/myorg/developers", "read", "myorg"),
        ],
    )
    def test_every_other_v1_call_is_passed_through(
        self, method: str, target: str, action: str, org: str | None
    ) -> None:
        """Reads and other writes go through (roles read and manage), with the organisation
        scoped where one is in the path; a read of a credential keeps it apart (to be fingerprinted)."""
        routed = route(method, target)
        assert (action, org, "abc" if target == f"{TOKENS}abc" else None, None, False) == (
            routed.operation.action,
            routed.org,
            routed.secret,
            routed.problem,
            routed.operation.audited,
        )

    @pytest.mark.parametrize(
        ("method", "target", "problem"),
        [
            ("POST", f"{TOKENS}abc?action=delete", "Unknown action 'delete' here; expected one of revoke, approve"),
            ("DELETE", "/v1/o/myorg/developers/alice/", "The path is not in its canonical form"),
            ("DELETE", "/v1/o/myorg//developers/alice", "The path is not in its canonical form"),
            ("DELETE", "//v1/o/myorg/oauth2/accesstokens/secret", "The path is not in its canonical form"),
            ("GET", "/v1/o/myorg/apis/%2e%2e/x", "Invalid segment in path"),
            ("GET", "/v1/o/myorg/apis/a%2Fb", "Invalid segment in path"),
            ("GET", "/v1/o/my%20org/apis", "Invalid organization name in path"),
        ],
    )
    def test_ways_around_the_audit_are_refused(self, method: str, target: str, problem: str) -> None:
        """An unknown action on a credential path, a non-canonical form of an audited path, or a
        segment that could reach another path upstream: refused, never passed through."""
        routed = route(method, target)
        assert routed.problem is not None and routed.problem.startswith(problem), routed.problem

    def test_paths_outside_the_api_are_404_even_with_pass_through(self) -> None:
        with pytest.raises(Refusal) as refused:
            route("GET", "/v2/o/myorg/apis")
        assert 404 == refused.value.response.status


class TestOperations:
    @pytest.mark.parametrize(
        ("method", "target", "action", "secret", "values", "query"),
        [
            (
                "POST",
                f"{TOKENS}abc?action=revoke&cascade=true",
                "token.revoke",
                "abc",
                {"token": "{token}"},
                {"action": "revoke", "cascade": "true"},
            ),
            ("POST", f"{TOKENS}abc", "token.update", "abc", {"token": "{token}"}, {}),
            (
                "POST",
                "/v1/o/myorg/oauth2/revoke?app=a1&enduser=u1",
                "tokens.revoke",
                None,
                {},
                {"app": "a1", "enduser": "u1"},
            ),
            (
                "POST",
                "/v1/o/myorg/developers/a%40b.com/apps/app1/keys/K1?action=revoke",
                "key.revoke",
                "K1",
                {"developer": "a@b.com", "app": "app1", "key": "{key}"},
                {"action": "revoke"},
            ),
            (
                "DELETE",
                "/v1/o/myorg/companies/c1/apps/app1/keys/K1/apiproducts/p1",
                "key_product.delete",
                "K1",
                {"company": "c1", "app": "app1", "key": "{key}", "product": "p1"},
                {},
            ),
            (
                "POST",
                "/v1/o/myorg/developers/alice?action=inactive",
                "developer.inactive",
                None,
                {"developer": "alice"},
                {"action": "inactive"},
            ),
            (
                "DELETE",
                "/v1/o/myorg/oauth2/authorizationcodes/C1",
                "authorization_code.delete",
                "C1",
                {"code": "{code}"},
                {},
            ),
        ],
    )
    def test_each_audited_call_routes_to_its_operation(
        self, method: str, target: str, action: str, secret: str | None, values: dict[str, str], query: dict[str, str]
    ) -> None:
        """Values below the organisation are decoded for the record; a credential in the path is
        kept apart (to be fingerprinted) and shown in the resource as its placeholder."""
        routed = route(method, target)
        assert (action, "myorg", secret, values, query, None) == (
            routed.operation.action,
            routed.org,
            routed.secret,
            dict(routed.values),
            dict(routed.query),
            routed.problem,
        )


class TestOperationPatterns:
    """How a declared path becomes the pattern ``route`` matches: what new operations rely on."""

    KEY_DELETE = Operation(
        "key.delete",
        "DELETE",
        "developers/{developer}/apps/{app}/keys/{key}",
        "consumer_key",
        "revoke keys",
        "deletion",
    )
    KEY_CREATE = Operation(
        "key.create", "POST", "developers/{developer}/apps/{app}/keys/create", "consumer_key", "create keys", "creation"
    )

    @pytest.mark.parametrize(
        ("path", "groups"),
        [
            ("/v1/o/myorg/developers/d/apps/a/keys/k", {"org": "myorg", "developer": "d", "app": "a", "key": "k"}),
            ("/v1/organizations/myorg/developers/d/apps/a/keys/k/more", None),
            ("/v1/o//developers//apps//keys/", {"org": "", "developer": "", "app": "", "key": ""}),
            ("/v1/o/myorg/developers/d/x/apps/a/keys/k", None),
            ("/v1/o/my/org/developers/d/apps/a/keys/k", None),
            ("/v1/o/myorg/developers/d/apps/a/keys", None),
        ],
        ids=["plain", "more-after-the-key", "empty-values", "slash-in-middle", "slash-in-org", "no-key"],
    )
    def test_each_placeholder_is_one_segment(self, path: str, groups: dict[str, str] | None) -> None:
        """Every value is one segment (only the token of a DELETE takes the rest of the path, so
        that a stray ``/`` in it is refused as an invalid token)."""
        found = self.KEY_DELETE.pattern.fullmatch(path)
        assert groups == (found.groupdict() if found else None)
        assert TOKEN_DELETE.pattern.fullmatch(f"{TOKENS}a/b") is not None

    @pytest.mark.parametrize(
        ("path", "groups"),
        [
            ("/v1/o/myorg/developers/d/apps/a/keys/create", {"org": "myorg", "developer": "d", "app": "a"}),
            ("/v1/o/myorg/developers/d/apps/a/b/keys/create", None),
            ("/v1/o/myorg/developers/d/apps/a/keys/created", None),
        ],
    )
    def test_a_path_ending_in_a_word_matches_that_word_exactly(self, path: str, groups: dict[str, str] | None) -> None:
        """With a literal last segment, every placeholder is one segment and the word must match."""
        found = self.KEY_CREATE.pattern.fullmatch(path)
        assert groups == (found.groupdict() if found else None)

    def test_the_template_shows_the_method_and_the_short_base_path(self) -> None:
        """What the docs list: the method and the path as Apigee documents it."""
        assert (
            "DELETE /v1/o/{org}/oauth2/accesstokens/{token}",
            "DELETE /v1/o/{org}/developers/{developer}/apps/{app}/keys/{key}",
        ) == (TOKEN_DELETE.template, self.KEY_DELETE.template)

    def test_the_token_deletion_is_declared(self) -> None:
        """The operation the gateway was built for is among those it routes."""
        assert TOKEN_DELETE in OPERATIONS
