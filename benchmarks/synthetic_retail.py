"""A fashion retailer's purchase history at any size, shaped like H&M's, for training at scale.

Run::

    python -m benchmarks.synthetic_retail --out /tmp/retail-1m --rows 1000000 \\
        --customers 200000 --items 30000 --weeks 26 --seed 7 [--format csv|parquet]

It writes the three files of ``../shared/data/hm-fixture-day1`` with the same columns:
``events.csv.gz`` (or ``events.parquet``: purchases only, 64-hex customer ids, 10-digit article
ids with leading zeros, ``web``/``store``, dates only at midnight UTC, quantity 1, H&M's normalised
``price``), ``items.csv.gz`` (product code, name, product type as ``category``, product group,
colour, department, index group, section, garment group) and ``customers.csv.gz`` (age, club
status, fashion news, ``fn``/``active`` mostly empty, hashed postal code). The full H&M data set is
31.8M purchases by 1.37M customers of 105k articles over 104 weeks.

The structure gives a model something to learn and a pipeline what real data makes it do:

- items belong to taste clusters ("looks": one index group, section, department and a few product
  types each); every customer leans to one to three clusters, and most purchases come from them;
- item popularity is power-law (Pareto) within and across clusters, and fades after an item's
  launch; a share of the catalogue is launched during the window, week by week, so new items
  appear in every period a time split makes;
- customers' purchase counts are heavy-tailed (most buy once or twice, a few hundreds of times),
  in baskets of a few items on one date and channel, and a customer's channel mix leans to one
  (about 70% of rows online, as H&M's);
- some purchases repeat an earlier item of the customer (a replenished basic, or two units on one
  receipt, which H&M records as two rows).

Everything is vectorised: 30M rows take a few minutes, most of it gzip.
"""

from __future__ import annotations

import argparse
import gzip
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

IntArray = NDArray[np.int64]

END = date(2020, 9, 23)  # H&M's data end (exclusive)
INDEX_GROUPS = ("Ladieswear", "Divided", "Menswear", "Baby/Children", "Sport")
INDEX_GROUP_SHARE = (0.42, 0.2, 0.12, 0.2, 0.06)
PRODUCT_GROUPS = {
    "Garment Upper body": ("T-shirt", "Sweater", "Top", "Blouse", "Shirt", "Hoodie", "Cardigan"),
    "Garment Lower body": ("Trousers", "Shorts", "Skirt", "Leggings/Tights"),
    "Garment Full body": ("Dress", "Jumpsuit/Playsuit", "Dungarees"),
    "Underwear": ("Bra", "Underwear bottom", "Socks", "Pyjama set"),
    "Accessories": ("Bag", "Earring", "Hat/beanie", "Scarf", "Belt", "Sunglasses"),
    "Shoes": ("Sneakers", "Boots", "Sandals"),
    "Swimwear": ("Swimwear bottom", "Bikini top", "Swimsuit"),
    "Nightwear": ("Night gown", "Robe"),
    "Socks & Tights": ("Underwear Tights",),
    "Cosmetic": ("Lipstick", "Nail polish"),
}
COLOURS = (
    "Black",
    "White",
    "Dark Blue",
    "Grey",
    "Beige",
    "Light Pink",
    "Blue",
    "Dark Green",
    "Red",
    "Light Blue",
    "Khaki green",
    "Off White",
    "Yellow",
    "Greyish Beige",
    "Pink",
)
GARMENT_GROUPS = (
    "Jersey Fancy",
    "Knitwear",
    "Jersey Basic",
    "Under-, Nightwear",
    "Trousers",
    "Blouses",
    "Shoes",
    "Dresses Ladies",
    "Accessories",
    "Outdoor",
    "Special Offers",
    "Trousers Denim",
    "Swimwear",
    "Shirts",
    "Socks and Tights",
    "Unknown",
)
NAME_WORDS = (
    "Basic",
    "Slim",
    "Relaxed",
    "Cropped",
    "Linen",
    "Denim",
    "Ribbed",
    "Wrap",
    "Oversized",
    "Pleated",
    "Seamless",
    "Soft",
    "Cargo",
    "Loose",
    "Fitted",
    "Padded",
)

# Of a purchase: it repeats an earlier purchase of the customer; else it is the week's best sellers
# (what the shop window shows); else it comes from one of the customer's clusters.
REPEAT_SHARE = 0.08
EXPLORE_SHARE = 0.15
MEAN_BASKET = 2.6  # rows per receipt
LAUNCHED_BEFORE = 0.45  # share of the catalogue already on sale when the window opens
LIFETIME_WEEKS = 16.0  # an item's sales fall by e (x 0.37) every this many weeks after launch
ITEMS_PER_CLUSTER = 300


def generate(
    rows: int, customers: int, items: int, weeks: int, seed: int
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Events, items and customers tables (see the module docstring)."""
    if rows < customers:
        raise ValueError("rows must be at least customers: every customer buys once")
    rng = np.random.default_rng(seed)
    n_clusters = max(8, items // ITEMS_PER_CLUSTER)
    cluster, launch, appeal, item_table, cluster_group = _catalogue(rng, items, n_clusters, weeks)
    tastes, taste_share, web_share, customer_table = _customers(
        rng, customers, n_clusters, cluster_group
    )
    # Rows per customer: one each, the rest spread by a heavy-tailed activity.
    activity = rng.lognormal(0.0, 1.3, size=customers)
    per_customer = 1 + rng.multinomial(rows - customers, activity / activity.sum())
    owner = np.repeat(np.arange(customers), per_customer)
    # Receipts: a new one starts at each customer's first row and then at random.
    first = np.zeros(rows, dtype=bool)
    first[np.concatenate([[0], np.cumsum(per_customer)[:-1]])] = True
    receipt = np.cumsum(first | (rng.random(rows) < 1 / MEAN_BASKET)) - 1
    receipt_owner = owner[first | np.r_[True, receipt[1:] != receipt[:-1]]]
    # A receipt's week: within the customer's own span (customers join during the window too).
    joined = (rng.random(customers) ** 1.5 * weeks * 0.9).astype(np.int64)
    span = weeks - joined[receipt_owner]
    week_of_receipt = joined[receipt_owner] + (rng.random(len(receipt_owner)) * span).astype(int)
    # Rows in time order within each customer, so a repeat refers to an earlier purchase.
    order = np.lexsort((week_of_receipt, receipt_owner))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    receipt = rank[receipt]
    by_time = np.argsort(receipt, kind="stable")
    receipt, owner = receipt[by_time], owner[by_time]
    week = week_of_receipt[order][receipt]
    day = week * 7 + rng.integers(0, 7, size=len(order))[receipt]
    web = rng.random(len(order)) < web_share[receipt_owner[order]]
    item = _choose_items(
        rng, owner, week, per_customer, cluster, launch, appeal, tastes, taste_share, weeks
    )
    events = _event_table(rng, owner, item, day, web[receipt], item_table, weeks, customer_table)
    return events, item_table, customer_table


def _catalogue(
    rng: np.random.Generator, n: int, n_clusters: int, weeks: int
) -> tuple[IntArray, IntArray, NDArray[np.float64], pa.Table, IntArray]:
    """Each item's cluster, launch week, appeal (popularity), the items table, and each
    cluster's index group."""
    group_of_cluster = rng.choice(len(INDEX_GROUPS), size=n_clusters, p=INDEX_GROUP_SHARE)
    sections = 54
    section_of_cluster = group_of_cluster * (sections // len(INDEX_GROUPS)) + rng.integers(
        0, sections // len(INDEX_GROUPS), size=n_clusters
    )
    department_of_cluster = rng.integers(0, 200, size=n_clusters)
    # Articles of one product (colour variants) share its product code (the article id's first
    # digits), name, type and cluster, as H&M's do; 10-digit ids with a leading zero.
    product = np.cumsum(rng.random(n) < 0.55)  # a new product about every second article
    product -= product[0]
    n_products = int(product[-1]) + 1
    same = np.r_[False, product[1:] == product[:-1]]
    variant = 1 + np.arange(n) - np.maximum.accumulate(np.where(~same, np.arange(n), 0))
    item_ids = np.char.zfill(((108775 + 7 * product) * 1000 + variant).astype(str), 10)
    cluster_size = rng.pareto(2.0, size=n_clusters) + 0.5
    product_cluster = rng.choice(n_clusters, size=n_products, p=cluster_size / cluster_size.sum())
    cluster = product_cluster[product]
    # Product types: each cluster sells a few, from one or two product groups.
    types = [(g, t) for g, ts in PRODUCT_GROUPS.items() for t in ts]
    type_of_cluster = rng.integers(0, len(types), size=(n_clusters, 3))
    product_type = type_of_cluster[product_cluster, rng.integers(0, 3, size=n_products)][product]
    launch = np.where(
        rng.random(n_products) < LAUNCHED_BEFORE,
        -rng.integers(0, 52, size=n_products),
        rng.integers(0, weeks, size=n_products),
    )[product]
    appeal = rng.pareto(1.2, size=n) + 0.05
    words = rng.integers(0, len(NAME_WORDS), size=n_products)[product]
    colour = rng.integers(0, len(COLOURS), size=n)
    names = [
        f"{NAME_WORDS[w]} {types[t][1].lower()}" for w, t in zip(words, product_type, strict=True)
    ]
    price = np.round(rng.lognormal(np.log(0.025), 0.6, size=n_products), 6)[product]
    garment = rng.integers(0, len(GARMENT_GROUPS), size=n_clusters)[cluster]
    table = pa.table(
        {
            "item_id": item_ids,
            "product_code": (108775 + 7 * product).astype(str),
            "name": names,
            "category": [types[t][1] for t in product_type],
            "product_group": [types[t][0] for t in product_type],
            "colour": np.array(COLOURS)[colour],
            "department": [f"Department {d:03d}" for d in department_of_cluster[cluster]],
            "index_group": np.array(INDEX_GROUPS)[group_of_cluster[cluster]],
            "section": [f"Section {s:02d}" for s in section_of_cluster[cluster]],
            "garment_group": np.array(GARMENT_GROUPS)[garment],
        }
    )
    table = table.append_column("price", pa.array(price))  # kept for the event rows, dropped later
    return cluster, launch, appeal, table, group_of_cluster


def _customers(
    rng: np.random.Generator, n: int, n_clusters: int, group_of_cluster: IntArray
) -> tuple[IntArray, NDArray[np.float64], NDArray[np.float64], pa.Table]:
    """Each customer's three clusters and how much each weighs, web share, and the table."""
    age = np.clip(rng.gamma(4.0, 9.0, size=n) + 16, 16, 99).astype(int)
    young = age < 27
    # Young customers lean to Divided's clusters: the metadata carries some of the taste.
    weights = np.ones((2, n_clusters))
    weights[1, group_of_cluster == INDEX_GROUPS.index("Divided")] = 6.0
    tastes = np.empty((n, 3), dtype=np.int64)
    for side in (0, 1):
        who = np.flatnonzero(young == bool(side))
        p = weights[side] / weights[side].sum()
        tastes[who] = rng.choice(n_clusters, size=(len(who), 3), p=p)
    share = rng.dirichlet((2.0, 0.8, 0.4), size=n)
    web_share = rng.beta(1.2, 0.5, size=n)
    ids = _hex_ids(rng, n)
    status = rng.choice(
        ["ACTIVE", "PRE-CREATE", "LEFT CLUB", ""], size=n, p=(0.92, 0.07, 0.005, 0.005)
    )
    news = rng.choice(["NONE", "Regularly", "Monthly", ""], size=n, p=(0.63, 0.35, 0.005, 0.015))
    fn = np.where(rng.random(n) < 0.35, "1.0", "")
    active = np.where((fn == "1.0") & (rng.random(n) < 0.95), "1.0", "")
    postal = _hex_ids(rng, max(1, n // 3))[
        np.minimum(rng.zipf(1.3, size=n) - 1, max(1, n // 3) - 1)
    ]
    table = pa.table(
        {
            "customer_id": ids,
            "age": np.where(rng.random(n) < 0.01, "", age.astype(str)),
            "club_member_status": status,
            "fashion_news_frequency": news,
            "fn": fn,
            "active": active,
            "postal_code": postal,
        }
    )
    return tastes, share, web_share, table


def _hex_ids(rng: np.random.Generator, n: int) -> NDArray[np.str_]:
    """``n`` distinct 64-hex ids (SHA-256 shaped), as H&M's customer ids."""
    raw = np.frombuffer(rng.bytes(32 * n), dtype=np.uint8).reshape(n, 32)
    digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    chars = np.empty((n, 64), dtype="S1")
    chars[:, 0::2] = digits[raw >> 4]
    chars[:, 1::2] = digits[raw & 15]
    return chars.view("S64").ravel().astype(str)


def _choose_items(
    rng: np.random.Generator,
    owner: IntArray,
    week: IntArray,
    per_customer: IntArray,
    cluster: IntArray,
    launch: IntArray,
    appeal: NDArray[np.float64],
    tastes: IntArray,
    taste_share: NDArray[np.float64],
    weeks: int,
) -> IntArray:
    """The item of each row: a repeat, the week's best sellers, or from the customer's tastes,
    among the items on sale that week (weighted by appeal and how recently they launched)."""
    rows = len(owner)
    by_cluster = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[by_cluster], np.arange(cluster.max() + 2))
    pick = rng.random(rows)
    u = rng.random(rows)
    share = taste_share[owner]
    taste = (u > share[:, 0]).astype(np.int64) + (u > share[:, 0] + share[:, 1])
    chosen_cluster = tastes[owner, taste]
    del share
    explore = pick < EXPLORE_SHARE
    u = rng.random(rows)
    item = np.empty(rows, dtype=np.int64)
    for w in range(weeks):
        on_sale = launch[by_cluster] <= w
        age = np.maximum(w - launch[by_cluster], 0)
        weight = np.where(on_sale, appeal[by_cluster] * np.exp(-age / LIFETIME_WEEKS), 0.0)
        cum = np.concatenate([[0.0], np.cumsum(weight)])
        rows_w = np.flatnonzero(week == w)
        lo = np.where(explore[rows_w], 0, bounds[chosen_cluster[rows_w]])
        hi = np.where(explore[rows_w], len(cluster), bounds[chosen_cluster[rows_w] + 1])
        target = cum[lo] + u[rows_w] * (cum[hi] - cum[lo])
        slot = np.clip(np.searchsorted(cum, target, side="right") - 1, lo, hi - 1)
        item[rows_w] = by_cluster[slot]
    # Repeats: an earlier row of the same customer (the same receipt: a second unit).
    start = np.repeat(np.concatenate([[0], np.cumsum(per_customer)[:-1]]), per_customer)
    position = np.arange(rows) - start
    repeat = (pick > 1 - REPEAT_SHARE) & (position > 0)
    source = start + (rng.random(rows) * position).astype(np.int64)
    for _ in range(64):  # chains of repeats resolve in a few rounds
        item[repeat] = item[source[repeat]]
        repeat &= repeat[source]
        if not repeat.any():
            break
    return item


def _event_table(
    rng: np.random.Generator,
    owner: IntArray,
    item: IntArray,
    day: IntArray,
    web: NDArray[np.bool_],
    items: pa.Table,
    weeks: int,
    customers: pa.Table,
) -> pa.Table:
    """Rows in date order, as H&M's transactions file, dictionary-encoded (cheap to write)."""
    order = np.argsort(day, kind="stable")
    owner, item, day, web = owner[order], item[order], day[order], web[order]
    first_day = END - timedelta(days=weeks * 7)
    dates = [f"{first_day + timedelta(days=d)}T00:00:00Z" for d in range(weeks * 7)]
    base = items.column("price").to_numpy()[item]
    # Sales and the web's own prices: a few percent either way, in H&M's normalised unit.
    discount = rng.choice([1.0, 0.9, 0.7, 0.5], size=len(item), p=(0.8, 0.1, 0.06, 0.04))
    price = np.round(base * discount * np.where(web, 1.0, 1.02), 6)
    return pa.table(
        {
            "customer_id": pa.DictionaryArray.from_arrays(
                owner.astype(np.int32), customers.column("customer_id").combine_chunks()
            ),
            "item_id": pa.DictionaryArray.from_arrays(
                item.astype(np.int32), items.column("item_id").combine_chunks()
            ),
            "event_type": pa.DictionaryArray.from_arrays(
                np.zeros(len(item), np.int32), pa.array(["purchase"])
            ),
            "channel": pa.DictionaryArray.from_arrays(
                web.astype(np.int32), pa.array(["store", "web"])
            ),
            "timestamp": pa.DictionaryArray.from_arrays(day.astype(np.int32), pa.array(dates)),
            "quantity": pa.array(np.ones(len(item), np.int64)),
            "price": pa.array(price),
        }
    )


def write(out: Path, events: pa.Table, items: pa.Table, customers: pa.Table, fmt: str) -> None:
    """The three files under ``out`` (gzip level 1: the events are most of the time)."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(events, out / "events.parquet", compression="zstd")
    else:
        _write_csv_gz(out / "events.csv.gz", events)
    _write_csv_gz(out / "items.csv.gz", items.drop_columns(["price"]))
    _write_csv_gz(out / "customers.csv.gz", customers)


def _write_csv_gz(path: Path, table: pa.Table, chunk: int = 1_000_000) -> None:
    options = pacsv.WriteOptions(quoting_style="needed")
    with gzip.open(path, "wb", compresslevel=1) as f:
        for start in range(0, table.num_rows, chunk):
            part = table.slice(start, chunk)
            part = pa.table(
                {n: _decoded(c) for n, c in zip(part.column_names, part.columns, strict=True)}
            )
            sink = pa.BufferOutputStream()
            pacsv.write_csv(part, sink, write_options=options)
            data = sink.getvalue().to_pybytes()
            f.write(data if start == 0 else data.split(b"\n", 1)[1])


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def main() -> None:
    """Generate and write one data set."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--weeks", type=int, default=26)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    args = parser.parse_args()
    started = time.perf_counter()
    events, items, customers = generate(
        args.rows, args.customers, args.items, args.weeks, args.seed
    )
    print(f"generated in {time.perf_counter() - started:.1f}s")
    write(args.out, events, items, customers, args.format)
    channels = events.column("channel").combine_chunks().indices.to_numpy()
    print(
        f"{events.num_rows:,} purchases ({channels.mean():.0%} web), {items.num_rows:,} items, "
        f"{customers.num_rows:,} customers, {args.weeks} weeks -> {args.out} "
        f"({time.perf_counter() - started:.1f}s)"
    )


if __name__ == "__main__":
    main()
