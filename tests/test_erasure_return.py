"""A customer who comes back after erasure: the past stays erased, the future is learnt again.

End to end against a real Redis: events over HTTP, the exporter, a real (tiny) training run and the
service serving its model.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from litestar.testing import TestClient

from service import artifact
from service.ranking import FactorModel
from service.settings import Settings
from service.store.erasure import customer_hash, erasure_time
from service.store.keys import Keys
from tests.test_erasure import erase, recs
from tests.test_offers import consent, put_offer
from tests.test_omnichannel import event, post
from training.config import AlsParams, Evaluation, TrainConfig
from training.export import SUPPRESSIONS_FILE, Exporter
from training.pipeline import Inputs, read_events, run

CONFIG = TrainConfig(
    algorithm="als",
    als=AlsParams(factors=2, iterations=2),
    evaluation=Evaluation(holdout_fraction=0),
)
BEFORE = "2026-11-02T10:00:00Z"  # the returning customer's first life, well before the erasure
OTHERS = ("a", "b", "c")


def export(redis_url: str, settings: Settings, out: Path) -> None:
    Exporter(redis.Redis.from_url(redis_url), out, prefix=settings.key_prefix).run()


def train(settings: Settings, *events: Path) -> FactorModel:
    """Train on ``events`` into the service's model folder (as LATEST), and serve it."""
    path = run(Inputs(events=[str(e) for e in events]), settings.model_dir, CONFIG)
    return FactorModel(artifact.load(path))


def reload(client: TestClient, model: FactorModel) -> None:
    response = client.post("/v1/models/reload")
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == model.version


def now() -> str:
    return datetime.now(UTC).isoformat()


def purchases(customer: str, items: list[str], when: str) -> list[dict[str, object]]:
    return [event(customer, i, "purchase", "web", price=2, timestamp=when) for i in items]


def items_of(events: pa.Table, customer: str) -> list[str]:
    return events.filter(pc.equal(events["customer_id"], customer))["item_id"].to_pylist()


def audience(client: TestClient) -> set[str]:
    """The customers of the served model's offer export."""
    answer = client.post("/v1/exports/offers", json={"channel": "email", "record": False})
    assert answer.status_code == 200, answer.text
    return {json.loads(line)["customer_id"] for line in answer.text.splitlines()}


def test_a_customer_who_comes_back_after_erasure_is_learnt_from_their_new_events_only(
    client: TestClient, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for customer in OTHERS:
        post(client, *purchases(customer, ["i1", "i2", "i3", "old1", "old2"], BEFORE))
    post(client, *purchases("ret", ["old1", "old2"], BEFORE))
    export(redis_url, settings, first)
    known = train(settings, first)
    assert known.user_row("ret") is not None

    erase(client, "ret")
    # Under the same id: consent again, shop again, and a till that was offline sends a purchase
    # from before the erasure (an event recorded after it, dated before it: the erased past).
    put_offer(client, "o1", kind="free_delivery", amount=None, target={}, value=4.0)
    for customer in ("ret", "a"):
        consent(client, customer, email=True)
    time.sleep(0.01)  # the new events' client times are after the erasure's
    post(client, *purchases("ret", ["i1", "i2"], now()), event("ret", "i3", "view", "web"))
    post(client, *purchases("ret", ["old3"], BEFORE), *purchases("a", ["old3"], BEFORE))

    # A model trained after the erasure on data exported before it knows nothing of the erasure:
    # the customer is a stranger to it, as to the model served before.
    stale = train(settings, first)
    assert stale.artifact.manifest.created_at > datetime.now(UTC) - timedelta(minutes=1)
    reload(client, stale)
    assert stale.user_row("ret") is not None
    assert recs(client, "ret")["recent_events_used"] > 0  # their new events alone
    assert "ret" not in audience(client)

    export(redis_url, settings, second)
    events, _ = read_events(Inputs(events=[str(first), str(second)]))
    assert sorted(items_of(events, "ret")) == ["i1", "i2", "i3"]
    assert "old3" in items_of(events, "a")

    fresh = train(settings, first, second)
    reload(client, fresh)
    assert fresh.user_row("ret") is not None
    # Personalised from the model's row (the events are in it, none is folded in again), with
    # what they bought before the erasure no longer "bought": only their new purchases are (the
    # late purchase is the service's since it was recorded, not the model's).
    body = recs(client, "ret", k=20)
    assert body["fallback"] is False and body["recent_events_used"] == 0
    items = [i["item_id"] for i in body["items"]]
    assert {"old1", "old2"} <= set(items)
    assert not {"i1", "i2", "old3"} & set(items)
    bought = fresh.bought_rows(fresh.user_row("ret"))
    assert sorted(fresh.item_ids[bought].astype(str).tolist()) == ["i1", "i2"]
    assert "ret" in audience(client)

    # Erased again: a stranger at once to this model too, until one trained with the new list.
    erase(client, "ret")
    assert recs(client, "ret")["fallback"] is True
    assert "ret" not in audience(client)


def test_erasing_again_moves_the_erasure_time_forward(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    entry = (Keys(settings.key_prefix).suppressed, customer_hash("ret"))
    first = erase(client, "ret")["erased_at"]
    assert erasure_time(raw.hget(*entry)) == pytest.approx(  # type: ignore[arg-type]
        datetime.fromisoformat(first).timestamp(), abs=1e-5
    )
    time.sleep(0.01)
    again = erase(client, "ret")["erased_at"]
    assert datetime.fromisoformat(again) > datetime.fromisoformat(first)
    assert erasure_time(raw.hget(*entry)) == pytest.approx(  # type: ignore[arg-type]
        datetime.fromisoformat(again).timestamp(), abs=1e-5
    )


def test_an_erasure_recorded_by_an_older_version_is_honoured_then_moved(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    """Entries written before the times were epoch seconds hold an ISO time."""
    raw = redis.Redis.from_url(redis_url)
    entry = (Keys(settings.key_prefix).suppressed, customer_hash("u0"))
    raw.hset(*entry, "2026-09-02T10:00:00.123456+00:00")
    assert recs(client, "u0")["fallback"] is True  # a stranger to the checkerboard model
    again = erase(client, "u0")["erased_at"]
    assert datetime.fromisoformat(again) > datetime(2026, 9, 3, tzinfo=UTC)
    assert erasure_time(raw.hget(*entry)) > datetime(2026, 9, 3, tzinfo=UTC).timestamp()  # type: ignore[arg-type]


def test_the_export_writes_each_erasure_with_its_time_and_the_lists_time(
    client: TestClient, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    erased_at = datetime.fromisoformat(erase(client, "ret")["erased_at"])
    export(redis_url, settings, tmp_path)
    content = json.loads((tmp_path / SUPPRESSIONS_FILE).read_text())
    assert set(content) == {"as_of", "erased_at"}
    [(hashed, when)] = content["erased_at"].items()
    assert hashed == customer_hash("ret")
    assert abs(datetime.fromisoformat(when) - erased_at) < timedelta(microseconds=2)
    assert datetime.fromisoformat(content["as_of"]) >= datetime.fromisoformat(when)
