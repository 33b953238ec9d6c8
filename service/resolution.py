"""Which customer a request or an event is about: customer ids, or identifiers resolved in Redis."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service import identity
from service.events import Event
from service.store import Store


async def customer_for(store: Store, kinds: frozenset[str], reference: str) -> str:
    """The customer id ``reference`` stands for.

    ``reference`` is a customer id, or an identifier (``email:ann@example.com``) that is resolved
    through the identity graph; an identifier linked to no one is an anonymous customer of its own
    (its normalised form is its id).
    """
    if not identity.is_identifier(reference, kinds):
        return reference
    normalised = identity.normalise(reference, kinds)
    return (await store.resolve([normalised]))[normalised] or normalised


async def resolve_events(
    store: Store, kinds: frozenset[str], events: Sequence[Event]
) -> list[Event]:
    """``events`` with every ``customer_id`` filled in, resolving identifiers in one round trip.

    Every ``identifier`` is validated and normalised, also on an event that names its
    ``customer_id``: that event is the named customer's, whoever the identifier is linked to (a
    shared device's cookie), so it is only looked up for events without a ``customer_id``.

    Raises:
        InvalidIdentifier: an identifier with an unknown kind or an empty value (a 400).
    """
    # Normalise each identifier once; look those of events without a customer up in one trip.
    normalised = {
        e.identifier: identity.normalise(e.identifier, kinds) for e in events if e.identifier
    }
    wanted = {normalised[e.identifier] for e in events if e.customer_id is None and e.identifier}
    owners = await store.resolve(sorted(wanted)) if wanted else {}
    resolved = []
    for e in events:
        if e.identifier:
            name = normalised[e.identifier]
            customer = e.customer_id or owners.get(name) or name
            e = msgspec.structs.replace(e, identifier=name, customer_id=customer)
        resolved.append(e)
    return resolved
