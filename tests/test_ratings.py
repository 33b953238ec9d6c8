"""Explicit ratings: a low one is no positive evidence and no target, but is never shown back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest

from service import artifact
from service.settings import Settings
from tests.conftest import ADMIN_KEY, client_for, replace
from tests.test_training import END, NO_DECAY, events_table
from training import coldstart, evaluate, matrix
from training.config import AlsParams, Evaluation, TrainConfig, Weights, load_config
from training.experiment import SideInfo, make_data
from training.pipeline import Inputs, run
from training.tuning import to_toml

LIKED, DISLIKED = 5.0, 1.0


def rating(customer: str, item: str, stars: float, days_ago: float = 1) -> dict[str, object]:
    return {
        "customer_id": customer,
        "item_id": item,
        "event_type": "rating",
        "rating": stars,
        "timestamp": END - timedelta(days=days_ago),
    }


@pytest.mark.parametrize(
    ("stars", "weights", "expected"),
    [
        (5.0, NO_DECAY, 1.0),
        (4.0, NO_DECAY, 0.8),
        (3.5, NO_DECAY, 0.7),  # the default threshold, 0.7 of the scale: relevant
        (3.0, NO_DECAY, 0.0),
        (1.0, NO_DECAY, 0.0),
        (3.0, Weights(half_life_days=0, min_relevant_rating=3), 0.6),
        (1.0, Weights(half_life_days=0, min_relevant_rating=0), 0.2),  # every rating counts
        (7.0, Weights(half_life_days=0, rating_scale=10), 0.7),  # threshold 7 on a 10-point scale
        (6.0, Weights(half_life_days=0, rating_scale=10), 0.0),
    ],
)
def test_a_rating_below_the_threshold_weighs_nothing(
    stars: float, weights: Weights, expected: float
) -> None:
    table = events_table([rating("c", "i", stars)])
    assert matrix.event_weights(table, weights, END)[0] == pytest.approx(expected)


def test_a_low_rating_adds_no_weight_but_its_item_stays_excluded() -> None:
    table = events_table(
        [
            rating("fan", "hit", LIKED),
            rating("critic", "hit", DISLIKED),
            rating("critic", "other", LIKED),
        ]
    )
    data = make_data(table, TrainConfig(weights=NO_DECAY), SideInfo())
    built = data.interactions
    cells = {
        (built.customer_ids[r], built.item_ids[c]): float(built.matrix[r, c])
        for r, c in zip(*built.matrix.nonzero(), strict=True)
    }
    assert cells == {("fan", "hit"): 1.0, ("critic", "other"): 1.0}
    popularity = matrix.popularity(table, built, NO_DECAY, end=END)["all"]
    assert dict(zip(built.item_ids, popularity.tolist(), strict=True)) == {"hit": 1.0, "other": 1.0}
    # Production never shows the critic what they rated, liked or not.
    critic = list(built.customer_ids).index("critic")
    excluded = data.excluded[critic].indices.tolist()
    assert {built.item_ids[i] for i in excluded} == {"hit", "other"}


def test_a_low_rating_is_no_adoption_but_the_customers_arrival() -> None:
    table = events_table(
        [
            rating("a", "x", LIKED, days_ago=30),  # arrival
            rating("a", "y", DISLIKED, days_ago=10),  # settled, but no adoption
            rating("a", "z", LIKED, days_ago=10),
            rating("b", "q", DISLIKED, days_ago=30),  # b arrives with a low rating (q: no other)
            rating("b", "x", LIKED, days_ago=10),
            rating("b", "z", LIKED, days_ago=10),
            rating("c", "y", LIKED, days_ago=30),
        ]
    )
    built = matrix.build(table, NO_DECAY, end=END)
    found = matrix.adoptions(
        table, built, end=END, half_life_days=0, settle_days=7, min_rating=NO_DECAY.relevant_rating
    )
    assert dict(zip(built.item_ids, found.tolist(), strict=True)) == {"x": 1.0, "y": 0.0, "z": 2.0}


def test_low_ratings_are_no_targets_and_a_customer_with_only_those_is_not_evaluated() -> None:
    liked = [("a", i) for i in "xyzw"] + [("b", i) for i in "xyzv"]
    train = events_table([rating(c, i, LIKED, days_ago=30) for c, i in liked])
    data = make_data(train, TrainConfig(weights=NO_DECAY), SideInfo())
    test = events_table(
        [
            rating("a", "v", LIKED),
            rating("a", "x", DISLIKED),  # already rated in training: excluded anyway
            rating("b", "w", DISLIKED),  # b's only new test rating is low
            {"customer_id": "b", "item_id": "w", "event_type": "view"},
        ]
    )
    customers, targets = evaluate.test_targets(
        data.interactions, data.excluded, test, NO_DECAY.relevant_rating
    )
    ids, items = data.interactions.customer_ids, data.interactions.item_ids
    assert [ids[c] for c in customers] == ["a"]
    assert [{items[i] for i in t} for t in targets] == [{"v"}]
    # With every rating relevant (the old definition), b's 1 star was a target.
    customers, targets = evaluate.test_targets(data.interactions, data.excluded, test, 0.0)
    assert [ids[c] for c in customers] == ["a", "b"]
    assert [{items[i] for i in t} for t in targets] == [{"v"}, {"w"}]


def test_a_new_customers_low_rating_is_no_cold_start_target() -> None:
    built = matrix.build(events_table([rating("a", i, LIKED) for i in "wxyz"]), NO_DECAY, end=END)
    future = events_table(
        [rating("n", i, LIKED, days_ago=-n) for n, i in enumerate("wxy")]
        + [rating("n", "z", DISLIKED, days_ago=-5)]
        + [rating("m", i, LIKED, days_ago=-n) for n, i in enumerate("wxyz")]
    )
    cases = coldstart.new_customers(built, future, NO_DECAY.relevant_rating, context=3)
    assert [{built.item_ids[i] for i in case.relevant} for case in cases] == [{"z"}]  # m's only


def test_data_without_ratings_is_weighted_and_evaluated_alike_whatever_the_threshold() -> None:
    rows = [
        {"customer_id": c, "item_id": i, "event_type": t, "timestamp": END - timedelta(days=d)}
        for c, i, t, d in [
            ("a", "x", "purchase", 20),
            ("a", "y", "view", 15),
            ("b", "y", "purchase", 12),
            ("b", "z", "add_to_cart", 10),
            ("a", "z", "purchase", 1),
            ("b", "x", "purchase", 1),
        ]
    ]
    train, test, _ = evaluate.time_split(events_table(rows), 0.3)
    results = []
    for threshold in (0.0, 3.5, 5.0):
        weights = Weights(min_relevant_rating=threshold)
        data = make_data(train, TrainConfig(weights=weights), SideInfo())
        customers, targets = evaluate.test_targets(
            data.interactions, data.excluded, test, weights.relevant_rating
        )
        results.append((data.interactions.matrix.toarray(), data.excluded.toarray(), targets))
        assert customers.tolist() and targets
    for other in results[1:]:
        np.testing.assert_array_equal(other[0], results[0][0])
        np.testing.assert_array_equal(other[1], results[0][1])
        assert other[2] == results[0][2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rating_scale = 5\nmin_relevant_rating = 6", "6 is above rating_scale 5"),
        ("rating_scale = 1\nmin_relevant_rating = 3.5", "3.5 is above rating_scale 1"),
        ("min_relevant_rating = -1", "Expected `float` >= 0.0"),
        ("min_relevant_rating = nan", "Expected `float` >= 0.0"),
        ('min_relevant_rating = "4"', "Expected `float | null`, got `str`"),
    ],
)
def test_the_threshold_is_checked(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[weights]\n{text}\n")
    with pytest.raises(ValueError, match=message):
        load_config(path)


@pytest.mark.parametrize("threshold", [None, 4.0])
def test_tunes_config_file_keeps_the_threshold(tmp_path: Path, threshold: float | None) -> None:
    """TOML has no null: the default threshold is written as an absent key and reads back."""
    config = TrainConfig(weights=Weights(min_relevant_rating=threshold))
    path = tmp_path / "tuned.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config
    assert load_config(path).weights.relevant_rating == (threshold or 3.5)


@pytest.mark.slow
def test_an_item_rated_low_is_never_recommended_back(tmp_path: Path, settings: Settings) -> None:
    """Train and serve: the critic's 1-star hit is excluded, and a flop only ever rated low is
    neither learnt nor shipped as a catalogue item scored from its features."""
    rows = [rating(f"c{n}", "hit", LIKED, days_ago=n + 1) for n in range(15)]
    rows += [rating(f"c{n}", f"good{n % 5}", 4.0, days_ago=n + 2) for n in range(20)]
    rows += [rating(f"c{n}", "flop", 1.0 + n % 3, days_ago=n + 3) for n in range(10)]
    rows += [rating("critic", "hit", DISLIKED), rating("critic", "good0", LIKED)]
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,item_id,event_type,channel,timestamp,rating\n"
        + "".join(
            f"{r['customer_id']},{r['item_id']},rating,web,"
            f"{r['timestamp'].isoformat()},{r['rating']}\n"  # type: ignore[attr-defined]
            for r in rows
        )
    )
    items = tmp_path / "items.csv"
    items.write_text(
        "item_id,category\nhit,drama\nflop,drama\n" + "".join(f"good{n},drama\n" for n in range(5))
    )
    # ALS places catalogue items without events from their category (a prior would not).
    config = TrainConfig(
        algorithm="als", als=AlsParams(factors=2), evaluation=Evaluation(holdout_fraction=0)
    )
    version = run(Inputs(events=[str(events)], items=str(items)), tmp_path / "models", config)
    assert b"flop" not in artifact.load(version).arrays["item_ids"].tolist()
    # The service weighs live ratings as this training did.
    fold_in = artifact.load(version).manifest.fold_in
    assert fold_in is not None
    assert (fold_in.rating_scale, fold_in.min_relevant_rating) == (5.0, 3.5)
    with client_for(replace(settings, model_dir=str(tmp_path / "models"))) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"

        def shown(customer: str) -> list[str]:
            answer = client.get(f"/v1/customers/{customer}/recommendations", params={"k": 10})
            assert answer.status_code == 200, answer.text
            return [i["item_id"] for i in answer.json()["items"]]

        # k covers the catalogue: whatever is not excluded is shown.
        assert "hit" in shown("c17")
        assert "hit" not in shown("critic") and "good0" not in shown("critic")
        assert "flop" not in shown("c0")
        # Rated low live, an item leaves the customer's recommendations at once.
        event = {"customer_id": "c17", "item_id": "hit", "event_type": "rating", "rating": 1.0}
        assert client.post("/v1/events", json={**event, "channel": "web"}).status_code == 202
        assert "hit" not in shown("c17")


def test_the_default_threshold_follows_the_scale() -> None:
    assert Weights().relevant_rating == 3.5
    assert Weights(rating_scale=10).relevant_rating == 7.0
    assert msgspec.structs.replace(Weights(), rating_scale=1.0).relevant_rating == 0.7


def scale_of(stars: list[float], weights: Weights | None = None) -> Weights:
    rows = [rating(f"c{n}", f"i{n % 3}", s) for n, s in enumerate(stars)]
    return matrix.with_data_scale(weights or Weights(), events_table(rows))


@pytest.mark.parametrize(
    ("stars", "scale", "low"),
    [
        ([1.0, 1.0, 1.0], 1.0, []),  # likes: every one relevant (a fixed scale of 5 dropped all)
        ([-1.0, 1.0, 1.0], 1.0, [-1.0]),  # thumbs down and up
        ([0.0, 1.0], 1.0, [0.0]),
        ([1.0, 5.0, 4.0, 2.0], 5.0, [1.0, 2.0]),
        ([0.5, 5.0, 3.5], 5.0, [0.5]),
        ([2.0, 10.0, 7.0, 6.0], 10.0, [2.0, 6.0]),
        ([5.0] * 3000 + [100.0], 5.0, []),  # one stray outlier in 3,000 ratings sets no scale
    ],
)
def test_the_rating_scale_is_the_datas_own(
    stars: list[float], scale: float, low: list[float]
) -> None:
    weights = scale_of(stars)
    assert weights.rating_scale == scale
    assert sorted({s for s in stars if s < weights.relevant_rating}) == low


def test_a_configured_scale_or_data_without_ratings_keep_theirs() -> None:
    assert scale_of([1.0], Weights(rating_scale=5)).rating_scale == 5
    plain = events_table([{**rating("c0", "i0", 1.0), "event_type": "purchase", "rating": None}])
    assert matrix.with_data_scale(Weights(), plain) == Weights()
    assert Weights().scale == 5.0
    with pytest.raises(ValueError, match="6 is above rating_scale 5"):
        scale_of([5.0, 4.0], Weights(min_relevant_rating=6))


def test_data_of_likes_trains_and_the_manifest_keeps_its_scale(tmp_path: Path) -> None:
    """Likes (rating 1) are positive evidence: the model learns them and its fold-in, and the
    recorded config, keep the data's scale."""
    events = tmp_path / "likes.csv"
    events.write_text(
        "customer_id,item_id,event_type,channel,timestamp,rating\n"
        + "".join(
            f"c{n},i{(n + j) % 7},rating,app,{(END - timedelta(days=j + 1)).isoformat()},1\n"
            for n in range(20)
            for j in range(3)
        )
    )
    config = TrainConfig(algorithm="als", evaluation=Evaluation(holdout_fraction=0))
    manifest = artifact.load(run(Inputs(events=[str(events)]), tmp_path / "m", config)).manifest
    assert manifest.counts["interactions"] == 60
    assert manifest.fold_in.rating_scale == 1.0
    assert manifest.fold_in.min_relevant_rating == pytest.approx(0.7)
    assert manifest.config["weights"]["rating_scale"] == 1.0
