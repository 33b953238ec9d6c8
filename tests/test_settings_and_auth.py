from __future__ import annotations

import contextlib
import multiprocessing
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.auth import SCOPES, ApiKeys, api_keys_from_settings, dev_key
from service.settings import Settings, SettingsError
from service.startup_checks import check
from tests.test_connection import RedisServer


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
        ({"PORT": "eighty"}, "PORT='eighty': expected an integer from 0 to 65535"),
        ({"RECO_PORT": "70000", "PORT": "80"}, "RECO_PORT='70000': expected an integer from 0"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud': expected one of CRITICAL, DEBUG, ERROR, INFO"),
        ({"RECO_DEFAULT_K": "0"}, "RECO_DEFAULT_K='0': expected an integer >= 1"),
        ({"RECO_ANN": "maybe"}, "RECO_ANN='maybe': expected one of auto, off, on"),
        ({"RECO_ANN_NPROBE": "x"}, "RECO_ANN_NPROBE='x': expected an integer >= 1"),
        (
            {"RECO_REDIS_TIMEOUT_SECONDS": "-1"},
            "RECO_REDIS_TIMEOUT_SECONDS='-1': expected a number > 0",
        ),
        (
            {"RECO_REQUEST_READ_TIMEOUT_SECONDS": "0"},
            "RECO_REQUEST_READ_TIMEOUT_SECONDS='0': expected a number > 0",
        ),
        ({"RECO_TRACKING": "maybe"}, "RECO_TRACKING='maybe': expected true or false"),
    ],
)
def test_bad_settings_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(message)
    assert "$." not in str(refused.value)  # the variable, not msgspec's path to the field


def test_the_log_level_takes_any_case() -> None:
    assert Settings.from_env({"LOG_LEVEL": "debug"}).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_KEYS": "key"}, "API_KEYS: entry '…' must look like key=scope+scope"),
        ({"RECO_API_KEYS": "=recommend"}, "RECO_API_KEYS: entry '=re…' must look like"),
        ({"API_KEYS": "k=unknownscope"}, "API_KEYS: entry for key '…': unknown scope(s)"),
        ({"REDIS_URL": "foo://x"}, "REDIS_URL: Redis URL must specify one of the following"),
        ({"RECO_ATTRIBUTION_WINDOWS": "web"}, "RECO_ATTRIBUTION_WINDOWS='web': attribution"),
        ({"MODEL_DIR": "{file}"}, "MODEL_DIR='{file}': not a folder"),
        ({"DATA_DIR": "{file}"}, "DATA_DIR='{file}': not a folder"),
        ({"DATA_DIR": "{file}/var"}, "DATA_DIR='{file}/var': cannot create it"),
    ],
)
def test_settings_workers_would_fail_on_are_refused_before_they_start(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    env = {name: value.format(file=file) for name, value in env.items()}
    with pytest.raises(SettingsError) as refused:
        check(Settings.from_env(env), env)
    assert str(refused.value).startswith(message.format(file=file))


def test_secrets_in_refused_settings_are_not_repeated() -> None:
    for env in ({"API_KEYS": "supersecretvalue"}, {"REDIS_URL": "redis://:supersecret@h:x/0"}):
        with pytest.raises(SettingsError) as refused:
            check(Settings.from_env(env), env)
        assert "supersecret" not in str(refused.value)


def test_good_settings_pass_and_the_data_folder_is_made(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "new" / "var"), "MODEL_DIR": str(tmp_path / "none-yet")}
    check(Settings.from_env({**env, "API_KEYS": "k=recommend", "REDIS_URL": "unix:///x.sock"}))
    assert (tmp_path / "new" / "var").is_dir()


@contextlib.contextmanager
def not_redis(answer: bytes | None) -> Iterator[int]:
    """A TCP server that is not Redis, on a free port (yielded): it reads what a connection sends,
    answers ``answer``, and closes it; None closes it without a word (as PostgreSQL does)."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1 << 16)
            if answer is not None:
                self.request.sendall(answer)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_redis_url_no_waiting_can_fix_is_refused_naming_what_answered(tmp_path: Path) -> None:
    """A server that is not Redis (it answered a worker's first command with a protocol error:
    exit status 3 and a traceback; or it closed the connection: "Connection closed by server"
    every second), credentials Redis refuses and a database it does not have are one line."""
    server = RedisServer(tmp_path, "--requirepass", "s3cret")
    server.start()
    port = server.port
    try:
        with not_redis(b"HTTP/1.1 400 Bad Request\r\n\r\n") as web, not_redis(None) as silent:
            cases = [
                (
                    f"redis://127.0.0.1:{web}/0",
                    f"the server at 127.0.0.1:{web} does not speak the Redis protocol (it "
                    "answered b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n': Protocol error, got "
                    '"H" as reply type byte)',
                ),
                (
                    f"redis://127.0.0.1:{silent}/0",
                    f"the server at 127.0.0.1:{silent} does not speak the Redis protocol (it "
                    "closed the connection without answering PING)",
                ),
                (
                    f"redis://:not-s3cret@127.0.0.1:{port}/0",
                    f"the server at 127.0.0.1:{port} refused AUTH: invalid username-password",
                ),
                (
                    f"redis://127.0.0.1:{port}/0",
                    f"the server at 127.0.0.1:{port} refused PING: Authentication required",
                ),
                (
                    f"redis://:s3cret@127.0.0.1:{port}/99",
                    f"the server at 127.0.0.1:{port} refused SELECT: DB index is out of range",
                ),
                (f"redis://:s3cret@127.0.0.1:{port}/one", "the database 'one' is not a number"),
            ]
            for url, message in cases:
                env = {"REDIS_URL": url, "DATA_DIR": str(tmp_path / "var")}
                with pytest.raises(SettingsError) as refused:
                    check(Settings.from_env(env), env)
                assert str(refused.value).startswith(f"REDIS_URL: {message}")
                assert "s3cret" not in str(refused.value)
    finally:
        server.kill()


def test_a_redis_that_is_down_or_silent_passes_the_check(tmp_path: Path) -> None:
    """Nothing listening, or a server that accepts and never answers, is an outage the workers
    serve through (degraded) until Redis answers; a Redis that takes the password passes too."""
    server = RedisServer(tmp_path, "--requirepass", "s3cret")
    server.start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen()  # the kernel accepts connections; nothing ever answers
    try:
        for port in (closed.getsockname()[1], hung.getsockname()[1]):
            env = {
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "RECO_REDIS_TIMEOUT_SECONDS": "0.2",
                "DATA_DIR": str(tmp_path / "var"),
            }
            started = time.monotonic()
            check(Settings.from_env(env), env)
            assert time.monotonic() - started < 1.0
        env = {
            "REDIS_URL": f"redis://:s3cret@127.0.0.1:{server.port}/3",
            "DATA_DIR": str(tmp_path / "var"),
        }
        check(Settings.from_env(env), env)
    finally:
        closed.close()
        hung.close()
        server.kill()


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
