"""One connection per worker that every request's short commands share, replies matched in order.

Redis answers the commands of one connection in the order they came, so many callers can share
a connection without waiting for each other: each writes its commands and is handed the next
replies. Under load the commands of one turn of the event loop go out in one write.

Why not redis-py's asyncio client for this: per command it takes a connection from the pool
and gives it back, arms a timeout and reads the reply through a stream reader. Client CPU per
customer-state read (``python -m benchmarks.redis_client``: one process, uvloop): 32 concurrent
callers 48.0 µs through redis-py pipelines, 20.8 here; one caller at a time 224.9 µs through
redis-py, 68.9 here (docs/serving.md, sixth round). The parser is the same (hiredis), and so are
the settings (``wire.Endpoint.of`` the client) and the exceptions (redis-py's, from the same error
replies), so callers cannot tell the two apart but by their cost.

Failures:
- No reply for ``timeout`` seconds while commands wait fails every waiting command with
  ``TimeoutError`` and closes the connection; a lost connection fails them with
  ``ConnectionError`` (both redis-py's). The next command opens a new connection.
- A command is never sent twice: one that may have reached Redis before the connection failed
  (an event batch's script, say) is not retried behind the caller's back, as redis-py's retries
  would. A connection found closed before anything is written to it is replaced first.
- A caller that gives up (a cancelled request) leaves its replies to be read and dropped.
- Bytes that are no RESP reply fail the connection with ``NotRedis`` (a ``ConnectionError``):
  whatever answers is not Redis; ``greet`` tells such a server apart before workers start.
- A timeout, or a connection that cannot be opened, opens the circuit breaker (store/breaker.py):
  until a PING in the background gets an answer, commands raise ``CircuitOpen`` (a redis-py
  ``ConnectionError``) at once instead of each waiting for the timeout again. A lost connection
  (``CLIENT KILL``, Redis restarting) does not by itself: the next command opens a new one, and
  only a failure to open it opens the breaker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import hiredis
import redis.exceptions

from service.store.breaker import Breaker
from service.store.wire import Endpoint, pack, reply_error

Command = tuple[Any, ...]


class SharedConnection:
    """Commands of any number of callers on one connection (per event loop), opened on first
    use and again after a failure."""

    def __init__(self, endpoint: Endpoint, breaker: Breaker | None = None) -> None:
        """Connect to ``endpoint`` when first used. ``breaker``: one shared with other
        connections to the same Redis; by default one of its own, probing on this connection."""
        self.endpoint = endpoint
        self._line: _Line | None = None
        # The connection being opened, shared by the callers that arrive meanwhile.
        self._opening: asyncio.Task[_Line] | None = None
        # Probes at most every second, sooner with a shorter timeout: Redis back after an outage
        # is used again within that.
        retry = min(1.0, endpoint.timeout or 1.0)
        self.breaker = breaker or Breaker(self.ping, retry_seconds=retry)

    async def execute(self, commands: list[Command]) -> list[Any]:
        """The replies to ``commands``, in order; a command's error reply is its reply (a
        redis-py ``ResponseError``). Raises redis-py's ``ConnectionError`` or ``TimeoutError``
        when the connection fails, for every command still waiting on it, and ``CircuitOpen``
        (a ``ConnectionError``) without sending anything while the breaker is open."""
        if not commands:  # no reply would ever come for them
            return []
        breaker = self.breaker
        if breaker.reason is not None:
            breaker.refuse()
        line = self._line
        if line is None or not line.usable(asyncio.get_running_loop()):
            try:
                line = await self._open()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                breaker.trip(e)
                raise
        try:
            return await line.send([pack(c) for c in commands])
        except redis.exceptions.TimeoutError as e:
            breaker.trip(e)
            raise

    async def ping(self) -> None:
        """PING, past the breaker (its probe), on a new connection if need be. Raises what
        ``execute`` raises, or PING's error reply (``LOADING``...)."""
        line = self._line
        if line is None or not line.usable(asyncio.get_running_loop()):
            line = await self._open()
        (reply,) = await line.send([pack(("PING",))])
        if isinstance(reply, Exception):
            raise reply

    async def aclose(self) -> None:
        """Close the connection (and stop opening one, and probing); commands still waiting
        fail."""
        await self.breaker.aclose()
        opening, self._opening = self._opening, None
        if (
            opening is not None
            and not opening.done()
            and opening.get_loop() is asyncio.get_running_loop()
        ):
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        line, self._line = self._line, None
        if line is None:
            return
        if not line.closed:
            line.fail(redis.exceptions.ConnectionError("connection closed by the service"))
        if line.loop is asyncio.get_running_loop() and line.connected:
            # Closed for Redis too when this returns: an embedded server stops only once its
            # last client is gone (service/embedded_redis.py).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(line.lost), 1.0)

    async def _open(self) -> _Line:
        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is None or opening.done() or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._connect())
            # Retrieved here, so that a failure every caller gave up on is not logged as lost.
            opening.add_done_callback(lambda t: t.cancelled() or t.exception())
        # Shielded: one caller giving up does not stop the others' connection.
        return await asyncio.shield(opening)

    async def _connect(self) -> _Line:
        endpoint = self.endpoint
        line = _Line(endpoint.timeout)
        try:
            await endpoint.open(lambda: line)
            hello = endpoint.hello()
            if hello:
                replies = await line.send([pack(c) for c in hello])
                failed = next((r for r in replies if isinstance(r, Exception)), None)
                if failed is not None:
                    raise _refused(failed)
        except TimeoutError as e:
            line.fail(redis.exceptions.TimeoutError(f"connecting to Redis: {e}"))
            raise redis.exceptions.TimeoutError("timed out connecting to Redis") from e
        except OSError as e:
            raise redis.exceptions.ConnectionError(f"connecting to Redis: {e}") from e
        except BaseException:
            line.fail(redis.exceptions.ConnectionError("connection set-up failed"))
            raise
        self._line = line
        return line


class NotRedis(redis.exceptions.ConnectionError):
    """The server does not speak the Redis protocol: it sent something that is no RESP reply,
    or (to ``greet``) closed the connection without answering."""


async def greet(endpoint: Endpoint) -> list[Any]:
    """Open a connection to ``endpoint`` as the shared connection opens one, send its set-up
    commands (``endpoint.hello()``) and a PING, and close it: their replies, in order, an error
    reply as its exception. ``python -m service`` checks ``REDIS_URL`` with it before it starts
    any worker (service/startup_checks.py).

    Raises:
        NotRedis: the server answered something other than RESP, or closed the connection
            without a word. Redis answers PING even to refuse it (NOAUTH, LOADING, too many
            clients), so either is a server that is not Redis (or a proxy with none behind it).
        redis.exceptions.ConnectionError: nothing accepts connections there.
        redis.exceptions.TimeoutError: no connection, or no answer, within the endpoint's timeout.
    """
    line = _Line(endpoint.timeout)
    try:
        await endpoint.open(lambda: line)
    except TimeoutError as e:
        raise redis.exceptions.TimeoutError("timed out connecting to Redis") from e
    except OSError as e:
        raise redis.exceptions.ConnectionError(f"connecting to Redis: {e}") from e
    try:
        return await line.send([pack(c) for c in (*endpoint.hello(), ("PING",))])
    except (NotRedis, redis.exceptions.TimeoutError):
        raise
    except redis.exceptions.ConnectionError as e:
        if isinstance(line.failure, NotRedis):  # it spoke first (MySQL, NATS greet clients)
            raise line.failure from None
        raise NotRedis("it closed the connection without answering PING") from e
    finally:
        line.fail(redis.exceptions.ConnectionError("checked"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(line.lost), 1.0)


def _refused(reply: Exception) -> redis.exceptions.ConnectionError:
    """A set-up command's error reply as the connection's failure."""
    if isinstance(reply, redis.exceptions.ConnectionError):
        return reply  # a wrong password (AuthenticationError), a Redis still loading...
    return redis.exceptions.ConnectionError(f"connection set-up refused: {reply}")


class _Waiting:
    """A caller's commands: the replies read so far, and where the whole list goes."""

    __slots__ = ("future", "left", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.left = count
        self.replies: list[Any] = []


class _Line(asyncio.Protocol):
    """One connection: commands written in the order they come, replies handed out in it."""

    def __init__(self, timeout: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.closed = False
        # Why it closed (``fail``), once it has.
        self.failure: Exception | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=reply_error
        )
        self._waiting: collections.deque[_Waiting] = collections.deque()
        # Commands of this turn of the loop, written together after it.
        self._unsent: list[bytes] = []
        self._flush_scheduled = False
        # When a reply last came, or the first command began to wait (loop time).
        self._progress = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.connected = False
        # Done once the transport is closed (``connection_lost``).
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def usable(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether commands of ``loop`` can be written to this connection now."""
        transport = self._transport
        if self.closed or self.loop is not loop or transport is None:
            return False
        return not transport.is_closing()

    def send(self, packed: list[bytes]) -> asyncio.Future[list[Any]]:
        """A future of the replies to the ``packed`` commands."""
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if not self.usable(self.loop):
            future.set_exception(redis.exceptions.ConnectionError("connection closed"))
            return future
        if not self._waiting:
            self._progress = self.loop.time()
            if self.timeout is not None and self._timer is None:
                self._timer = self.loop.call_at(self._progress + self.timeout, self._check)
        self._waiting.append(_Waiting(future, len(packed)))
        if len(self._waiting) == 1:
            # Alone: written now, without waiting for the end of this turn of the loop.
            self._transport.write(b"".join(packed))  # type: ignore[union-attr]
        else:
            self._unsent += packed
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._unsent and not self.closed:
            self._transport.write(b"".join(self._unsent))  # type: ignore[union-attr]
        self._unsent = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.connected = True

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := self._reader.gets()) is not False:
                head = waiting[0]
                head.replies.append(reply)
                head.left -= 1
                if not head.left:
                    waiting.popleft()
                    if not head.future.done():  # not a caller that gave up
                        head.future.set_result(head.replies)
        except redis.exceptions.InvalidResponse as e:  # not RESP: not Redis at the other end
            self.fail(NotRedis(f"it answered {data[:40]!r}: {e}"))
            return
        except IndexError as e:  # a reply no one asked for
            self.fail(redis.exceptions.ConnectionError(f"unexpected data from Redis: {e}"))
            return
        self._progress = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.exceptions.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _check(self) -> None:
        self._timer = None
        if not self._waiting or self.closed:
            return
        assert self.timeout is not None
        due = self._progress + self.timeout
        if self.loop.time() >= due:
            self.fail(redis.exceptions.TimeoutError(f"no reply from Redis for {self.timeout} s"))
        else:
            self._timer = self.loop.call_at(due, self._check)

    def fail(self, exc: Exception) -> None:
        """Fail every waiting command with ``exc`` and close the connection."""
        self.closed = True
        if self.failure is None:
            self.failure = exc
        waiting, self._waiting = self._waiting, collections.deque()
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):  # a loop already closed
                self._transport.close()
