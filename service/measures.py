"""From raw daily counters to the figures people read: rates with intervals, comparisons, series.

Pure: the input is what ``TrackingState.daily`` returns. Definitions (per dimension and channel,
the channel being where the recommendation was shown): CTR = clicks / impressions; conversion
rate = attributed purchases / impressions; revenue per impression = attributed revenue /
impressions; average order value = attributed revenue / attributed purchases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date

import msgspec

from service import stats
from service.experiments import Experiment, arm
from service.stats import Comparison, Interval

Daily = Sequence[tuple[date, Mapping[str, float], int]]


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """The online figures of one dimension (everything, a variant, a model) on one channel."""

    impressions: int
    clicks: int
    conversions: int
    revenue: float
    requests: int
    fallbacks: int
    ctr: Interval
    conversion_rate: Interval
    revenue_per_impression: Interval
    average_order_value: Interval


class VariantResult(msgspec.Struct, frozen=True, kw_only=True):
    """A variant's figures on one channel and, for non-control variants, against the control."""

    variant: str
    figures: Figures
    ctr_vs_control: Comparison | None = None
    conversion_vs_control: Comparison | None = None
    revenue_per_impression_vs_control: Comparison | None = None


class ChannelResult(msgspec.Struct, frozen=True, kw_only=True):
    """Every variant of an experiment on one channel (``all`` sums the channels)."""

    channel: str
    variants: list[VariantResult]


class ExperimentResult(msgspec.Struct, frozen=True, kw_only=True):
    """An experiment's config and its results per channel."""

    experiment: Experiment
    control: str
    channels: list[ChannelResult]


def totals(daily: Daily) -> dict[str, float]:
    """The counters summed over the days."""
    summed: dict[str, float] = {}
    for _, counters, _ in daily:
        for name, value in counters.items():
            summed[name] = summed.get(name, 0.0) + value
    return summed


def channels(counters: Mapping[str, float], dimension: str) -> list[str]:
    """The channels with any counter for ``dimension``."""
    found = {name.split("|")[1] for name in counters if name.startswith(dimension + "|")}
    return sorted(found)


def placements(counters: Mapping[str, float]) -> list[str]:
    """The placements with any counter (``placement:<name>`` dimensions)."""
    found = {name.split("|", 1)[0] for name in counters if name.startswith("placement:")}
    return sorted(dim.removeprefix("placement:") for dim in found)


def figures(counters: Mapping[str, float], dimension: str, channel: str | None = None) -> Figures:
    """The figures of ``dimension`` on ``channel`` (None: all channels together)."""

    def total(metric: str) -> float:
        if channel is not None:
            return counters.get(f"{dimension}|{channel}|{metric}", 0.0)
        return sum(
            v
            for name, v in counters.items()
            if name.startswith(dimension + "|") and name.endswith("|" + metric)
        )

    imps, clicks, conv = total("impressions"), total("clicks"), total("conversions")
    revenue, revenue_sq = total("revenue"), total("revenue_sq")
    return Figures(
        impressions=int(imps),
        clicks=int(clicks),
        conversions=int(conv),
        revenue=revenue,
        requests=int(total("requests")),
        fallbacks=int(total("fallbacks")),
        ctr=stats.wilson(clicks, imps),
        conversion_rate=stats.wilson(conv, imps),
        # Revenue per impression: a mean over impressions, all but the converted ones zero.
        revenue_per_impression=stats.mean(revenue, revenue_sq, imps),
        average_order_value=stats.mean(revenue, revenue_sq, conv),
    )


def experiment_result(experiment: Experiment, counters: Mapping[str, float]) -> ExperimentResult:
    """Each variant against the first (the control), per channel and over all channels."""
    names = [v.name for v in experiment.variants]
    dims = [arm(experiment.experiment_id, name) for name in names]
    seen = sorted({c for d in dims for c in channels(counters, d)})
    results = [_channel_result(names, dims, counters, c) for c in seen]
    results.append(_channel_result(names, dims, counters, None))
    return ExperimentResult(experiment=experiment, control=names[0], channels=results)


def _channel_result(
    names: list[str], dims: list[str], counters: Mapping[str, float], channel: str | None
) -> ChannelResult:
    control = figures(counters, dims[0], channel)
    variants = [VariantResult(variant=names[0], figures=control)]
    for name, dim in zip(names[1:], dims[1:], strict=True):
        f = figures(counters, dim, channel)
        variants.append(
            VariantResult(
                variant=name,
                figures=f,
                ctr_vs_control=stats.compare_proportions(
                    control.clicks, control.impressions, f.clicks, f.impressions
                ),
                conversion_vs_control=stats.compare_proportions(
                    control.conversions, control.impressions, f.conversions, f.impressions
                ),
                revenue_per_impression_vs_control=stats.compare_means(
                    _sums(counters, dims[0], channel), _sums(counters, dim, channel)
                ),
            )
        )
    return ChannelResult(channel=channel or "all", variants=variants)


def _sums(
    counters: Mapping[str, float], dimension: str, channel: str | None
) -> tuple[float, float, float]:
    f = figures(counters, dimension, channel)
    sq = sum(
        v
        for name, v in counters.items()
        if name.startswith(dimension + "|")
        and name.endswith("|revenue_sq")
        and (channel is None or name.split("|")[1] == channel)
    )
    return (f.revenue, sq, float(f.impressions))


def series(
    daily: Daily, dimension: str, channel_list: Iterable[str]
) -> dict[str, dict[str, list[float | None]]]:
    """Per channel, the daily CTR and conversion rate of ``dimension`` (None: no impressions)."""
    result: dict[str, dict[str, list[float | None]]] = {}
    for channel in channel_list:
        ctr: list[float | None] = []
        conversion: list[float | None] = []
        for _, counters, _ in daily:
            f = figures(counters, dimension, channel)
            ctr.append(f.ctr.value if f.impressions else None)
            conversion.append(f.conversion_rate.value if f.impressions else None)
        result[channel] = {"ctr": ctr, "conversion": conversion}
    return result


def coverage(daily: Daily, n_items: int) -> list[float]:
    """Per day, the share of the catalogue that appeared in any recommendation."""
    return [min(1.0, served / n_items) if n_items else 0.0 for _, _, served in daily]
