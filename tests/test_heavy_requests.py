"""Legitimate but heavy requests do bounded work (not timings: what is computed, and where).

Each bound here removed a latency cliff measured at a million items (docs/serving.md, "Heavy
requests").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient
from redis.asyncio import Redis

from service import artifact
from service.availability import Availability
from service.offer_scoring import Plan
from service.offers import Offer
from service.ranking import FactorModel
from service.schemas import MAX_CONTEXT_ITEMS, MAX_EXCLUDE
from service.settings import Settings
from service.store import Store
from service.store.inventory import StockUpdate
from tests.builders import clustered_artifact
from tests.conftest import ADMIN_KEY, client_for, replace
from tests.test_offers import consent, export, offer, offer_ids, offers, put_offer


@pytest.mark.parametrize("ann", ["on", "off"])
def test_an_export_scores_the_whole_catalogue_per_chunk_only_without_an_index(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, ann: str
) -> None:
    """With an index, each customer's items come from it, as the endpoint's do: the chunk's
    product over every item (1 GB per chunk at a million items) is left out."""
    models = clustered_artifact(tmp_path / "clustered", 2000, with_index=True).parent
    products: list[int] = []
    item_scores = Plan.item_scores

    def counted(plan: Plan, vectors: list) -> object:  # type: ignore[type-arg]
        products.append(len(vectors))
        return item_scores(plan, vectors)

    monkeypatch.setattr(Plan, "item_scores", counted)
    audience = [f"c{i:04d}" for i in range(12)]  # more than a slice: the chunk's products
    with client_for(replace(settings, model_dir=str(models), ann=ann)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        for c in audience:
            consent(client, c, email=True)
        put_offer(client, "o1", target={"categories": ["cat1"]})
        lines = export(client, audience={"customer_ids": audience}, items=5, record=False)
        assert [line["customer_id"] for line in lines] == audience
        for line in lines:
            recs = client.get(
                f"/v1/customers/{line['customer_id']}/recommendations",
                params={"channel": "email", "k": 5},
            ).json()
            # The same items (a batch product's scores differ in the last bits from one vector's).
            ids = [i["item_id"] for i in line["items"]]
            assert len(ids) == 5 and ids == [i["item_id"] for i in recs["items"]]
    assert (products == []) if ann == "on" else (products == [len(audience)])


def _items(n: int) -> list[str]:
    return [f"i{j % 16:02d}" for j in range(n)]  # checkerboard items, repeated


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"context": {"viewed": _items(MAX_CONTEXT_ITEMS + 1)}}, "$.context.viewed"),
        ({"context": {"cart": _items(MAX_CONTEXT_ITEMS + 1)}}, "$.context.cart"),
        ({"exclude": _items(MAX_EXCLUDE + 1)}, "$.exclude"),
    ],
)
def test_a_session_brings_a_bounded_number_of_items(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    """Each item is looked up and folded in: 5,000 held a worker's loop for 38 ms at a million
    items. Past the bound, a 400 naming the field; at it, an answer."""
    response = client.post("/v1/recommendations", json={"identifier": "cookie:x", **body})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field
    at_bound = {
        "identifier": "cookie:x",
        "exclude": _items(MAX_EXCLUDE),
        "context": {"viewed": _items(MAX_CONTEXT_ITEMS), "cart": _items(MAX_CONTEXT_ITEMS)},
    }
    assert client.post("/v1/recommendations", json=at_bound).status_code == 200


@pytest.mark.parametrize("path", ["/v1/customers/u0/recommendations", "/v1/items/i00/similar"])
def test_a_query_excludes_a_bounded_number_of_items(client: TestClient, path: str) -> None:
    response = client.get(path, params={"exclude": _items(MAX_EXCLUDE + 1)})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "exclude" in response.text
    assert client.get(path, params={"exclude": _items(MAX_EXCLUDE)}).status_code == 200


def test_offers_sharing_a_target_share_its_columns_and_score_as_alone(
    client: TestClient, settings: Settings
) -> None:
    """A plan scores each distinct target once (220 offers over 50 categories at a million
    items: 290 ms to build, 158,510 columns), and every offer as its own plan would."""
    model = client.app.state.live_model.get()
    bodies = [
        offer(),
        offer(),  # the same category again
        offer(target={"categories": ["odd"]}),
        offer(kind="free_delivery", amount=None, target={}),
        offer(kind="free_delivery", amount=None, target={}),
        offer(target={"items": ["i01", "i03"], "categories": ["even"]}),
        offer(target={"categories": ["even"], "items": ["i03", "i01"]}),  # the same, reordered
    ]
    offers = [msgspec.convert({**b, "offer_id": f"o{n}"}, Offer) for n, b in enumerate(bodies)]
    plan = Plan(model, offers)
    alone = [Plan(model, [o]) for o in offers]
    distinct = (0, 2, 3, 5)
    assert plan.factors.shape[1] == sum(alone[n].factors.shape[1] for n in distinct)
    vectors = [model.user_vector(0), None, model.user_vector(1)]
    expected = np.hstack([p.affinities(vectors, 0.25) for p in alone])
    np.testing.assert_allclose(plan.affinities(vectors, 0.25), expected, rtol=1e-6)


def test_an_offer_plan_is_built_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built on the first request after a change to the offers: 290 ms of one worker's loop
    with 220 offers at a million items."""
    on_loop: list[bool] = []
    build = Plan.__init__

    def watched(plan: Plan, *args: object) -> None:
        on_loop.append(_loop_running())
        build(plan, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Plan, "__init__", watched)
    put_offer(client, "o1")
    consent(client, "u0")
    assert offer_ids(offers(client, "u0", record="false")) == ["o1"]
    assert on_loop == [False]


def test_a_stock_mask_is_built_once_in_a_thread_for_all_the_requests_waiting(
    redis_url: str, key_prefix: str, model_dir: Path
) -> None:
    """After an inventory change, a store stocking 200,000 of a million items held the loop
    for most of a second, once per request that came before the mask was kept."""
    model = FactorModel(artifact.load(artifact.resolve(model_dir)))
    built_on_loop: list[bool] = []
    rows_of_encoded = model.rows_of_encoded

    def watched(encoded: list[bytes]) -> object:
        built_on_loop.append(_loop_running())
        return rows_of_encoded(encoded)

    model.rows_of_encoded = watched  # type: ignore[method-assign]

    async def main() -> list[object]:
        store = Store(Redis.from_url(redis_url), prefix=key_prefix)
        reads = 0
        available_in_store = store.available_in_store

        async def counted(store_id: str) -> object:
            nonlocal reads
            reads += 1
            return await available_in_store(store_id)

        store.available_in_store = counted  # type: ignore[method-assign]
        try:
            stock = [StockUpdate(item_id=f"i{j:02d}", stores={"s1": True}) for j in (1, 2, 5)]
            await store.set_stock(stock)
            availability = Availability(store, refresh_seconds=0)
            masks = await asyncio.gather(
                *(availability.mask(model, "tablet", "s1") for _ in range(8))
            )
            again = await availability.mask(model, "tablet", "s1")  # kept: no read
            assert reads == 1
            return [*masks, again]
        finally:
            await store.aclose()

    masks = asyncio.run(main())
    assert built_on_loop == [False]
    for mask in masks:
        assert np.flatnonzero(mask).tolist() == [1, 2, 5]  # type: ignore[call-overload]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_many_encoded_ids_are_found_as_one_by_one(model_dir: Path) -> None:
    model = FactorModel(artifact.load(artifact.resolve(model_dir)))
    encoded = [b"i03", b"nope", b"i" * 300, b"i01\x00", b"", b"i01", "\u00e9".encode()]
    rows = model.rows_of_encoded(encoded)
    expected = [model.item_row(raw.decode()) for raw in encoded if b"\x00" not in raw]
    assert sorted(rows.tolist()) == sorted(r for r in expected if r is not None) == [1, 3]
