"""Prometheus metrics for the request path: histograms binned in batches, lock-free counters.

prometheus-client's ``Histogram.observe`` takes a lock and walks the buckets in Python, and every
request observes twice (its latency and its Redis round trip). Here an observation is a list
append; the pending ones are binned together with numpy every ``flush_every`` observations and
before every scrape, so ``/metrics`` always shows every observation made before it was asked.
It is a custom collector of prometheus-client: the exposition is the library's own.

Observations come from the event loop's thread; a scrape from another thread is safe (the
pending list is swapped under a lock), but ``observe`` itself takes none.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class BufferedHistogram(Collector):
    """A labelled histogram, exposed as ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
        *,
        flush_every: int = 4096,
    ) -> None:
        """Register with ``registry``; ``buckets`` are the upper bounds (+Inf is added)."""
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds: NDArray[np.float64] = np.array([*sorted(buckets), math.inf])
        self.flush_every = flush_every
        self._pending: list[tuple[Labels, float]] = []
        self._counts: dict[Labels, NDArray[np.int64]] = {}
        self._sums: dict[Labels, float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, labels: Labels, value: float) -> None:
        """Record one observation of the series ``labels`` (values in ``labelnames`` order)."""
        pending = self._pending
        pending.append((labels, value))
        if len(pending) >= self.flush_every:
            self.fold()

    def fold(self) -> None:
        """Bin the pending observations into the counts (done before every scrape)."""
        with self._lock:
            pending, self._pending = self._pending, []
            by_series: dict[Labels, list[float]] = {}
            for labels, value in pending:
                by_series.setdefault(labels, []).append(value)
            for labels, values in by_series.items():
                array = np.asarray(values, dtype=np.float64)
                # Prometheus buckets count values <= their bound: the first bound >= the value.
                slots = np.searchsorted(self.bounds, array, side="left")
                counts = np.bincount(slots, minlength=len(self.bounds))
                if labels in self._counts:
                    self._counts[labels] += counts
                else:
                    self._counts[labels] = counts.astype(np.int64)
                self._sums[labels] = self._sums.get(labels, 0.0) + float(array.sum())

    def collect(self) -> Iterator[Metric]:
        """The histogram family, every series with cumulative buckets, sum and count."""
        self.fold()
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            series = [
                (labels, counts.copy(), self._sums[labels])
                for labels, counts in self._counts.items()
            ]
        bounds = [floatToGoString(b) for b in self.bounds.tolist()]
        for labels, counts, total in series:
            buckets = list(zip(bounds, np.cumsum(counts).tolist(), strict=True))
            family.add_metric(list(labels), buckets, sum_value=total)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples (lets the registry check for duplicate names)."""
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class PlainCounter(Collector):
    """A labelled counter that is a dict increment (prometheus-client's takes a lock per inc).

    Incremented from the event loop's thread only; exposed as ``<name>_total``.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        """Register with ``registry``; ``name`` without the ``_total`` suffix."""
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.counts: dict[Labels, int] = {}
        registry.register(self)

    def inc(self, labels: Labels) -> None:
        """Add one to the series ``labels`` (values in ``labelnames`` order)."""
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """The counter family with every series seen."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.counts.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples."""
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
