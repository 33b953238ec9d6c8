"""What the service knows about a customer in real time: recent events, purchases, cart, consent."""

from __future__ import annotations

from datetime import datetime

import msgspec

from service.events import Channel, Event


class CartLine(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One item in the customer's current cart."""

    added_at: datetime
    channel: Channel
    quantity: float = 1.0


class Consent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """What the customer agreed to; ``None`` means "not stated" and the configured default applies.

    ``personalisation``: may recommendations use their behaviour (and training their events)?
    ``marketing``: per channel (``email``, ``app``, ``sms``...), may offers be sent there?

    ``gc=False`` (and on ``CartLine`` and ``Event``): these hold only scalars (and a dict of
    them), so they can be in no reference cycle, and each worker keeps thousands
    (store/state_cache.py) that the cyclic collector then never visits.
    """

    personalisation: bool | None = None
    marketing: dict[str, bool] = msgspec.field(default_factory=dict)
    updated_at: datetime | None = None

    def allows_personalisation(self, default: bool) -> bool:
        """Personalisation allowed, with ``default`` when the customer said nothing."""
        return default if self.personalisation is None else self.personalisation

    def allows_marketing(self, channel: str, default: bool) -> bool:
        """Marketing on ``channel`` allowed, with ``default`` when the customer said nothing."""
        return self.marketing.get(channel, default)


def linked_consent(anonymous: Consent, customer: Consent) -> Consent:
    """The customer's consent once an anonymous identifier is linked to them.

    What the customer stated holds; what they never stated is taken from the anonymous side. So
    a withdrawal made before logging in stays withdrawn until the customer states otherwise.
    """
    times = [t for t in (anonymous.updated_at, customer.updated_at) if t is not None]
    return Consent(
        personalisation=(
            anonymous.personalisation
            if customer.personalisation is None
            else customer.personalisation
        ),
        marketing={**anonymous.marketing, **customer.marketing},
        updated_at=max(times) if times else None,
    )


class CustomerState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything Redis holds for one customer, read in one round trip."""

    recent: list[Event] = msgspec.field(default_factory=list)
    bought: frozenset[str] = frozenset()
    cart: dict[str, CartLine] = msgspec.field(default_factory=dict)
    consent: Consent = msgspec.field(default_factory=Consent)
    # When the customer was last erased (``DELETE /v1/customers/{id}``), an epoch second on
    # Redis's clock; None: never. Whatever the service received since is a new customer's.
    erased_at: float | None = None

    def stranger_to(self, erasures_as_of: float | None) -> bool:
        """Whether a model is to treat the customer as a stranger: they were erased at or after
        ``erasures_as_of``, the time of the erasure list its training honoured (None: none), so
        its data may hold their events from before the erasure. A model trained with the list
        that holds the erasure kept only their later events: it knows the customer who came back.
        """
        if self.erased_at is None:
            return False
        return erasures_as_of is None or self.erased_at >= erasures_as_of


cart_line_decoder = msgspec.msgpack.Decoder(CartLine)
consent_decoder = msgspec.msgpack.Decoder(Consent)
