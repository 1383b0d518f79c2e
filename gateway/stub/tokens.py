"""OAuth tokens: 2.0 access tokens (one by one, by app or end user, in bulk), authorization codes,
and the deprecated OAuth 1.0a access and request tokens.

An access token belongs to the app holding the consumer key it was issued under, and to the end
user named by its ``appUserId`` field (the name Apigee gives the end user in its OAuth 1.0a
bodies), if it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.stub.errors import XML, ApigeeError
from gateway.stub.http import Call, attributes_field, emulated, merge_attributes, text_field
from gateway.stub.model import App, invalid_request
from gateway.stub.render import answer
from gateway.stub.store import APPROVED, REVOKED, touch

ORG = "/v1/{alias:o|organizations}/{org}"
ACCESS_TOKEN = ORG + "/oauth2/accesstokens/{token}"
ACTIONS = {"approve": APPROVED, "revoke": REVOKED}
END_USER_FIELD = "appUserId"
DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 100
"""Apigee's ``oauth_max_search_limit`` default."""

INVALID_TOKEN_CODE = "keymanagement.service.invalid_account_name"
INVALID_TOKEN_MESSAGE = "Invalid Access Token"


def add_routes(router: web.UrlDispatcher) -> None:
    # The access-token resource keeps the documented delete's XML errors as its default.
    for method, handler in (("GET", get_token), ("DELETE", delete_token), ("POST", post_token)):
        router.add_route(method, ACCESS_TOKEN, emulated(handler, errors=XML))
    router.add_route("POST", ORG + "/oauth2/revoke", emulated(revoke_tokens))
    router.add_route("GET", ORG + "/oauth2/search", emulated(search_tokens))
    for method, handler in (("GET", get_code), ("DELETE", delete_code)):
        router.add_route(method, ORG + "/oauth2/authorizationcodes/{code}", emulated(handler))
    for kind in OAUTH1_KINDS:
        path = f"{ORG}/oauth1/{kind}/{{token}}"
        for method, handler in (("GET", get_oauth1), ("DELETE", delete_oauth1), ("POST", post_oauth1)):
            router.add_route(method, path, emulated(handler))
    for method, handler in (("GET", get_verifier), ("DELETE", delete_verifier)):
        router.add_route(method, ORG + "/oauth1/verifiers/{verifier}", emulated(handler))


# OAuth 2.0 access tokens, one by one ---------------------------------------------------------


def invalid_token() -> ApigeeError:
    return ApigeeError(404, INVALID_TOKEN_CODE, INVALID_TOKEN_MESSAGE)


async def get_token(call: Call) -> web.Response:
    snapshot = call.state.tokens.get(call.org_name, call.param("token"))
    if snapshot is None:
        raise invalid_token()
    return answer(call.request, snapshot, root="AccessToken")


async def delete_token(call: Call) -> web.Response:
    """DELETE: answers the token as it was, then it is gone (the documented sample)."""
    snapshot = call.state.tokens.delete(call.org_name, call.param("token"))
    if snapshot is None:
        raise invalid_token()
    return answer(call.request, snapshot, root="AccessToken")


async def post_token(call: Call) -> web.Response:
    """``?action=approve|revoke[&cascade=true]`` (no body), else ``{"attributes": [...], "scope": "..."}``.

    Attributes named in the body are set, the others left as they are; ``scope`` replaces the scope.
    """
    tokens, org, token = call.state.tokens, call.org_name, call.param("token")
    if "action" in call.request.query:
        status = ACTIONS[call.action(*ACTIONS)]
        snapshot = tokens.set_status(org, token, status, cascade=call.query("cascade") == "true")
        if snapshot is None:
            raise invalid_token()
        return call.acted(snapshot, "AccessToken")
    if tokens.get(org, token) is None:
        raise invalid_token()
    body = await call.body()
    attributes = attributes_field(body)
    scope = text_field(body, "scope")
    snapshot = tokens.held(org, token)
    assert snapshot is not None
    _update(snapshot, attributes, scope)
    return answer(call.request, snapshot, root="AccessToken")


# OAuth 2.0 access tokens by app or end user ---------------------------------------------------


def parameters_missing() -> ApigeeError:
    return ApigeeError(400, "keymanagement.service.parameters_missing", "Either app or enduser must be given")


def app_id_not_found(app_id: str) -> ApigeeError:
    return ApigeeError(404, "keymanagement.service.app_id_not_found", f"App id {app_id} not found")


def matching_tokens(call: Call) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The organisation's tokens for the ``app`` (id) and ``enduser`` asked for, oldest first, and the query echoed."""
    app_id, end_user = call.query("app"), call.query("enduser")
    if not app_id and not end_user:
        raise parameters_missing()
    org = call.org()
    wanted: App | None = None
    if app_id:
        wanted = next((app for app in org.apps() if app.app_id == app_id), None)
        if wanted is None:
            raise app_id_not_found(app_id)
    by_key = org.apps_by_key()
    found = [
        snapshot
        for snapshot in call.state.tokens.tokens(org.name)
        if (wanted is None or call.state.app_of(org.name, snapshot, by_key) is wanted)
        and (not end_user or snapshot.get(END_USER_FIELD) == end_user)
    ]
    query = {"appId": app_id} if app_id else {}
    if end_user:
        query["endUser"] = end_user
    return found, query


async def revoke_tokens(call: Call) -> web.Response:
    """``POST /oauth2/revoke?app=&enduser=[&cascade=true]``: 202 and the number of tokens submitted.

    Asynchronous as Apigee's is: they turn revoked ``stub.revoke_delay`` seconds later.
    """
    found, _ = matching_tokens(call)
    org, names = call.org_name, [snapshot["token"] for snapshot in found]
    cascade = call.query("cascade") == "true"
    tokens = call.state.tokens

    def revoke() -> None:
        for name in names:
            tokens.set_status(org, name, REVOKED, cascade=cascade)

    call.state.pending.later(call.state.settings.revoke_delay, revoke, org=org)
    return web.Response(status=202, body=str(len(names)).encode(), content_type="application/json")


async def search_tokens(call: Call) -> web.Response:
    """``GET /oauth2/search?app=&enduser=&limit=&start=``: raw token strings, a page at a time.

    ``meta.next`` is the first token of the next page (empty on the last), to be sent as ``start``.
    """
    found, query = matching_tokens(call)
    limit = _limit(call.query("limit"))
    start = call.query("start") or ""
    names = [snapshot["token"] for snapshot in found]
    begin = names.index(start) if start in names else (0 if not start else len(names))
    page = names[begin : begin + limit]
    following = names[begin + limit] if begin + limit < len(names) else ""
    meta = {"limit": limit, "next": following, "query": query, "start": start, "totalResults": len(names)}
    return answer(call.request, {"list": page, "meta": meta}, root="AccessTokens")


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_SEARCH_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_SEARCH_LIMIT:
        raise ApigeeError(
            400,
            "keymanagement.service.InvalidValueForLimitParam",
            f"Invalid value for limit: expected a whole number from 1 to {MAX_SEARCH_LIMIT}",
        )
    return int(text)


# Authorization codes ------------------------------------------------------------------------------


def invalid_code() -> ApigeeError:
    return ApigeeError(
        404, "keymanagement.service.invalid_request-authorization_code_invalid", "Invalid Authorization Code"
    )


async def get_code(call: Call) -> web.Response:
    code = call.org().authorization_codes.get(call.param("code"))
    if code is None:
        raise invalid_code()
    return answer(call.request, code, root="AuthorizationCode")


async def delete_code(call: Call) -> web.Response:
    code = call.org().authorization_codes.pop(call.param("code"), None)
    if code is None:
        raise invalid_code()
    return answer(call.request, code, root="AuthorizationCode")


# OAuth 1.0a tokens (deprecated by Apigee, still served) ---------------------------------------------

OAUTH1_KINDS: dict[str, tuple[str, str]] = {
    "accesstokens": ("keymanagement.service.oauth10_access_token_doesnotexist", "Access Token doesnot exist"),
    "requesttokens": ("keymanagement.service.oauth10_request_token_doesnot_exist", "Request Token doesnot exist"),
}


def _oauth1(call: Call) -> tuple[dict[str, dict[str, Any]], Callable[[], ApigeeError]]:
    """The tokens of the kind the path names, and the error for one that is not there."""
    resource = call.request.match_info.route.resource
    kind = "accesstokens" if resource is not None and "/oauth1/accesstokens/" in resource.canonical else "requesttokens"
    org = call.org()
    held = org.oauth1_access_tokens if kind == "accesstokens" else org.oauth1_request_tokens
    code, message = OAUTH1_KINDS[kind]
    return held, lambda: ApigeeError(404, code, message)


async def get_oauth1(call: Call) -> web.Response:
    held, missing = _oauth1(call)
    token = held.get(call.param("token"))
    if token is None:
        raise missing()
    return answer(call.request, token, root="Token")


async def delete_oauth1(call: Call) -> web.Response:
    """DELETE: answers the token as it was, ``consumerSecret`` and ``secret`` included."""
    held, missing = _oauth1(call)
    token = held.pop(call.param("token"), None)
    if token is None:
        raise missing()
    return answer(call.request, token, root="Token")


async def post_oauth1(call: Call) -> web.Response:
    """``?action=approve|revoke``, else an update of ``attributes`` and ``scope`` as for OAuth 2.0."""
    held, missing = _oauth1(call)
    token = held.get(call.param("token"))
    if token is None:
        raise missing()
    if "action" in call.request.query:
        token["status"] = ACTIONS[call.action(*ACTIONS)]
        touch(token)
        return call.acted(token, "Token")
    body = await call.body()
    attributes = attributes_field(body)
    scope = text_field(body, "scope")
    _update(token, attributes, scope)
    return answer(call.request, token, root="Token")


def _update(token: dict[str, Any], attributes: list[dict[str, Any]] | None, scope: str | None) -> None:
    """Set the attributes named (the others stay) and replace the scope, if given."""
    if attributes is not None:
        held = token.setdefault("attributes", [])
        if not isinstance(held, list):
            raise invalid_request("attributes: the token's own attributes are not a list")
        merge_attributes(held, attributes)
    if scope is not None:
        token["scope"] = scope
    touch(token)


VERIFIER_MISSING = ("keymanagement.service.oauth10_verifier_doesnot_exist", "Verifier doesnot exist")
"""The stub's own: Apigee's reference gives no error code for an unknown verifier."""


async def get_verifier(call: Call) -> web.Response:
    verifier = call.org().oauth1_verifiers.get(call.param("verifier"))
    if verifier is None:
        raise ApigeeError(404, *VERIFIER_MISSING)
    return answer(call.request, verifier, root="Verifier")


async def delete_verifier(call: Call) -> web.Response:
    """DELETE: answers the verifier as it was (the request token it authorises then cannot be
    exchanged for an access token)."""
    verifier = call.org().oauth1_verifiers.pop(call.param("verifier"), None)
    if verifier is None:
        raise ApigeeError(404, *VERIFIER_MISSING)
    return answer(call.request, verifier, root="Verifier")
