"""Measurement at run time: experiment lookup, variant models, served items, event counters.

One ``Tracking`` per app. Nothing here is on a request's critical path that could wait on Redis:
experiment configs are refreshed in the background, served-recommendation counters are buffered
in memory and flushed once a second, and event counters ride on the event batch's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from service import artifact, placements, recommend
from service.attribution import Touch, attribute, parse_windows
from service.errors import StoreUnavailable
from service.events import Event
from service.experiments import Assignment, Experiment, choose
from service.memory import release_free_memory
from service.metrics import Metrics
from service.ranking import FactorModel
from service.schemas import RecommendedItem
from service.settings import Settings
from service.shared_build import shared
from service.store import Store
from service.store.tracking import Increments, add

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
MAX_VARIANT_MODELS = 3
# Store method -> the operation its Redis round trips are counted under. A customer state the
# store's cache answers is no round trip: only the reads from Redis are timed.
TIMED_STORE_CALLS = {
    "read_customer_state": "customer_state",
    **{name: name for name in ("record", "touches", "experiments", "add_served", "daily")},
}


class Tracking:
    """Experiments, variant models, and the counters behind the dashboard."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        """Configure from ``settings``; ``start`` connects it to the store."""
        self.enabled = settings.tracking
        self.metrics = metrics
        self.windows = parse_windows(settings.attribution_windows)
        self.touch_ttl = int(max(w.total_seconds() for w in self.windows.values())) + 86400
        self.model_dir = Path(settings.model_dir)
        self.verify_checksums = settings.verify_checksums
        # Placement -> the name it is counted under (configured ones, else ``other``).
        self.placement_labels = placements.labels(settings.placements)
        self.experiments: list[Experiment] = []
        self._store: Store | None = None
        self._models: dict[str, FactorModel] = {}
        self._failed: set[str] = set()
        self._loading: dict[str, asyncio.Future[FactorModel | None]] = {}
        self._answers: dict[tuple[date, str, str, str | None, bool, str], int] = {}
        self._served_items: dict[date, set[str]] = {}
        # Items this process already wrote to today's served set: never sent again (the set in
        # Redis only grows), so after warm-up a flush carries only counters.
        self._flushed_items: tuple[date, set[str]] = (date.min, set())
        self._task: asyncio.Task[None] | None = None
        self._assignment_counters: dict[tuple[str, str, str], Any] = {}
        self._day: tuple[int, date] = (-1, date.min)

    async def start(self, store: Store) -> None:
        """Time the store's calls, load the experiments and start the background flush."""
        self._store = store
        if not self.enabled:
            return
        self.metrics.time_calls(store, TIMED_STORE_CALLS)
        if store.state_cache is not None:
            self.metrics.watch_state_cache(store.state_cache)
        await self.reload_experiments()
        self._task = asyncio.create_task(self._background())

    async def stop(self) -> None:
        """Stop the background task and flush what is buffered."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.flush()

    async def reload_experiments(self) -> None:
        """Read the experiment configs now (the admin API calls this after a change)."""
        if self._store is None:
            return
        try:
            self.experiments = await self._store.experiments()
        except StoreUnavailable:
            log.warning("experiments not refreshed: Redis unavailable; keeping the last ones")

    def assignment(
        self, channel: str, customer_id: str, placement: str | None = None
    ) -> Assignment | None:
        """The experiment variant for this customer on this channel and placement, if one is
        running."""
        if not self.enabled or not self.experiments:
            return None
        return choose(self.experiments, channel, customer_id, datetime.now(UTC), placement)

    async def model_for(self, assignment: Assignment | None, live: FactorModel) -> FactorModel:
        """The model a variant pins, loaded once off the event loop; the live one otherwise."""
        version = assignment.variant.model_version if assignment else None
        if version is None or version == live.version or version in self._failed:
            return live
        if (model := self._models.get(version)) is not None:
            return model
        model = await shared(self._loading, version, lambda: asyncio.to_thread(self._load, version))
        return model or live

    def served(
        self,
        query: recommend.Query,
        model_version: str,
        assignment: Assignment | None,
        items: Sequence[RecommendedItem],
        fallback: bool,
    ) -> None:
        """Count one answer and the items it showed (buffered; flushed in the background)."""
        if not self.enabled:
            return
        today, channel = self._today(), query.channel
        placement = self.placement_labels.get(query.placement, placements.OTHER)
        self.metrics.placement_answers.inc(("recommendations", channel, placement))
        # Only a tuple-keyed count here (the hot path); flush() expands it into counter fields.
        arm = assignment.arm if assignment else None
        key = (today, channel, model_version, arm, fallback, placement)
        self._answers[key] = self._answers.get(key, 0) + 1
        self._served_items.setdefault(today, set()).update([i.item_id for i in items])
        if fallback:
            self.metrics.fallbacks.labels(channel).inc()
        if assignment:
            labels = (assignment.experiment_id, assignment.variant.name, channel)
            counter = self._assignment_counters.get(labels)
            if counter is None:
                # labels() takes a lock and builds a tuple each call: resolve each series once.
                counter = self._assignment_counters[labels] = self.metrics.assignments.labels(
                    *labels
                )
            counter.inc()

    def similar_served(self, channel: str, placement: str | None) -> None:
        """Count one similar-items answer per placement for ``/metrics`` (the daily counters'
        ``requests`` count recommendations; the slot's impressions come back as events)."""
        if self.enabled:
            label = self.placement_labels.get(placement, placements.OTHER)
            self.metrics.placement_answers.inc(("similar", channel, label))

    def _today(self) -> date:
        """Today's UTC date, computed again only when the day number changes."""
        day = int(time.time() // 86_400)
        if day != self._day[0]:
            self._day = (day, datetime.now(UTC).date())
        return self._day[1]

    async def flush(self) -> None:
        """Write the buffered served counters to Redis now."""
        if self._store is None or not (self._answers or self._served_items):
            return
        answers, items = self._answers, self._fresh(self._served_items)
        self._answers, self._served_items = {}, {}
        served: Increments = {}
        for (day, channel, version, arm, fallback, placement), n in answers.items():
            dims = _dims(arm, version, placement)
            add(served, day, dims, channel, requests=n, fallbacks=n * fallback)
        await self._store.add_served(served, items)
        self._remember(items)

    async def plan(
        self, events: Sequence[Event], live_version: str | None
    ) -> Callable[[Any], None] | None:
        """The measurement writes of an event batch, to queue on its transaction.

        Impressions and clicks become touches and counters; a purchase attributed to a touch
        (``attribution.attribute``) adds a conversion and its revenue to that touch's variant,
        model and channel. Reads the touches of purchasing customers first (one round trip, only
        for batches with a purchase).
        """
        if not self.enabled or self._store is None:
            return None
        buyers = {e.customer_id for e in events if e.event_type == "purchase"}
        known = await self._store.touches(buyers) if buyers else {}
        new: dict[str, list[Touch]] = {}
        increments: Increments = {}
        for event in events:
            if event.event_type in ("impression", "click"):
                touch = self._touch(event, live_version)
                new.setdefault(event.customer_id, []).insert(0, touch)
                known.setdefault(event.customer_id, []).insert(0, touch)
                dims = _dims(touch.arm, touch.model_version, touch.placement)
                add(increments, _day(event), dims, event.channel, **{event.event_type + "s": 1})
            elif event.event_type == "purchase" and event.item_id and event.timestamp:
                found = attribute(
                    event.item_id, event.timestamp, known.get(event.customer_id, []), self.windows
                )
                if found is not None:
                    revenue = (event.price or 0.0) * event.quantity
                    dims = _dims(found.arm, found.model_version, found.placement)
                    add(
                        increments,
                        _day(event),
                        dims,
                        found.channel,
                        conversions=1,
                        revenue=revenue,
                        revenue_sq=revenue * revenue,
                    )
        if not new and not increments:
            return None
        store = self._store

        def queue(pipe: Any) -> None:
            store.queue_touches(pipe, new, self.touch_ttl)
            store.queue_counters(pipe, increments)

        return queue

    def _fresh(self, items: dict[date, set[str]]) -> dict[date, set[str]]:
        """``items`` less those this process already wrote today."""
        day, done = self._flushed_items
        return {d: ids - done if d == day else ids for d, ids in items.items()}

    def _remember(self, written: dict[date, set[str]]) -> None:
        """Note items written to Redis; only the latest day is kept in memory."""
        for written_day, ids in sorted(written.items()):
            day, done = self._flushed_items
            if written_day > day:
                self._flushed_items = (written_day, set(ids))
            elif written_day == day:
                done |= ids

    def ingested(self, events: Sequence[Event]) -> None:
        """Count acknowledged events for ``/metrics``."""
        if not self.enabled:
            return
        for event in events:
            self.metrics.events.labels(event.event_type, event.channel).inc()
            if event.placement is not None:
                label = self.placement_labels.get(event.placement, placements.OTHER)
                self.metrics.placement_events.inc((event.event_type, event.channel, label))

    def _touch(self, event: Event, live_version: str | None) -> Touch:
        assert event.item_id is not None and event.timestamp is not None  # validated upstream
        chosen = choose(
            self.experiments, event.channel, event.customer_id, event.timestamp, event.placement
        )
        pinned = chosen.variant.model_version if chosen else None
        return Touch(
            item_id=event.item_id,
            channel=event.channel,
            ts=event.timestamp.timestamp(),
            kind=event.event_type,
            request_id=event.request_id,
            arm=chosen.arm if chosen else None,
            model_version=pinned or live_version,
            placement=(
                self.placement_labels.get(event.placement, placements.OTHER)
                if event.placement
                else None
            ),
        )

    async def _background(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
                await self.reload_experiments()
            except StoreUnavailable:
                log.warning("served counters not flushed: Redis unavailable (they are dropped)")
            except Exception:  # the loop must survive anything; the next round may succeed
                log.exception("tracking flush failed")

    def _load(self, version: str) -> FactorModel | None:
        started = time.perf_counter()
        try:
            path = artifact.resolve(self.model_dir, version)
            model = FactorModel(artifact.load(path, verify_checksums=self.verify_checksums))
            release_free_memory()
        except Exception as e:  # a bad pin must not fail requests: the live model answers
            log.error("variant model %s not loaded, serving the live model: %s", version, e)
            self._failed.add(version)
            return None
        if len(self._models) >= MAX_VARIANT_MODELS:
            self._models.pop(next(iter(self._models)))
        self._models[version] = model
        log.info("variant model %s loaded in %.2fs", version, time.perf_counter() - started)
        return model


def rank_for_variant(
    model: FactorModel,
    customer_id: str | None,
    query: recommend.Query,
    ctx: recommend.Context,
    assignment: Assignment | None,
) -> recommend.Ranked:
    """``recommend.for_customer``, or the channel's popular items for a ``popular`` variant."""
    if assignment is None or assignment.variant.ranking == "model":
        return recommend.for_customer(model, customer_id, query, ctx)
    return recommend.Ranked(items=recommend.popular_items(model, customer_id, query, ctx))


def _dims(arm: str | None, model_version: str | None, placement: str | None) -> list[str]:
    dims = ["all"]
    if arm:
        dims.append(arm)
    if model_version:
        dims.append(f"model:{model_version}")
    # No placement given: counted under ``all`` (and the arm and model) only.
    if placement and placement != placements.NONE:
        dims.append(f"placement:{placement}")
    return dims


def _day(event: Event) -> date:
    return (event.timestamp or datetime.now(UTC)).astimezone(UTC).date()
