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
        """The start of every key of one customer (erasure scans for it)."""
        return f"{self.prefix}:{{c:{customer_id}}}:"

    def _customer(self, customer_id: str, what: str) -> str:
        return self.customer_prefix(customer_id) + what

    def recent(self, customer_id: str) -> str:
        """The customer's latest events, newest first, capped in length and age."""
        return self._customer(customer_id, "recent")

    def bought(self, customer_id: str) -> str:
        """The set of item ids the customer bought since the model was trained."""
        return self._customer(customer_id, "bought")

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
