"""What the end-to-end quality benchmark scores answers against (benchmarks/served_quality.py)."""

from __future__ import annotations

from benchmarks.served_quality import targets
from tests.test_training import events_table


def bought(customer: str, item: str, **more: object) -> dict[str, object]:
    return {"customer_id": customer, "item_id": item, "event_type": "purchase", **more}


def test_held_out_purchases_split_into_every_purchase_and_fresh_items_of_known_customers() -> None:
    past = events_table(
        [
            *(bought("a", "i1"), bought("a", "i2"), bought("b", "i3"), bought("b", "i4")),
            {"customer_id": "b", "item_id": "i5"},  # a view: known to training, not bought
        ]
    )
    future = events_table(
        [
            bought("a", "i1"),  # bought again: a target of "all", not of "fresh"
            bought("a", "i3"),
            bought("a", "i9"),  # unknown to training: no model can rank it
            bought("b", "i5"),
            {"customer_id": "b", "item_id": "i2", "event_type": "view"},  # not a target
            bought("n", "i1"),  # a new customer
            bought("c", "i4", event_type="rating", rating=1.0),  # rated low: not a target
        ]
    )
    truth = targets(past, future, min_rating=3.5, cap=100)
    assert sorted(truth["known"]) == ["a", "b"] and truth["new_customers"] == ["n"]
    assert truth["all"] == {"a": {"i1", "i3", "i9"}, "b": {"i5"}, "n": {"i1"}}
    assert truth["fresh"] == {"a": {"i3"}, "b": {"i5"}, "n": {"i1"}}
    assert truth["repeat_share"] == round((1 / 3 + 0) / 2, 4)


def test_the_customers_scored_are_a_seeded_sample_capped_per_group() -> None:
    past = events_table([bought(f"k{j}", "i1") for j in range(30)])
    future = events_table(
        [bought(f"k{j}", "i2") for j in range(30)] + [bought(f"n{j}", "i1") for j in range(30)]
    )
    first = targets(past, future, min_rating=3.5, cap=10)
    again = targets(past, future, min_rating=3.5, cap=10)
    assert len(first["known"]) == 10 and len(first["new_customers"]) == 10
    assert first["known"] == again["known"] and first["new_customers"] == again["new_customers"]
    assert all(c.startswith("k") for c in first["known"])
