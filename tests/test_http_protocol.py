"""The HTTP protocol the service runs under uvicorn: each loop turn's writes leave together, and
slow clients are timed out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

from service.http_protocol import FLUSH_AT, GatheredTransport, GatheringHttpToolsProtocol
from tests.browser import running_service, service_env
from tests.conftest import EVENTS_KEY


class Counted:
    """A real transport, with every ``write`` it is given recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[Counted, GatheredTransport, socket.socket]:
    """A gathered transport over a real socket, and the socket's other end."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    counted = Counted(transport)  # type: ignore[arg-type]
    theirs.setblocking(False)
    return counted, GatheredTransport(counted, loop), theirs  # type: ignore[arg-type]


async def _read_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_writes_of_one_loop_turn_leave_in_one_call() -> None:
    async def main() -> tuple[list[bytes], list[bytes], bytes]:
        counted, gathered, peer = await _pair()
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(b"ok")
        gathered.write(b"")  # nothing to send
        during = list(counted.writes)
        await asyncio.sleep(0)  # the turn ends
        gathered.writelines([b"next", b" turn"])
        await asyncio.sleep(0)
        gathered.close()
        return during, counted.writes, await _read_all(peer)

    during, writes, received = asyncio.run(main())
    assert during == []
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"next turn"]
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\noknext turn"


def test_pending_writes_go_out_before_the_connection_closes() -> None:
    async def main() -> tuple[list[bytes], bytes]:
        counted, gathered, peer = await _pair()
        gathered.write(b"last ")
        gathered.write(b"words")
        gathered.close()  # in the same turn
        await asyncio.sleep(0)
        gathered.write(b"after close")  # dropped: the connection is closing
        await asyncio.sleep(0)
        return counted.writes, await _read_all(peer)

    writes, received = asyncio.run(main())
    assert writes == [b"last words"]
    assert received == b"last words"


def test_a_large_body_is_sent_at_once_and_an_abort_drops_what_waits() -> None:
    async def main() -> tuple[int, int, bytes]:
        counted, gathered, peer = await _pair()
        gathered.write(b"x" * (FLUSH_AT - 1))
        before = len(counted.writes)
        gathered.write(b"y")  # reaches FLUSH_AT: sent now, uvicorn's back-pressure sees it
        after = len(counted.writes)
        await asyncio.sleep(0)
        gathered.write(b"never sent")
        gathered.abort()
        await asyncio.sleep(0)
        return before, after, await _read_all(peer)

    before, after, received = asyncio.run(main())
    assert (before, after) == (0, 1)
    assert received == b"x" * (FLUSH_AT - 1) + b"y"


# What ``/echo`` received: each body, or "disconnect" when the client was gone before its end.
_echoed: list[bytes | str] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``/small`` in one body and ``/stream`` in chunks, like the service's routes;
    ``/echo`` the length of the body it read, ``/slow`` after 1.5 s."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":  # reads the whole body, then answers its length
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message["body"]
            if not message["more_body"]:
                break
        else:
            _echoed.append("disconnect")
            return
        _echoed.append(body)
        scope["path"] = f"/{len(body)}"
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(40):
            await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * 10_000,
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})
        return
    body = f"hello {scope['path']}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.timeout(30)
def test_uvicorn_serves_pipelined_and_streamed_answers_through_it() -> None:
    """Real uvicorn with the protocol: two pipelined requests answered in order, a streamed
    body of 400 kB intact, and a HEAD without a body."""

    async def main() -> tuple[bytes, bytes, bytes]:
        async with _serving() as port:
            pipelined = await _exchange(
                port, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n"
                b"connection: close\r\n\r\n",
            )  # fmt: skip
            streamed = await _exchange(
                port, b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            head = await _exchange(
                port, b"HEAD /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
        return pipelined, streamed, head

    pipelined, streamed, head = asyncio.run(main())
    first, second = pipelined.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\nhello /a") and second.endswith(b"\r\n\r\nhello /b")
    chunks = streamed.split(b"\r\n\r\n", 1)[1]
    body = b"".join(chunks.split(b"\r\n")[1::2])  # chunked: size line, data, size line...
    assert body == b"".join(bytes([65 + i % 26]) * 10_000 for i in range(40))
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")


def test_a_request_the_parser_refuses_gets_problem_details() -> None:
    async def main() -> list[bytes]:
        async with _serving() as port:
            return [
                await _exchange(port, b"FOO /a HTTP/1.1\r\nhost: x\r\n\r\n"),
                await _exchange(port, b"GET /a HTTP/1.1\r\nbad header line\r\n\r\n"),
            ]

    for answer in asyncio.run(main()):
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400 ")
        assert b"content-type: application/problem+json" in head.lower()
        assert f"content-length: {len(body)}".encode() in head.lower()
        problem = json.loads(body)
        assert problem["type"] == "urn:omnireco:problem:invalid-request"
        assert problem["status"] == 400 and problem["detail"].startswith("malformed HTTP request")


@contextlib.asynccontextmanager
async def _serving(
    protocol: type[GatheringHttpToolsProtocol] = GatheringHttpToolsProtocol,
) -> AsyncIterator[int]:
    """Real uvicorn with ``protocol``, serving ``_app`` on a free port (yielded) until the block
    ends; connections idle 5 s between requests (keep-alive)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _app, http=protocol, log_level="critical", lifespan="off", timeout_keep_alive=5
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await serving


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


class _QuickProtocol(GatheringHttpToolsProtocol):
    read_timeout = 1.0  # with room for a loaded test machine's delays in the steady client


HEAD = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"


async def _send_slowly(port: int, parts: list[tuple[float, bytes]]) -> tuple[bytes, float]:
    """Send each part after its pause (stopping once the server answers); the answer, read until
    the server closes, and the seconds from connecting until then."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = loop.time()
    answer: list[bytes] = []

    async def read() -> None:
        while chunk := await reader.read(1 << 16):
            answer.append(chunk)

    reading = asyncio.create_task(read())
    for pause, data in parts:
        await asyncio.sleep(pause)
        if answer or reading.done():  # answered: more would be reset, and lose the answer
            break
        writer.write(data)
    await asyncio.wait_for(reading, 10)
    took = loop.time() - started
    writer.close()
    return b"".join(answer), took


def _problem(answer: bytes) -> dict[str, Any]:
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem: dict[str, Any] = json.loads(body)
    assert (problem["type"], problem["status"]) == ("urn:omnireco:problem:request-timeout", 408)
    return problem


@pytest.mark.parametrize(
    ("parts", "detail"),
    [
        ([(0, b"GET /a HTTP/1.1\r\nhost: x\r\n")], "head did not arrive within 1 s"),
        # Slowloris: a byte at a time keeps coming, the head never ends.
        ([(0.1, bytes([c])) for c in b"GET /a HTTP/1.1\r\n"], "head did not arrive within 1 s"),
        ([(0, HEAD + b"x" * 10)], "body paused for more than 1 s"),
        ([(0, HEAD), *[(0.1, b"x")] * 5], "body paused for more than 1 s"),
    ],
    ids=["head stalls", "head dribbles", "body stalls", "body stalls after a while"],
)
def test_a_stalled_request_gets_a_408_and_its_connection_closes(
    parts: list[tuple[float, bytes]], detail: str
) -> None:
    """A head not complete 1 s after its first byte, or a body with no byte for 1 s, is
    answered 408 and the connection closed; the application reading the body is told the client
    left. Before, uvicorn held such connections for as long as the client wanted."""

    async def main() -> tuple[bytes, float]:
        async with _serving(_QuickProtocol) as port:
            return await _send_slowly(port, parts)

    _echoed.clear()
    answer, took = asyncio.run(main())
    problem = _problem(answer)
    assert problem["detail"] == "the request's " + detail
    assert 0.9 <= took < 3.0
    read_by_the_app = ["disconnect"] if parts[0][1].startswith(HEAD) else []
    assert _echoed == read_by_the_app


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async def main() -> tuple[bytes, float]:
        async with _serving(_QuickProtocol) as port:
            return await _send_slowly(port, [])

    answer, took = asyncio.run(main())
    assert answer == b""
    assert 0.9 <= took < 3.0


def test_slow_clients_that_keep_sending_and_idle_keep_alive_connections_are_not_cut() -> None:
    """A head that arrives in pieces within the limit, and a body that takes 2 s but never pauses
    1 s, are answered; so is a request after the connection idled 1.5 s (keep-alive: 5 s), one
    whose answer took the application longer than the limit, and a request pipelined behind it."""

    async def main() -> tuple[bytes, bytes, bytes]:
        async with _serving(_QuickProtocol) as port:
            head = HEAD.replace(b"host: x", b"host: x\r\nconnection: close")
            steady, _ = await _send_slowly(
                port,
                [(0, head[:10]), (0.15, head[10:30]), (0.15, head[30:]),
                 *[(0.2, b"x" * 100)] * 10],
            )  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.read(4096), 5)
            await asyncio.sleep(1.5)
            writer.write(
                b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n"
                b"GET /b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            rest = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return steady, first, rest

    _echoed.clear()
    steady, first, rest = asyncio.run(main())
    assert steady.startswith(b"HTTP/1.1 200 ") and steady.endswith(b"hello /1000")
    assert _echoed == [b"x" * 1000]
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"hello /a")
    answers = rest.split(b"HTTP/1.1 200 OK")
    assert len(answers) == 3
    assert answers[1].endswith(b"hello /slow") and answers[2].endswith(b"hello /b")


def test_python_m_service_times_slow_clients_out_as_configured(
    tmp_path: Path, model_dir: Path, redis_url: str, key_prefix: str
) -> None:
    """Under ``python -m service`` with RECO_REQUEST_READ_TIMEOUT_SECONDS=1: an event batch whose
    body stalls gets the 408, which /metrics counts as a 408, not a server error."""
    env = service_env(redis_url, key_prefix, model_dir, RECO_REQUEST_READ_TIMEOUT_SECONDS="1")
    with running_service(env, tmp_path) as base:
        address = urlsplit(base)
        with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
            conn.sendall(
                b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"x-api-key: " + EVENTS_KEY.encode() + b"\r\ncontent-length: 1000\r\n\r\n[{"
            )
            started = time.monotonic()
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            took = time.monotonic() - started
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
    assert 0.9 <= took < 4
    assert _problem(answer)["detail"] == "the request's body paused for more than 1 s"
    assert 'reco_responses_total{route="/v1/events",status="408"} 1.0' in metrics
    assert 'route="/v1/events",status="500"' not in metrics
    assert "client disconnected" not in (tmp_path / "service.log").read_text()
