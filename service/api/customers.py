"""Identity links, consent and erasure of customers."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Controller, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service import identity
from service.api.params import PathId
from service.api.responses import problems
from service.resolution import customer_for
from service.schemas import ConsentRequest, LinkRequest
from service.settings import Settings
from service.state import Consent
from service.store import ErasureReport, LinkResult, Store


class IdentityController(Controller):
    """Link identifiers to customers (scope ``events``)."""

    path = "/v1/identities"
    opt = {"scope": "events"}  # noqa: RUF012
    tags = ["customers"]  # noqa: RUF012

    @post(
        "/link", status_code=200, operation_id="linkIdentifiers", responses=problems(400, 409, 413)
    )
    async def link(
        self,
        data: JSONBody[LinkRequest],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> LinkResult:
        """Link identifiers to a customer and merge their anonymous history into it.

        Each identifier is ``kind:value`` with a known kind (``email``, ``loyalty``, ``phone``,
        ``device``, ``cookie`` and those configured) and a value (a phone with a digit); else 400.

        An identifier already linked to another customer is a 409 and nothing is linked.
        """
        kinds = settings.identifier_kinds_set
        identifiers = sorted({identity.normalise(i, kinds) for i in data.identifiers})
        return await store.link(data.customer_id, identifiers)


class ConsentController(Controller):
    """Consent per customer (scope ``admin`` or ``events``)."""

    path = "/v1/customers/{customer_id:str}/consent"
    opt = {"scope": ("admin", "events")}  # noqa: RUF012
    tags = ["customers"]  # noqa: RUF012

    @put("/", operation_id="setConsent", responses=problems(400, 413))
    async def set_consent(
        self,
        customer_id: PathId,
        data: JSONBody[ConsentRequest],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> Consent:
        """Record consent, replacing what was on record (a field not given is unstated again:
        the default applies; ``PATCH`` changes only the fields given). It applies from the next
        request on every channel."""
        resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
        consent = Consent(
            personalisation=data.personalisation,
            marketing=dict(data.marketing),
            updated_at=datetime.now(UTC),
        )
        await store.set_consent(resolved, consent)
        return consent

    @patch("/", operation_id="updateConsent", responses=problems(400, 413))
    async def update_consent(
        self,
        customer_id: PathId,
        data: JSONBody[ConsentRequest],
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> Consent:
        """Change only the fields given (``{"marketing": {"sms": false}}`` leaves personalisation
        and the other channels as they are) and answer the whole consent on record."""
        resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
        return await store.update_consent(resolved, data.personalisation, dict(data.marketing))

    @get("/", operation_id="getConsent", responses=problems(400))
    async def get_consent(
        self,
        customer_id: PathId,
        store: NamedDependency[Store],
        settings: NamedDependency[Settings],
    ) -> Consent:
        """The consent on record (empty fields: not stated, the defaults apply)."""
        resolved = await customer_for(store, settings.identifier_kinds_set, customer_id)
        return (await store.customer_state(resolved)).consent


class ErasureController(Controller):
    """Right to erasure (scope ``admin``)."""

    path = "/v1/customers"
    opt = {"scope": "admin"}  # noqa: RUF012
    tags = ["customers"]  # noqa: RUF012

    @delete(
        "/{customer_id:str}", status_code=200, operation_id="eraseCustomer", responses=problems(400)
    )
    async def erase(self, customer_id: PathId, store: NamedDependency[Store]) -> ErasureReport:
        """Erase the customer's state, identifiers and unexported events; training drops the rest.

        Idempotent: erasing again returns a report of nothing removed.
        """
        return await store.erase(customer_id)
