"""At most two exports run at once per worker; a third is a 429, and every way an export ends
gives its slot back.

The app is called as an ASGI server would, on the test's event loop, so that exports really run
at the same time and a client can stall, leave or fail mid-stream (the test clients answer one
request at a time, to the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis
from litestar import Litestar
from litestar.testing import TestClient

from service.api.offers import EXPORT_SLOTS, _slots
from service.app import create_app
from service.settings import Settings
from service.store.keys import Keys
from tests.conftest import ADMIN_KEY
from tests.test_offers import consent, put_offer

BODY = json.dumps({"audience": {"customer_ids": ["u0"]}, "items": 0, "record": False}).encode()


@dataclass(eq=False)
class Client:
    """One export request's client. It can stall before the response starts (``start_gate``)
    or at its first line (``line_gate``) until the gate opens, fail when sending a message of
    type ``fail`` (the connection is gone), or leave mid-stream (``leave``; also set once the
    response is complete, when a server answers "disconnect")."""

    start_gate: asyncio.Event | None = None
    line_gate: asyncio.Event | None = None
    fail: str | None = None
    leave: asyncio.Event = field(default_factory=asyncio.Event)
    at_start: asyncio.Event = field(default_factory=asyncio.Event)
    at_line: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    lines: list[bytes] = field(default_factory=list)
    asked: bool = False

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind, body = message["type"], message.get("body")
        if kind == "http.response.start":
            self.status = message["status"]
            await self._reach(self.at_start, self.start_gate)
        elif body and message.get("more_body"):
            await self._reach(self.at_line, self.line_gate)
        if kind == self.fail:
            raise OSError("the client is gone")
        if body:
            self.lines.append(body)
        if kind == "http.response.body" and not message.get("more_body"):
            self.leave.set()

    async def _reach(self, point: asyncio.Event, gate: asyncio.Event | None) -> None:
        point.set()
        if gate is not None:
            await gate.wait()


async def export(app: Litestar, client: Client) -> None:
    headers = [
        (b"host", b"t"),
        (b"authorization", f"Bearer {ADMIN_KEY}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/exports/offers", "raw_path": b"/v1/exports/offers",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    # A failure after the response started reaches the server (which logs it, and closes).
    with contextlib.suppress(Exception):
        await app(scope, client.receive, client.send)  # type: ignore[arg-type]


def free_slots(app: Litestar) -> int:
    return _slots(app.state).free


def test_a_third_export_is_refused_and_every_ending_frees_its_slot(
    client: TestClient, settings: Settings, redis_url: str, key_prefix: str
) -> None:
    consent(client, "u0", email=True)
    put_offer(client, "o1")

    async def main() -> None:
        app = create_app(settings)
        async with app.lifespan():
            # Two exports whose responses have not started yet hold both slots: a third is a
            # 429 at once (the slot was taken when the stream started: a third one ran).
            first, second = (Client(start_gate=asyncio.Event()) for _ in range(EXPORT_SLOTS))
            running = {c: asyncio.create_task(export(app, c)) for c in (first, second)}
            await asyncio.wait_for(first.at_start.wait(), 5)
            await asyncio.wait_for(second.at_start.wait(), 5)
            refused = Client()
            await asyncio.wait_for(export(app, refused), 5)
            assert refused.status == 429
            assert free_slots(app) == 0
            # The first one's client is gone before the response starts: its slot is free.
            first.fail = "http.response.start"
            first.start_gate.set()  # type: ignore[union-attr]
            await asyncio.wait_for(running[first], 5)
            assert free_slots(app) == 1
            # The second one streams and stalls at its first line; a third takes the slot.
            second.line_gate = asyncio.Event()
            second.start_gate.set()  # type: ignore[union-attr]
            await asyncio.wait_for(second.at_line.wait(), 5)
            third = Client(line_gate=asyncio.Event())
            running[third] = asyncio.create_task(export(app, third))
            await asyncio.wait_for(third.at_line.wait(), 5)
            assert free_slots(app) == 0
            # The second one's client leaves mid-stream, the third's connection fails.
            second.leave.set()
            await asyncio.wait_for(running[second], 5)
            assert free_slots(app) == 1
            third.fail = "http.response.body"
            third.line_gate.set()  # type: ignore[union-attr]
            await asyncio.wait_for(running[third], 5)
            assert free_slots(app) == 2
            # An export that fails in the middle (Redis refuses to read a corrupt key).
            r = redis.Redis.from_url(redis_url)
            r.set(Keys(key_prefix).offer_contacts("u0"), b"not a sorted set")
            failed = Client()
            await asyncio.wait_for(export(app, failed), 5)
            assert (failed.status, failed.lines, free_slots(app)) == (200, [], 2)
            r.delete(Keys(key_prefix).offer_contacts("u0"))
            r.close()
            # Two at once run to the end.
            done = [Client(), Client()]
            await asyncio.wait_for(asyncio.gather(*(export(app, c) for c in done)), 10)
            assert [(c.status, len(c.lines)) for c in done] == [(200, 1), (200, 1)]
            assert free_slots(app) == 2

    asyncio.run(main())
