"""The organisation, its API products, developers, companies, their apps and their keys.

Each handler takes a ``Call`` (the caller already authenticated) and either answers or raises an
``ApigeeError`` from the model's catalogue. Paths and statuses are listed in docs/stub.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.stub.http import Call, attributes_field, emulated, millis_field, names_field, text_field
from gateway.stub.model import App, Credential, Org, Owner, invalid_request, new_app, new_company, new_developer
from gateway.stub.render import answer

ORG = "/v1/{alias:o|organizations}/{org}"
DEVELOPER = ORG + "/developers/{developer}"
COMPANY = ORG + "/companies/{company}"
APPROVE_REVOKE = ("approve", "revoke")
STATUS_OF_ACTION = {"approve": "approved", "revoke": "revoked", "active": "active", "inactive": "inactive"}


def add_routes(router: web.UrlDispatcher) -> None:
    def add(method: str, path: str, handler: Any) -> None:
        router.add_route(method, path, emulated(handler))

    add("GET", ORG, get_org)
    add("GET", ORG + "/", get_org)  # apigee-edge-js's connect() asks with the slash
    add("GET", ORG + "/apiproducts", list_products)
    add("GET", ORG + "/apiproducts/{product}", get_product)
    add("GET", ORG + "/apps", list_org_apps)
    add("GET", ORG + "/apps/{app_id}", get_org_app)
    add("DELETE", ORG + "/apps/{app_id}", delete_org_app)
    add("GET", ORG + "/developers", list_developers)
    add("POST", ORG + "/developers", create_developer)
    add("GET", DEVELOPER, get_developer)
    add("PUT", DEVELOPER, update_developer)
    add("DELETE", DEVELOPER, delete_developer)
    add("POST", DEVELOPER, developer_action)
    add("GET", ORG + "/companies", list_companies)
    add("POST", ORG + "/companies", create_company)
    add("GET", COMPANY, get_company)
    add("PUT", COMPANY, update_company)
    add("DELETE", COMPANY, delete_company)
    add("POST", COMPANY, company_action)
    for owner in (DEVELOPER, COMPANY):
        app = owner + "/apps/{app}"
        key = app + "/keys/{key}"
        add("GET", owner + "/apps", list_apps)
        add("POST", owner + "/apps", create_app)
        add("GET", app, get_app)
        add("PUT", app, update_app)
        add("POST", app, post_app)
        add("DELETE", app, delete_app)
        add("POST", app + "/keys/create", create_key)  # before {key}: a key named "create" cannot be made
        add("GET", key, get_key)
        add("PUT", key, update_key)
        add("POST", key, post_key)
        add("DELETE", key, delete_key)
        add("POST", key + "/apiproducts/{product}", key_product_action)
        add("DELETE", key + "/apiproducts/{product}", remove_key_product)


# The organisation and its products -------------------------------------------------------------


async def get_org(call: Call) -> web.Response:
    return answer(call.request, call.org().to_json(), root="Organization")


async def list_products(call: Call) -> web.Response:
    products = call.org().products.values()
    if call.expand():
        return answer(call.request, {"apiProduct": [p.to_json() for p in products]}, root="ApiProducts")
    return answer(call.request, [p.name for p in products], root="List")


async def get_product(call: Call) -> web.Response:
    return answer(call.request, call.org().product(call.param("product")).to_json(), root="ApiProduct")


async def list_org_apps(call: Call) -> web.Response:
    apps = call.org().apps()
    if call.expand():
        return answer(call.request, {"app": [app.to_json() for app in apps]}, root="Apps")
    return answer(call.request, [app.app_id for app in apps], root="List")


async def get_org_app(call: Call) -> web.Response:
    return answer(call.request, call.org().app_by_id(call.param("app_id")).to_json(), root="App")


async def delete_org_app(call: Call) -> web.Response:
    org = call.org()
    app = org.app_by_id(call.param("app_id"))
    del org.owner_of(app).apps[app.name]
    return answer(call.request, app.to_json(), root="App")


# Developers and companies ----------------------------------------------------------------------


async def list_developers(call: Call) -> web.Response:
    developers = call.org().developers.values()
    if call.expand():
        return answer(call.request, {"developer": [d.to_json() for d in developers]}, root="Developers")
    return answer(call.request, [d.email for d in developers], root="List")


async def create_developer(call: Call) -> web.Response:
    body = await call.body()
    fields = [text_field(body, name, required=True) for name in ("email", "firstName", "lastName", "userName")]
    email, first, last, user_name = (str(value) for value in fields)
    developer = new_developer(call.user, email, first, last, user_name, attributes_field(body) or [])
    call.org().add_developer(developer)
    return answer(call.request, developer.to_json(), root="Developer", status=201)


async def get_developer(call: Call) -> web.Response:
    return answer(call.request, call.org().developer(call.param("developer")).to_json(), root="Developer")


async def update_developer(call: Call) -> web.Response:
    """PUT: the fields given replace the developer's (attributes as a whole)."""
    org = call.org()
    developer = org.developer(call.param("developer"))
    body = await call.body()
    email = text_field(body, "email")
    changes = {name: text_field(body, name) for name in ("firstName", "lastName", "userName")}
    attributes = attributes_field(body)
    if email:
        org.rename_developer(developer, email)
    developer.first_name = changes["firstName"] or developer.first_name
    developer.last_name = changes["lastName"] or developer.last_name
    developer.user_name = changes["userName"] or developer.user_name
    if attributes is not None:
        developer.attributes = attributes
    developer.touch(call.user)
    return answer(call.request, developer.to_json(), root="Developer")


async def delete_developer(call: Call) -> web.Response:
    """DELETE: the developer and its apps and keys; Apigee answers the developer as it was."""
    return answer(call.request, call.org().remove_developer(call.param("developer")).to_json(), root="Developer")


async def developer_action(call: Call) -> web.Response:
    """``?action=active|inactive`` (no body): an inactive developer's apps are refused at runtime."""
    developer = call.org().developer(call.param("developer"))
    developer.status = STATUS_OF_ACTION[call.action("active", "inactive")]
    developer.touch(call.user)
    return call.acted(developer.to_json(), "Developer")


async def list_companies(call: Call) -> web.Response:
    companies = call.org().companies.values()
    if call.expand():
        return answer(call.request, {"company": [c.to_json() for c in companies]}, root="Companies")
    return answer(call.request, [c.name for c in companies], root="List")


async def create_company(call: Call) -> web.Response:
    body = await call.body()
    name = str(text_field(body, "name", required=True))
    company = new_company(call.user, name, text_field(body, "displayName") or "", attributes_field(body) or [])
    call.org().add_company(company)
    return answer(call.request, company.to_json(), root="Company", status=201)


async def get_company(call: Call) -> web.Response:
    return answer(call.request, call.org().company(call.param("company")).to_json(), root="Company")


async def update_company(call: Call) -> web.Response:
    """PUT: the display name and attributes given replace the company's, and a ``status``
    (``active`` or ``inactive``) sets it, as the action would."""
    company = call.org().company(call.param("company"))
    body = await call.body()
    status = text_field(body, "status")
    if status is not None and status not in ("active", "inactive"):
        raise invalid_request(f"Invalid status {status}; expected active or inactive")
    attributes = attributes_field(body)
    company.display_name = text_field(body, "displayName") or company.display_name
    company.status = status or company.status
    if attributes is not None:
        company.attributes = attributes
    company.touch(call.user)
    return answer(call.request, company.to_json(), root="Company")


async def delete_company(call: Call) -> web.Response:
    org = call.org()
    company = org.company(call.param("company"))
    del org.companies[company.name]
    return answer(call.request, company.to_json(), root="Company")


async def company_action(call: Call) -> web.Response:
    company = call.org().company(call.param("company"))
    company.status = STATUS_OF_ACTION[call.action("active", "inactive")]
    company.touch(call.user)
    return call.acted(company.to_json(), "Company")


# Apps --------------------------------------------------------------------------------------------


def owner_of_path(call: Call, org: Org) -> Owner:
    """The developer (by email or id) or company the path names."""
    if "developer" in call.request.match_info:
        return org.developer(call.param("developer"))
    return org.company(call.param("company"))


async def list_apps(call: Call) -> web.Response:
    apps = owner_of_path(call, call.org()).apps.values()
    if call.expand():
        return answer(call.request, {"app": [app.to_json() for app in apps]}, root="Apps")
    return answer(call.request, [app.name for app in apps], root="List")


async def create_app(call: Call) -> web.Response:
    """POST .../apps: the app, with one key pair issued for its products (201)."""
    org = call.org()
    owner = owner_of_path(call, org)
    body = await call.body()
    app = new_app(call.user, owner, str(text_field(body, "name", required=True)))
    products = names_field(body, "apiProducts") or []
    org.check_products(products)
    _apply_app_fields(app, body)
    app.credentials.append(org.new_credential(products, millis_field(body, "keyExpiresIn")))
    org.add_app(owner, app)
    return answer(call.request, app.to_json(), root="App", status=201)


async def get_app(call: Call) -> web.Response:
    org = call.org()
    return answer(call.request, owner_of_path(call, org).app(call.param("app")).to_json(), root="App")


async def update_app(call: Call) -> web.Response:
    """PUT: attributes, callbackUrl and scopes given replace the app's; its keys are left alone."""
    org = call.org()
    app = owner_of_path(call, org).app(call.param("app"))
    _apply_app_fields(app, await call.body())
    app.touch(call.user)
    return answer(call.request, app.to_json(), root="App")


async def post_app(call: Call) -> web.Response:
    """``?action=approve|revoke`` (no body), or a body: as PUT, and with ``apiProducts`` a new key pair."""
    org = call.org()
    app = owner_of_path(call, org).app(call.param("app"))
    if "action" in call.request.query:
        app.status = STATUS_OF_ACTION[call.action(*APPROVE_REVOKE)]
        app.touch(call.user)
        return call.acted(app.to_json(), "App")
    body = await call.body()
    products = names_field(body, "apiProducts")
    if products is not None:
        org.check_products(products)
    expires_in = millis_field(body, "keyExpiresIn")
    _apply_app_fields(app, body)
    if products is not None:
        app.credentials.append(org.new_credential(products, expires_in))
    app.touch(call.user)
    return answer(call.request, app.to_json(), root="App")


async def delete_app(call: Call) -> web.Response:
    owner = owner_of_path(call, call.org())
    app = owner.app(call.param("app"))
    del owner.apps[app.name]
    return answer(call.request, app.to_json(), root="App")


def _apply_app_fields(app: App, body: dict[str, Any]) -> None:
    attributes = attributes_field(body)
    if attributes is not None:
        app.attributes = attributes
    callback = text_field(body, "callbackUrl")
    if callback is not None:
        app.callback_url = callback
    scopes = names_field(body, "scopes")
    if scopes is not None:
        app.scopes = scopes


# Keys --------------------------------------------------------------------------------------------


def app_of_path(call: Call) -> tuple[Org, App]:
    org = call.org()
    return org, owner_of_path(call, org).app(call.param("app"))


def key_of_path(call: Call) -> tuple[Org, App, Credential]:
    org, app = app_of_path(call)
    return org, app, app.credential(call.param("key"))


async def create_key(call: Call) -> web.Response:
    """POST .../keys/create ``{"consumerKey", "consumerSecret"}``: a key pair the caller chose, no products yet (201)."""
    org, app = app_of_path(call)
    body = await call.body()
    key = str(text_field(body, "consumerKey", required=True))
    secret = text_field(body, "consumerSecret") or ""
    org.check_new_key(key)
    credential = org.new_credential([], None, key=key, secret=secret)
    app.credentials.append(credential)
    app.touch(call.user)
    return answer(call.request, credential.to_json(), root="Credential", status=201)


async def get_key(call: Call) -> web.Response:
    return answer(call.request, key_of_path(call)[2].to_json(), root="Credential")


async def update_key(call: Call) -> web.Response:
    """PUT or POST (no action) ``{"apiProducts", "attributes", "scopes"}``: products are added, the rest replaced."""
    org, app, credential = key_of_path(call)
    body = await call.body()
    products = names_field(body, "apiProducts")
    attributes = attributes_field(body)
    scopes = names_field(body, "scopes")
    if products is not None:
        org.check_products(products)
        credential.add_products(products)
    if attributes is not None:
        credential.attributes = attributes
    if scopes is not None:
        credential.scopes = scopes
    app.touch(call.user)
    return answer(call.request, credential.to_json(), root="Credential")


async def post_key(call: Call) -> web.Response:
    """``?action=approve|revoke`` (no body), else an update as PUT."""
    if "action" not in call.request.query:
        return await update_key(call)
    _, app, credential = key_of_path(call)
    credential.status = STATUS_OF_ACTION[call.action(*APPROVE_REVOKE)]
    app.touch(call.user)
    return call.acted(credential.to_json(), "Credential")


async def delete_key(call: Call) -> web.Response:
    _, app, credential = key_of_path(call)
    app.credentials.remove(credential)
    app.touch(call.user)
    return answer(call.request, credential.to_json(), root="Credential")


async def key_product_action(call: Call) -> web.Response:
    """``?action=approve|revoke``: the key's status for one of its products."""
    _, app, credential = key_of_path(call)
    credential.product(call.param("product")).status = STATUS_OF_ACTION[call.action(*APPROVE_REVOKE)]
    app.touch(call.user)
    return call.acted(credential.to_json(), "Credential")


async def remove_key_product(call: Call) -> web.Response:
    """DELETE: the product off the key; answers the key as it now is."""
    _, app, credential = key_of_path(call)
    credential.products.remove(credential.product(call.param("product")))
    app.touch(call.user)
    return answer(call.request, credential.to_json(), root="Credential")
