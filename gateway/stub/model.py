"""The stub's organisations: API products, developers and companies, their apps and their keys.

One consistent model per organisation, in memory. Entities render themselves in the field order
Apigee Edge answers them (``to_json``); every refusal is an ``ApigeeError`` from the catalogue
below, so one place says what Apigee calls each condition. OAuth tokens live beside the model
(``gateway.stub.store``), linked to an app through the consumer key they were issued under.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.stub.errors import ApigeeError

Attribute = dict[str, Any]
"""``{"name": ..., "value": ...}``, kept as given."""

_ALPHANUMERIC = string.ascii_letters + string.digits
NEVER = -1
"""``expiresAt`` of a key that does not expire."""


def now_ms() -> int:
    return int(time.time() * 1000)


def random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def new_id() -> str:
    return str(uuid.uuid4())


# The catalogue of refusals ---------------------------------------------------------------------


def org_missing(org: str) -> ApigeeError:
    return ApigeeError(404, "organizations.OrganizationDoesNotExist", f"Organization : {org} does not exist")


def developer_missing(org: str, developer: str) -> ApigeeError:
    return ApigeeError(
        404,
        "developer.service.DeveloperIdDoesNotExist",
        f"DeveloperId {developer} does not exist in organization {org}",
    )


def developer_exists(org: str, email: str) -> ApigeeError:
    return ApigeeError(
        409,
        "developer.service.DeveloperAlreadyExists",
        f"Developer with email {email} already exists in organization {org}",
    )


def company_missing(org: str, company: str) -> ApigeeError:
    return ApigeeError(
        404, "developer.service.CompanyDoesNotExist", f"Company {company} does not exist in organization {org}"
    )


def company_exists(org: str, company: str) -> ApigeeError:
    return ApigeeError(
        409, "developer.service.CompanyAlreadyExists", f"Company {company} already exists in organization {org}"
    )


def app_missing(owner: str, app: str) -> ApigeeError:
    return ApigeeError(404, "developer.service.AppDoesNotExist", f"App named {app} does not exist under {owner}")


def app_exists(owner: str, app: str) -> ApigeeError:
    return ApigeeError(409, "developer.service.AppAlreadyExists", f"App named {app} already exists under {owner}")


def app_id_missing(app_id: str) -> ApigeeError:
    return ApigeeError(404, "developer.service.AppIdDoesNotExist", f"App with id {app_id} does not exist")


def key_missing() -> ApigeeError:
    # Apigee does not echo the key: it is a credential.
    return ApigeeError(404, "keymanagement.service.InvalidClientIdForGivenApp", "Invalid consumer key for Given App")


def key_exists() -> ApigeeError:
    return ApigeeError(409, "keymanagement.service.consumer_key_already_exists", "Consumer key already exists")


def product_missing(org: str, product: str, status: int = 404) -> ApigeeError:
    return ApigeeError(
        status,
        "keymanagement.service.apiproduct_doesnot_exist",
        f"API Product [{product}] does not exist for tenant [{org}]",
    )


def product_not_on_key() -> ApigeeError:
    # Status and message as Apigee Edge answers (apigee-edge-js's own tests pin both).
    return ApigeeError(
        500, "keymanagement.service.apiproduct_not_associated", "APIProduct is not associated with consumer key"
    )


def invalid_request(message: str) -> ApigeeError:
    """A body or parameter Apigee's reference gives no error code for: the stub names the field."""
    return ApigeeError(400, "stub.invalid_request", message)


def invalid_action(action: str | None, expected: tuple[str, ...]) -> ApigeeError:
    shown = "none" if action is None else repr(action)
    return ApigeeError(400, "stub.invalid_action", f"Invalid action {shown}; expected {' or '.join(expected)}")


# Entities ----------------------------------------------------------------------------------------


@dataclass
class Audited:
    """Who made an entity and who changed it last, and when (milliseconds since the epoch)."""

    created_at: int
    created_by: str
    modified_at: int
    modified_by: str

    def touch(self, user: str) -> None:
        self.modified_at = now_ms()
        self.modified_by = user

    def stamps(self) -> dict[str, Any]:
        return {"createdAt": self.created_at, "createdBy": self.created_by}

    def modified(self) -> dict[str, Any]:
        return {"lastModifiedAt": self.modified_at, "lastModifiedBy": self.modified_by}


def stamped(user: str, at: int | None = None) -> dict[str, Any]:
    """The ``Audited`` fields of something made now by ``user``."""
    moment = now_ms() if at is None else at
    return {"created_at": moment, "created_by": user, "modified_at": moment, "modified_by": user}


@dataclass
class Product(Audited):
    name: str
    display_name: str
    description: str = ""
    approval_type: str = "auto"
    attributes: list[Attribute] = field(default_factory=list)
    environments: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"apiResources": [], "approvalType": self.approval_type, "attributes": self.attributes}
        shown.update(self.stamps())
        if self.description:
            shown["description"] = self.description
        shown.update({"displayName": self.display_name, "environments": self.environments})
        shown.update(self.modified())
        shown.update({"name": self.name, "proxies": [], "scopes": self.scopes})
        return shown


@dataclass
class ProductRef:
    """An API product on a key, with the key's status for that product."""

    name: str
    status: str = "approved"

    def to_json(self) -> dict[str, Any]:
        return {"apiproduct": self.name, "status": self.status}


@dataclass
class Credential:
    """A consumer key and secret of an app."""

    consumer_key: str
    consumer_secret: str
    issued_at: int
    expires_at: int = NEVER
    status: str = "approved"
    products: list[ProductRef] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "apiProducts": [ref.to_json() for ref in self.products],
            "attributes": self.attributes,
            "consumerKey": self.consumer_key,
            "consumerSecret": self.consumer_secret,
            "expiresAt": self.expires_at,
            "issuedAt": self.issued_at,
            "scopes": self.scopes,
            "status": self.status,
        }

    def product(self, name: str) -> ProductRef:
        for ref in self.products:
            if ref.name == name:
                return ref
        raise product_not_on_key()

    def add_products(self, names: list[str]) -> None:
        held = {ref.name for ref in self.products}
        self.products.extend(ProductRef(name) for name in names if name not in held)


@dataclass
class App(Audited):
    name: str
    app_id: str
    owner_field: str
    """``developerId`` or ``companyName``: how the app names its owner."""
    owner_id: str
    status: str = "approved"
    attributes: list[Attribute] = field(default_factory=list)
    callback_url: str = ""
    scopes: list[str] = field(default_factory=list)
    credentials: list[Credential] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"appFamily": "default", "appId": self.app_id, "attributes": self.attributes}
        if self.callback_url:
            shown["callbackUrl"] = self.callback_url
        shown.update(self.stamps())
        shown["credentials"] = [credential.to_json() for credential in self.credentials]
        shown[self.owner_field] = self.owner_id
        shown.update(self.modified())
        shown.update({"name": self.name, "scopes": self.scopes, "status": self.status})
        return shown

    def credential(self, key: str) -> Credential:
        for credential in self.credentials:
            if credential.consumer_key == key:
                return credential
        raise key_missing()


@dataclass
class Owner(Audited):
    """What developers and companies share: a status, attributes and apps by name."""

    status: str = "active"
    attributes: list[Attribute] = field(default_factory=list)
    apps: dict[str, App] = field(default_factory=dict)

    def label(self) -> str:
        """How Apigee names the owner in an app's errors."""
        raise NotImplementedError

    def app(self, name: str) -> App:
        found = self.apps.get(name)
        if found is None:
            raise app_missing(self.label(), name)
        return found

    def own_fields(self) -> dict[str, Any]:
        """The fields only this kind of owner has, in the order Apigee shows them."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"apps": list(self.apps), **self.own_fields()}
        shown.update({"status": self.status, "attributes": self.attributes})
        shown.update(self.stamps())
        shown.update(self.modified())
        return shown


@dataclass
class Developer(Owner):
    email: str = ""
    developer_id: str = ""
    first_name: str = ""
    last_name: str = ""
    user_name: str = ""
    organization: str = ""
    companies: list[str] = field(default_factory=list)

    def label(self) -> str:
        return self.email

    def own_fields(self) -> dict[str, Any]:
        return {
            "companies": self.companies,
            "email": self.email,
            "developerId": self.developer_id,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userName": self.user_name,
            "organizationName": self.organization,
        }


@dataclass
class Company(Owner):
    name: str = ""
    display_name: str = ""
    organization: str = ""

    def label(self) -> str:
        return self.name

    def own_fields(self) -> dict[str, Any]:
        return {"name": self.name, "displayName": self.display_name, "organization": self.organization}


@dataclass
class Org(Audited):
    """One organisation: everything but its OAuth 2.0 access tokens."""

    name: str = ""
    products: dict[str, Product] = field(default_factory=dict)
    developers: dict[str, Developer] = field(default_factory=dict)
    """By email, lower-cased: Apigee matches developer emails without regard to case."""
    companies: dict[str, Company] = field(default_factory=dict)
    authorization_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    oauth1_access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    oauth1_request_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    oauth1_verifiers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        shown = self.stamps()
        shown.update({"displayName": self.name, "environments": ["prod", "test"]})
        shown.update(self.modified())
        # apigee-edge-js's connect() reads properties.property and dies without the object.
        shown.update({"name": self.name, "properties": {"property": []}, "type": "paid"})
        return shown

    # Look-ups ----------------------------------------------------------------------------------

    def developer(self, ref: str) -> Developer:
        """A developer by email (any case) or by developerId, as Apigee takes either in paths."""
        found = self.developers.get(ref.lower())
        if found is None:
            found = next((d for d in self.developers.values() if d.developer_id == ref), None)
        if found is None:
            raise developer_missing(self.name, ref)
        return found

    def company(self, name: str) -> Company:
        found = self.companies.get(name)
        if found is None:
            raise company_missing(self.name, name)
        return found

    def product(self, name: str) -> Product:
        found = self.products.get(name)
        if found is None:
            raise product_missing(self.name, name)
        return found

    def owners(self) -> list[Owner]:
        return [*self.developers.values(), *self.companies.values()]

    def apps(self) -> list[App]:
        return [app for owner in self.owners() for app in owner.apps.values()]

    def app_by_id(self, app_id: str) -> App:
        for app in self.apps():
            if app.app_id == app_id:
                return app
        raise app_id_missing(app_id)

    def owner_of(self, app: App) -> Owner:
        return next(owner for owner in self.owners() if owner.apps.get(app.name) is app)

    def apps_by_key(self) -> dict[str, App]:
        """Every consumer key of the organisation, to the app holding it."""
        return {credential.consumer_key: app for app in self.apps() for credential in app.credentials}

    def check_products(self, names: list[str]) -> None:
        """Products named in a request body must exist: 400, naming the first that does not."""
        for name in names:
            if name not in self.products:
                raise product_missing(self.name, name, status=400)

    def check_new_key(self, key: str) -> None:
        if key in self.apps_by_key():
            raise key_exists()

    # Changes ---------------------------------------------------------------------------------

    def add_developer(self, developer: Developer) -> Developer:
        if developer.email.lower() in self.developers:
            raise developer_exists(self.name, developer.email)
        developer.organization = self.name
        self.developers[developer.email.lower()] = developer
        return developer

    def remove_developer(self, ref: str) -> Developer:
        developer = self.developer(ref)
        del self.developers[developer.email.lower()]
        return developer

    def rename_developer(self, developer: Developer, email: str) -> None:
        if email.lower() != developer.email.lower() and email.lower() in self.developers:
            raise developer_exists(self.name, email)
        del self.developers[developer.email.lower()]
        developer.email = email
        self.developers[email.lower()] = developer

    def add_company(self, company: Company) -> Company:
        if company.name in self.companies:
            raise company_exists(self.name, company.name)
        company.organization = self.name
        self.companies[company.name] = company
        return company

    def add_app(self, owner: Owner, app: App) -> App:
        if app.name in owner.apps:
            raise app_exists(owner.label(), app.name)
        for credential in app.credentials:
            self.check_new_key(credential.consumer_key)
        owner.apps[app.name] = app
        return app

    def new_credential(
        self, products: list[str], expires_in: int | None, key: str = "", secret: str = ""
    ) -> Credential:
        """A key pair issued now, approved for ``products``; ``expires_in`` milliseconds (None or -1: never)."""
        issued = now_ms()
        expires = NEVER if expires_in is None or expires_in < 0 else issued + expires_in
        credential = Credential(key or random_text(32), secret or random_text(16), issued_at=issued, expires_at=expires)
        credential.add_products(products)
        return credential


def new_developer(
    user: str, email: str, first: str, last: str, user_name: str, attributes: list[Attribute]
) -> Developer:
    return Developer(
        **stamped(user),
        attributes=attributes,
        email=email,
        developer_id=new_id(),
        first_name=first,
        last_name=last,
        user_name=user_name,
    )


def new_company(user: str, name: str, display_name: str, attributes: list[Attribute]) -> Company:
    return Company(**stamped(user), attributes=attributes, name=name, display_name=display_name or name)


def new_app(user: str, owner: Owner, name: str) -> App:
    if isinstance(owner, Developer):
        owner_field, owner_id = "developerId", owner.developer_id
    else:
        assert isinstance(owner, Company)
        owner_field, owner_id = "companyName", owner.name
    return App(**stamped(user), name=name, app_id=new_id(), owner_field=owner_field, owner_id=owner_id)


def new_product(user: str, name: str) -> Product:
    return Product(**stamped(user), name=name, display_name=name)


def new_org(name: str) -> Org:
    return Org(**stamped("defaultUser"), name=name)
