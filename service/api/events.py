"""Real-time events (scope ``events``)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import Controller, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from service.api.bodies import json_body, one_or_batch
from service.api.responses import problems
from service.errors import InvalidRequest
from service.events import Event, timestamp_problem
from service.resolution import resolve_events
from service.runtime import Runtime, runtime
from service.schemas import EventsAccepted


class EventController(Controller):
    """Real-time events (scope ``events``)."""

    path = "/v1"
    opt = {"scope": "events"}  # noqa: RUF012
    tags = ["events"]  # noqa: RUF012

    @post(
        "/events",
        status_code=HTTP_202_ACCEPTED,
        operation_id="postEvents",
        responses=problems(400, 413),
        operation_class=json_body(one_or_batch("Event")),
    )
    async def post_events(
        self,
        data: JSONBody[Event | list[Event]],
        state: State,
    ) -> EventsAccepted:
        """Store one event or a batch durably; 202 only once every event is in the stream.

        Events without a ``timestamp`` get the time they were received; events naming an
        ``identifier`` instead of a ``customer_id`` go to the customer it is linked to. A purchase
        is excluded from the customer's very next recommendations. An ``event_id`` seen before
        (a retry) is acknowledged again but not recorded twice. Impressions and clicks (carrying
        the answer's ``request_id``) are counted per channel and variant; a purchase is attributed
        to the last touch of its item within that touch channel's window (service/attribution.py).

        Each event names a ``customer_id`` or an ``identifier`` (``kind:value``, a known kind and
        a value), and an ``item_id`` unless its type needs none (``store_visit``...); an event
        breaking either, or any bound, is a 400 and nothing of its batch is recorded.
        """
        return await record_events(runtime(state), data)


async def record_events(rt: Runtime, data: Event | list[Event]) -> EventsAccepted:
    """Store one event or a batch (``POST /v1/events``; see ``EventController.post_events``).

    Raises:
        InvalidRequest: an empty or too large batch.
        ValidationException: event times out of range.
    """
    store, settings, tracking = rt.store, rt.settings, rt.tracking
    events = data if isinstance(data, list) else [data]
    if not events:
        raise InvalidRequest("the batch holds no event")
    if len(events) > settings.max_batch_events:
        raise InvalidRequest(
            f"the batch holds {len(events)} events; at most {settings.max_batch_events} allowed"
        )
    now = datetime.now(UTC)
    _check_timestamps(events, now, batch=isinstance(data, list))
    stamped = [e if e.timestamp else msgspec.structs.replace(e, timestamp=now) for e in events]
    resolved = await resolve_events(store, settings.identifier_kinds_set, stamped)
    # A retry is acknowledged again but counts nowhere again: not in the measurement's
    # impressions, clicks and revenue, nor in /metrics (with tracking off, neither exists:
    # no look-up).
    recorded = await store.recorded_before(resolved) if tracking.enabled else set()
    fresh = _first_deliveries(resolved, recorded)
    # Measurement (issue 7): counters and touches ride on the same transaction.
    measure = await tracking.plan(fresh, rt.live_model.version)
    ids = await store.record(resolved, also=measure)
    await store.record_redemptions(fresh)  # offer_redeemed with an offer_id: caps, history
    tracking.ingested(fresh)
    return EventsAccepted(accepted=len(ids), ids=ids)


def _first_deliveries(events: list[Event], recorded: set[str]) -> list[Event]:
    """``events`` less the retries: an ``event_id`` recorded before, or earlier in the batch.

    Two deliveries of one event sent at the same instant may both pass (each read before the
    other was recorded); the stream and the customer's state still get it once.
    """
    seen, first = set(recorded), []
    for e in events:
        if e.event_id:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
        first.append(e)
    return first


def _check_timestamps(events: list[Event], now: datetime, *, batch: bool) -> None:
    """Refuse the whole request when any event's time is out of range, naming each one."""
    errors = [
        {"key": f"${f'[{i}]' if batch else ''}.timestamp", "message": problem, "source": "body"}
        for i, e in enumerate(events)
        if e.timestamp and (problem := timestamp_problem(e.timestamp, now))
    ]
    if errors:
        raise ValidationException(detail="event times out of range", extra=errors)
