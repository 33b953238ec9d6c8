"""Seeded generator of a realistic omnichannel retail data set, for a quick start with no data."""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

import msgspec
import numpy as np
from numpy.typing import NDArray

EVENT_COLUMNS: tuple[str, ...] = (
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
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "category", "brand", "price")
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "age_band",
    "home_store",
    "loyalty_tier",
    "email",
    "loyalty_card",
    "phone",
)

Columns = dict[str, list[Any]]
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

DAY = 86_400
# Shopping channels a visit can happen on; email is modelled separately, as campaign sends.
_WEB, _APP, _STORE = 0, 1, 2
_CHANNEL_NAMES = ("web", "app", "store")

# (category, nouns for titles, median price): a department store's range, so titles read right.
_CATEGORY_TABLE: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("Womenswear", ("Dress", "Blouse", "Skirt"), 45.0),
    ("Menswear", ("Shirt", "Chinos", "Blazer"), 50.0),
    ("Kidswear", ("Hoodie", "Dungarees", "Pyjamas"), 18.0),
    ("Footwear", ("Trainers", "Boots", "Sandals"), 60.0),
    ("Accessories", ("Scarf", "Belt", "Wallet"), 25.0),
    ("Beauty", ("Moisturiser", "Lipstick", "Serum"), 22.0),
    ("Fragrance", ("Eau de Parfum", "Cologne", "Body Mist"), 55.0),
    ("Home Textiles", ("Duvet Cover", "Cushion", "Throw"), 35.0),
    ("Kitchen", ("Frying Pan", "Knife Set", "Kettle"), 40.0),
    ("Tableware", ("Dinner Plate", "Mug", "Glass Set"), 15.0),
    ("Furniture", ("Side Table", "Bookcase", "Armchair"), 180.0),
    ("Lighting", ("Table Lamp", "Floor Lamp", "Pendant"), 65.0),
    ("Electronics", ("Headphones", "Speaker", "Charger"), 80.0),
    ("Toys", ("Puzzle", "Building Set", "Plush Toy"), 20.0),
    ("Sports", ("Yoga Mat", "Running Top", "Dumbbells"), 30.0),
    ("Outdoor", ("Tent", "Backpack", "Rain Jacket"), 70.0),
    ("Garden", ("Planter", "Hose", "Pruners"), 25.0),
    ("Pet", ("Dog Bed", "Cat Toy", "Lead"), 15.0),
    ("Books", ("Novel", "Cookbook", "Journal"), 12.0),
    ("Stationery", ("Notebook", "Pen Set", "Planner"), 8.0),
    ("Grocery", ("Coffee", "Tea", "Chocolate"), 5.0),
    ("Wine & Spirits", ("Red Wine", "Gin", "Prosecco"), 14.0),
    ("Baby", ("Bodysuit", "Bottle", "Blanket"), 16.0),
    ("Jewellery", ("Necklace", "Earrings", "Bracelet"), 40.0),
    ("Luggage", ("Suitcase", "Holdall", "Wash Bag"), 90.0),
)
_STYLE_WORDS = ("Classic", "Sport", "Premium", "Eco", "Urban", "Vintage", "Essential", "Luxe")
_COLOURS = ("Black", "White", "Navy", "Grey", "Sand", "Green", "Red", "Blue", "Pink", "Oak")
_BRAND_HEADS = ("Ash", "Bel", "Cal", "Dun", "Elm", "Fern", "Gray", "Hal", "Iver", "Juni", "Kel")
_BRAND_TAILS = ("wick", "field", "more", "ton", "brook", "ley", "stone", "ford", "wood", "lane")
_AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_WEIGHTS = (0.12, 0.22, 0.22, 0.19, 0.14, 0.11)

# Monday..Sunday: stores peak on Saturday, online shopping on Sunday and Monday evenings.
_WEEKDAY_WEIGHT = {
    "store": np.array([0.8, 0.8, 0.9, 1.0, 1.2, 1.7, 1.1]),
    "online": np.array([1.15, 1.0, 1.0, 1.0, 0.9, 0.85, 1.25]),
}
# Hour of day (UTC): stores open 8:00-21:00, online has a lunchtime and a big evening peak.
_HOUR_WEIGHT = {
    "store": np.array([0] * 8 + [2, 4, 6, 7, 8, 8, 7, 6, 6, 6, 5, 3, 2] + [0] * 3, dtype=float),
    "online": np.array(
        [1, 0.5, 0.3, 0.2, 0.2, 0.3, 1, 2, 3, 3, 3, 3, 5, 4, 3, 3, 3, 4, 5, 7, 8, 8, 6, 3],
        dtype=float,
    ),
}


class SampleConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Size, window and behaviour knobs of the sample; the defaults give ~80k events."""

    seed: int = 7
    customers: int = 2000
    items: int = 800
    categories: int = 20
    brands: int = 60
    stores: int = 5
    days: int = 120
    # Exclusive end of the window: every event is strictly before it.
    end: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    # Sub-clusters inside a category (a "look"); shoppers lean to one per preferred category.
    styles_per_category: int = 3
    # Exponent of the Zipf popularity of items inside a category.
    zipf_exponent: float = 1.1
    # Mean number of web/app/store visits per customer over the whole window.
    visits_per_customer: float = 8.0
    store_only_share: float = 0.2
    online_only_share: float = 0.25
    # Customers who stop all activity 2-6 weeks before the end (churn to predict).
    lapsing_share: float = 0.12
    # Customers whose first activity is somewhere in the first half of the window.
    new_customer_share: float = 0.1
    email_sends_per_week: int = 2
    return_rate: float = 0.03

    def __post_init__(self) -> None:
        counts = (self.customers, self.items, self.categories, self.brands, self.stores)
        if min(counts) < 1 or self.days < 1 or self.styles_per_category < 1:
            raise ValueError("customers, items, categories, brands, stores, days must be >= 1")
        if self.items < self.categories:
            raise ValueError("items must be >= categories, so that no category is empty")
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware (UTC)")
        shares = (
            self.store_only_share,
            self.online_only_share,
            self.lapsing_share,
            self.new_customer_share,
            self.return_rate,
        )
        if not all(0 <= share <= 1 for share in shares):
            raise ValueError("shares and rates must be between 0 and 1")
        if self.store_only_share + self.online_only_share > 1:
            raise ValueError("store_only_share + online_only_share must be <= 1")


DEFAULT_CONFIG = SampleConfig()


class Sample(NamedTuple):
    """The generated tables, columnar: column name -> list of values in file order.

    Values are what the files hold: strings for ids, ISO-8601 ``...Z`` strings for timestamps,
    ``int`` quantities, ``float`` prices, ``None`` for an empty cell.
    """

    events: Columns
    items: Columns
    customers: Columns


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class _Catalogue:
    """Items with their category, style, price and within-category popularity."""

    ids: list[str]
    category: IntArray
    style: IntArray
    price: FloatArray
    # Share of shopper interest each category gets: some departments are simply bigger.
    interest: FloatArray
    interest_cumulative: FloatArray
    # (category, style) -> (items, cumulative popularity); style -1 = the whole category.
    pools: dict[tuple[int, int], tuple[IntArray, FloatArray]]

    def pick(self, rng: np.random.Generator, category: int, style: int, k: int) -> list[int]:
        """Up to ``k`` distinct items of a category (and style), by Zipf popularity."""
        items, cumulative = self.pools.get((category, style)) or self.pools[(category, -1)]
        picks = np.searchsorted(cumulative, rng.random(k), side="right")
        return list(dict.fromkeys(int(items[min(p, len(items) - 1)]) for p in picks))


def _item_categories(rng: np.random.Generator, config: SampleConfig) -> IntArray:
    # One item per category first so none is empty, then uneven category sizes.
    sizes = rng.dirichlet(np.full(config.categories, 2.0))
    rest = rng.choice(config.categories, size=config.items - config.categories, p=sizes)
    return rng.permutation(np.concatenate([np.arange(config.categories), rest]))


def _popularity_pools(
    rng: np.random.Generator, category: IntArray, style: IntArray, config: SampleConfig
) -> dict[tuple[int, int], tuple[IntArray, FloatArray]]:
    weight = np.empty(len(category))
    for c in range(config.categories):
        members = np.flatnonzero(category == c)
        # Random Zipf ranks inside each category: a few bestsellers, a long tail.
        weight[members] = (rng.permutation(len(members)) + 1.0) ** -config.zipf_exponent
    pools: dict[tuple[int, int], tuple[IntArray, FloatArray]] = {}
    for c in range(config.categories):
        for s in (-1, *range(config.styles_per_category)):
            members = np.flatnonzero((category == c) & ((style == s) | (s == -1)))
            if len(members):
                cumulative = np.cumsum(weight[members])
                pools[(c, s)] = (members, cumulative / cumulative[-1])
    return pools


def _category_names(n: int) -> list[str]:
    table = [name for name, _, _ in _CATEGORY_TABLE]
    return [
        table[c % len(table)] + (f" {c // len(table) + 1}" if c >= len(table) else "")
        for c in range(n)
    ]


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    combos = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
    order = rng.permutation(len(combos))
    return [
        combos[order[b % len(combos)]] + (f" {b // len(combos) + 1}" if b >= len(combos) else "")
        for b in range(n)
    ]


def _item_brands(rng: np.random.Generator, category: IntArray, config: SampleConfig) -> IntArray:
    # Brands belong to a home category (brand b to category b mod C); 10% of items are
    # cross-category lines, so brand is informative but not a copy of category.
    home = np.arange(config.brands) % config.categories
    brand = np.empty(len(category), dtype=np.int64)
    for i, c in enumerate(category):
        own = np.flatnonzero(home == c)
        brand[i] = rng.choice(own) if len(own) else c % config.brands
    cross = rng.random(len(category)) < 0.1
    brand[cross] = rng.integers(config.brands, size=int(cross.sum()))
    return brand


def _item_prices(rng: np.random.Generator, category: IntArray) -> FloatArray:
    median = np.array([_CATEGORY_TABLE[c % len(_CATEGORY_TABLE)][2] for c in category])
    raw = median * rng.lognormal(0.0, 0.45, size=len(category))
    # Charm pricing (x.99, or x.x9 under a fiver): prices look like a shop's, not a float's.
    charm = np.where(raw >= 5, np.round(raw) - 0.01, np.round(raw, 1) - 0.01)
    return np.round(np.maximum(charm, 0.49), 2)


def _build_catalogue(rng: np.random.Generator, config: SampleConfig) -> tuple[_Catalogue, Columns]:
    category = _item_categories(rng, config)
    style = rng.integers(config.styles_per_category, size=config.items)
    brand = _item_brands(rng, category, config)
    price = _item_prices(rng, category)
    pools = _popularity_pools(rng, category, style, config)
    interest = rng.dirichlet(np.full(config.categories, 1.5))
    interest_cumulative = np.cumsum(interest)
    interest_cumulative[-1] = 1.0  # so that a uniform draw in [0, 1) always lands inside
    ids = [f"i{i + 1:05d}" for i in range(config.items)]
    cat_names, brand_names = _category_names(config.categories), _brand_names(rng, config.brands)
    colours = rng.integers(len(_COLOURS), size=config.items)
    nouns = rng.integers(3, size=config.items)
    titles = [
        f"{brand_names[brand[i]]} {_STYLE_WORDS[style[i] % len(_STYLE_WORDS)]} "
        f"{_COLOURS[colours[i]]} {_CATEGORY_TABLE[category[i] % len(_CATEGORY_TABLE)][1][nouns[i]]}"
        for i in range(config.items)
    ]
    table: Columns = {
        "item_id": ids,
        "title": titles,
        "category": [cat_names[c] for c in category],
        "brand": [brand_names[b] for b in brand],
        "price": [float(p) for p in price],
    }
    catalogue = _Catalogue(ids, category, style, price, interest, interest_cumulative, pools)
    return catalogue, table


# --------------------------------------------------------------------------- customers


@dataclass
class _Shopper:
    """One customer's hidden habits: tastes, channel mix, activity window and propensities."""

    customer_id: str
    categories: IntArray  # preferred categories
    cumulative: FloatArray  # cumulative preference over ``categories``
    styles: dict[int, int]  # preferred style inside each preferred category
    channels: FloatArray  # probability of a visit being web, app, store
    home_store: int
    start_day: int
    stop_day: int  # exclusive: a lapsing customer's last active day is before it
    visits: int
    conversion: float
    email_open: float
    email_click: float
    bought: list[int] = field(default_factory=list)

    def pick(self, rng: np.random.Generator, catalogue: _Catalogue, k: int) -> list[int]:
        """Up to ``k`` items of one category, drawn by this shopper's taste."""
        if rng.random() < 0.1:  # exploration: anything, by how big the department is
            category = int(np.searchsorted(catalogue.interest_cumulative, rng.random()))
        else:
            category = int(self.categories[np.searchsorted(self.cumulative, rng.random())])
        return catalogue.pick(rng, category, self.style(rng, category), k)

    def style(self, rng: np.random.Generator, category: int) -> int:
        """The shopper's favourite style in ``category`` most of the time, else any (-1)."""
        preferred = self.styles.get(category)
        return preferred if preferred is not None and rng.random() < 0.75 else -1


def _tribes(rng: np.random.Generator, config: SampleConfig) -> list[IntArray]:
    # Departments fall into tribes of about four (think baby + toys + kidswear); a shopper's
    # tastes come mostly from one tribe, which gives co-purchase structure across categories.
    order = rng.permutation(config.categories)
    return [part for part in np.array_split(order, max(1, config.categories // 4)) if len(part)]


def _tastes(
    rng: np.random.Generator, catalogue: _Catalogue, tribes: list[IntArray], config: SampleConfig
) -> tuple[IntArray, FloatArray, dict[int, int]]:
    tribe = tribes[int(rng.integers(len(tribes)))]
    k = min(int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25])), len(tribe))
    weight = catalogue.interest[tribe] / catalogue.interest[tribe].sum()
    chosen = rng.choice(tribe, size=k, replace=False, p=weight)
    if k > 1 and rng.random() < 0.25:  # one taste from outside the tribe
        chosen[-1] = rng.integers(config.categories)
    chosen = np.unique(chosen)
    cumulative = np.cumsum(rng.dirichlet(np.full(len(chosen), 2.0)))
    cumulative[-1] = 1.0
    styles = {int(c): int(rng.integers(config.styles_per_category)) for c in chosen}
    return chosen, cumulative, styles


def _channel_mix(rng: np.random.Generator, config: SampleConfig) -> FloatArray:
    n = config.customers
    mixed = 1.0 - config.store_only_share - config.online_only_share
    segment = rng.choice(3, size=n, p=[config.store_only_share, config.online_only_share, mixed])
    mix = rng.dirichlet([1.2, 1.0, 1.0], size=n)
    online = rng.dirichlet([1.0, 1.0], size=n)
    mix[segment == 0] = [0.0, 0.0, 1.0]
    mix[segment == 1, :2] = online[segment == 1]
    mix[segment == 1, 2] = 0.0
    return mix


def _active_days(rng: np.random.Generator, config: SampleConfig) -> tuple[IntArray, IntArray]:
    n, days = config.customers, config.days
    start = np.where(
        rng.random(n) < config.new_customer_share, rng.integers(0, max(1, days // 2), n), 0
    )
    # Lapsing customers go quiet 2-6 weeks before the end (less on a short window).
    gap = np.minimum(rng.integers(14, 43, n), int(days * 0.4))
    stop = np.where(rng.random(n) < config.lapsing_share, days - gap, days)
    return start, np.maximum(stop, start + 1)


def _traits(rng: np.random.Generator, config: SampleConfig) -> dict[str, NDArray[Any]]:
    n = config.customers
    # Heavy-tailed activity (lognormal, mean 1): a few very active customers, many light ones.
    activity = rng.lognormal(0.0, 1.0, n) / np.exp(0.5)
    mix = _channel_mix(rng, config)
    start, stop = _active_days(rng, config)
    share = (stop - start) / config.days
    digital = mix[:, 2] < 1.0  # store-only customers never engage online, email included
    return {
        "channels": mix,
        "start_day": start,
        "stop_day": stop,
        "visits": 1 + rng.poisson(max(config.visits_per_customer - 1.0, 0.0) * activity * share),
        "home_store": rng.choice(
            config.stores, size=n, p=rng.dirichlet(np.full(config.stores, 3.0))
        ),
        "conversion": rng.beta(2.0, 4.0, n),
        "email_open": np.where(
            digital, np.minimum(0.9, rng.beta(1.5, 4.0, n) * activity**0.3), 0.0
        ),
        "email_click": rng.uniform(0.1, 0.35, n),
    }


def _build_shoppers(
    rng: np.random.Generator, catalogue: _Catalogue, config: SampleConfig
) -> list[_Shopper]:
    traits = _traits(rng, config)
    tribes = _tribes(rng, config)
    shoppers = []
    for i in range(config.customers):
        categories, cumulative, styles = _tastes(rng, catalogue, tribes, config)
        own = {name: values[i] for name, values in traits.items()}
        scalars = {name: value.item() for name, value in own.items() if name != "channels"}
        shopper = _Shopper(
            customer_id=f"c{i + 1:05d}",
            categories=categories,
            cumulative=cumulative,
            styles=styles,
            channels=own["channels"],
            **scalars,
        )
        shoppers.append(shopper)
    return shoppers


def _store_id(index: int) -> str:
    return f"s{index + 1:03d}"


def _customer_table(
    rng: np.random.Generator, shoppers: Sequence[_Shopper], config: SampleConfig
) -> Columns:
    n = len(shoppers)
    numbers = range(1, n + 1)
    # Loyalty tier follows how much a customer shops, with noise; 20% are not members.
    score = np.array([s.visits for s in shoppers]) + rng.normal(0.0, 2.0, n)
    rank = np.argsort(np.argsort(-score, kind="stable"), kind="stable") / n
    tier = np.select([rank < 0.1, rank < 0.35, rank < 0.8], ["gold", "silver", "bronze"], "none")
    has_phone = rng.random(n) < 0.75
    return {
        "customer_id": [s.customer_id for s in shoppers],
        "age_band": [_AGE_BANDS[a] for a in rng.choice(len(_AGE_BANDS), size=n, p=_AGE_WEIGHTS)],
        "home_store": [_store_id(s.home_store) for s in shoppers],
        "loyalty_tier": [str(t) for t in tier],
        "email": [f"{s.customer_id}@example.com" for s in shoppers],
        "loyalty_card": [
            f"L{k:07d}" if t != "none" else None for k, t in zip(numbers, tier, strict=True)
        ],
        "phone": [
            f"+44 7700 9{k:05d}" if p else None for k, p in zip(numbers, has_phone, strict=True)
        ],
    }


# --------------------------------------------------------------------------- events


def _seconds(rng: np.random.Generator, mean: float, minimum: int = 2) -> int:
    """A human-scale pause: at least ``minimum`` seconds, exponential beyond it."""
    return minimum + int(rng.exponential(mean))


class _Simulator:
    """Plays every shopper's visits and campaign emails into one event log."""

    def __init__(self, rng: np.random.Generator, catalogue: _Catalogue, config: SampleConfig):
        self.rng, self.catalogue, self.config = rng, catalogue, config
        self.origin = int((config.end - timedelta(days=config.days)).timestamp())
        self.end = int(config.end.timestamp())
        self.columns: Columns = {name: [] for name in EVENT_COLUMNS if name != "timestamp"}
        self.times: list[int] = []
        self.sessions = 0
        self.day_cumulative = {group: self._day_cumulative(group) for group in _WEEKDAY_WEIGHT}
        self.hour_p = {group: w / w.sum() for group, w in _HOUR_WEIGHT.items()}
        self.sends = self._email_sends()

    def _day_cumulative(self, group: str) -> FloatArray:
        weekday = (np.arange(self.config.days) + (self.origin // DAY + 3)) % 7  # 1970-01-01: Thu
        # Weekly seasonality and a gentle build-up towards the end of the window (autumn).
        weight = _WEEKDAY_WEIGHT[group][weekday] * np.linspace(1.0, 1.3, self.config.days)
        return np.concatenate([[0.0], np.cumsum(weight)])

    def _email_sends(self) -> IntArray:
        # Campaigns go out at 08:00 UTC on fixed weekdays (Tuesday and Friday for two a week).
        per_week = max(0, min(7, self.config.email_sends_per_week))
        weekdays = {(1 + (7 * k) // per_week) % 7 for k in range(per_week)}
        days = np.arange(self.config.days)
        weekday = (days + (self.origin // DAY + 3)) % 7
        chosen = days[np.isin(weekday, sorted(weekdays))]
        return self.origin + chosen * DAY + 8 * 3600

    def add(
        self,
        shopper: _Shopper,
        item: int | None,
        event_type: str,
        channel: str,
        time: int,
        *,
        quantity: int = 1,
        price: float | None = None,
        store: int | None = None,
        session: str | None = None,
    ) -> None:
        """Append one event; ``item`` and ``store`` are indices, turned into ids here."""
        row = (
            shopper.customer_id,
            None if item is None else self.catalogue.ids[item],
            event_type,
            channel,
            quantity,
            price,
            None if store is None else _store_id(store),
            session,
        )
        for column, value in zip(self.columns.values(), row, strict=True):
            column.append(value)
        self.times.append(int(time))

    def new_session(self) -> str:
        """A fresh opaque session id (web/app visit or store receipt)."""
        self.sessions += 1
        return f"x{self.sessions:07d}"

    def shopper(self, shopper: _Shopper) -> None:
        """All of one shopper's events: visits in time order, then campaign emails."""
        channel, times = self._visit_times(shopper)
        # Time order, so "buy again" in store only repeats what was bought earlier.
        for c, t in sorted(
            zip(channel.tolist(), times.tolist(), strict=True), key=lambda pair: pair[1]
        ):
            if c == _STORE:
                self._store_visit(shopper, t)
            else:
                self._online_session(shopper, t, _CHANNEL_NAMES[c])
        self._emails(shopper)

    def _visit_times(self, shopper: _Shopper) -> tuple[IntArray, IntArray]:
        rng, n = self.rng, shopper.visits
        cumulative = np.cumsum(shopper.channels)
        channel = np.minimum(np.searchsorted(cumulative, rng.random(n) * cumulative[-1]), 2)
        times = np.empty(n, dtype=np.int64)
        for group, mask in (("store", channel == _STORE), ("online", channel != _STORE)):
            k = int(mask.sum())
            days = self._draw_days(group, shopper.start_day, shopper.stop_day, k)
            hours = rng.choice(24, size=k, p=self.hour_p[group])
            times[mask] = self.origin + days * DAY + hours * 3600 + rng.integers(3600, size=k)
        return channel, times

    def _draw_days(self, group: str, start: int, stop: int, k: int) -> IntArray:
        # Inverse-CDF draw over the active days, weighted by the seasonality curve.
        cumulative = self.day_cumulative[group]
        u = self.rng.uniform(cumulative[start], cumulative[stop], size=k)
        return np.clip(np.searchsorted(cumulative, u, side="right") - 1, start, stop - 1)

    def finish(self) -> Columns:
        """The log as file columns, in timestamp order, cut at the window's end."""
        times = np.asarray(self.times, dtype=np.int64)
        kept = np.flatnonzero(times < self.end)
        order = kept[np.argsort(times[kept], kind="stable")]
        stamps = np.datetime_as_string(times[order].astype("datetime64[s]"), unit="s")
        columns = {name: [values[i] for i in order] for name, values in self.columns.items()}
        columns["timestamp"] = [f"{stamp}Z" for stamp in stamps.tolist()]
        return {name: columns[name] for name in EVENT_COLUMNS}

    def _online_session(
        self, shopper: _Shopper, time: int, channel: str, anchor: int | None = None
    ) -> None:
        rng = self.rng
        session = self.new_session()
        if anchor is None:
            seen = shopper.pick(rng, self.catalogue, int(rng.integers(2, 10)))
        else:  # arrived from an email click: that item first, then its neighbours
            category = int(self.catalogue.category[anchor])
            more = self.catalogue.pick(
                rng, category, shopper.style(rng, category), int(rng.integers(0, 5))
            )
            seen = list(dict.fromkeys([anchor, *more]))
        roll = rng.random()
        bought = seen[: 1 + int(rng.random() < 0.3)] if roll < shopper.conversion else []
        # Abandoned carts: items put in the basket in a session that ends without checkout.
        abandoned = seen[:1] if not bought and roll < shopper.conversion + 0.25 else []
        time = self._browse(shopper, seen, set(bought), set(abandoned), time, channel, session)
        if bought:
            checkout = time + _seconds(rng, 90.0, minimum=20)
            self._purchase(shopper, bought, checkout, channel, session=session)

    def _browse(
        self,
        shopper: _Shopper,
        seen: list[int],
        bought: set[int],
        abandoned: set[int],
        time: int,
        channel: str,
        session: str,
    ) -> int:
        rng = self.rng
        for item in seen:
            # A few purchases skip the product page (bought again from the order history).
            if item not in bought or rng.random() >= 0.05:
                self.add(shopper, item, "view", channel, time, session=session)
                time += _seconds(rng, 40.0)
                if rng.random() < 0.04:
                    self.add(shopper, item, "wishlist", channel, time, session=session)
                    time += _seconds(rng, 10.0)
            if item in abandoned or (item in bought and rng.random() < 0.9):
                self.add(shopper, item, "add_to_cart", channel, time, session=session)
                time += _seconds(rng, 30.0)
            elif item not in bought and rng.random() < 0.06:
                self.add(shopper, item, "add_to_cart", channel, time, session=session)
                time += _seconds(rng, 45.0)
                self.add(shopper, item, "remove_from_cart", channel, time, session=session)
                time += _seconds(rng, 20.0)
        return time

    def _purchase(
        self,
        shopper: _Shopper,
        items: list[int],
        time: int,
        channel: str,
        *,
        session: str,
        store: int | None = None,
    ) -> None:
        # Lines of one order or receipt share its timestamp; price is the item's unit price.
        rng = self.rng
        for item in items:
            price = float(self.catalogue.price[item])
            # Several of a cheap thing (mugs, coffee) is common; of a sofa, rare.
            multiple = 0.3 if price < 20 else 0.05
            quantity = 1 if rng.random() >= multiple else int(rng.integers(2, 5))
            self.add(
                shopper, item, "purchase", channel, time,
                quantity=quantity, price=price, store=store, session=session,
            )  # fmt: skip
            shopper.bought.append(item)
            if rng.random() < self.config.return_rate:
                self._return(shopper, item, time, quantity, price)

    def _return(self, shopper: _Shopper, item: int, time: int, quantity: int, price: float) -> None:
        rng = self.rng
        day = time // DAY + int(rng.integers(3, 26))
        when = day * DAY + int(rng.integers(10 * 3600, 18 * 3600))
        in_store = shopper.channels[_STORE] > 0 and rng.random() < 0.5
        self.add(
            shopper, item, "return", "store" if in_store else "web", when,
            quantity=quantity, price=price, store=shopper.home_store if in_store else None,
        )  # fmt: skip

    def _store_visit(self, shopper: _Shopper, time: int) -> None:
        rng = self.rng
        # Mostly the home store; now and then another branch (travel, work).
        away = rng.random() >= 0.85
        store = int(rng.integers(self.config.stores)) if away else shopper.home_store
        basket: list[int] = []
        for _ in range(1 + int(rng.poisson(1.5))):
            if shopper.bought and rng.random() < 0.2:  # staples bought again
                basket.append(shopper.bought[int(rng.integers(len(shopper.bought)))])
            else:
                basket.extend(shopper.pick(rng, self.catalogue, 1))
        basket = list(dict.fromkeys(basket))
        self._purchase(shopper, basket, time, "store", session=self.new_session(), store=store)

    def _emails(self, shopper: _Shopper) -> None:
        rng = self.rng
        start = self.origin + shopper.start_day * DAY
        stop = self.origin + shopper.stop_day * DAY
        sends = self.sends[(self.sends >= start) & (self.sends < stop)]
        opened = sends[rng.random(len(sends)) < shopper.email_open]
        online = shopper.channels[:_STORE]
        for sent in opened.tolist():
            time = sent + _seconds(rng, 3 * 3600.0, minimum=60)
            self.add(shopper, None, "email_open", "email", time)
            if online.sum() == 0 or rng.random() >= shopper.email_click:
                continue
            # The campaign is personalised: the clicked item comes from the shopper's tastes.
            item = shopper.pick(rng, self.catalogue, 1)[0]
            time += _seconds(rng, 30.0, minimum=3)
            self.add(shopper, item, "email_click", "email", time)
            if rng.random() < 0.7:  # the landing page opens a web or app session
                channel = "web" if rng.random() < online[0] / online.sum() else "app"
                self._online_session(shopper, time + _seconds(rng, 5.0), channel, anchor=item)


# --------------------------------------------------------------------------- public API


def generate(config: SampleConfig) -> Sample:
    """Generate the catalogue, the customers and their events for ``config``.

    Deterministic: everything is drawn from one ``numpy.random.default_rng(config.seed)``.

    Args:
        config: sizes, time window and behaviour knobs.

    Returns:
        ``Sample(events, items, customers)``, each a columnar table (column name -> list of
        values in file order, ``None`` for empty); events sorted by timestamp.
    """
    rng = np.random.default_rng(config.seed)
    catalogue, items = _build_catalogue(rng, config)
    shoppers = _build_shoppers(rng, catalogue, config)
    customers = _customer_table(rng, shoppers, config)
    simulator = _Simulator(rng, catalogue, config)
    for shopper in shoppers:
        simulator.shopper(shopper)
    return Sample(simulator.finish(), items, customers)


def write_sample(
    out_dir: str | Path,
    config: SampleConfig = DEFAULT_CONFIG,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
) -> dict[str, Path]:
    """Generate a sample and write it as ``events``, ``items`` and ``customers`` files.

    Each file is written under a temporary name and renamed into place, so an interrupted run
    never leaves a half-written file under the final name. Same config, same bytes.

    Args:
        out_dir: folder to write into; created if missing.
        config: what to generate.
        fmt: ``"csv"`` writes ``events.csv.gz``; ``"parquet"`` writes ``events.parquet``.
            Items and customers are always ``.csv.gz``.

    Returns:
        ``{"events": path, "items": path, "customers": path}``.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample = generate(config)
    paths = {
        "events": out / ("events.parquet" if fmt == "parquet" else "events.csv.gz"),
        "items": out / "items.csv.gz",
        "customers": out / "customers.csv.gz",
    }
    events_writer = _parquet_writer if fmt == "parquet" else _csv_gz_writer
    _write_atomic(paths["events"], events_writer(sample.events))
    _write_atomic(paths["items"], _csv_gz_writer(sample.items))
    _write_atomic(paths["customers"], _csv_gz_writer(sample.customers))
    return paths


def _csv_gz_writer(columns: Columns) -> Callable[[BinaryIO], None]:
    def write(stream: BinaryIO) -> None:
        # mtime=0 and no file name in the gzip header: the same rows give the same bytes.
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=stream, mtime=0, compresslevel=6) as gz,
            io.TextIOWrapper(gz, encoding="utf-8", newline="") as text,
        ):
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(zip(*columns.values(), strict=True))

    return write


def _parquet_writer(columns: Columns) -> Callable[[BinaryIO], None]:
    def write(stream: BinaryIO) -> None:
        # Imported here: pyarrow is a training extra and the csv path does not need it.
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"quantity": pa.int64(), "price": pa.float64()}
        table = pa.table(
            {
                name: pa.array(values, type=types.get(name, pa.string()))
                for name, values in columns.items()
            }
        )
        pq.write_table(table, stream, compression="zstd")

    return write


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a sample is meant to be read by anyone
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m training.sample OUT_DIR [--seed N] [--customers N] [--format parquet]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_CONFIG.seed)
    parser.add_argument("--customers", type=int, default=DEFAULT_CONFIG.customers)
    parser.add_argument("--items", type=int, default=DEFAULT_CONFIG.items)
    parser.add_argument("--days", type=int, default=DEFAULT_CONFIG.days)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    args = parser.parse_args(argv)
    config = SampleConfig(
        seed=args.seed, customers=args.customers, items=args.items, days=args.days
    )
    for name, path in write_sample(args.out_dir, config, fmt=args.format).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
