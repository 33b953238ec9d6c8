"""One ``/metrics`` for several worker processes behind one port.

uvicorn's workers share the port, so a scrape reaches one of them, and each counts only its own
requests. With more than one worker, each writes its exposition to a shared folder every
``interval`` seconds (``Snapshots.run``); the worker a scrape reaches answers the sum of every
worker's counters and histograms, its own counted up to now. A worker that died keeps its last
file, so the sums never go backwards when uvicorn replaces it; its gauges (what it held) drop out.
``python -m service`` with several workers uses ``DATA_DIR/metrics`` (``RECO_METRICS_DIR``) and
empties it when it starts; a server of your own (gunicorn, uvicorn --workers) sets
``RECO_METRICS_DIR`` to an empty folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# Gauges whose workers' values are not added up: the model version each worker serves (1 per
# version: during a hot swap, both versions show).
_MAX_GAUGES = frozenset({"reco_model_info"})
_SUFFIX = ".prom"


def folder_of(data_dir: str | Path) -> Path:
    """Where the workers of the service with ``data_dir`` keep their expositions."""
    return Path(data_dir) / "metrics"


def clear(folder: Path) -> None:
    """Remove the expositions of an earlier run (the service is starting: no worker runs yet)."""
    if folder.is_dir():
        for path in [*folder.glob(f"*{_SUFFIX}"), *folder.glob("*.tmp")]:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # a read-only folder: serve anyway (the writes warn too)
                log.warning("old metrics file %s not removed: %s", path.name, error)


class Snapshots:
    """This worker's exposition in ``folder``, and the sum of every worker's."""

    def __init__(self, folder: Path, render: Callable[[], bytes], interval: float = 1.0) -> None:
        """``render``: this worker's exposition text, as ``/metrics`` would answer alone."""
        self.folder = folder
        self.render = render
        self.interval = interval
        # The pid tells live workers' files from dead ones'; the token, apps in one process.
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"

    def write(self) -> None:
        """Write this worker's exposition now (atomically: a scrape never reads half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_bytes(self.render())
        partial.replace(self.path)

    async def run(self) -> None:
        """Write every ``interval`` seconds until cancelled, then once more.

        On the event loop: ``render`` sets the model gauge, which a scrape sets too.
        """
        failing = False
        try:
            while True:
                try:
                    self.write()
                    failing = False
                except OSError as error:  # a full disk must not stop the worker
                    if not failing:  # once per spell of failures, not every second
                        log.warning("metrics snapshot not written: %s", error)
                    failing = True
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(OSError):
                self.write()

    def merged(self, own: bytes) -> bytes:
        """The exposition of every worker: ``own`` (this worker's, current) and the others' last
        files, counters and histograms summed, gauges summed over live workers."""
        texts: list[tuple[str, bool]] = [(own.decode(), True)]
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")):
            if path == self.path:
                continue
            with contextlib.suppress(OSError):  # a worker replacing its file: its last one is gone
                texts.append((path.read_text(), _alive(path)))
        return exposition(merge(texts)).encode()


def merge(texts: Iterable[tuple[str, bool]]) -> list[Metric]:
    """Exposition texts (each with whether its worker is alive) as one set of metric families.

    Samples of the same name and labels are added, except ``*_created`` (the earliest counts) and
    the gauges of ``_MAX_GAUGES`` (the largest); a dead worker's gauges are left out.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text, alive in texts:
        for family in text_string_to_metric_families(text):
            if family.type == "gauge" and not alive:
                continue
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            into = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = into.get(key)
                if before is None:
                    into[key] = sample.value
                elif sample.name.endswith("_created"):
                    into[key] = min(before, sample.value)
                elif family.name in _MAX_GAUGES:
                    into[key] = max(before, sample.value)
                else:
                    into[key] = before + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def exposition(families: list[Metric]) -> str:
    """``families`` in Prometheus's text format, written by prometheus-client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _alive(path: Path) -> bool:
    try:
        os.kill(int(path.name.split("-", 1)[0]), 0)
    except (ProcessLookupError, ValueError):  # gone, or not a worker's file
        return False
    except PermissionError:  # not ours to signal, but it exists
        return True
    return True
