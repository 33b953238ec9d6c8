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
    """``events`` with every ``customer_id`` filled in, resolving identifiers in one round trip."""
    # Normalise each identifier once; look every one of them up in one round trip.
    normalised = {
        e.identifier: identity.normalise(e.identifier, kinds)
        for e in events
        if e.customer_id is None and e.identifier
    }
    owners = await store.resolve(sorted(set(normalised.values()))) if normalised else {}
    resolved = []
    for e in events:
        if e.customer_id is None and e.identifier:
            name = normalised[e.identifier]
            e = msgspec.structs.replace(e, identifier=name, customer_id=owners.get(name) or name)
        resolved.append(e)
    return resolved
