"""The sample generator writes contract-valid files with the structure models learn from."""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import pytest

import training.sample as sample
from service.events import ITEMLESS_EVENT_TYPES, Event
from training.sample import (
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    SampleConfig,
    generate,
    write_sample,
)

SMALL = SampleConfig(customers=200, items=150, categories=10, brands=20, stores=3)

Rows = list[dict[str, str]]


def read_csv_gz(path: Path) -> tuple[list[str], Rows]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample(tmp_path_factory.mktemp("sample"), SMALL)


@pytest.fixture(scope="module")
def events(written: dict[str, Path]) -> Rows:
    return read_csv_gz(written["events"])[1]


@pytest.fixture(scope="module")
def items(written: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {row["item_id"]: row for row in read_csv_gz(written["items"])[1]}


@pytest.fixture(scope="module")
def customers(written: dict[str, Path]) -> Rows:
    return read_csv_gz(written["customers"])[1]


def purchases(events: Rows, *channels: str) -> Rows:
    return [e for e in events if e["event_type"] == "purchase" and e["channel"] in channels]


def same_category_rate(pairs: list[tuple[str, str]], items: dict[str, dict[str, str]]) -> float:
    """Share of pairs of purchases by one customer that are in the same category."""
    by_customer: dict[str, list[str]] = defaultdict(list)
    for customer, item in pairs:
        by_customer[customer].append(items[item]["category"])
    same = total = 0
    for categories in by_customer.values():
        counts = Counter(categories)
        n = len(categories)
        same += sum(c * (c - 1) for c in counts.values())
        total += n * (n - 1)
    return same / total


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", SMALL)
    second = write_sample(tmp_path / "b", SMALL)
    other = write_sample(tmp_path / "c", SampleConfig(customers=200, items=150, seed=8))

    for name in ("events", "items", "customers"):
        assert first[name].read_bytes() == second[name].read_bytes(), name
    assert first["events"].read_bytes() != other["events"].read_bytes()


def test_write_sample_returns_the_three_paths_and_leaves_no_temp_files(
    written: dict[str, Path],
) -> None:
    folder = written["events"].parent

    assert {name: path.name for name, path in written.items()} == {
        "events": "events.csv.gz",
        "items": "items.csv.gz",
        "customers": "customers.csv.gz",
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written.values())


def test_files_have_exactly_the_contract_columns(written: dict[str, Path]) -> None:
    assert read_csv_gz(written["events"])[0] == list(EVENT_COLUMNS)
    assert read_csv_gz(written["items"])[0] == list(ITEM_COLUMNS)
    assert read_csv_gz(written["customers"])[0] == list(CUSTOMER_COLUMNS)
    assert EVENT_COLUMNS == (
        "customer_id",
        "item_id",
        "event_type",
        "channel",
        "timestamp",
        "quantity",
        "price",
        "store_id",
        "session_id",
    )


def test_every_event_row_decodes_as_a_contract_event(events: Rows) -> None:
    decoded = []
    for row in events:
        fields: dict[str, Any] = {k: v for k, v in row.items() if v != ""}
        fields["quantity"] = float(fields["quantity"])
        if "price" in fields:
            fields["price"] = float(fields["price"])
        decoded.append(msgspec.convert(fields, Event))

    assert len(decoded) == len(events) > 0
    for event in decoded:
        assert event.timestamp is not None
        assert event.timestamp.utcoffset() == timedelta(0)
        if event.event_type == "email_open":
            assert event.item_id is None
        else:
            assert event.item_id is not None or event.event_type in ITEMLESS_EVENT_TYPES


def test_timestamps_are_utc_seconds_sorted_and_inside_the_window(events: Rows) -> None:
    stamps = [e["timestamp"] for e in events]
    start = SMALL.end - timedelta(days=SMALL.days)

    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s) for s in stamps)
    assert stamps == sorted(stamps)
    first = datetime.fromisoformat(stamps[0])
    last = datetime.fromisoformat(stamps[-1])
    assert start <= first < last < SMALL.end
    assert last > SMALL.end - timedelta(days=2)


def test_every_channel_appears_and_customers_have_channel_habits(events: Rows) -> None:
    channels_of: dict[str, set[str]] = defaultdict(set)
    for e in events:
        channels_of[e["customer_id"]].add(e["channel"])

    assert {e["channel"] for e in events} == {"web", "app", "email", "store"}
    habits = list(channels_of.values())
    assert sum(h == {"store"} for h in habits) >= 10  # store-only
    assert sum("store" not in h for h in habits) >= 10  # online-only
    assert sum({"store", "web"} <= h or {"store", "app"} <= h for h in habits) >= 40  # mixed


def test_store_purchases_are_baskets_at_a_store_with_no_browsing(
    events: Rows, customers: Rows
) -> None:
    store_lines = purchases(events, "store")
    baskets: dict[str, list[dict[str, str]]] = defaultdict(list)
    for line in store_lines:
        baskets[line["session_id"]].append(line)
    stores = {c["home_store"] for c in customers}

    assert store_lines
    assert all(line["store_id"] in stores for line in store_lines)
    assert all(
        len({(x["timestamp"], x["store_id"], x["customer_id"]) for x in b}) == 1
        for b in baskets.values()
    )
    assert sum(len(b) > 1 for b in baskets.values()) > len(baskets) / 3
    assert any(int(line["quantity"]) > 1 for line in store_lines)
    assert {e["event_type"] for e in events if e["channel"] == "store"} <= {"purchase", "return"}
    assert all(e["store_id"] == "" for e in events if e["channel"] in ("web", "app", "email"))


def test_customers_mostly_shop_at_their_home_store(events: Rows, customers: Rows) -> None:
    home = {c["customer_id"]: c["home_store"] for c in customers}
    lines = purchases(events, "store")

    at_home = sum(line["store_id"] == home[line["customer_id"]] for line in lines)

    assert 0.7 < at_home / len(lines) < 1.0


def test_online_purchases_are_preceded_by_a_view_in_the_same_session(events: Rows) -> None:
    viewed_at: dict[tuple[str, str, str], str] = {}
    for e in events:
        key = (e["customer_id"], e["session_id"], e["item_id"])
        if e["event_type"] == "view":
            viewed_at.setdefault(key, e["timestamp"])
    online = purchases(events, "web", "app")

    preceded = [
        e
        for e in online
        if viewed_at.get((e["customer_id"], e["session_id"], e["item_id"]), "~") < e["timestamp"]
    ]

    assert len(online) > 100
    assert len(preceded) / len(online) > 0.85
    assert all(e["session_id"] for e in online)


def test_online_sessions_browse_other_items_of_the_same_category(
    events: Rows, items: dict[str, dict[str, str]]
) -> None:
    viewed: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["event_type"] == "view":
            viewed[e["session_id"]].append(items[e["item_id"]]["category"])
    multi = [cats for cats in viewed.values() if len(cats) > 1]

    single_category = sum(len(set(cats)) == 1 for cats in multi)

    assert single_category / len(multi) > 0.8


def test_items_bought_by_one_customer_share_categories_far_above_chance(
    events: Rows, items: dict[str, dict[str, str]]
) -> None:
    lines = purchases(events, "web", "app", "store")
    pairs = [(e["customer_id"], e["item_id"]) for e in lines]
    shuffled_items = np.random.default_rng(0).permutation([item for _, item in pairs])
    shuffled = [(c, str(i)) for (c, _), i in zip(pairs, shuffled_items, strict=True)]

    real = same_category_rate(pairs, items)
    baseline = same_category_rate(shuffled, items)

    assert real > 3 * baseline
    assert real > 0.3


def test_item_popularity_is_skewed(events: Rows) -> None:
    counts = np.array(
        sorted(Counter(e["item_id"] for e in purchases(events, "web", "app", "store")).values())
    )[::-1]
    top = max(1, SMALL.items // 10)

    assert counts[:top].sum() / counts.sum() > 0.3


def test_some_carts_are_abandoned_and_some_items_removed(events: Rows) -> None:
    carted = {(e["session_id"], e["item_id"]) for e in events if e["event_type"] == "add_to_cart"}
    bought = {(e["session_id"], e["item_id"]) for e in events if e["event_type"] == "purchase"}
    abandoned_sessions = {session for session, _ in carted - bought}
    types = Counter(e["event_type"] for e in events)

    assert len(abandoned_sessions) >= 20
    assert types["remove_from_cart"] > 0
    assert types["wishlist"] > 0
    assert types["view"] > types["add_to_cart"] > 0


def test_email_opens_have_no_item_and_clicks_lead_to_sessions(events: Rows) -> None:
    opens = [e for e in events if e["event_type"] == "email_open"]
    clicks = [e for e in events if e["event_type"] == "email_click"]
    views: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for e in events:
        if e["event_type"] == "view" and e["channel"] in ("web", "app"):
            views[(e["customer_id"], e["item_id"])].append(datetime.fromisoformat(e["timestamp"]))

    def followed(click: dict[str, str]) -> bool:
        clicked = datetime.fromisoformat(click["timestamp"])
        seen = views[(click["customer_id"], click["item_id"])]
        return any(timedelta(0) < t - clicked < timedelta(minutes=10) for t in seen)

    assert opens
    assert all(e["item_id"] == "" and e["channel"] == "email" for e in opens)
    assert clicks
    assert all(e["item_id"] and e["channel"] == "email" for e in clicks)
    assert 0.4 < sum(map(followed, clicks)) / len(clicks) < 1.0


def test_activity_is_heavy_tailed_and_some_customers_lapse(events: Rows) -> None:
    per_customer = Counter(e["customer_id"] for e in events)
    last_seen: dict[str, str] = {}
    for e in events:
        last_seen[e["customer_id"]] = e["timestamp"]
    quiet_since = (SMALL.end - timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ")
    counts = np.array(list(per_customer.values()))

    assert counts.max() > 5 * np.median(counts)
    assert np.sort(counts)[-len(counts) // 10 :].sum() > 0.25 * counts.sum()
    assert sum(t < quiet_since for t in last_seen.values()) >= 10


def test_prices_are_positive_with_two_decimals_and_purchases_carry_them(
    events: Rows, items: dict[str, dict[str, str]]
) -> None:
    lines = purchases(events, "web", "app", "store")

    assert all(
        float(i["price"]) > 0 and re.fullmatch(r"\d+\.\d{1,2}", i["price"]) for i in items.values()
    )
    assert all(line["price"] == items[line["item_id"]]["price"] for line in lines)
    assert all(e["price"] == "" for e in events if e["event_type"] in ("view", "email_open"))
    assert all(i["title"] and i["category"] and i["brand"] for i in items.values())


def test_customers_carry_plain_identifiers(customers: Rows, events: Rows) -> None:
    assert len(customers) == SMALL.customers
    assert {e["customer_id"] for e in events} <= {c["customer_id"] for c in customers}
    for c in customers:
        number = int(c["customer_id"][1:])
        assert c["email"] == f"{c['customer_id']}@example.com"
        assert c["loyalty_card"] in ("", f"L{number:07d}")
        assert (c["loyalty_card"] == "") == (c["loyalty_tier"] == "none")
        assert c["phone"] in ("", f"+44 7700 9{number:05d}")
        assert c["age_band"]
    assert any(c["phone"] for c in customers)
    assert any(not c["phone"] for c in customers)


def test_parquet_events_hold_the_same_rows(tmp_path: Path, events: Rows) -> None:
    pq = pytest.importorskip("pyarrow.parquet")

    paths = write_sample(tmp_path, SMALL, fmt="parquet")
    table = pq.read_table(paths["events"])

    assert paths["events"].name == "events.parquet"
    assert table.column_names == list(EVENT_COLUMNS)
    assert table.num_rows == len(events)
    first = table.slice(0, 1).to_pylist()[0]
    assert {k: "" if v is None else str(v) for k, v in first.items()} == events[0]


def test_an_interrupted_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_writer(columns: sample.Columns) -> Any:
        def write(stream: BinaryIO) -> None:
            stream.write(b"PAR1 half a file")
            raise KeyboardInterrupt

        return write

    monkeypatch.setattr(sample, "_parquet_writer", broken_writer)

    with pytest.raises(KeyboardInterrupt):
        write_sample(tmp_path, SMALL, fmt="parquet")
    assert list(tmp_path.iterdir()) == []


def test_default_config_gives_a_realistic_volume() -> None:
    result = generate(SampleConfig())

    n_events = len(result.events["customer_id"])
    assert 50_000 <= n_events <= 120_000
    assert 25 <= n_events / SampleConfig().customers <= 60
    assert len(result.items["item_id"]) == 800


@pytest.mark.parametrize(
    "bad",
    [
        {"customers": 0},
        {"items": 5, "categories": 10},
        {"end": datetime(2026, 11, 1)},
        {"store_only_share": 0.6, "online_only_share": 0.6},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SampleConfig(**bad)


def test_generate_is_deterministic_in_memory() -> None:
    assert SampleConfig().end == datetime(2026, 11, 1, tzinfo=UTC)
    assert generate(SMALL).events == generate(SMALL).events
