"""The HTTP protocol the service runs under uvicorn: each loop turn's writes leave together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from service.http_protocol import FLUSH_AT, GatheredTransport, GatheringHttpToolsProtocol


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


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``/small`` in one body and ``/stream`` in chunks, like the service's routes."""
    if scope["type"] != "http":
        return
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
async def _serving() -> AsyncIterator[int]:
    """Real uvicorn with the protocol, serving ``_app`` on a free port (yielded) until the block
    ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _app, http=GatheringHttpToolsProtocol, log_level="critical", lifespan="off"
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
