"""Drain the service's event stream into date-partitioned Parquet, each event exactly once.

``python -m training export-events --redis-url URL --out DIR``. Safe to run repeatedly and
concurrently (each process is its own consumer of one consumer group) and across crashes:

1. a batch is read with XREADGROUP (so it is pending, not lost, until acknowledged);
2. a marker naming the batch's files and entry ids is written to Redis;
3. each file is written to a temporary name, fsynced and renamed into ``date=YYYY-MM-DD/``;
4. the entries are acknowledged and the marker removed in one transaction.

After a crash, a marker whose files all exist is finished (acknowledged); a marker with missing
files has its files removed and the entries are exported again; entries pending on a consumer
idle for longer than ``claim_idle_seconds`` are claimed. Events of erased customers, and of
customers without consent to personalisation, are dropped; the erasure list, each erased
customer's hash with the time of their latest erasure, is written next to the data
(``_suppressions.json``) for the training job, which drops their events up to that time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from service.artifact import chmod_as_created
from service.events import Event, event_msgpack_decoder, msgpack_encoder
from service.state import Consent, consent_decoder
from service.store.erasure import erasure_time
from service.store.keys import Keys
from training.loaders import EVENTS_SCHEMA

log = logging.getLogger(__name__)

SUPPRESSIONS_FILE = "_suppressions.json"
# The events' columns, then the stream entry id: the loaders read it back as ``recorded_at``.
EXPORT_SCHEMA = pa.schema([f for f in EVENTS_SCHEMA if f.name != "recorded_at"]).append(
    pa.field("stream_id", pa.string(), nullable=False)
)


class Marker(msgspec.Struct, frozen=True, kw_only=True):
    """A batch being written: its files and entry ids, so a crash can be finished or undone."""

    consumer: str
    created: float
    files: list[str]
    ids: list[str]


class ExportReport(msgspec.Struct, kw_only=True):
    """What one run did."""

    exported: int = 0
    dropped: int = 0
    files: int = 0
    recovered_batches: int = 0


class Exporter:
    """One consumer of the ``exporter`` consumer group on the service's event stream."""

    def __init__(
        self,
        client: redis.Redis,
        out_dir: str | Path,
        *,
        prefix: str = "reco",
        group: str = "exporter",
        consumer: str | None = None,
        batch: int = 5000,
        claim_idle_seconds: float = 60.0,
        default_personalisation: bool = True,
        on_file_written: Callable[[Path], None] | None = None,
    ) -> None:
        """Prepare; nothing is read until ``run``. ``on_file_written`` is a test hook."""
        self.client = client
        self.out = Path(out_dir)
        self.keys = Keys(prefix)
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.default_personalisation = default_personalisation
        self.on_file_written = on_file_written

    def run(self) -> ExportReport:
        """Recover, then export everything pending and new; returns when the stream is drained."""
        report = ExportReport()
        self.out.mkdir(parents=True, exist_ok=True)
        self._ensure_group()
        report.recovered_batches = self._recover()
        self.client.xautoclaim(
            self.keys.events, self.group, self.consumer, self.claim_idle_ms, count=self.batch
        )
        for start in ("0", ">"):  # first what is pending on this consumer, then new entries
            while entries := self._read(start):
                self._export_batch(entries, report)
        self._write_suppressions()
        self._trim()
        return report

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.events, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _read(self, start: str) -> list[tuple[str, bytes]]:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.keys.events: start}, count=self.batch
        )
        entries = reply[0][1] if reply else []
        # Pending entries deleted from the stream (erasure) come back with no fields: ack them.
        gone = [i for i, fields in entries if not fields]
        if gone:
            self.client.xack(self.keys.events, self.group, *gone)
        return [(_text(i), fields[b"e"]) for i, fields in entries if fields]

    def _export_batch(self, entries: list[tuple[str, bytes]], report: ExportReport) -> None:
        ids = [i for i, _ in entries]
        events = self._keep(entries, report)
        by_day: dict[str, list[tuple[str, Event]]] = {}
        for entry_id, event in events:
            assert event.timestamp is not None
            by_day.setdefault(event.timestamp.strftime("%Y-%m-%d"), []).append((entry_id, event))
        files = {
            day: self.out / f"date={day}" / f"part-{rows[0][0]}-{rows[-1][0]}.parquet"
            for day, rows in by_day.items()
        }
        marker_id = f"{ids[0]}..{ids[-1]}"
        marker = Marker(
            consumer=self.consumer,
            created=time.time(),
            files=[str(f) for f in files.values()],
            ids=ids,
        )
        self.client.hset(self.keys.export_markers, marker_id, msgpack_encoder.encode(marker))
        for day, rows in by_day.items():
            _write_parquet(files[day], rows)
            if self.on_file_written:
                self.on_file_written(files[day])
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.events, self.group, *ids)
        pipe.hdel(self.keys.export_markers, marker_id)
        pipe.execute()
        report.exported += len(events)
        report.files += len(files)
        log.info("exported %d events into %d file(s)", len(events), len(files))

    def _keep(
        self, entries: list[tuple[str, bytes]], report: ExportReport
    ) -> list[tuple[str, Event]]:
        """Decoded events, without erased customers and customers who refused personalisation."""
        decoded = []
        for entry_id, payload in entries:
            try:
                decoded.append((entry_id, event_msgpack_decoder.decode(payload)))
            except msgspec.DecodeError:
                log.error("stream entry %s does not decode; dropped", entry_id)
                report.dropped += 1
        customers = sorted({e.customer_id for _, e in decoded if e.customer_id})
        refused = self._refused_personalisation(customers)
        kept = [(i, e) for i, e in decoded if e.customer_id not in refused]
        report.dropped += len(decoded) - len(kept)
        return kept

    def _refused_personalisation(self, customers: list[str]) -> set[str]:
        if not customers:
            return set()
        raw = self.client.mget([self.keys.consent(c) for c in customers])
        # A customer with no consent on record has the default's: refused when it is false.
        return {
            c
            for c, r in zip(customers, raw, strict=True)
            if not (consent_decoder.decode(r) if r else Consent()).allows_personalisation(
                self.default_personalisation
            )
        }

    def _recover(self) -> int:
        """Finish or undo batches left by crashed exporters (or by this consumer's last run)."""
        recovered = 0
        now = time.time()
        for marker_id, raw in self.client.hgetall(self.keys.export_markers).items():
            marker = msgspec.msgpack.decode(raw, type=Marker)
            if (
                marker.consumer != self.consumer
                and (now - marker.created) * 1000 < self.claim_idle_ms
            ):
                continue  # another exporter may still be writing it
            files = [Path(f) for f in marker.files]
            pipe = self.client.pipeline(transaction=True)
            if all(f.exists() for f in files):
                pipe.xack(self.keys.events, self.group, *marker.ids)
            else:
                for f in files:
                    f.unlink(missing_ok=True)  # half a batch: it is exported again from scratch
            pipe.hdel(self.keys.export_markers, marker_id)
            pipe.execute()
            recovered += 1
        return recovered

    def _write_suppressions(self) -> None:
        """The erasure list as of now: each hash with its latest erasure time, and the time of
        the snapshot (``as_of``), read together so that an erasure is either in the list or at
        or after ``as_of`` (the model trained on it treats such customers as strangers)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.time()
        pipe.hgetall(self.keys.suppressed)
        (seconds, micros), entries = pipe.execute()
        erased_at, timeless = {}, []
        for hashed, raw in sorted(entries.items()):
            when = erasure_time(raw)
            if math.isinf(when):
                timeless.append(_text(hashed))  # unreadable: every event of theirs is dropped
            else:
                erased_at[_text(hashed)] = _iso(when)
        content = {"as_of": _iso(seconds + micros / 1e6), "erased_at": erased_at}
        if timeless:
            content["sha256"] = timeless
        _atomic_write(self.out / SUPPRESSIONS_FILE, json.dumps(content).encode())

    def _trim(self) -> None:
        """Drop exported entries from the stream (only when this group is its only reader)."""
        groups = self.client.xinfo_groups(self.keys.events)
        if len(groups) != 1:
            return
        pending = self.client.xpending(self.keys.events, self.group)
        oldest = (
            _text(pending["min"]) if pending["pending"] else _text(groups[0]["last-delivered-id"])
        )
        self.client.xtrim(self.keys.events, minid=oldest, approximate=False)


def _write_parquet(path: Path, rows: list[tuple[str, Event]]) -> None:
    columns = {
        field.name: [i if field.name == "stream_id" else getattr(e, field.name) for i, e in rows]
        for field in EXPORT_SCHEMA
    }
    table = pa.Table.from_pydict(columns, schema=EXPORT_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _atomic_write(path: Path, write: Callable[[Path], object] | bytes) -> None:
    """Write through a temporary file of our own (concurrent exporters), fsync, then rename."""
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    chmod_as_created(tmp, 0o666)  # readable by the training job's user, as a plain open makes it
    try:
        if isinstance(write, bytes):
            tmp.write_bytes(write)
        else:
            write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
