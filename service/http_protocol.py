"""uvicorn's httptools protocol, sending what one turn of the event loop writes in one call.

uvicorn writes an answer's head and its body with a ``transport.write`` each: two system calls and
two packets per response, a fifth of a small answer's server CPU. The protocol here hands uvicorn
a transport that gathers a connection's writes during one turn of the loop and sends them
together when the turn ends, before the connection closes, or as soon as they reach
``FLUSH_AT`` bytes (a streamed body keeps uvicorn's back-pressure).

Measured beside stock uvicorn on the benchmark's bare route (``benchmarks/bare_app.py``, 6
alternating rounds of 3 s, 32 connections): 50.4 against 62.3 µs of server CPU per request and
19,807 against 16,183 requests/s (medians), p99 1.9-2.6 against 3.8-4.6 ms.

It also times slow clients out. uvicorn limits only how long a connection idles between
requests: a client that sent a request's head a byte every few seconds, or announced a body and
sent part of it, or connected and said nothing, held its connection (an open file, a slot under
``limit_concurrency``) for ever. Here a request's head must arrive within
``RECO_REQUEST_READ_TIMEOUT_SECONDS`` of its first byte (of connecting, for a connection's first
request, as nginx's ``client_header_timeout`` and Go's ``ReadHeaderTimeout`` count), and its body
may not pause for longer; then the client gets a 408 and the connection closes. One timer per
connection, re-armed lazily when it fires: a request costs a few attribute writes and a clock
read, not a timer of its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.problems import MEDIA_TYPE, TYPE_PREFIX, Problem
from service.settings import Settings

# Pending bytes at which a connection's writes go out at once, not at the end of the loop's turn.
FLUSH_AT = 64 * 1024

# What a connection waits for from its client, for the read timeout.
_NOTHING = 0  # a request being answered, or an idle keep-alive connection (uvicorn times it)
_FIRST = 1  # a new connection's first request: nothing received yet
_HEAD = 2  # the rest of a request's head
_BODY = 3  # more of a request's body


class GatheredTransport:
    """A transport whose writes of one loop turn leave in one ``write`` of the one it wraps;
    everything else is the wrapped transport's."""

    __slots__ = ("_loop", "_parts", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        """Wrap ``transport``, whose connection runs on ``loop``."""
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        """Send ``data`` after what was written before it, by the end of this loop turn."""
        if not data:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()
        elif len(self._parts) == 1:
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Iterable[bytes]) -> None:
        """``write`` each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is pending now (dropped when the connection is already closing)."""
        parts = self._parts
        if not parts:
            return
        self._parts, self._size = [], 0
        if not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        """Send what is pending, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is pending, then close the writing side."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Close at once, pending writes dropped (as the wrapped transport drops its own)."""
        self._parts, self._size = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn --http httptools``, each connection's writes gathered per loop turn, and slow
    clients answered 408 (see the module's docstring)."""

    # Seconds; None: RECO_REQUEST_READ_TIMEOUT_SECONDS (a subclass may set it: tests do).
    read_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Serve the connection through a ``GatheredTransport``; its first request's head is
        due within the read timeout."""
        gathered = GatheredTransport(transport, asyncio.get_running_loop())
        super().connection_made(gathered)  # type: ignore[arg-type]
        self._timeout = self.read_timeout or _configured_read_timeout()
        self._owed = _FIRST
        self._since = self.loop.time()
        self._timer: asyncio.TimerHandle | None = self.loop.call_at(
            self._since + self._timeout, self._check_reading
        )

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the read timer, then uvicorn's own clean-up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte: its head is due within the read timeout."""
        super().on_message_begin()
        if self._owed == _NOTHING:
            self._since = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self._since + self._timeout, self._check_reading)
        self._owed = _HEAD

    def on_headers_complete(self) -> None:
        """The head is in; from now the body may pause for the read timeout at most."""
        super().on_headers_complete()
        self._owed = _BODY
        self._since = self.loop.time()

    def on_body(self, body: bytes) -> None:
        """More of the body: the client is still sending."""
        super().on_body(body)
        self._since = self.loop.time()

    def on_message_complete(self) -> None:
        """The whole request is in: what the application takes to answer is not timed here."""
        super().on_message_complete()
        self._owed = _NOTHING

    def _check_reading(self) -> None:
        """The timer: time the client out, or wait until what it owes is due."""
        self._timer = None
        owed = self._owed
        if owed == _NOTHING or self.transport.is_closing():
            return  # armed again by the next request's first byte
        now = self.loop.time()
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.flow.read_paused or (owed == _HEAD and answering):
            # Not the client's delay: uvicorn stopped reading (a body the application has not
            # taken yet, a pipelined request), or a request before this one is being answered.
            self._since = now
        due = self._since + self._timeout
        if now < due:
            self._timer = self.loop.call_at(due, self._check_reading)
            return
        self._time_out(owed)

    def _time_out(self, owed: int) -> None:
        if owed == _FIRST:  # no request to answer: closed, as an idle connection is
            self.transport.close()
            return
        if owed == _BODY:
            cycle = self.cycle
            if cycle.response_started:  # answered without the rest of its body
                self.transport.close()
                return
            # The application waits for the body: it is told the client left, and whatever it
            # answers is dropped, so the 408 is the only answer on the connection.
            cycle.disconnected = True
            cycle.message_event.set()
        self._send_problem(
            408,
            "request-timeout",
            "Request timeout",
            f"the request's head did not arrive within {self._timeout:g} s"
            if owed == _HEAD
            else f"the request's body paused for more than {self._timeout:g} s",
        )

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (an unknown method, a broken request line or
        header) as problem details like every other error, not uvicorn's plain text; the
        connection closes, as uvicorn closes it, since the stream can't be trusted after it."""
        self._send_problem(
            400, "invalid-request", "Invalid request", f"malformed HTTP request: {msg}"
        )

    def _send_problem(self, status: int, slug: str, title: str, detail: str) -> None:
        """Answer ``status`` with problem details, then close the connection."""
        body = msgspec.json.encode(
            Problem(type=TYPE_PREFIX + slug, title=title, status=status, detail=detail)
        )
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (MEDIA_TYPE.encode(), len(body))
        )
        self.transport.write(b"".join([*head, body]))
        self.transport.close()


@functools.cache
def _configured_read_timeout() -> float:
    # Read once per worker, as the app reads its settings (the parent has checked them).
    return Settings.from_env().request_read_timeout_seconds
