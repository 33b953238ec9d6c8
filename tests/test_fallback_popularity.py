"""The popular lists served to customers the model cannot place: decayed with a half-life
training chooses on the validation period's new customers.

One generated shop, years before the clock: five old hits ``o*`` that 300 customers bought
290 days before the data's end, and ten recent items ``r*`` that two new customers a day buy
over its last 100 days. All-time (and 120-day) popularity ranks the old hits first; what new
customers buy is the recent items.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from service import artifact
from service.settings import Settings
from tests.conftest import ADMIN_KEY, client_for, replace
from tests.test_training import events_table
from training import fallback, matrix
from training.config import TrainConfig, Weights
from training.pipeline import Inputs, run

END = datetime(2019, 6, 30, tzinfo=UTC)  # long before the clock: decay runs from the data's end
OLD = [f"o{i}" for i in range(5)]
RECENT = [f"r{i}" for i in range(10)]


def purchase(customer: str, item: str, when: datetime) -> dict[str, object]:
    return {"customer_id": customer, "item_id": item, "event_type": "purchase", "timestamp": when}


def shop(new_per_day: int = 2) -> list[dict[str, object]]:
    rows = [purchase(f"k{c}", i, END - timedelta(days=290)) for c in range(300) for i in OLD]
    for day in range(100):
        when = END - timedelta(days=99 - day)
        for n in range(new_per_day):
            j = day * new_per_day + n
            rows += [purchase(f"n{j}", RECENT[j % 10], when)]
            rows += [purchase(f"n{j}", RECENT[(j + 1) % 10], when)]
        # Known customers take recent items up too: the test period has someone to rank for.
        rows += [purchase(f"k{day % 40}", RECENT[(day + day // 40) % 10], when)]
    return rows


def split(rows: list[dict[str, object]], days: int) -> tuple:
    table = events_table(rows)
    cutoff = END - timedelta(days=days)
    past = events_table([r for r in rows if r["timestamp"] < cutoff])  # type: ignore[operator]
    future = events_table([r for r in rows if r["timestamp"] >= cutoff])  # type: ignore[operator]
    assert past.num_rows + future.num_rows == table.num_rows
    return past, future


WEIGHTS = Weights(half_life_days=120.0, rating_scale=5.0)


def test_where_new_customers_buy_what_sells_now_a_short_half_life_is_chosen() -> None:
    past, future = split(shop(), days=30)
    interactions = matrix.build(past, WEIGHTS)
    end = matrix.window(past)[1]
    chosen, compared = fallback.choose(past, interactions, future, WEIGHTS, end, 10)
    assert 0 < chosen <= 30
    assert compared["customers"] == 62 and compared["half_life_days"] == chosen
    tried = {c["half_life_days"]: c["ndcg"] for c in compared["candidates"]}
    assert {0.0, 120.0, *fallback.HALF_LIVES} <= set(tried)
    assert tried[chosen] > tried[0.0] and tried[chosen] > tried[120.0]
    top = fallback.lists(past, interactions, WEIGHTS, chosen, end)["all"].argsort()[::-1][:10]
    assert {interactions.item_ids[i] for i in top} == set(RECENT)


def test_where_new_customers_buy_the_all_time_hits_the_hits_stay_on_top() -> None:
    past, _ = split(shop(), days=30)
    # This time the new customers of the last 30 days buy the old hits, not what sold lately.
    future = events_table(
        [purchase(f"m{c}", OLD[(c + d) % 5], END - timedelta(days=10)) for c in range(40)
         for d in range(2)]
    )  # fmt: skip
    interactions = matrix.build(past, WEIGHTS)
    end = matrix.window(past)[1]
    chosen, compared = fallback.choose(past, interactions, future, WEIGHTS, end, 10)
    tried = {c["half_life_days"]: c["ndcg"] for c in compared["candidates"]}
    assert chosen in (0.0, 120.0, 365.0)  # the lists that rank the hits first
    assert tried[chosen] > tried[7.0]


def test_a_best_candidate_within_the_noise_leaves_the_matrix_half_life() -> None:
    """New customers who buy any item at random: some candidate scores best by chance alone,
    not by the ``MIN_GAIN_SE`` standard errors a change needs."""
    past, _ = split(shop(), days=30)
    rng = np.random.default_rng(7)
    catalogue = [*OLD, *RECENT]
    future = events_table(
        [purchase(f"z{c}", catalogue[int(i)], END - timedelta(days=5)) for c in range(60)
         for i in rng.integers(0, len(catalogue), size=2)]
    )  # fmt: skip
    interactions = matrix.build(past, WEIGHTS)
    chosen, compared = fallback.choose(
        past, interactions, future, WEIGHTS, matrix.window(past)[1], 10
    )
    tried = {c["half_life_days"]: c["ndcg"] for c in compared["candidates"]}
    assert max(tried.values()) > tried[120.0]  # a winner by chance...
    assert chosen == 120.0  # ...is not enough
    assert compared["gain"] <= fallback.MIN_GAIN_SE * compared["gain_standard_error"]


def test_too_few_new_customers_leave_the_matrix_half_life() -> None:
    rows = shop(new_per_day=2)
    cutoff = END - timedelta(days=30)
    # Only the first 10 new customers of the period stay.
    late = {f"n{j}" for j in range(138, 200)} - {f"n{j}" for j in range(138, 148)}
    rows = [r for r in rows if r["customer_id"] not in late or r["timestamp"] < cutoff]  # type: ignore[operator]
    past, future = split(rows, days=30)
    interactions = matrix.build(past, WEIGHTS)
    chosen, compared = fallback.choose(
        past, interactions, future, WEIGHTS, matrix.window(past)[1], 10
    )
    assert chosen == 120.0 and compared["candidates"] == [] and compared["customers"] == 10


def test_a_decayed_list_orders_what_sold_long_ago_by_its_all_time_sales() -> None:
    """A 1-day half-life leaves 290-day-old sales at 0 in float32: without the all-time
    tie-break a category of old items would be listed in id order."""
    rows = shop()
    rows += [purchase(f"x{c}", "o4", END - timedelta(days=290)) for c in range(50)]
    table = events_table(rows)
    interactions = matrix.build(table, WEIGHTS)
    found = fallback.lists(table, interactions, WEIGHTS, 1.0, matrix.window(table)[1])["all"]
    ids = interactions.item_ids.tolist()
    old = sorted(OLD, key=lambda i: -found[ids.index(i)])
    assert old[0] == "o4" and found[ids.index("o4")] > 0
    assert min(found[ids.index(i)] for i in RECENT) > max(found[ids.index(i)] for i in OLD)


@pytest.mark.parametrize("algorithm", ["popularity", "auto"])
def test_the_service_falls_back_on_the_list_training_chose(
    algorithm: str, tmp_path: Path, settings: Settings
) -> None:
    """End to end: training chooses the half-life on validation, records it, and the service
    answers a stranger with what sells at the end of the data (years before the clock)."""
    events = tmp_path / "events.parquet"
    pq.write_table(events_table(shop(new_per_day=3)), events)
    config = TrainConfig(algorithm=algorithm)  # type: ignore[arg-type]
    if algorithm == "auto":
        config = msgspec.structs.replace(
            config,
            selection=msgspec.structs.replace(
                config.selection, candidates=["popularity", "recent_popularity"]
            ),
        )
    models = tmp_path / "models"
    manifest = artifact.load(run(Inputs(events=[str(events)]), models, config)).manifest
    with client_for(replace(settings, model_dir=str(models))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        got = client.get("/v1/customers/stranger/recommendations", params={"k": 10})
        assert got.status_code == 200, got.text
        answer = got.json()
    assert answer["fallback"] is True
    assert {i["item_id"] for i in answer["items"]} == set(RECENT)
    chosen = manifest.popularity_half_life_days
    assert chosen is not None and 0 < chosen <= 30
    assert manifest.metrics["fallback_popularity"]["half_life_days"] == chosen
    assert manifest.metrics["without_events"]["customers"] > 0


def test_a_manifest_from_before_the_choice_still_loads() -> None:
    old = {
        "format_version": artifact.FORMAT_VERSION,
        "model_version": "20261101T000000Z-als-abcdef",
        "algorithm": "als",
        "created_at": "2026-11-01T00:00:00Z",
        "popularity_channels": ["all", "web"],
    }
    manifest = msgspec.json.decode(msgspec.json.encode(old), type=artifact.Manifest)
    assert manifest.popularity_half_life_days is None
