"""The stub's organisation, products, developers, companies, apps and keys, as Apigee Edge answers them."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import yarl
from helpers import AppClient
from pytest_aiohttp import AiohttpClient

from gateway.stub import demo_seed, make_stub_app
from gateway.stub.seed import DEMO_APP, DEMO_APP_ID, DEMO_DEVELOPER, DEMO_DEVELOPER_ID, SAMPLE_TOKEN, parse_seed
from gateway.stub.settings import StubSettings

AUTH = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}
JSON = {**AUTH, "Accept": "application/json"}
SAMPLE_KEY = SAMPLE_TOKEN["clientId"]
ORG = "/v1/organizations/myorg"
OWNERS = ("/developers/owner@example.com", "/companies/acme")
"""An app's two kinds of owner: the same paths below each."""


def seed() -> Any:
    """The demo data, plus products p1 and p2, a developer and a company to own apps."""
    data = {
        "users": {"myname": "mypass"},
        "orgs": {
            "myorg": {
                "apiproducts": [{"name": "sandbox"}, {"name": "p1"}, {"name": "p2"}],
                "developers": [
                    {
                        "email": DEMO_DEVELOPER,
                        "firstName": "Demo",
                        "lastName": "Developer",
                        "userName": "demo",
                        "developerId": DEMO_DEVELOPER_ID,
                        "apps": [
                            {
                                "name": DEMO_APP,
                                "appId": DEMO_APP_ID,
                                "credentials": [
                                    {
                                        "consumerKey": SAMPLE_KEY,
                                        "consumerSecret": "s3",
                                        "apiProducts": ["sandbox"],
                                        "tokens": [dict(SAMPLE_TOKEN)],
                                    },
                                ],
                            }
                        ],
                    },
                    {"email": "owner@example.com", "firstName": "O", "lastName": "W", "userName": "owner"},
                ],
                "companies": [{"name": "acme", "displayName": "Acme"}],
            }
        },
    }
    return parse_seed(data, source="test seed")


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> AppClient:
    return await aiohttp_client(make_stub_app(seed()))


async def call(
    client: AppClient, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Status and parsed JSON body (None when there is none)."""
    response = await client.request(method, path, json=body, headers=JSON if headers is None else headers)
    raw = await response.read()
    return response.status, (await response.json() if raw else None)


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "contexts": []}


class TestOrganization:
    @pytest.mark.parametrize("path", ["/v1/organizations/myorg/", "/v1/organizations/myorg", "/v1/o/myorg"])
    async def test_get_has_the_properties_object_clients_need(self, client: AppClient, path: str) -> None:
        """apigee-edge-js's connect() reads ``properties`` from GET /v1/organizations/{org}/."""
        response = await client.get(path, headers=AUTH)
        assert (200, "application/json") == (response.status, response.headers["Content-Type"])
        body = await response.json()
        assert ("myorg", {"property": []}) == (body["name"], body["properties"])
        assert [
            "createdAt",
            "createdBy",
            "displayName",
            "environments",
            "lastModifiedAt",
            "lastModifiedBy",
            "name",
            "properties",
            "type",
        ] == list(body)

    async def test_unknown_organization_is_404(self, client: AppClient) -> None:
        assert (
            404,
            error("organizations.OrganizationDoesNotExist", "Organization : nope does not exist"),
        ) == await call(client, "GET", "/v1/o/nope/developers")

    async def test_products(self, client: AppClient) -> None:
        assert (200, ["sandbox", "p1", "p2"]) == await call(client, "GET", f"{ORG}/apiproducts")
        status, product = await call(client, "GET", f"{ORG}/apiproducts/p1")
        assert (200, "p1", "auto") == (status, product["name"], product["approvalType"])
        status, expanded = await call(client, "GET", f"{ORG}/apiproducts?expand=true")
        assert ["sandbox", "p1", "p2"] == [p["name"] for p in expanded["apiProduct"]]
        assert (
            404,
            error(
                "keymanagement.service.apiproduct_doesnot_exist", "API Product [p9] does not exist for tenant [myorg]"
            ),
        ) == await call(client, "GET", f"{ORG}/apiproducts/p9")

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": aiohttp.encode_basic_auth("myname", "wrong")}, {"Authorization": "Bearer nope"}],
        ids=["missing", "wrong-password", "unknown-bearer"],
    )
    async def test_every_path_needs_credentials(self, client: AppClient, headers: dict[str, str]) -> None:
        for method, path in (
            ("GET", ORG),
            ("POST", f"{ORG}/developers"),
            ("DELETE", f"{ORG}/developers/{DEMO_DEVELOPER}"),
        ):
            response = await client.request(method, path, headers={**headers, "Accept": "application/json"})
            assert (401, 'Basic realm="Apigee stub"') == (response.status, response.headers["WWW-Authenticate"])
            assert error("security.unauthorized", "Invalid credentials") == await response.json()
        assert 200 == (await client.get(f"{ORG}/developers/{DEMO_DEVELOPER}", headers=AUTH)).status


class TestDevelopers:
    async def test_create_get_list_update_delete(self, client: AppClient) -> None:
        body = {
            "email": "Dev@Example.com",
            "firstName": "D",
            "lastName": "E",
            "userName": "dev",
            "attributes": [{"name": "tier", "value": "gold"}],
        }
        status, made = await call(client, "POST", f"{ORG}/developers", body)
        assert 201 == status
        assert [
            "apps",
            "companies",
            "email",
            "developerId",
            "firstName",
            "lastName",
            "userName",
            "organizationName",
            "status",
            "attributes",
            "createdAt",
            "createdBy",
            "lastModifiedAt",
            "lastModifiedBy",
        ] == list(made)
        assert ("Dev@Example.com", "active", "myorg", "myname", [], body["attributes"]) == (
            made["email"],
            made["status"],
            made["organizationName"],
            made["createdBy"],
            made["apps"],
            made["attributes"],
        )
        # By email in any case, or by id.
        for ref in ("dev@example.com", made["developerId"]):
            assert (200, made) == await call(client, "GET", f"{ORG}/developers/{ref}")
        assert (200, [DEMO_DEVELOPER, "owner@example.com", "Dev@Example.com"]) == await call(
            client, "GET", f"{ORG}/developers"
        )
        status, expanded = await call(client, "GET", f"{ORG}/developers?expand=true")
        assert made == expanded["developer"][2]
        status, updated = await call(
            client, "PUT", f"{ORG}/developers/{made['developerId']}", {"firstName": "Dee", "attributes": []}
        )
        assert (200, "Dee", "E", []) == (status, updated["firstName"], updated["lastName"], updated["attributes"])
        assert (200, updated) == await call(client, "DELETE", f"{ORG}/developers/dev@example.com")
        missing = error(
            "developer.service.DeveloperIdDoesNotExist",
            "DeveloperId dev@example.com does not exist in organization myorg",
        )
        assert (404, missing) == await call(client, "GET", f"{ORG}/developers/dev@example.com")
        assert (404, missing) == await call(client, "DELETE", f"{ORG}/developers/dev@example.com")

    async def test_create_refuses_a_duplicate_and_missing_fields(self, client: AppClient) -> None:
        duplicate = {"email": DEMO_DEVELOPER.upper(), "firstName": "A", "lastName": "B", "userName": "c"}
        assert (
            409,
            error(
                "developer.service.DeveloperAlreadyExists",
                f"Developer with email {DEMO_DEVELOPER.upper()} already exists in organization myorg",
            ),
        ) == await call(client, "POST", f"{ORG}/developers", duplicate)
        assert (400, error("stub.invalid_request", "userName: required")) == await call(
            client, "POST", f"{ORG}/developers", {"email": "x@example.com", "firstName": "A", "lastName": "B"}
        )
        # apigeetool sends --attributes as the raw command-line string.
        assert (
            400,
            error("stub.invalid_request", 'attributes: expected a list of {"name": ..., "value": ...} objects'),
        ) == await call(
            client, "POST", f"{ORG}/developers", {**duplicate, "email": "y@example.com", "attributes": "[{}]"}
        )
        response = await client.post(f"{ORG}/developers", data=b"{", headers=JSON)
        assert (400, error("stub.invalid_request", "The body is not valid JSON")) == (
            response.status,
            await response.json(),
        )
        assert (200, [DEMO_DEVELOPER, "owner@example.com"]) == await call(client, "GET", f"{ORG}/developers")

    async def test_active_and_inactive_answer_204_with_no_body(self, client: AppClient) -> None:
        for action in ("inactive", "active"):
            response = await client.post(f"{ORG}/developers/{DEMO_DEVELOPER_ID}?action={action}", headers=AUTH)
            assert (204, b"") == (response.status, await response.read())
            assert action == (await call(client, "GET", f"{ORG}/developers/{DEMO_DEVELOPER}"))[1]["status"]
        assert (
            400,
            error("stub.invalid_action", "Invalid action 'revoke'; expected active or inactive"),
        ) == await call(client, "POST", f"{ORG}/developers/{DEMO_DEVELOPER}?action=revoke")
        assert (400, error("stub.invalid_action", "Invalid action none; expected active or inactive")) == await call(
            client, "POST", f"{ORG}/developers/{DEMO_DEVELOPER}"
        )


async def test_action_status_200_answers_the_changed_entity(aiohttp_client: AiohttpClient) -> None:
    """stub.action_status = 200: every ?action= call answers 200 with the entity, as Apigee's current spec says."""
    client = await aiohttp_client(make_stub_app(seed(), settings=StubSettings(action_status=200)))
    status, developer = await call(client, "POST", f"{ORG}/developers/{DEMO_DEVELOPER}?action=inactive")
    assert (200, "inactive") == (status, developer["status"])
    app = f"{ORG}/developers/{DEMO_DEVELOPER}/apps/{DEMO_APP}"
    status, revoked = await call(client, "POST", f"{app}?action=revoke")
    assert (200, "revoked", DEMO_APP_ID) == (status, revoked["status"], revoked["appId"])
    status, key = await call(client, "POST", f"{app}/keys/{SAMPLE_KEY}?action=revoke")
    assert (200, "revoked", SAMPLE_KEY) == (status, key["status"], key["consumerKey"])
    status, token = await call(client, "POST", f"{ORG}/oauth2/accesstokens/{SAMPLE_TOKEN['token']}?action=revoke")
    assert (200, "revoked", SAMPLE_TOKEN["token"]) == (status, token["status"], token["token"])


@pytest.mark.parametrize("owner", OWNERS)
class TestApps:
    async def test_create_issues_a_key_pair_for_the_products(self, client: AppClient, owner: str) -> None:
        body = {
            "name": "a1",
            "apiProducts": ["p1", "p2"],
            "keyExpiresIn": 60_000,
            "callbackUrl": "https://cb.example.com",
            "attributes": [{"name": "tool", "value": "test"}],
        }
        status, app = await call(client, "POST", f"{ORG}{owner}/apps", body)
        assert 201 == status
        owner_field = "developerId" if "developers" in owner else "companyName"
        assert [
            "appFamily",
            "appId",
            "attributes",
            "callbackUrl",
            "createdAt",
            "createdBy",
            "credentials",
            owner_field,
            "lastModifiedAt",
            "lastModifiedBy",
            "name",
            "scopes",
            "status",
        ] == list(app)
        [key] = app["credentials"]
        assert [
            "apiProducts",
            "attributes",
            "consumerKey",
            "consumerSecret",
            "expiresAt",
            "issuedAt",
            "scopes",
            "status",
        ] == list(key)
        assert [{"apiproduct": "p1", "status": "approved"}, {"apiproduct": "p2", "status": "approved"}] == key[
            "apiProducts"
        ]
        assert (32, 16, 60_000, "approved") == (
            len(key["consumerKey"]),
            len(key["consumerSecret"]),
            key["expiresAt"] - key["issuedAt"],
            app["status"],
        )
        assert (200, app) == await call(client, "GET", f"{ORG}{owner}/apps/a1")
        assert (200, app) == await call(client, "GET", f"{ORG}/apps/{app['appId']}")
        assert (200, ["a1"]) == await call(client, "GET", f"{ORG}{owner}/apps")
        assert (200, {"app": [app]}) == await call(client, "GET", f"{ORG}{owner}/apps?expand=true")

    async def test_create_refusals(self, client: AppClient, owner: str) -> None:
        label = owner.rsplit("/", 1)[1]
        assert (201, "a1") == ((r := await call(client, "POST", f"{ORG}{owner}/apps", {"name": "a1"}))[0], r[1]["name"])
        assert (
            409,
            error("developer.service.AppAlreadyExists", f"App named a1 already exists under {label}"),
        ) == await call(client, "POST", f"{ORG}{owner}/apps", {"name": "a1"})
        assert (
            400,
            error(
                "keymanagement.service.apiproduct_doesnot_exist",
                "API Product [p1,p2] does not exist for tenant [myorg]",
            ),
        ) == await call(client, "POST", f"{ORG}{owner}/apps", {"name": "a2", "apiProducts": ["p1,p2"]})
        assert (400, error("stub.invalid_request", "name: required")) == await call(
            client, "POST", f"{ORG}{owner}/apps", {}
        )
        assert (200, ["a1"]) == await call(client, "GET", f"{ORG}{owner}/apps")

    async def test_update_revoke_approve_and_delete(self, client: AppClient, owner: str) -> None:
        label = owner.rsplit("/", 1)[1]
        _, app = await call(client, "POST", f"{ORG}{owner}/apps", {"name": "a1", "apiProducts": ["p1"]})
        path = f"{ORG}{owner}/apps/a1"
        status, updated = await call(
            client, "PUT", path, {**app, "attributes": [{"name": "x", "value": "y"}], "scopes": ["read"]}
        )
        assert (200, [{"name": "x", "value": "y"}], ["read"], app["credentials"]) == (
            status,
            updated["attributes"],
            updated["scopes"],
            updated["credentials"],
        )
        # POST with apiProducts issues another key pair (apigee-edge-js's appcredentials.add without a key).
        status, more = await call(client, "POST", path, {"apiProducts": ["p2"], "attributes": [], "keyExpiresIn": -1})
        assert (200, 2, [{"apiproduct": "p2", "status": "approved"}], -1) == (
            status,
            len(more["credentials"]),
            more["credentials"][1]["apiProducts"],
            more["credentials"][1]["expiresAt"],
        )
        for action, expected in (("revoke", "revoked"), ("approve", "approved")):
            response = await client.post(f"{path}?action={action}", headers=AUTH)
            assert (204, b"") == (response.status, await response.read())
            assert expected == (await call(client, "GET", path))[1]["status"]
        status, deleted = await call(client, "DELETE", path)
        assert (200, "a1", 2) == (status, deleted["name"], len(deleted["credentials"]))
        missing = error("developer.service.AppDoesNotExist", f"App named a1 does not exist under {label}")
        for method in ("GET", "PUT", "DELETE"):
            assert (404, missing) == await call(client, method, path, {} if method == "PUT" else None)
        assert (404, missing) == await call(client, "POST", f"{path}?action=revoke")

    async def test_keys(self, client: AppClient, owner: str) -> None:
        await call(client, "POST", f"{ORG}{owner}/apps", {"name": "a1"})
        keys = f"{ORG}{owner}/apps/a1/keys"
        status, key = await call(client, "POST", f"{keys}/create", {"consumerKey": "K1", "consumerSecret": "S1"})
        assert (
            201,
            {
                "apiProducts": [],
                "attributes": [],
                "consumerKey": "K1",
                "consumerSecret": "S1",
                "expiresAt": -1,
                "issuedAt": key["issuedAt"],
                "scopes": [],
                "status": "approved",
            },
        ) == (status, key)
        assert (
            409,
            error("keymanagement.service.consumer_key_already_exists", "Consumer key already exists"),
        ) == await call(client, "POST", f"{keys}/create", {"consumerKey": SAMPLE_KEY, "consumerSecret": "x"})
        status, key = await call(
            client, "POST", f"{keys}/K1", {"apiProducts": ["p1"], "attributes": [{"name": "n", "value": "v"}]}
        )
        assert (200, [{"apiproduct": "p1", "status": "approved"}], [{"name": "n", "value": "v"}]) == (
            status,
            key["apiProducts"],
            key["attributes"],
        )
        status, key = await call(client, "PUT", f"{keys}/K1", {"apiProducts": ["p2"]})  # apigee-edge-js's addProduct
        assert (200, ["p1", "p2"]) == (status, [ref["apiproduct"] for ref in key["apiProducts"]])
        assert (200, key) == await call(client, "GET", f"{keys}/K1")
        for action, expected in (("revoke", "revoked"), ("approve", "approved")):
            response = await client.post(f"{keys}/K1?action={action}", headers=AUTH)
            assert (204, b"", expected) == (
                response.status,
                await response.read(),
                (await call(client, "GET", f"{keys}/K1"))[1]["status"],
            )
            response = await client.post(f"{keys}/K1/apiproducts/p1?action={action}", headers=AUTH)
            assert 204 == response.status
            assert expected == (await call(client, "GET", f"{keys}/K1"))[1]["apiProducts"][0]["status"]
        status, key = await call(client, "DELETE", f"{keys}/K1/apiproducts/p1")
        assert (200, [{"apiproduct": "p2", "status": "approved"}]) == (status, key["apiProducts"])
        not_associated = error(
            "keymanagement.service.apiproduct_not_associated", "APIProduct is not associated with consumer key"
        )
        assert (500, not_associated) == await call(client, "DELETE", f"{keys}/K1/apiproducts/p1")
        assert (500, not_associated) == await call(client, "POST", f"{keys}/K1/apiproducts/p1?action=revoke")
        assert (200, key) == await call(client, "DELETE", f"{keys}/K1")
        missing = error("keymanagement.service.InvalidClientIdForGivenApp", "Invalid consumer key for Given App")
        for method, path in (
            ("GET", "K1"),
            ("DELETE", "K1"),
            ("POST", "K1?action=revoke"),
            ("POST", "K1/apiproducts/p2?action=approve"),
        ):
            assert (404, missing) == await call(client, method, f"{keys}/{path}")
        # A key is the organisation's: another app's key is not this app's.
        assert (404, missing) == await call(client, "GET", f"{keys}/{SAMPLE_KEY}")


async def test_key_paths_take_the_developer_id_in_place_of_the_email(client: AppClient) -> None:
    """apigee-edge-js's appcredentials.revoke({key}) names the developer by id."""
    response = await client.post(
        f"{ORG}/developers/{DEMO_DEVELOPER_ID}/apps/{DEMO_APP}/keys/{SAMPLE_KEY}?action=revoke", headers=AUTH
    )
    assert 204 == response.status
    assert (
        "revoked"
        == (await call(client, "GET", f"{ORG}/developers/{DEMO_DEVELOPER}/apps/{DEMO_APP}/keys/{SAMPLE_KEY}"))[1][
            "status"
        ]
    )


async def test_deleting_a_developer_takes_its_apps(client: AppClient) -> None:
    assert (200, [DEMO_APP]) == (
        (r := await call(client, "DELETE", f"{ORG}/developers/{DEMO_DEVELOPER}"))[0],
        r[1]["apps"],
    )
    assert (
        404,
        error("developer.service.AppIdDoesNotExist", f"App with id {DEMO_APP_ID} does not exist"),
    ) == await call(client, "GET", f"{ORG}/apps/{DEMO_APP_ID}")
    assert (200, []) == await call(client, "GET", f"{ORG}/apps")


class TestCompanies:
    async def test_create_get_list_action_delete(self, client: AppClient) -> None:
        status, company = await call(client, "POST", f"{ORG}/companies", {"name": "globex", "displayName": "Globex"})
        assert (
            201,
            [
                "apps",
                "name",
                "displayName",
                "organization",
                "status",
                "attributes",
                "createdAt",
                "createdBy",
                "lastModifiedAt",
                "lastModifiedBy",
            ],
        ) == (status, list(company))
        assert (
            409,
            error("developer.service.CompanyAlreadyExists", "Company globex already exists in organization myorg"),
        ) == await call(client, "POST", f"{ORG}/companies", {"name": "globex"})
        assert (200, ["acme", "globex"]) == await call(client, "GET", f"{ORG}/companies")
        assert 204 == (await client.post(f"{ORG}/companies/globex?action=inactive", headers=AUTH)).status
        assert (200, "inactive") == ((r := await call(client, "GET", f"{ORG}/companies/globex"))[0], r[1]["status"])
        assert 200 == (await call(client, "DELETE", f"{ORG}/companies/globex"))[0]
        assert (
            404,
            error("developer.service.CompanyDoesNotExist", "Company globex does not exist in organization myorg"),
        ) == await call(client, "GET", f"{ORG}/companies/globex")


class TestXml:
    async def test_entities_as_xml_when_asked(self, client: AppClient) -> None:
        response = await client.get(f"{ORG}/apiproducts", headers={**AUTH, "Accept": "application/xml"})
        assert ("application/xml", b"<List><Item>sandbox</Item><Item>p1</Item><Item>p2</Item></List>") == (
            response.headers["Content-Type"],
            await response.read(),
        )
        response = await client.get(
            f"{ORG}/developers/{DEMO_DEVELOPER}/apps/{DEMO_APP}/keys/{SAMPLE_KEY}",
            headers={**AUTH, "Accept": "application/xml"},
        )
        assert (
            "<Credential><ApiProducts><ApiProduct><Apiproduct>sandbox</Apiproduct><Status>approved</Status></ApiProduct></ApiProducts>"
            f"<Attributes></Attributes><ConsumerKey>{SAMPLE_KEY}</ConsumerKey><ConsumerSecret>s3</ConsumerSecret>"
        ) == (await response.text()).split("<ExpiresAt>")[0]

    async def test_errors_are_json_by_default_and_xml_when_asked(self, client: AppClient) -> None:
        path = f"{ORG}/developers/nobody@example.com"
        response = await client.get(path, headers=AUTH)
        assert (
            "application/json",
            error(
                "developer.service.DeveloperIdDoesNotExist",
                "DeveloperId nobody@example.com does not exist in organization myorg",
            ),
        ) == (response.headers["Content-Type"], await response.json())
        response = await client.get(path, headers={**AUTH, "Accept": "application/xml"})
        assert (
            b"<Error> <Code>developer.service.DeveloperIdDoesNotExist</Code> "
            b"<Message>DeveloperId nobody@example.com does not exist in organization myorg</Message> <Contexts/> </Error>"
        ) == await response.read()


async def test_demo_seed_has_a_developer_whose_app_holds_the_sample_tokens_key(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_stub_app(demo_seed()))
    status, app = await call(client, "GET", f"/v1/o/myorg/developers/{DEMO_DEVELOPER}/apps/{DEMO_APP}")
    assert (200, DEMO_APP_ID, [SAMPLE_KEY]) == (status, app["appId"], [c["consumerKey"] for c in app["credentials"]])
    assert (200, [SAMPLE_TOKEN["token"]]) == (
        (r := await call(client, "GET", f"/v1/o/myorg/oauth2/search?app={DEMO_APP_ID}"))[0],
        r[1]["list"],
    )


async def test_emails_in_paths_raw_or_encoded(client: AppClient) -> None:
    """Both clients send emails raw (``a+b@example.com``); an encoded one names the same developer."""
    body = {"email": "a+b@example.com", "firstName": "A", "lastName": "B", "userName": "ab"}
    assert 201 == (await call(client, "POST", f"{ORG}/developers", body))[0]
    for path in ("a+b@example.com", "a%2Bb%40example.com", "A+B@EXAMPLE.COM"):
        response = await client.get(yarl.URL(f"{ORG}/developers/{path}", encoded=True), headers=JSON)
        assert (200, "a+b@example.com") == (response.status, (await response.json())["email"]), path
    assert 201 == (await call(client, "POST", f"{ORG}/developers/a+b@example.com/apps", {"name": "x"}))[0]
    assert (200, ["x"]) == await call(client, "GET", f"{ORG}/developers/a+b@example.com/apps")
