"""Every Redis key the service uses, in one place.

A customer's keys share the hash tag ``{c:<customer_id>}``, so they live in one Redis Cluster slot
and one customer's writes can run in one transaction.
"""

from __future__ import annotations


class Keys:
    """Key names, namespaced under a prefix (several deployments can share one Redis)."""

    def __init__(self, prefix: str) -> None:
        """All keys start with ``prefix:``."""
        self.prefix = prefix
        # The durable log of every acknowledged event (drained to Parquet by the exporter).
        self.events = f"{prefix}:events"
        # Measurement (issue 7): experiment configs by id.
        self.experiments = f"{prefix}:experiments"

    def customer_prefix(self, customer_id: str) -> str:
        """The start of every key of one customer.

        Not unique to the customer: an id may hold ``}:``, so customer ``ann``'s prefix starts
        customer ``ann}:x``'s keys too. A whole key is unambiguous (no key kind holds ``}``).
        """
        return f"{self.prefix}:{{c:{customer_id}}}:"

    def _customer(self, customer_id: str, what: str) -> str:
        return self.customer_prefix(customer_id) + what

    def recent(self, customer_id: str) -> str:
        """The customer's latest events, newest first, capped in length and age."""
        return self._customer(customer_id, "recent")

    def bought(self, customer_id: str) -> str:
        """The set of item ids the customer bought since the model was trained."""
        return self._customer(customer_id, "bought")

    def cart(self, customer_id: str) -> str:
        """The current cart: item id -> msgpack ``CartLine``."""
        return self._customer(customer_id, "cart")

    def consent(self, customer_id: str) -> str:
        """The customer's consent, a msgpack ``Consent``."""
        return self._customer(customer_id, "consent")

    def stats(self, customer_id: str) -> str:
        """Lifetime figures kept at ingest: events and spend per channel, orders, activity times."""
        return self._customer(customer_id, "stats")

    def orders(self, customer_id: str) -> str:
        """The set of order keys seen, so an order of several lines counts once."""
        return self._customer(customer_id, "orders")

    def identifiers(self, customer_id: str) -> str:
        """The set of identifiers linked to the customer (for erasure and the profile)."""
        return self._customer(customer_id, "ids")

    def offer_contacts(self, customer_id: str) -> str:
        """Offers presented to the customer on any channel: a sorted set scored by time."""
        return self._customer(customer_id, "offers:contacts")

    def offer_redemptions(self, customer_id: str) -> str:
        """Offers the customer redeemed: offer id -> time."""
        return self._customer(customer_id, "offers:redeemed")

    def customer_keys(self, customer_id: str) -> list[str]:
        """Every key of one customer that the service writes (erasure deletes exactly these)."""
        return [
            self.recent(customer_id),
            self.bought(customer_id),
            self.cart(customer_id),
            self.consent(customer_id),
            self.identifiers(customer_id),
            self.stats(customer_id),
            self.orders(customer_id),
            self.offer_contacts(customer_id),
            self.offer_redemptions(customer_id),
            self.touches(customer_id),
        ]

    def identifier(self, identifier: str) -> str:
        """Identifier -> the customer id it is linked to."""
        return f"{self.prefix}:id:{identifier}"

    def seen(self, event_id: str) -> str:
        """Idempotency: an event id already recorded -> its stream entry id."""
        return f"{self.prefix}:seen:{event_id}"

    @property
    def suppressed(self) -> str:
        """Erased customers: SHA-256 of the customer id -> erasure time (training drops them)."""
        return f"{self.prefix}:suppressed"

    @property
    def model_reloads(self) -> str:
        """A counter bumped by every ``POST /v1/models/reload``, so every worker and replica on
        this Redis loads ``LATEST`` too, whichever one was asked."""
        return f"{self.prefix}:models:reloads"

    @property
    def stock_version(self) -> str:
        """A counter bumped by every inventory change, so workers know when to refresh."""
        return f"{self.prefix}:stock:version"

    @property
    def stock_stores(self) -> str:
        """The stores that have sent inventory."""
        return f"{self.prefix}:stock:stores"

    @property
    def unavailable_online(self) -> str:
        """Items not available online."""
        return f"{self.prefix}:stock:online:out"

    def available_in_store(self, store_id: str) -> str:
        """Items in stock in one store (a store's assortment)."""
        return f"{self.prefix}:stock:store:{store_id}:in"

    @property
    def offers(self) -> str:
        """The offer catalogue: offer id -> JSON ``Offer``."""
        return f"{self.prefix}:offers"

    @property
    def offers_version(self) -> str:
        """A counter bumped by every change to the catalogue or the offer rules."""
        return f"{self.prefix}:offers:version"

    @property
    def offer_rules(self) -> str:
        """The offer rules (segments, bands, triggers), JSON ``OfferRules``."""
        return f"{self.prefix}:offers:rules"

    @property
    def export_markers(self) -> str:
        """Exporter batches being written: batch id -> file and entry ids (crash recovery)."""
        return f"{self.prefix}:export:markers"

    # Measurement (issue 7): touches per customer, counters and items served per UTC day.
    def touches(self, customer_id: str) -> str:
        """The customer's recent impressions and clicks, newest first (for attribution)."""
        return self._customer(customer_id, "touches")

    def daily_stats(self, day: str) -> str:
        """One day's counters (impressions, clicks, conversions, revenue...) per dimension."""
        return f"{self.prefix}:stats:{day}"

    def served_items(self, day: str) -> str:
        """The set of item ids recommended on one day (catalogue coverage)."""
        return f"{self.prefix}:served:{day}"
