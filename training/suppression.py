"""Erased customers: finding the suppression files that lie with the event files, and dropping
those customers' events from before their erasure before anything is fitted.

A suppression file (``_suppressions.json``, written by ``export-events``) holds the SHA-256 of
every erased customer id with the time of their latest erasure, and the time of the list
(``as_of``): ``{"as_of": "<time>", "erased_at": {"<hex>": "<time>", ...}}``. Files of the first
format, ``{"sha256": ["<hex>", ...]}``, carry no times: those customers lose every event, as they
always did, so nothing erased before resurfaces. The files read are:

- the one ``--suppressions`` names, which must exist;
- every ``_suppressions.json`` under a folder given to ``--events``, at any depth;
- for every event file, the one in its folder and, while that folder is a partition
  (``date=2026-09-02``), in the folder above it: the exporter's layout, so a part file or a
  partition given alone is still filtered.

Reading more files than needed can only drop more events; missing one would train on an erased
customer, so a malformed file is an error, never skipped.

Erasure removes the past, not the future: a customer who comes back under the same id is learnt
from their later events. An event of an erased customer is kept only when it is after the
erasure by both of its times:

- when it was recorded (``recorded_at``, the stream entry id, on the clock of the erasure time):
  an event sent before the erasure whose client clock runs ahead is still dropped;
- its own ``timestamp``: an event sent after the erasure but dated before it (a till that was
  offline syncing late) is about the erased past, and is dropped too.

An event without a recorded time (a file from elsewhere) is kept only when its timestamp is
more than ``CLOCK_SKEW`` (how far ahead the service lets a client clock run) after the erasure.
A returning customer's events in the first moments after the erasure may be lost to a slow client
clock; nothing from before it is kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from service.events import CLOCK_SKEW
from service.store.erasure import customer_hash
from training.errors import TrainingError
from training.export import SUPPRESSIONS_FILE
from training.loaders import event_files

log = logging.getLogger(__name__)

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
# The erasure time of a customer of the first format's files: after every event.
FOREVER = math.inf
_MICROS = 1_000_000
# Far after any event, and far enough from int64's end for the sums below.
_FOREVER_US = 2**62


class Suppressions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The content of a suppression file: one of, or both, lists."""

    sha256: list[Sha256] | None = None  # erased, no time known: every event is dropped
    erased_at: dict[Sha256, UtcTime] | None = None
    as_of: UtcTime | None = None


class Erased(msgspec.Struct, frozen=True):
    """The erased customers of the suppression files read."""

    # SHA-256 of the id -> the epoch second of the latest erasure (``FOREVER``: unknown).
    times: dict[str, float]
    # The latest ``as_of`` of the files: an erasure from before it is in ``times``. None: no file
    # said (the service then treats every erased customer as a stranger to the model).
    as_of: datetime | None = None


def suppression_files(events: Iterable[str | Path], named: str | Path | None = None) -> list[Path]:
    """The suppression files that apply to the event paths ``events`` (see the module's rule).

    Raises:
        TrainingError: ``named`` does not exist.
    """
    found: list[Path] = []
    if named is not None:
        if not Path(named).is_file():
            raise TrainingError(f"{named}: no such suppressions file")
        found.append(Path(named))
    for path in map(Path, events):
        if path.is_dir():
            found += sorted(path.rglob(SUPPRESSIONS_FILE))
    for file in event_files(events):
        folder = file.parent
        found.append(folder / SUPPRESSIONS_FILE)
        while "=" in folder.name:
            folder = folder.parent
            found.append(folder / SUPPRESSIONS_FILE)
    unique = dict.fromkeys(p.resolve() for p in found if p.is_file())
    return list(unique)


def read_suppressions(files: Iterable[Path]) -> Erased:
    """The erased customers in ``files``; a customer in several, at their latest erasure.

    Raises:
        TrainingError: a file is not a suppression file (the message names it).
    """
    times: dict[str, float] = {}
    as_of: datetime | None = None
    for file in files:
        found = _read(file)
        for hashed, when in (found.erased_at or {}).items():
            times[hashed] = max(times.get(hashed, -math.inf), when.timestamp())
        for hashed in found.sha256 or []:
            times[hashed] = FOREVER
        if found.as_of is not None and (as_of is None or found.as_of > as_of):
            # The list only grows and its times only move forward: the latest snapshot holds
            # every erasure before it.
            as_of = found.as_of
        log.info("read %s", file)
    return Erased(times=times, as_of=as_of)


def _read(file: Path) -> Suppressions:
    expected = '{"as_of": "<time>", "erased_at": {"<hex>": "<time>", ...}}'
    try:
        found = msgspec.json.decode(file.read_bytes(), type=Suppressions)
    except (msgspec.DecodeError, OSError) as e:
        raise TrainingError(f"{file}: not a suppressions file ({e}); expected {expected}") from e
    if found.sha256 is None and found.erased_at is None:
        raise TrainingError(f"{file}: not a suppressions file (no list); expected {expected}")
    return found


def drop_suppressed(events: pa.Table, erased: Erased) -> pa.Table:
    """``events`` without erased customers' events from before their erasure (module docstring).

    Args:
        events: a table of ``EVENTS_SCHEMA`` (one without ``recorded_at`` counts as unrecorded).
        erased: the erased customers (``read_suppressions``).
    """
    if not erased.times:
        return events
    customers = pc.unique(events["customer_id"]).to_pylist()
    found = {c: t for c in customers if (t := erased.times.get(customer_hash(c))) is not None}
    if not found:
        return events
    # Per event, its customer's erasure time in microseconds (null: not erased).
    at = pc.index_in(events["customer_id"], value_set=pa.array(list(found), pa.string()))
    erasure = pc.take(pa.array([_micros(t) for t in found.values()], pa.int64()), at)
    stamp = pc.cast(events["timestamp"], pa.int64())
    later = pc.greater(stamp, erasure)
    unrecorded = pc.greater(stamp, pc.add(erasure, int(CLOCK_SKEW.total_seconds()) * _MICROS))
    if "recorded_at" in events.column_names:
        recorded = pc.greater(pc.cast(events["recorded_at"], pa.int64()), erasure)
        after = pc.and_(later, pc.coalesce(recorded, unrecorded))
    else:
        after = pc.and_(later, unrecorded)
    kept = events.filter(pc.or_kleene(pc.is_null(erasure), after))
    log.info(
        "dropped %d events of %d erased customer(s): those from before their erasure",
        events.num_rows - kept.num_rows,
        len(found),
    )
    return kept


def _micros(epoch: float) -> int:
    return _FOREVER_US if math.isinf(epoch) else round(epoch * _MICROS)
