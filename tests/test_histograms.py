"""The request path's metrics expose exactly what prometheus-client's own classes do."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.histograms import BufferedHistogram, PlainCounter
from service.metrics import _channel

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition but the creation times, by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_exposition_matches_prometheus_clients_histogram_sample_for_sample() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buffered = BufferedHistogram(
        "h_seconds", "latency", ["route", "channel"], BUCKETS, ours, flush_every=7
    )
    reference = Histogram(
        "h_seconds", "latency", ["route", "channel"], buckets=BUCKETS, registry=theirs
    )
    rng = random.Random(3)
    # Values on the bounds themselves count in that bucket (le: less than or equal).
    values = [0.001, 0.01, 0.1, 1.0, 0.0, 5.0] + [rng.uniform(0, 1.5) for _ in range(200)]
    for n, v in enumerate(values):
        labels = ("/a", "web") if n % 3 else ("/b", "store")
        buffered.observe(labels, v)
        reference.labels(*labels).observe(v)
    # Some observations are still pending (200 + 6 is no multiple of 7): a scrape shows them too.
    assert buffered._pending
    got, expected = samples(ours), samples(theirs)
    assert got.keys() == expected.keys() and len(got) == 2 * (len(BUCKETS) + 1 + 2)
    for key, value in expected.items():
        # Counts exactly; sums up to float rounding (summed in batches, not one by one).
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_a_scrape_with_nothing_observed_shows_no_series() -> None:
    registry = CollectorRegistry()
    BufferedHistogram("h_seconds", "latency", ["route"], BUCKETS, registry)
    text = generate_latest(registry).decode()
    assert "# TYPE h_seconds histogram" in text and "h_seconds_count" not in text


def test_the_plain_counter_exposes_what_prometheus_clients_counter_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainCounter("responses", "HTTP responses", ["route", "status"], ours)
    reference = Counter("responses", "HTTP responses", ["route", "status"], registry=theirs)
    for labels in [("/a", "200")] * 3 + [("/a", "404"), ("/b", "200")]:
        plain.inc(labels)
        reference.labels(*labels).inc()
    assert samples(ours) == samples(theirs)
    assert samples(ours)[("responses_total", (("route", "/a"), ("status", "200")))] == 3


@pytest.mark.parametrize(
    ("query", "label"),
    [
        (b"", "none"),
        (b"k=10", "none"),
        (b"channel=web", "web"),
        (b"k=10&channel=store&x=1", "store"),
        (b"xchannel=web", "none"),  # another parameter whose name ends in "channel"
        (b"xchannel=web&channel=app", "app"),
        (b"channel=", "invalid"),
        (b"channel=%3Cscript%3E", "invalid"),
        (b"channel=" + b"a" * 17, "invalid"),
    ],
)
def test_the_channel_label_is_the_channel_parameter_or_a_bounded_stand_in(
    query: bytes, label: str
) -> None:
    assert _channel(query) == label
