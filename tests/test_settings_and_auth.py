from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.auth import SCOPES, ApiKeys, api_keys_from_settings, dev_key
from service.settings import Settings


def test_settings_have_sane_defaults_without_any_variable() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.redis_url is None
    assert settings.data_dir == "./var"
    assert settings.model_dir == "./models"
    assert settings.api_keys is None
    # No probe count: each model's calibrated one (service/ann.py).
    assert (settings.ann_nprobe, settings.ann_nprobe_similar) == (None, None)


def test_settings_read_the_documented_variables_and_coerce_types() -> None:
    env = {
        "PORT": "9001",
        "REDIS_URL": "redis://example:6379/2",
        "DATA_DIR": "/srv/data",
        "MODEL_DIR": "/srv/models",
        "API_KEYS": "k=recommend",
        "LOG_LEVEL": "DEBUG",
        "RECO_DEFAULT_K": "25",
        "RECO_VERIFY_CHECKSUMS": "false",
        "RECO_ANN_NPROBE": "40",
    }
    settings = Settings.from_env(env)
    assert (settings.port, settings.redis_url, settings.log_level) == (
        9001,
        env["REDIS_URL"],
        "DEBUG",
    )
    assert (settings.data_dir, settings.model_dir) == ("/srv/data", "/srv/models")
    assert settings.default_k == 25
    assert settings.verify_checksums is False
    assert (settings.ann_nprobe, settings.ann_nprobe_similar) == (40, None)


def test_the_reco_prefix_wins_and_tunables_need_it() -> None:
    settings = Settings.from_env({"PORT": "1", "RECO_PORT": "2", "DEFAULT_K": "99"})
    assert settings.port == 2
    assert settings.default_k == 10


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "`$.port`"),
        ({"PORT": "70000"}, "<= 65535"),
        ({"LOG_LEVEL": "LOUD"}, "`$.log_level`"),
        ({"RECO_DEFAULT_K": "0"}, ">= 1"),
    ],
)
def test_bad_settings_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message.replace("$", r"\$")):
        Settings.from_env(env)


def test_api_keys_map_each_key_to_its_scopes() -> None:
    keys = ApiKeys.parse("web-1=recommend, mail=offers+recommend ,ops=admin")
    assert keys.scopes_for("web-1") == {"recommend"}
    assert keys.scopes_for("mail") == {"offers", "recommend"}
    assert keys.scopes_for("ops") == {"admin"}
    assert keys.scopes_for("nope") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("justakey", "must look like key=scope"),
        ("k=", "must look like key=scope"),
        ("=recommend", "must look like key=scope"),
        ("k=recommend+fly", "unknown scope"),
        (" , ", "holds no key"),
    ],
)
def test_malformed_api_keys_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ApiKeys.parse(spec)


def test_errors_never_echo_a_whole_key() -> None:
    with pytest.raises(ValueError, match="unknown scope") as err:
        ApiKeys.parse("supersecretvalue=fly")
    assert "supersecretvalue" not in str(err.value)


def test_the_development_key_is_created_once_with_every_scope(tmp_path: Path) -> None:
    key = dev_key(tmp_path)
    assert dev_key(tmp_path) == key
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o777 == 0o600
    keys = api_keys_from_settings(None, tmp_path)
    assert keys.scopes_for(key) == set(SCOPES)


def test_workers_starting_together_share_one_development_key(tmp_path: Path) -> None:
    # Processes, as uvicorn's workers are, released at once: each could write a key of its own.
    spawn = multiprocessing.get_context("spawn")
    for attempt in range(4):
        folder = tmp_path / str(attempt)
        barrier, results = spawn.Barrier(4), spawn.Queue()
        racers = [spawn.Process(target=_race, args=(barrier, folder, results)) for _ in range(4)]
        for racer in racers:
            racer.start()
        keys = {results.get(timeout=30) for _ in racers}
        for racer in racers:
            racer.join()
        assert len(keys) == 1
        assert (folder / "dev-api-key").read_text().strip() in keys
        assert [p.name for p in folder.iterdir()] == ["dev-api-key"]  # no loser's file left


def _race(barrier: Any, folder: Path, results: Any) -> None:
    barrier.wait()
    results.put(dev_key(folder))
