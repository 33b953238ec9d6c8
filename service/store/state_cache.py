"""Customer states kept in the worker for as long as Redis says they have not changed.

Every personalised answer starts with one round trip for the customer's state (recent events,
purchases, cart, consent). Under load, keeping states saves a worker 0.11-0.14 of a
recommendation's CPU on the shared connection (100,000 items, 8 paired rounds: 0.864-0.894 of the
CPU per request; 0.787-0.823 when reads went through redis-py).
The state must still be current: consent is checked at request time, and an event posted to any
worker must shape the next answer. Off by default (``RECO_STATE_CACHE_CUSTOMERS``): a saturated
worker's p99 grows, see docs/serving.md.

Redis's server-assisted client-side caching keeps it current. This cache's own connection asks
Redis (``CLIENT TRACKING on REDIRECT <itself> BCAST PREFIX <customer keys>``) to announce every
change to a customer's keys (writes, deletions, expiry, erasure) on ``__redis__:invalidate``.
Redis sends the announcement before it answers the command that made the change, and this
connection reads it in the event loop's I/O callback (``data_received``), which runs before the
tasks of the requests that arrive in the same or a later turn of the loop. So a request that
follows a change, on any worker, finds that customer's states gone and reads Redis again.

- A read in flight when its customer is announced is not kept: it may predate the change.
- A lost connection (or one that leaves a PING unanswered for ``stale_seconds``) drops every
  state and turns the cache off until the connection is back and subscribed again; so does a
  flush of the database. While off, every read goes to Redis, as without the cache.
- A server that refuses tracking (Redis before 6, an ACL without ``CLIENT``) leaves it off, logged.

Only the keys a state is read from (``STATE_PARTS``) drop it: the offers' contact log and the
lifetime stats change on every offer and event and would empty the cache for nothing.
A state also says when the customer was erased (the suppression list, which holds hashes,
not ids): an erasure, rare, drops every state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import hiredis
import msgspec

from service.events import Event
from service.state import CartLine, Consent, CustomerState
from service.store.keys import Keys
from service.store.wire import Endpoint, pack

log = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"
# The suffixes of the keys a customer's state is read from (keys.Keys' recent, bought, cart,
# consent).
STATE_PARTS = frozenset({b"recent", b"bought", b"cart", b"consent"})


class _Kept(msgspec.Struct, frozen=True, gc=False):
    """A kept state, in parts the cyclic garbage collector never visits.

    The collector's pauses grew with every object the cache held: with 5,000 customers' states
    kept as they are served (each a state, its list, set and consent, all tracked), a full
    collection of a loaded worker took 20-60 ms. This struct, ``Event``, ``CartLine`` and
    ``Consent`` are ``gc=False``, so the tuples and the cart dict holding them untrack themselves.
    """

    reads: int  # the newest events read (-1: all)
    earliest: float | None  # the time of the oldest recent event (an epoch second)
    recent: tuple[Event, ...]
    bought: tuple[str, ...]
    cart: dict[str, CartLine]
    consent: Consent
    erased_at: float | None

    @classmethod
    def of(cls, state: CustomerState, reads: int) -> _Kept:
        times = [e.timestamp.timestamp() for e in state.recent if e.timestamp is not None]
        return cls(
            reads, min(times) if times else None, tuple(state.recent), tuple(state.bought),
            state.cart, state.consent, state.erased_at,
        )  # fmt: skip

    def state(self) -> CustomerState:
        return CustomerState(
            recent=list(self.recent), bought=frozenset(self.bought), cart=self.cart,
            consent=self.consent, erased_at=self.erased_at,
        )  # fmt: skip


class StateCache:
    """Customer states by (customer id, number of recent events read), dropped on change."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        max_customers: int = 10_000,
        ping_seconds: float = 1.0,
        stale_seconds: float = 3.0,
        retry_seconds: float = 1.0,
    ) -> None:
        """Listen to the Redis at ``url`` for changes to the customer keys of ``keys``.

        Args:
            max_customers: the most customers kept; the least recently used go first.
            ping_seconds: how often the connection is checked.
            stale_seconds: a PING unanswered this long counts as a lost connection.
            retry_seconds: the first wait before reconnecting (doubling up to 30 s).
        """
        self.url = url
        self.max_customers = max_customers
        self.ping_seconds = ping_seconds
        self.stale_seconds = stale_seconds
        self.retry_seconds = retry_seconds
        # Every customer key starts with this; the customer id follows, up to "}:".
        self._prefix = keys.customer_prefix("").removesuffix("}:").encode()
        # A state also says when its customer was erased: an erasure writes this list,
        # which names no customer (hashes), so a change to it drops every state. Erasures are rare.
        self._suppressed = keys.suppressed.encode()
        # The connection's client name (no spaces allowed there).
        self._name = b"reco-state-cache:" + "_".join(keys.prefix.split()).encode()
        # By customer: one state, read with one number of events (a route reads one number).
        self._states: OrderedDict[str, _Kept] = OrderedDict()
        # Reads in flight per customer, and the customers announced while one was.
        self._reading: dict[str, int] = {}
        self._changed: set[str] = set()
        # Bumped whenever everything is dropped: a read begun before is not kept.
        self._epoch = 0
        self._listener: _Listener | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._subscribed = asyncio.Event()
        self.hits = 0
        self.misses = 0

    @property
    def active(self) -> bool:
        """Whether states are kept now (subscribed to a live connection)."""
        return self._listener is not None and self._listener.subscribed

    def start(self) -> None:
        """Connect and subscribe in the background (in the running loop), and keep the
        connection up; until it is subscribed, every read goes to Redis."""
        if self.max_customers > 0 and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def wait_active(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the cache to be active; return ``active``."""
        if self._task is not None and not self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self.active

    async def aclose(self) -> None:
        """Stop listening and drop everything."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop_all()

    def get(self, customer_id: str, recent: int, oldest: float) -> CustomerState | None:
        """The kept state of ``customer_id`` read with ``recent`` events, events before
        ``oldest`` (an epoch second) left out; None when none is kept."""
        if not self.active:
            return None
        kept = self._states.get(customer_id)
        if kept is None or kept.reads != recent:
            self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end(customer_id)  # now the most recently used
        if kept.earliest is not None and kept.earliest < oldest:
            recent_events = [
                e for e in kept.recent if e.timestamp is None or e.timestamp.timestamp() >= oldest
            ]
            kept = _Kept.of(msgspec.structs.replace(kept.state(), recent=recent_events), recent)
            self._states[customer_id] = kept
        return kept.state()

    def reading(self, customer_id: str) -> int:
        """Note a read of ``customer_id`` from Redis begun; give its result and this ticket to
        ``done`` (also when it fails)."""
        self._reading[customer_id] = self._reading.get(customer_id, 0) + 1
        return self._epoch

    def done(self, ticket: int, customer_id: str, recent: int, state: CustomerState | None) -> None:
        """The read of ``reading`` finished with ``state`` (None: it failed); keep the state
        unless a change of the customer may have been announced since the read began."""
        left = self._reading.pop(customer_id, 1) - 1
        if left:
            self._reading[customer_id] = left
        changed = customer_id in self._changed
        if not left:
            self._changed.discard(customer_id)
        if state is None or changed or ticket != self._epoch or not self.active:
            return
        if customer_id not in self._states and len(self._states) >= self.max_customers:
            self._states.popitem(last=False)  # the least recently used
        self._states[customer_id] = _Kept.of(state, recent)

    def __len__(self) -> int:
        return len(self._states)

    def _announced(self, keys: list[bytes] | None) -> None:
        """Redis announced changes to ``keys`` (None: the database was flushed)."""
        if keys is None or self._suppressed in keys:
            self._drop_all()
            return
        prefix = self._prefix
        for key in keys:
            if not key.startswith(prefix):
                continue
            end = key.rfind(b"}:")
            if end < len(prefix) or key[end + 2 :] not in STATE_PARTS:
                continue
            customer_id = key[len(prefix) : end].decode("utf-8", "replace")
            self._states.pop(customer_id, None)
            if customer_id in self._reading:
                self._changed.add(customer_id)

    def _drop_all(self) -> None:
        self._states.clear()
        self._epoch += 1  # and the reads in flight are not kept

    async def _run(self) -> None:
        """Keep a subscribed connection; after losing one, drop everything and reconnect."""
        wait = self.retry_seconds
        while not self._closed:
            listener = None
            try:
                listener = await self._connect()
                self._listener = listener
                await listener.subscribed_future
                self._drop_all()  # what changed while unsubscribed was never announced
                listener.subscribed = True
                self._subscribed.set()
                wait = self.retry_seconds
                await listener.watch(self.ping_seconds, self.stale_seconds)
            except asyncio.CancelledError:
                raise
            except _Refused as e:
                log.warning("customer state cache off: Redis refused tracking (%s)", e)
                break
            except (TimeoutError, OSError, hiredis.ProtocolError) as e:
                log.warning("customer state cache paused: %s: %s", type(e).__name__, e)
            finally:
                if listener is not None:
                    listener.close()
                self._listener = None
                self._subscribed.clear()
                self._drop_all()
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)

    async def _connect(self) -> _Listener:
        endpoint = msgspec.structs.replace(
            Endpoint.from_url(self.url), connect_timeout=self.stale_seconds
        )
        prefixes = (self._prefix, self._suppressed)
        listener = _Listener(self._name, prefixes, self._announced, endpoint)
        await endpoint.open(lambda: listener)
        return listener


class _Refused(Exception):
    """Redis answered the set-up with an error that trying again will not change."""


# Errors that pass: the cache connects again later.
_TRANSIENT = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")


class _Listener(asyncio.Protocol):
    """One connection: authenticated, tracking redirected to itself, subscribed."""

    def __init__(
        self,
        name: bytes,
        prefixes: tuple[bytes, ...],
        announced: Callable[[list[bytes] | None], None],
        endpoint: Endpoint,
    ) -> None:
        self._name = name
        self._prefixes = prefixes
        self._announced = announced
        self._endpoint = endpoint
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.subscribed_future: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.subscribed = False
        # The set-up's replies still expected, in order: what each one is.
        self._expected: list[str] = []
        self._pings = 0  # PINGs sent and not answered yet
        self._answered = 0  # when the last PONG came (loop time)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # Authenticated and named, so that operators (and the tests) can tell it among the
        # clients.
        for command in self._endpoint.hello(client_name=self._name.decode()):
            self._send(*command)
            self._expected.append(str(command[0]).lower())
        self._send(b"CLIENT", b"ID")
        self._expected.append("id")

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                self._handle(reply)
        except (hiredis.ProtocolError, _Refused, ConnectionError) as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            if reply[1] == CHANNEL:
                self._announced(reply[2])
            return
        if isinstance(reply, list) and reply and reply[0] == b"pong":
            self._pings = 0
            self._answered = asyncio.get_running_loop().time()
            return
        expected = self._expected.pop(0) if self._expected else "?"
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith(_TRANSIENT):  # a restarted Redis still loading its data
                raise ConnectionError(f"{expected}: {reply}")
            raise _Refused(f"{expected}: {reply}")
        if expected == "id":
            prefixes = [part for p in self._prefixes for part in (b"PREFIX", p)]
            self._send(
                b"CLIENT", b"TRACKING", b"on", b"REDIRECT", str(reply).encode(), b"BCAST",
                *prefixes,
            )  # fmt: skip
            self._send(b"SUBSCRIBE", CHANNEL)
            self._expected += ["tracking", "subscribe"]
        elif expected == "subscribe" and not self.subscribed_future.done():
            self._answered = asyncio.get_running_loop().time()
            self.subscribed_future.set_result(None)

    async def watch(self, ping_seconds: float, stale_seconds: float) -> None:
        """PING every ``ping_seconds`` until the connection is lost or a PING stays unanswered
        for ``stale_seconds`` (raises ``ConnectionError`` then)."""
        loop = asyncio.get_running_loop()
        while not self.lost.done():
            if self._pings and loop.time() - self._answered > stale_seconds:
                raise ConnectionError(f"no answer to PING for {stale_seconds} s")
            self._send(b"PING")
            self._pings += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), ping_seconds)
        raise self.lost.exception() or ConnectionError("connection closed")  # type: ignore[misc]

    def close(self) -> None:
        self.subscribed = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self.subscribed:  # whatever changes from now on goes unannounced: drop everything
            self.subscribed = False
            self._announced(None)
        for future in (self.subscribed_future, self.lost):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning for the other
        if self._transport is not None:
            self._transport.close()

    def _send(self, *parts: Any) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(pack(parts))
