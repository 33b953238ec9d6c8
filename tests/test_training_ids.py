"""The fit's encoded events (``matrix.compact``): the same matrices, targets, cases and metrics as
the loaders' plain strings, whatever the ids look like."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service import artifact
from tests.test_training import END, events_table
from training import coldstart, evaluate, matrix, pipeline
from training.config import TrainConfig, Weights
from training.experiment import SideInfo, channel_share, make_data
from training.loaders import load_events
from training.pipeline import Inputs, read_events, run
from training.sample import SampleConfig, write_sample

# Ids sharing prefixes, numbers with and without leading zeros, case, spaces, accents composed
# and not, characters outside the BMP, a comma.
AWKWARD = ["1", "01", "001", "10", "1 ", "c1", "C1", "c10", "é", "e\u0301", "Ω", "😀", "a,b"]


def awkward_events() -> pa.Table:
    """Every kind of row the matrices read, over ``AWKWARD`` customers and items, in two chunks
    (two files), each customer in both the past and the future of a cutoff 10 days before END."""
    rows: list[dict[str, Any]] = []
    kinds = ["purchase", "view", "add_to_cart", "purchase", "rating", "remove_from_cart"]
    for n in range(400):
        customer = AWKWARD[n % len(AWKWARD)]
        item = AWKWARD[(n * 7 + n // len(AWKWARD)) % len(AWKWARD)]
        kind = kinds[n % len(kinds)]
        rows.append(
            {
                "customer_id": customer,
                "item_id": item,
                "event_type": kind,
                "channel": ("web", "store", "app")[n % 3],
                "timestamp": END - timedelta(days=30) + timedelta(hours=n * 1.7),
                "rating": float(1 + n % 5) if kind == "rating" else None,
            }
        )
    rows.append({"customer_id": "01", "item_id": None, "event_type": "email_open"})
    # 20 customers with 3 events each, only in the future (the cold-start cases).
    for n in range(60):
        rows.append(
            {
                "customer_id": f"{AWKWARD[n % 20 % len(AWKWARD)]}-new{n % 20}",
                "item_id": AWKWARD[n % len(AWKWARD)],
                "event_type": "purchase",
                "timestamp": END - timedelta(days=5) + timedelta(hours=n),
            }
        )
    table = events_table(rows)
    return pa.concat_tables([table.slice(0, 200), table.slice(200)])


def test_compact_keeps_the_fit_columns_with_sorted_dictionaries_of_the_same_values() -> None:
    plain = awkward_events()
    coded = matrix.compact(plain)
    assert coded.column_names == list(matrix.FIT_COLUMNS)
    for name in coded.column_names:
        assert coded[name].to_pylist() == plain[name].to_pylist()
    for name in ("customer_id", "item_id", "event_type", "channel"):
        assert pa.types.is_dictionary(coded[name].type)
        values = coded[name].chunks[0].dictionary.to_pylist()
        assert values == sorted(set(plain[name].drop_null().to_pylist()))


def test_positions_of_coded_ids_are_those_of_the_strings() -> None:
    plain = awkward_events()
    coded = matrix.compact(plain)
    ids = np.array(["001", "1", "absent", "😀", "e\u0301", "é"], dtype=object)
    for name in ("customer_id", "item_id"):
        expected = matrix.positions(plain[name], ids)
        assert (matrix.positions(coded[name], ids) == expected).all()
        assert (expected == -1).any() and (expected >= 0).any()


def same_interactions(a: matrix.Interactions, b: matrix.Interactions) -> None:
    assert a.customer_ids.tolist() == b.customer_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()
    assert (a.matrix != b.matrix).nnz == 0


def test_every_matrix_of_coded_events_is_that_of_the_strings() -> None:
    plain = awkward_events()
    coded = matrix.compact(plain)
    weights = Weights(half_life_days=30)
    end = matrix.window(plain)[1]
    interactions = matrix.build(plain, weights)
    same_interactions(matrix.build(coded, weights), interactions)
    for a, b in zip(
        matrix.bought(coded, interactions), matrix.bought(plain, interactions), strict=True
    ):
        assert np.array_equal(a, b)
    carted = matrix.carted(coded, interactions, end=end)
    assert (carted != matrix.carted(plain, interactions, end=end)).nnz == 0
    for channel, counts in matrix.popularity(plain, interactions, weights).items():
        assert np.array_equal(matrix.popularity(coded, interactions, weights)[channel], counts)
    adopted = {"end": end, "half_life_days": 14.0, "settle_days": 1.0, "min_rating": 3.0}
    assert np.array_equal(
        matrix.adoptions(coded, interactions, **adopted),
        matrix.adoptions(plain, interactions, **adopted),
    )
    assert np.array_equal(channel_share(coded, interactions), channel_share(plain, interactions))


def test_targets_and_new_customers_of_coded_events_are_those_of_the_strings() -> None:
    plain_past, plain_future, _ = evaluate.time_split(awkward_events(), 0.2)
    past, future = matrix.compact(plain_past), matrix.compact(plain_future)
    weights = Weights()
    data = make_data(past, TrainConfig(weights=weights), SideInfo())
    plain_data = make_data(plain_past, TrainConfig(weights=weights), SideInfo())
    same_interactions(data.interactions, plain_data.interactions)
    assert (data.excluded != plain_data.excluded).nnz == 0
    for channel in (None, "web", "store"):
        rows, sets = evaluate.test_targets(data.interactions, data.excluded, future, 3.0, channel)
        expected = evaluate.test_targets(
            data.interactions, data.excluded, plain_future, 3.0, channel
        )
        assert rows.tolist() == expected[0].tolist() and sets == expected[1]
    for context in (0, 1, 2):
        cases = coldstart.new_customers(data.interactions, future, 3.0, context=context)
        assert cases
        assert cases == coldstart.new_customers(
            data.interactions, plain_future, 3.0, context=context
        )


SMALL = SampleConfig(
    customers=300, items=120, categories=6, brands=10, days=60, new_customer_share=0.5
)


def awkward_id(n: int) -> str:
    """A distinct id per number: leading zeros, shared prefixes, accents and emoji."""
    text = "0" * (n % 3) + str(n)
    return ("😀" if n % 7 == 0 else "") + text + ("é" if n % 5 == 0 else "")


@pytest.fixture(scope="module")
def awkward_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small sample's events with every customer and item id respelled by ``awkward_id``."""
    directory = tmp_path_factory.mktemp("awkward")
    events, _ = load_events(write_sample(directory, SMALL)["events"])
    for name in ("customer_id", "item_id"):
        distinct = pc.unique(events[name]).drop_null()
        spelled = pa.array([awkward_id(n) for n in range(len(distinct))])
        respelled = spelled.take(pc.index_in(events[name], value_set=distinct))
        events = events.set_column(events.schema.get_field_index(name), name, respelled)
    path = directory / "events.parquet"
    pq.write_table(events.drop_columns(["recorded_at"]), path)
    return path


def test_the_evaluation_of_coded_events_is_that_of_the_strings(awkward_sample: Path) -> None:
    coded, _ = read_events(Inputs(events=[str(awkward_sample)]))
    plain, _ = load_events(awkward_sample)
    assert pa.types.is_dictionary(coded["customer_id"].type)
    config = TrainConfig()  # auto: selection, the fold-in's choice and the cold-start report
    found = pipeline._evaluate(coded, config, SideInfo())
    expected = pipeline._evaluate(plain, config, SideInfo())
    assert without_timings(found) == without_timings(expected)
    assert found[2]["without_events"]["customers"] > 0  # new customers as the service meets them


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "fit_s"}
    if isinstance(value, list | tuple):
        return [without_timings(v) for v in value]
    return value


def test_the_artifact_keeps_every_id_as_written(awkward_sample: Path, tmp_path: Path) -> None:
    plain, _ = load_events(awkward_sample)
    loaded = artifact.load(
        run(Inputs(events=[str(awkward_sample)]), tmp_path, TrainConfig(algorithm="als"))
    )
    users = [i.decode("utf-8") for i in loaded.arrays["user_ids"].tolist()]
    items = [i.decode("utf-8") for i in loaded.arrays["item_ids"].tolist()]
    customers = set(plain["customer_id"].to_pylist())
    assert set(users) <= customers and len(users) > 0.9 * len(customers)
    assert set(items) <= set(plain["item_id"].drop_null().to_pylist())
    for spelled in (lambda i: i.startswith("00"), lambda i: "😀" in i, lambda i: "é" in i):
        assert any(map(spelled, users)) and any(map(spelled, items))
